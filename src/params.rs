//! A command's parameters: an ordered multimap of `key=value` pairs.
//!
//! Order and duplicates matter to xe (repeated `vm-uuid=` pairs); a lookup
//! takes the first occurrence.

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// The words xe accepts as a boolean switch.
const TRUE: &[&str] = &["true", "t", "yes", "y", "1"];
const FALSE: &[&str] = &["false", "f", "no", "n", "0"];

impl Params {
    pub fn push(&mut self, key: &str, value: &str) {
        self.pairs.push((key.to_string(), value.to_string()));
    }

    pub fn extend(&mut self, other: Params) {
        self.pairs.extend(other.pairs);
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The entries `prefix:key=value` as `(key, value)`.
    pub fn map_entries(&self, prefix: &str) -> Vec<(String, String)> {
        let p = format!("{prefix}:");
        self.pairs
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|key| (key.to_string(), v.clone())))
            .collect()
    }

    /// A switch such as `--force`: absent is false.
    pub fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => parse_bool(key, v),
        }
    }
}

/// xe's `get_bool_param`.
pub fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    let l = v.to_ascii_lowercase();
    if TRUE.contains(&l.as_str()) {
        Ok(true)
    } else if FALSE.contains(&l.as_str()) {
        Ok(false)
    } else {
        Err(format!(
            "Failed to parse parameter '{key}': Expected 'true','t','yes','y','1','false','f','no','n','0' got {v}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_wins_and_maps_collect() {
        let mut p = Params::default();
        p.push("a", "1");
        p.push("a", "2");
        p.push("device-config:location", "/x");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(
            p.map_entries("device-config"),
            vec![("location".to_string(), "/x".to_string())]
        );
    }

    #[test]
    fn flags_parse_xe_booleans() {
        let mut p = Params::default();
        p.push("force", "YES");
        p.push("live", "maybe");
        assert_eq!(p.flag("force"), Ok(true));
        assert_eq!(p.flag("missing"), Ok(false));
        assert!(p.flag("live").unwrap_err().contains("got maybe"));
    }
}
