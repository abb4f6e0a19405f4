//! Fuzzing on the stable toolchain (proptest as the generator): the bytes
//! from the network and the heartbeat SR, and an engine fed authenticated
//! but hostile heartbeats and slots (a holder of the pool secret, or a
//! disk that returns garbage with a good checksum), never make it panic.
//! `PROPTEST_CASES=100000 cargo test --release -p ha-liveness --test fuzz`
//! runs longer (docs/testing.md).

#![allow(clippy::unwrap_used)]

use ha_liveness::codec::{self, BLOCK, PACKET_SIZE, STATEFILE_SIZE};
use ha_liveness::{
    Config, Engine, Event, Global, Heartbeat, HostSet, Phase, PoolState, Slot, SlotRead, StatefileRead, TieBreak,
    Timeouts, View, MAX_HOSTS,
};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const KEY: &[u8] = b"pool secret";

/// `PROPTEST_CASES` when set (a long run), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hosts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{:08x}-0000-4000-8000-000000000000", i + 1))
        .collect()
}

fn phase() -> impl Strategy<Value = Phase> {
    (0u8..12).prop_map(|v| Phase::from_u8(v).unwrap_or(Phase::Started))
}

/// Any set of hosts, often one of the pool's few.
fn set() -> impl Strategy<Value = HostSet> {
    prop_oneof![any::<u64>().prop_map(HostSet), (0u64..16).prop_map(HostSet)]
}

fn view() -> impl Strategy<Value = View> {
    (set(), set(), set(), set(), phase()).prop_map(|(current, proposed, hbdomain, sfdomain, phase)| View {
        current,
        proposed,
        hbdomain,
        sfdomain,
        phase,
    })
}

fn heartbeat(n: usize) -> impl Strategy<Value = Heartbeat> {
    (
        0..n,
        prop_oneof![Just(7u128), any::<u128>()],
        0u64..6,
        0u64..1000,
        view(),
        any::<[bool; 6]>(),
        any::<u32>(),
    )
        .prop_map(|(from, generation, boot, sequence, view, b, priority)| Heartbeat {
            generation,
            from,
            boot,
            sequence,
            view,
            sf_access: b[0],
            sf_corrupted: b[1],
            fence_request: b[2],
            sr2: b[3],
            joining: b[4],
            tie: TieBreak {
                network: b[5],
                priority,
            },
        })
}

fn slot(n: usize) -> impl Strategy<Value = Slot> {
    (
        0u64..1000,
        prop_oneof![0..n, 0..MAX_HOSTS, Just(255usize)],
        0u64..6,
        proptest::collection::vec(0u64..6, MAX_HOSTS),
        any::<[bool; 4]>(),
        view(),
        set(),
        any::<u32>(),
    )
        .prop_map(|(sequence, index, boot, boots, b, view, lock_grant, weight)| {
            let mut member_boots = [0; MAX_HOSTS];
            member_boots.copy_from_slice(&boots);
            Slot {
                sequence,
                index,
                boot,
                member_boots,
                excluded: b[0],
                starting: b[1],
                arming: b[2],
                view,
                lock_request: b[3],
                lock_grant,
                weight,
                tie: TieBreak::default(),
            }
        })
}

/// What the engine is handed: time passing, a heartbeat, a statefile read
/// (global block state, slots; `None` a corrupt slot), a failed read.
#[derive(Debug, Clone)]
enum Input {
    Wait(u64),
    Heartbeat(Heartbeat),
    Read(Option<u8>, Vec<Option<Slot>>),
    Fail,
}

fn input(n: usize) -> impl Strategy<Value = Input> {
    prop_oneof![
        (1u64..3_000).prop_map(Input::Wait),
        heartbeat(n).prop_map(Input::Heartbeat),
        (
            proptest::option::of(0u8..4),
            proptest::collection::vec(proptest::option::of(slot(n)), 0..(n + 2))
        )
            .prop_map(|(g, s)| Input::Read(g, s)),
        Just(Input::Fail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..(2 * PACKET_SIZE))) {
        let _ = codec::decode_heartbeat(&bytes, &hosts(3), 0, 7, KEY);
        let _ = codec::decode_slot(&bytes);
        let _ = codec::decode_global(&bytes);
        let _ = codec::decode_statefile(&bytes, 3);
    }

    #[test]
    fn authenticated_garbage_is_refused_or_read_within_bounds(
        body in proptest::collection::vec(any::<u8>(), PACKET_SIZE - 32 - 5),
        n in 1usize..=MAX_HOSTS,
        me in 0usize..MAX_HOSTS,
    ) {
        // A packet with a good tag and anything behind the header: what a
        // holder of the pool secret could send.
        let mut packet = b"hahx".to_vec();
        packet.push(4);
        packet.extend_from_slice(&body);
        let mut m = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
        m.update(&packet);
        packet.extend_from_slice(&m.finalize().into_bytes());
        prop_assert_eq!(packet.len(), PACKET_SIZE);
        if let Ok(hb) = codec::decode_heartbeat(&packet, &hosts(n), me, 7, KEY) {
            prop_assert!(hb.from < n);
        }
    }

    #[test]
    fn sealed_garbage_slots_and_images_decode_without_panicking(
        body in proptest::collection::vec(any::<u8>(), BLOCK - 8 - 4 - 4),
        image in proptest::collection::vec(any::<u8>(), 0..(STATEFILE_SIZE / 16)),
        n in 1usize..=MAX_HOSTS,
    ) {
        // A slot block with a good checksum and anything inside.
        let mut block = b"tsoh".to_vec();
        block.extend_from_slice(&body);
        block.extend_from_slice(b"hdne");
        let sum = Sha256::digest(&block);
        block.extend_from_slice(&sum[..8]);
        prop_assert_eq!(block.len(), BLOCK);
        let _ = codec::decode_slot(&block);
        let _ = codec::decode_statefile(&image, n);
    }

}

proptest! {
    // 2,000 cases find a view naming a host beyond the pool (the engine
    // indexed its tables by it) every time; 256 did not.
    #![proptest_config(ProptestConfig { cases: cases(2_000), ..ProptestConfig::default() })]

    #[test]
    fn an_engine_fed_hostile_heartbeats_and_slots_never_panics(
        n in 2usize..6,
        online in any::<bool>(),
        inputs in proptest::collection::vec(input(5), 1..120),
    ) {
        let (mut e, mut now) = if online { formed(n) } else { starting(n) };
        for i in inputs {
            now += 50;
            let event = match i {
                Input::Wait(ms) => {
                    now += ms;
                    Event::Tick
                }
                Input::Heartbeat(mut hb) => {
                    hb.from %= n;
                    Event::Heartbeat(hb)
                }
                Input::Read(g, slots) => Event::Statefile(Ok(StatefileRead {
                    global: g.map(|v| Global {
                        pool_state: PoolState::from_u8(v).unwrap_or(PoolState::Active),
                        generation: 7,
                        master: Some(usize::from(v) * 40),
                    }),
                    slots: slots
                        .into_iter()
                        .map(|s| s.map_or(SlotRead::Corrupt, SlotRead::Valid))
                        .collect(),
                })),
                Input::Fail => Event::Statefile(Err("I/O error".into())),
            };
            let _ = e.handle(now, event);
            if !e.is_running() {
                break;
            }
        }
    }
}

/// Host 0's engine, just started.
fn starting(n: usize) -> (Engine, u64) {
    let timeouts = Timeouts::derive(10, false).unwrap();
    let mut e = Engine::new(Config::new(hosts(n), 0, timeouts, 7, 3));
    let _ = e.start(0);
    (e, 0)
}

/// Host 0's engine online in a liveset of all `n` hosts, formed with
/// honest peers (their heartbeats and slots as forming hosts'), so the
/// hostile inputs reach a member, not only a starting host.
fn formed(n: usize) -> (Engine, u64) {
    let (mut e, mut now) = starting(n);
    let all = HostSet((1u64 << n) - 1);
    let forming = View {
        current: HostSet(0),
        proposed: all,
        hbdomain: all,
        sfdomain: all,
        phase: Phase::Starting,
    };
    let mut mine: Option<Slot> = None;
    let mut seq = 0;
    while now < 60_000 && !e.is_online() {
        now += 50;
        seq += 1;
        let mut out = Vec::new();
        if now % 1000 == 0 {
            for from in 1..n {
                let hb = Heartbeat {
                    generation: 7,
                    from,
                    boot: 1,
                    sequence: seq,
                    view: forming,
                    sf_access: true,
                    sf_corrupted: false,
                    fence_request: false,
                    sr2: false,
                    joining: true,
                    tie: TieBreak::default(),
                };
                out.extend(e.handle(now, Event::Heartbeat(hb)));
            }
            let slots = (0..n)
                .map(|i| match (i, mine) {
                    (0, Some(s)) => SlotRead::Valid(s),
                    (0, None) => SlotRead::Empty,
                    _ => SlotRead::Valid(Slot {
                        sequence: seq,
                        index: i,
                        boot: 1,
                        member_boots: [0; MAX_HOSTS],
                        excluded: false,
                        starting: true,
                        arming: false,
                        view: forming,
                        lock_request: false,
                        lock_grant: HostSet(0),
                        weight: 0,
                        tie: TieBreak::default(),
                    }),
                })
                .collect();
            let global = Global {
                pool_state: PoolState::Active,
                generation: 7,
                master: None,
            };
            out.extend(e.handle(
                now,
                Event::Statefile(Ok(StatefileRead {
                    global: Some(global),
                    slots,
                })),
            ));
        }
        out.extend(e.handle(now, Event::Tick));
        for c in out {
            if let ha_liveness::Command::StatefileCycle { slot, .. } = c {
                mine = Some(slot);
            }
        }
    }
    assert!(e.is_online(), "host 0 never formed with honest peers");
    (e, now)
}
