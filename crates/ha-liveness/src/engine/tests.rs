//! Rule I (intent) on one engine driven by hand: host 0 of a 2-host pool,
//! with the statefile and host 1 played by the test. Both halves of the
//! rule are checked at the moment that matters, which random schedules
//! reach only rarely (ha-sim 170162212 found the race once in 690,000).

use super::*;

const T_S: u64 = 10;

/// Host 0's engine, the shared statefile, and what host 1 says.
struct Rig {
    e: Engine,
    now: Millis,
    global: Global,
    /// Host 0's slot as last written (the statefile's copy).
    mine: Option<Slot>,
    /// Host 1's slot: the test edits it; its sequence grows every cycle,
    /// as a live writer's does.
    peer_slot: Slot,
    /// Host 1's heartbeat view, sent every interval while `Some`.
    peer_view: Option<View>,
    /// A statefile cycle in flight, and when its write lands.
    cycle: Option<Slot>,
    lands_at: Millis,
    /// How long a cycle takes.
    latency: Millis,
    hb_seq: u64,
    next_hb: Millis,
    logs: Vec<String>,
    armed: bool,
    fenced: bool,
}

impl Rig {
    fn new() -> Rig {
        let timeouts = Timeouts::derive(T_S, false).expect("a valid timeout");
        let hosts = vec!["a".to_string(), "b".to_string()];
        let cfg = Config::new(hosts, 0, timeouts, 7, 1);
        let peer_slot = Slot {
            sequence: 1,
            index: 1,
            boot: 1,
            member_boots: [0; MAX_HOSTS],
            excluded: false,
            starting: true,
            arming: false,
            // A forming host's slot shows the views its heartbeats carry.
            view: Rig::forming_peer(),
            lock_request: false,
            lock_grant: HostSet::EMPTY,
            weight: 0,
            tie: TieBreak::default(),
        };
        let mut rig = Rig {
            e: Engine::new(cfg),
            now: 0,
            global: Global {
                pool_state: PoolState::Active,
                generation: 7,
                master: None,
            },
            mine: None,
            peer_slot,
            peer_view: None,
            cycle: None,
            lands_at: 0,
            latency: 50,
            hb_seq: 0,
            next_hb: 0,
            logs: Vec::new(),
            armed: false,
            fenced: false,
        };
        let out = rig.e.start(0);
        rig.take(out);
        rig
    }

    fn take(&mut self, cmds: Vec<Command>) {
        for c in cmds {
            match c {
                Command::StatefileCycle { slot, global } => {
                    if let Some(g) = global {
                        self.global = g;
                    }
                    self.cycle = Some(slot);
                    self.lands_at = self.now + self.latency;
                }
                Command::Arm => self.armed = true,
                Command::Disarm => self.armed = false,
                Command::Fence(_) => self.fenced = true,
                Command::Log(line) => self.logs.push(line),
                _ => {}
            }
        }
    }

    /// Host 1 as a forming host that proposes the liveset {0,1}.
    fn forming_peer() -> View {
        View {
            current: HostSet::EMPTY,
            proposed: HostSet::first(2),
            hbdomain: HostSet::first(2),
            sfdomain: HostSet::first(2),
            phase: Phase::Starting,
        }
    }

    /// Advance 50 ms: land the cycle in flight when due (host 1 writes
    /// too), send host 1's heartbeat when due, tick.
    fn step(&mut self) {
        self.now += 50;
        if self.now < self.lands_at {
            // still in flight
        } else if let Some(slot) = self.cycle.take() {
            self.mine = Some(slot);
            self.peer_slot.sequence += 1;
            let read = StatefileRead {
                global: Some(self.global),
                slots: vec![SlotRead::Valid(slot), SlotRead::Valid(self.peer_slot)],
            };
            let out = self.e.handle(self.now, Event::Statefile(Ok(read)));
            self.take(out);
        }
        if let Some(view) = self.peer_view {
            if self.now >= self.next_hb {
                self.next_hb = self.now + 1000;
                self.hb_seq += 1;
                let hb = Heartbeat {
                    generation: 7,
                    from: 1,
                    boot: 1,
                    sequence: self.hb_seq,
                    view,
                    sf_access: true,
                    sf_corrupted: false,
                    fence_request: false,
                    sr2: false,
                    joining: view.current.is_empty(),
                    tie: TieBreak::default(),
                };
                let out = self.e.handle(self.now, Event::Heartbeat(hb));
                self.take(out);
            }
        }
        let out = self.e.handle(self.now, Event::Tick);
        self.take(out);
    }

    /// Step until `done` holds, for at most `ms`; false if it never did.
    fn until(&mut self, ms: Millis, done: impl Fn(&Rig) -> bool) -> bool {
        let end = self.now + ms;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    fn logged(&self, part: &str) -> bool {
        self.logs.iter().any(|l| l.contains(part))
    }

    /// A cycle carrying host 0's `arming` mark is in flight, not landed.
    fn intent_in_flight(&self) -> bool {
        self.cycle.is_some_and(|s| s.arming)
    }

    /// Host 0 with every ack of a forming host 1, its arming mark written
    /// and not yet landed.
    fn marking() -> Rig {
        let mut rig = Rig::new();
        rig.peer_view = Some(Rig::forming_peer());
        assert!(
            rig.until(30_000, |r| r.intent_in_flight()),
            "no arming mark: {:#?}",
            rig.logs
        );
        rig
    }

    /// Host 0 forms {0,1} with a forming host 1 and arms.
    fn formed() -> Rig {
        let mut rig = Rig::new();
        rig.peer_view = Some(Rig::forming_peer());
        assert!(rig.until(30_000, |r| r.armed), "host 0 never formed: {:#?}", rig.logs);
        assert_eq!(rig.e.liveset(), HostSet::first(2));
        rig
    }
}

#[test]
fn a_starting_host_arms_only_after_its_mark_landed() {
    let mut rig = Rig::marking();
    assert!(!rig.armed, "armed before the mark was written");
    assert!(rig.until(5_000, |r| r.armed), "never armed: {:#?}", rig.logs);
    assert!(
        rig.mine.is_some_and(|s| s.arming),
        "armed on a read that did not show the mark"
    );
}

#[test]
fn a_starting_host_does_not_arm_when_an_acker_shows_a_fault_handler_after_its_mark() {
    let mut rig = Rig::marking();
    // Host 1 formed and began a fault handler; its heartbeat that says so
    // has not arrived, the last one heard still acks the form.
    rig.peer_slot.starting = false;
    rig.peer_slot.view.current = HostSet::first(2);
    rig.peer_slot.view.proposed = HostSet::single(1);
    rig.peer_slot.view.phase = Phase::Fh1;
    rig.until(3_000, |r| r.armed);
    assert!(!rig.armed, "armed although host 1's slot showed its fault handler");
    assert!(rig.logged("not arming: hosts {1}"), "{:#?}", rig.logs);
    assert!(
        !rig.mine.is_some_and(|s| s.arming),
        "the mark stays up: host 1 would wait on it"
    );
    // Not again on the same acks while the round shows.
    rig.until(3_000, |r| r.armed || r.intent_in_flight());
    assert!(
        !rig.armed && !rig.intent_in_flight(),
        "armed again while host 1's round showed"
    );
}

#[test]
fn a_starting_host_does_not_arm_on_an_ack_its_ackers_slot_withdrew() {
    let mut rig = Rig::marking();
    // Host 1 took host 0 in, was cut off, and its fault handler ended
    // before host 0's mark landed: it decided to drop host 0 without
    // seeing the mark (ha-sim 240020372). Its last heartbeat still acks.
    rig.peer_slot.starting = false;
    rig.peer_slot.view.current = HostSet::first(2);
    rig.peer_slot.view.proposed = HostSet::single(1);
    rig.peer_slot.view.phase = Phase::Started;
    rig.until(3_000, |r| r.armed);
    assert!(
        !rig.armed,
        "armed on an ack host 1's slot had withdrawn: {:#?}",
        rig.logs
    );
    // Host 1 acks again (it took host 0 back in): host 0 arms.
    rig.peer_slot.view.proposed = HostSet::first(2);
    assert!(rig.until(3_000, |r| r.armed), "never armed: {:#?}", rig.logs);
}

#[test]
fn a_fault_handler_waits_while_a_starting_members_slot_says_arming() {
    let mut rig = Rig::formed();
    // Host 1 is cut off and still starting, about to arm on host 0's last
    // ack: host 0 must not count it a joiner and decide.
    rig.peer_view = None;
    rig.peer_slot.arming = true;
    assert!(
        rig.until(15_000, |r| r.logged("fault handler starts")),
        "no fault handler: {:#?}",
        rig.logs
    );
    rig.until(4_000, |r| r.logged("FH3"));
    assert!(!rig.logged("FH3"), "decided on an arming slot: {:#?}", rig.logs);
    // It gave up: host 0 decides, and drops it as the joiner it is.
    rig.peer_slot.arming = false;
    assert!(rig.until(6_000, |r| r.logged("FH3")), "never decided: {:#?}", rig.logs);
    assert!(rig.logged("host 1 will be removed"), "{:#?}", rig.logs);
    assert!(!rig.fenced);
}

#[test]
fn a_fault_handler_counts_a_joiner_only_on_a_slot_read_after_its_round_landed() {
    let mut rig = Rig::formed();
    rig.peer_view = None;
    // Slow statefile I/O (well within T2): the round's first slot lands
    // 3 s after the round began.
    rig.latency = 3_000;
    assert!(
        rig.until(15_000, |r| r.logged("fault handler starts")),
        "no fault handler: {:#?}",
        rig.logs
    );
    // Host 1 marks that it is arming while host 0's round is not yet on
    // the statefile: it will read host 0's slot before that lands, see no
    // fault handler, and arm. A snapshot taken on the reads before the
    // round landed would count it a joiner and drop it.
    assert!(!rig.mine.is_some_and(|s| s.view.phase.in_fault_handler()));
    rig.peer_slot.arming = true;
    rig.until(6_000, |r| r.logged("FH3"));
    assert!(
        !rig.logged("FH3"),
        "decided on a slot read before its round landed: {:#?}",
        rig.logs
    );
    rig.peer_slot.arming = false;
    assert!(rig.until(9_000, |r| r.logged("FH3")), "never decided: {:#?}", rig.logs);
}
