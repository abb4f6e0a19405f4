//! Sets of hosts as 64-bit maps, indexed like xhad: by position in the
//! configuration after sorting the hosts by UUID.

use std::fmt;

/// The most hosts a pool can have (xhad's `MAX_HOST_NUM`).
pub const MAX_HOSTS: usize = 64;

/// A set of host indices.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HostSet(pub u64);

impl HostSet {
    pub const EMPTY: HostSet = HostSet(0);

    /// Every index below `n`.
    pub fn first(n: usize) -> HostSet {
        if n >= MAX_HOSTS {
            HostSet(u64::MAX)
        } else {
            HostSet((1u64 << n) - 1)
        }
    }

    pub fn single(i: usize) -> HostSet {
        HostSet(bit(i))
    }

    pub fn contains(self, i: usize) -> bool {
        self.0 & bit(i) != 0
    }

    pub fn insert(&mut self, i: usize) {
        self.0 |= bit(i);
    }

    pub fn remove(&mut self, i: usize) {
        self.0 &= !bit(i);
    }

    pub fn set(&mut self, i: usize, on: bool) {
        if on {
            self.insert(i)
        } else {
            self.remove(i)
        }
    }

    pub fn with(mut self, i: usize) -> HostSet {
        self.insert(i);
        self
    }

    pub fn without(mut self, i: usize) -> HostSet {
        self.remove(i);
        self
    }

    pub fn and(self, o: HostSet) -> HostSet {
        HostSet(self.0 & o.0)
    }

    pub fn or(self, o: HostSet) -> HostSet {
        HostSet(self.0 | o.0)
    }

    pub fn minus(self, o: HostSet) -> HostSet {
        HostSet(self.0 & !o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn is_subset(self, o: HostSet) -> bool {
        self.0 & !o.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The members, lowest index first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_HOSTS).filter(move |&i| self.contains(i))
    }

    /// The lowest member.
    pub fn lowest(self) -> Option<usize> {
        (self.0 != 0).then(|| self.0.trailing_zeros() as usize)
    }
}

fn bit(i: usize) -> u64 {
    if i < MAX_HOSTS {
        1u64 << i
    } else {
        0
    }
}

impl fmt::Debug for HostSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `{0,2,3}`.
impl fmt::Display for HostSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (k, i) in self.iter().enumerate() {
            if k > 0 {
                f.write_str(",")?;
            }
            write!(f, "{i}")?;
        }
        f.write_str("}")
    }
}

impl FromIterator<usize> for HostSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = HostSet::EMPTY;
        for i in iter {
            s.insert(i);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a: HostSet = [0, 2, 3].into_iter().collect();
        let b: HostSet = [2, 5].into_iter().collect();
        assert_eq!(a.and(b), HostSet::single(2));
        assert_eq!(a.or(b).len(), 4);
        assert_eq!(a.minus(b).to_string(), "{0,3}");
        assert!(HostSet::single(2).is_subset(a));
        assert!(!b.is_subset(a));
        assert_eq!(HostSet::first(3).to_string(), "{0,1,2}");
        assert_eq!(HostSet::first(64).len(), 64);
        assert_eq!(b.lowest(), Some(2));
        assert!(!HostSet::EMPTY.contains(70));
    }
}
