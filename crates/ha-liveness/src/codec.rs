//! The bytes on the wire and on the heartbeat SR.
//!
//! - A heartbeat packet is fixed-size, starts with `hahx`, and ends with an
//!   HMAC-SHA256 tag keyed by the pool secret. A packet of the wrong size,
//!   signature, tag, generation or sender is refused with a [`WireError`],
//!   never trusted.
//! - The statefile is xhad's layout: a 4 KiB global block (`loop` … `pdne`)
//!   and one 4 KiB slot per host (`tsoh` … `hdne`), 64 slots, 266,240 bytes.
//!   Each block ends with a checksum; a block that fails it reads as
//!   corrupt, an all-zero block as never written.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::hostset::{HostSet, MAX_HOSTS};
use crate::message::{Global, Heartbeat, Phase, PoolState, Slot, SlotRead, StatefileRead, TieBreak, View};

/// Size of one statefile block.
pub const BLOCK: usize = 4096;
/// Size of the statefile: the global block and 64 slots.
pub const STATEFILE_SIZE: usize = BLOCK * (1 + MAX_HOSTS);
/// Size of a heartbeat packet.
pub const PACKET_SIZE: usize = 4 + 1 + 1 + 1 + 16 + 8 + 8 + 8 * 4 + 1 + 1 + 4 + 36 + 32;

const PACKET_VERSION: u8 = 4;
const SF_VERSION: u8 = 4;
const TAG: usize = 32;
const SUM: usize = 8;

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet of {0} bytes, expected {PACKET_SIZE}")]
    Size(usize),
    #[error("bad signature or version")]
    Signature,
    #[error("authentication failed")]
    Unauthenticated,
    #[error("sender index {0} is not configured")]
    UnknownSender(usize),
    #[error("sender index {index} does not carry its configured UUID")]
    WrongSender { index: usize },
    #[error("sent to host index {0}, not to this host")]
    WrongReceiver(usize),
    #[error("another HA generation")]
    Generation,
    #[error("bad field value")]
    Field,
}

/// A statefile block whose signature, end marker or checksum is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt statefile block")]
pub struct CorruptBlock;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    }
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // new_from_slice never fails for HMAC; keep a defined key if it ever did.
    <HmacSha256 as Mac>::new(&Default::default())
}

struct Writer(Vec<u8>);

impl Writer {
    fn put(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    /// The membership views, laid out the same in packets and slots.
    fn view(&mut self, v: &View) {
        for set in [v.current, v.proposed, v.hbdomain, v.sfdomain] {
            self.u64(set.0);
        }
        self.u8(v.phase as u8);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn u128(&mut self) -> Option<u128> {
        self.take(16).and_then(|b| b.try_into().ok()).map(u128::from_le_bytes)
    }
    fn set(&mut self) -> Option<HostSet> {
        self.u64().map(HostSet)
    }
    fn view(&mut self) -> Option<View> {
        Some(View {
            current: self.set()?,
            proposed: self.set()?,
            hbdomain: self.set()?,
            sfdomain: self.set()?,
            phase: Phase::from_u8(self.u8()?)?,
        })
    }
}

/// Bit `i` of a flags byte.
fn bit(flags: u8, i: u8) -> bool {
    flags & (1 << i) != 0
}

fn flags(bits: &[bool]) -> u8 {
    bits.iter().enumerate().fold(0, |acc, (i, &b)| acc | (u8::from(b) << i))
}

fn uuid_bytes(uuid: &str) -> [u8; 36] {
    let mut out = [0u8; 36];
    for (o, b) in out.iter_mut().zip(uuid.bytes()) {
        *o = b;
    }
    out
}

/// Encode and sign a heartbeat from the host with UUID `host_uuid` to the
/// host with index `to`. The receiver is signed with the rest: a packet
/// captured on its way to one host cannot be sent to another, where it
/// would forge a link that does not exist.
pub fn encode_heartbeat(hb: &Heartbeat, host_uuid: &str, to: usize, key: &[u8]) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(PACKET_SIZE));
    w.put(b"hahx");
    w.u8(PACKET_VERSION);
    w.u8(hb.from as u8);
    w.u8(to as u8);
    w.put(&hb.generation.to_le_bytes());
    w.u64(hb.boot);
    w.u64(hb.sequence);
    w.view(&hb.view);
    w.u8(flags(&[
        hb.sf_access,
        hb.sf_corrupted,
        hb.fence_request,
        hb.sr2,
        hb.joining,
        hb.tie.network,
    ]));
    w.put(&hb.tie.priority.to_le_bytes());
    w.put(&uuid_bytes(host_uuid));
    let mut m = mac(key);
    m.update(&w.0);
    let tag = m.finalize().into_bytes();
    w.put(&tag);
    w.0
}

/// Check and decode a packet sent to host `me` against the pool's sorted
/// host UUIDs.
pub fn decode_heartbeat(
    bytes: &[u8],
    hosts: &[String],
    me: usize,
    generation: u128,
    key: &[u8],
) -> Result<Heartbeat, WireError> {
    if bytes.len() != PACKET_SIZE {
        return Err(WireError::Size(bytes.len()));
    }
    let (body, tag) = bytes.split_at(PACKET_SIZE - TAG);
    if &body[..4] != b"hahx" || body[4] != PACKET_VERSION {
        return Err(WireError::Signature);
    }
    let mut m = mac(key);
    m.update(body);
    m.verify_slice(tag).map_err(|_| WireError::Unauthenticated)?;
    let mut r = Reader(&body[5..]);
    let from = usize::from(r.u8().ok_or(WireError::Field)?);
    let Some(uuid) = hosts.get(from) else {
        return Err(WireError::UnknownSender(from));
    };
    let to = usize::from(r.u8().ok_or(WireError::Field)?);
    if to != me {
        return Err(WireError::WrongReceiver(to));
    }
    let gen = r.u128().ok_or(WireError::Field)?;
    let boot = r.u64().ok_or(WireError::Field)?;
    let sequence = r.u64().ok_or(WireError::Field)?;
    let view = r.view().ok_or(WireError::Field)?;
    let f = r.u8().ok_or(WireError::Field)?;
    let priority = r.u32().ok_or(WireError::Field)?;
    let sender = r.take(36).ok_or(WireError::Field)?;
    if sender != uuid_bytes(uuid) {
        return Err(WireError::WrongSender { index: from });
    }
    if gen != generation {
        return Err(WireError::Generation);
    }
    Ok(Heartbeat {
        generation: gen,
        from,
        boot,
        sequence,
        view,
        sf_access: bit(f, 0),
        sf_corrupted: bit(f, 1),
        fence_request: bit(f, 2),
        sr2: bit(f, 3),
        joining: bit(f, 4),
        tie: TieBreak {
            network: bit(f, 5),
            priority,
        },
    })
}

fn seal(mut body: Vec<u8>, end: &[u8; 4]) -> [u8; BLOCK] {
    body.resize(BLOCK - SUM - 4, 0);
    body.extend_from_slice(end);
    let sum = Sha256::digest(&body);
    body.extend_from_slice(&sum[..SUM]);
    let mut out = [0u8; BLOCK];
    out.copy_from_slice(&body);
    out
}

/// `None` for an all-zero block, `Some(Err)` for a corrupt one.
fn open<'a>(block: &'a [u8], sig: &[u8; 4], end: &[u8; 4]) -> Option<Result<Reader<'a>, CorruptBlock>> {
    if block.len() != BLOCK {
        return Some(Err(CorruptBlock));
    }
    if block.iter().all(|&b| b == 0) {
        return None;
    }
    let (body, sum) = block.split_at(BLOCK - SUM);
    if Sha256::digest(body)[..SUM] != *sum || &body[..4] != sig || &body[body.len() - 4..] != end {
        return Some(Err(CorruptBlock));
    }
    Some(Ok(Reader(&body[4..])))
}

/// The global block.
pub fn encode_global(g: &Global) -> [u8; BLOCK] {
    let mut w = Writer(Vec::new());
    w.put(b"loop");
    w.u8(SF_VERSION);
    w.u8(g.pool_state as u8);
    w.u8(g.master.map_or(0xff, |m| m as u8));
    w.u8(MAX_HOSTS as u8);
    w.put(&g.generation.to_le_bytes());
    seal(w.0, b"pdne")
}

/// `Ok(None)`: never written.
pub fn decode_global(block: &[u8]) -> Result<Option<Global>, CorruptBlock> {
    let Some(r) = open(block, b"loop", b"pdne") else {
        return Ok(None);
    };
    let mut r = r?;
    if r.u8() != Some(SF_VERSION) {
        return Err(CorruptBlock);
    }
    let pool_state = r.u8().and_then(PoolState::from_u8).ok_or(CorruptBlock)?;
    let master = r.u8().ok_or(CorruptBlock)?;
    let _max = r.u8().ok_or(CorruptBlock)?;
    let generation = r.u128().ok_or(CorruptBlock)?;
    Ok(Some(Global {
        pool_state,
        generation,
        master: (usize::from(master) < MAX_HOSTS).then_some(usize::from(master)),
    }))
}

/// One host's slot.
pub fn encode_slot(s: &Slot) -> [u8; BLOCK] {
    let mut w = Writer(Vec::new());
    w.put(b"tsoh");
    w.u8(SF_VERSION);
    w.u8(s.index as u8);
    w.u8(flags(&[
        s.excluded,
        s.starting,
        s.lock_request,
        s.tie.network,
        s.arming,
    ]));
    w.u64(s.sequence);
    w.view(&s.view);
    w.u64(s.lock_grant.0);
    w.put(&s.weight.to_le_bytes());
    w.put(&s.tie.priority.to_le_bytes());
    w.u64(s.boot);
    for b in s.member_boots {
        w.u64(b);
    }
    seal(w.0, b"hdne")
}

pub fn decode_slot(block: &[u8]) -> SlotRead {
    let Some(r) = open(block, b"tsoh", b"hdne") else {
        return SlotRead::Empty;
    };
    let Ok(mut r) = r else {
        return SlotRead::Corrupt;
    };
    let parse = |r: &mut Reader| -> Option<Slot> {
        if r.u8()? != SF_VERSION {
            return None;
        }
        let index = usize::from(r.u8()?);
        let f = r.u8()?;
        let sequence = r.u64()?;
        let view = r.view()?;
        let lock_grant = r.set()?;
        let weight = r.u32()?;
        let priority = r.u32()?;
        let boot = r.u64()?;
        let mut member_boots = [0; MAX_HOSTS];
        for b in &mut member_boots {
            *b = r.u64()?;
        }
        Some(Slot {
            sequence,
            index,
            boot,
            member_boots,
            excluded: bit(f, 0),
            starting: bit(f, 1),
            arming: bit(f, 4),
            view,
            lock_request: bit(f, 2),
            lock_grant,
            weight,
            tie: TieBreak {
                network: bit(f, 3),
                priority,
            },
        })
    };
    parse(&mut r).map_or(SlotRead::Corrupt, SlotRead::Valid)
}

/// Offset of host `index`'s slot in the statefile.
pub fn slot_offset(index: usize) -> usize {
    BLOCK * (1 + index)
}

/// Decode a whole statefile image for `hosts` hosts.
pub fn decode_statefile(image: &[u8], hosts: usize) -> StatefileRead {
    let block = |i: usize| image.get(i * BLOCK..(i + 1) * BLOCK).unwrap_or(&[]);
    let global = decode_global(block(0)).ok().map(|g| {
        g.unwrap_or(Global {
            pool_state: PoolState::None,
            generation: 0,
            master: None,
        })
    });
    let slots = (0..hosts)
        .map(|i| {
            let b = block(1 + i);
            if b.is_empty() {
                SlotRead::Empty
            } else {
                decode_slot(b)
            }
        })
        .collect();
    StatefileRead { global, slots }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec![
            "11111111-0000-0000-0000-000000000000".into(),
            "22222222-0000-0000-0000-000000000000".into(),
        ]
    }

    fn hb() -> Heartbeat {
        Heartbeat {
            generation: 7,
            from: 1,
            boot: 1_795_311_552_293,
            sequence: 42,
            view: View {
                current: HostSet(3),
                proposed: HostSet(1),
                hbdomain: HostSet(3),
                sfdomain: HostSet(2),
                phase: Phase::Fh3Done,
            },
            sf_access: true,
            sf_corrupted: false,
            fence_request: true,
            sr2: false,
            joining: true,
            tie: TieBreak {
                network: false,
                priority: 0xdead_beef,
            },
        }
    }

    #[test]
    fn heartbeats_round_trip_and_refuse_tampering() {
        let h = hosts();
        let bytes = encode_heartbeat(&hb(), &h[1], 0, b"secret");
        assert_eq!(bytes.len(), PACKET_SIZE);
        assert_eq!(decode_heartbeat(&bytes, &h, 0, 7, b"secret"), Ok(hb()));
        assert_eq!(
            decode_heartbeat(&bytes, &h, 0, 7, b"other"),
            Err(WireError::Unauthenticated)
        );
        assert_eq!(
            decode_heartbeat(&bytes, &h, 0, 8, b"secret"),
            Err(WireError::Generation)
        );
        assert_eq!(
            decode_heartbeat(&bytes[1..], &h, 0, 7, b"secret"),
            Err(WireError::Size(PACKET_SIZE - 1))
        );
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(
            decode_heartbeat(&flipped, &h, 0, 7, b"secret"),
            Err(WireError::Unauthenticated)
        );
        // Host 0's UUID in host 1's packet.
        let forged = encode_heartbeat(&hb(), &h[0], 0, b"secret");
        assert_eq!(
            decode_heartbeat(&forged, &h, 0, 7, b"secret"),
            Err(WireError::WrongSender { index: 1 })
        );
        // Sent to host 2: host 0 refuses it (a captured packet replayed
        // to another host).
        let elsewhere = encode_heartbeat(&hb(), &h[1], 2, b"secret");
        assert_eq!(
            decode_heartbeat(&elsewhere, &h, 0, 7, b"secret"),
            Err(WireError::WrongReceiver(2))
        );
        assert_eq!(decode_heartbeat(&elsewhere, &h, 2, 7, b"secret"), Ok(hb()));
        let mut far = hb();
        far.from = 5;
        let bytes = encode_heartbeat(&far, &h[1], 0, b"secret");
        assert_eq!(
            decode_heartbeat(&bytes, &h, 0, 7, b"secret"),
            Err(WireError::UnknownSender(5))
        );
    }

    #[test]
    fn slots_and_global_round_trip_and_detect_corruption() {
        let mut member_boots = [0; MAX_HOSTS];
        member_boots[0] = 5;
        member_boots[MAX_HOSTS - 1] = u64::MAX;
        let s = Slot {
            sequence: 9,
            index: 3,
            boot: 17,
            member_boots,
            excluded: true,
            starting: false,
            arming: true,
            view: hb().view,
            lock_request: true,
            lock_grant: HostSet(5),
            weight: 2,
            tie: TieBreak {
                network: true,
                priority: 7,
            },
        };
        let block = encode_slot(&s);
        assert_eq!(decode_slot(&block), SlotRead::Valid(s));
        let mut bad = block;
        bad[100] = 1;
        assert_eq!(decode_slot(&bad), SlotRead::Corrupt);
        assert_eq!(decode_slot(&[0u8; BLOCK]), SlotRead::Empty);
        let g = Global {
            pool_state: PoolState::Active,
            generation: 99,
            master: Some(2),
        };
        assert_eq!(decode_global(&encode_global(&g)), Ok(Some(g)));
        let mut bad = encode_global(&g);
        bad[6] ^= 0xff;
        assert_eq!(decode_global(&bad), Err(CorruptBlock));
        let mut image = vec![0u8; STATEFILE_SIZE];
        image[..BLOCK].copy_from_slice(&encode_global(&g));
        image[slot_offset(3)..slot_offset(4)].copy_from_slice(&block);
        let read = decode_statefile(&image, 4);
        assert_eq!(read.global, Some(g));
        assert_eq!(read.slots[3], SlotRead::Valid(s));
        assert_eq!(read.slots[0], SlotRead::Empty);
        assert_eq!(STATEFILE_SIZE, 266_240);
    }
}
