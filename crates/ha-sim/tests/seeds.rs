//! Random fault schedules: every seed must end with zero violations.
//! `HA_SIM_SEEDS` sets how many (default 200).

use ha_sim::schedule;

#[test]
fn random_fault_schedules_keep_every_safety_property() {
    let seeds: u64 = std::env::var("HA_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut failures = Vec::new();
    let (mut faults, mut shrinks) = (0, 0);
    for seed in 0..seeds {
        let r = schedule::run(seed, None, 300_000, false).expect("T_S is a valid lab timeout");
        faults += r.faults;
        shrinks += r.shrinks;
        if let Some(v) = r.violation {
            failures.push(format!(
                "seed {seed}: {v} (reproduce: cargo run -p ha-sim -- --seed {seed} --trace)"
            ));
        }
    }
    assert!(faults as u64 > seeds, "the schedules injected faults ({faults})");
    assert!(shrinks > 0, "some faults shrank a liveset");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Seeds that once broke a safety property, with what they found.
#[test]
fn seeds_that_found_a_bug_stay_fixed() {
    for (seed, bug) in [
        (
            2785,
            "a rebooted host adopted a liveset still listing it from before its reboot",
        ),
        (
            470,
            "a host frozen while joining completed the join with acks withdrawn meanwhile",
        ),
        (688, "a one-way cut: a host was dropped while it still ran armed"),
        (971, "a one-way cut: a host was dropped while it still ran armed"),
        (
            2089,
            "a host joining took the liveset from the statefile alone and missed a member kept without it",
        ),
        // A host that joined as the fault handler began heard both sides of
        // a split; its published views made each side the largest partition.
        (2137, "a joiner's views counted in the largest partition"),
        (2348, "a joiner's views counted in the largest partition"),
        (2917, "a joiner's views counted in the largest partition"),
        (2967, "a joiner's views counted in the largest partition"),
        (4768, "a joiner's views counted in the largest partition"),
        (5345, "a joiner's views counted in the largest partition"),
        (5715, "a joiner's views counted in the largest partition"),
        (7375, "a joiner's views counted in the largest partition"),
        // A member's slot written late (slow I/O) listed the rebooted host
        // from before its reboot, and it adopted that liveset.
        (2615, "a rebooted host adopted a late slot listing its previous boot"),
        (2684, "a rebooted host adopted a late slot listing its previous boot"),
        // Host 0 was still finishing one fault handler when a split came;
        // it judged the split only in its next one, after the winners' wait.
        (
            4710,
            "a loser busy in an earlier fault handler fenced after the winners' wait",
        ),
        // Two hosts joined at once; each completed the join with the
        // liveset it began with, without the other.
        (6481, "two joiners each joined a liveset without the other"),
        (8160, "two joiners each joined a liveset without the other"),
        // Members acked two joiners at once; each joiner joined the
        // members' liveset without the other (the proposals were not read).
        (1534, "two joiners acked at once each joined without the other"),
        (9582, "two joiners acked at once each joined without the other"),
        (13427, "two joiners acked at once each joined without the other"),
        (17677, "two joiners acked at once each joined without the other"),
        (20229, "two joiners acked at once each joined without the other"),
        // A member acked a joiner and was cut off before it saw the last
        // ack: its liveset lacked the joiner, so its largest-partition count
        // differed from the others' and both sides won.
        (5527, "members disagreeing on a joiner both won a split"),
        (8446, "members disagreeing on a joiner both won a split"),
        (14470, "members disagreeing on a joiner both won a split"),
        // Counting the hosts members publish: a stale slot listed a host
        // dropped since, and a fresh one listed a boot that had restarted.
        (15347, "a stale slot's liveset counted in the largest partition"),
        (15327, "a restarted host's old boot counted in the largest partition"),
        // Fresh ranges swept in issue 16, one class each (docs/HA.md).
        (
            930502,
            "a joiner joined a host that was only forming a liveset (split brain)",
        ),
        (
            5038522,
            "the survival test counted hosts the consistency check never compared (split brain)",
        ),
        (
            5039676,
            "the survival test counted hosts the consistency check never compared (split brain)",
        ),
        (
            3100025,
            "a host frozen while forming formed the all-host liveset from no acks",
        ),
        (
            3501539,
            "a host frozen while forming formed the all-host liveset from no acks",
        ),
        (
            3701035,
            "a host frozen while forming formed the all-host liveset from no acks",
        ),
        (
            3708119,
            "a host frozen while forming formed the all-host liveset from no acks",
        ),
        (
            8000629,
            "a host frozen while forming formed the all-host liveset from no acks",
        ),
        (
            3401481,
            "a loser frozen before its budget ended outlived the winners' wait",
        ),
        (3505929, "a fault noticed after the snapshot was lost"),
        (3709818, "a fault noticed after the snapshot was lost"),
        (
            8005770,
            "a storage-lost host applied one judge's proposal while another kept a joiner",
        ),
        (8002690, "the budget extended past phase 2 with a peer across a split"),
        (8022883, "the budget extended past phase 2 with a peer across a split"),
        (
            5000065,
            "a host with slow statefile reads won outright against a live peer",
        ),
        (
            20513635,
            "an unheard holder that joined on other members did not stop a win outright",
        ),
        (
            20520204,
            "an unheard holder that joined on other members did not stop a win outright",
        ),
        (
            20556387,
            "an unheard holder that joined on other members did not stop a win outright",
        ),
        (
            20026939,
            "a joiner's stale published views made its side the largest partition",
        ),
        (
            30010586,
            "a host that joined as the handler began, heard by both sides, was counted by both",
        ),
        (
            30015296,
            "a host that joined as the handler began, heard by both sides, was counted by both",
        ),
        (
            30026526,
            "a host that joined as the handler began, heard by both sides, was counted by both",
        ),
        (
            40058910,
            "a side's published statefile view counted a non-holder its own decision left out",
        ),
        (
            40690261,
            "a host regained its own slot after publishing phase 2 without it, across a split",
        ),
        (40061167, "found in the same fresh sweep"),
        (40674981, "found in the same fresh sweep"),
        (
            50004131,
            "a host whose reads stalled for 29 s aged its writing peer's slot and won outright",
        ),
        (
            60041064,
            "a host without storage took a peer back in a new boot for excluded (rule 2)",
        ),
        (
            60083433,
            "a storage-lost host waiting on its judges started its budget at the round's end",
        ),
        (60067102, "found in the same fresh sweep"),
        (60160767, "found in the same fresh sweep"),
        (
            5000888,
            "a master back from a storage outage was still granted its stale request (two holders)",
        ),
        (
            70000065,
            "two hosts back from a storage outage: one took the lock alone while its slot still granted the other",
        ),
        (
            72202024,
            "a host back from a storage outage took the lock alone while its peer's slot read corrupt",
        ),
        (72373228, "found in the same fresh sweep"),
        (72478329, "found in the same fresh sweep"),
        (
            72227046,
            "2 hosts, host 0's statefile I/O 10 s slow: its slot still said starting, though host 1 had heard it online; host 1 took it for a joiner, decided alone across a network split, and dropped it while armed (rule G)",
        ),
        (
            110036525,
            "4 hosts: host 0 acked two joiners, started a fault handler and was cut off; they armed on its acks, and it dropped them by their starting slots (rule K: no join while an acker is in a fault handler)",
        ),
        (
            120141319,
            "4 hosts, every host re-requesting the lock after a storage outage: a grant to a host's earlier request, in a slot written before the granter saw it withdrawn, counted for its new one while the host it had revoked still held the lock (rule M, grants from after the request)",
        ),
        (
            130167128,
            "2 hosts, packet loss then a cable cut: host 0 stopped hearing host 1 (kept without storage) 8 s before host 1 stopped hearing host 0, decided at once and dropped it before host 1's budget ran out (rule W, a host last heard without the statefile)",
        ),
        (
            140124492,
            "2 hosts forming with a one-way cut: host 1 formed first and, cut off, decided on host 0's starting slot; host 0 then formed on host 1's acks and armed, and was dropped (rule K for forming: no acker in a fault handler)",
        ),
        (
            150079909,
            "5 hosts: a member that joined listed two stuck joiners in its liveset; host 2 counted them in its partition by their last heartbeats and won, then the member rebooted and host 0 no longer counted them and won too (rules H and S: a member's claims outlive its restart while its slot counts; joiners count in no partition)",
        ),
        (
            160558320,
            "5 hosts: host 2 judged host 1 storage-lost in its snapshot and won outright without it; host 1, cut off and its storage back, found host 2's slot agreeing with it once host 2 stopped hearing it, and won the tie as a holder (rule V for published views: nothing the snapshot left out comes back until the round ends)",
        ),
        (
            200331720,
            "4 hosts: with the budget restarted per member and channel and again at phase 2, a round outlived a 9 s freeze of the lock holder, and the holder woke to its old grants while another host had taken the lock (both extensions withdrawn)",
        ),
        (
            190016080,
            "4 hosts: with holders meeting their sfdomains, host 2, alone across a split, took host 0 out because a peer's slot did not show it, won a tie its peers never saw, and was dropped while armed (the meet was withdrawn)",
        ),
        (
            190028636,
            "2 hosts: with rule 2 counting liveset members only, a lone member with slow statefile I/O survived beside the host it had dropped, acked its join, and both served as master (rule 2 asks all hosts again, as xhad)",
        ),
        (
            170162212,
            "3 hosts: host 0 formed, was cut off and decided on hosts 1 and 2's starting slots; 2 s later they formed on its last heartbeat, sent before its fault handler began, and armed (rule I: a host arms only once its arming slot landed and no acker shows a fault handler on a read after it)",
        ),
        (
            210066561,
            "5 hosts: the lock holder froze for 9.7 s while a host joined; it woke, completed a cycle 50 ms before its old slot aged out in the joiner's eyes, and held the lock by its old liveset beside the joiner, which took the lock when that slot aged out 350 ms later (rule M: a host's own slot counts for the lock only while every peer surely sees it fresh)",
        ),
        (
            240606376,
            "2 hosts: host 0 joined on host 1's heartbeat ack while host 1's slot writes took 18 s and still proposed it out; later both served as master (found by the engine of 66be378 on a fresh range; rule I's standing ack keeps the join from arming)",
        ),
        (
            240020372,
            "2 hosts: a joiner's intent landed late (slow statefile I/O) after its acker, cut off, had decided to drop it without seeing the intent; the joiner armed on the old ack (rule I: the ack must still stand in the acker's slot read after the intent landed)",
        ),
        (70100535, "found in the same fresh sweep"),
        (70105962, "found in the same fresh sweep"),
        (
            60319860,
            "a winner's kept partner left cleanly after its decision, and the other side won without it",
        ),
    ] {
        let r = schedule::run(seed, None, 300_000, false).expect("T_S is a valid lab timeout");
        assert_eq!(r.violation, None, "seed {seed} ({bug})");
    }
}

/// Seeds at XAPI's default timeout (`ha-sim --timeout 60 --seconds 900`)
/// that once broke a safety property, with what they found.
const SEEDS_AT_T_60: &[(u64, &str)] = &[(
    242512975,
    "2 hosts: host 0 froze 69 s just after host 1 acked its join; it woke to host 1's queued heartbeats, still acking and not in a fault handler, and armed, while host 1, cut off from it since, had dropped it (rule J: after a stall, acks count only from heartbeats sent after the wake)",
)];

#[test]
fn seeds_at_t_60_that_found_a_bug_stay_fixed() {
    let opts = schedule::Options {
        t_s: Some(60),
        ..schedule::Options::default()
    };
    for &(seed, bug) in SEEDS_AT_T_60 {
        let r = schedule::run_opts(seed, None, 900_000, opts, |_| {}).expect("60 s is a valid timeout");
        assert_eq!(r.violation, None, "seed {seed} ({bug})");
    }
}
