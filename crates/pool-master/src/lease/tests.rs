//! Leases between hosts of one process, on real files in a temporary
//! directory, with a short HA timeout (T = 400 ms: L = 400, D = 200,
//! io = 100, renewals every 40 ms).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::acquire::{acquire, may_resume, release};
use super::*;

const T: u64 = 400;

fn hosts() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

fn host(name: &str, dir: &Path) -> Arc<Leases> {
    let l = Arc::new(Leases::new(name, 1, Arc::new(Gate::open())));
    assert!(l.activate(7, &hosts(), T, dir));
    l
}

/// Renew and observe every 40 ms until `stop` is set.
fn keep(l: Arc<Leases>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let view = l.view().unwrap();
            renew_and_observe(&l, &view).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    })
}

/// Wait until `l` holds its own lease (a renewal counted), at most 5 s: a
/// fixed wait lost to a slow first renewal on a loaded machine (one in
/// two runs of this file alone, before and after the I/O gate).
async fn until_held(l: &Leases) {
    let start = Instant::now();
    while !l.held_since(l.now()) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no renewal of the host lease counted in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn the_gate_shuts_at_the_deadline_and_stays_shut_until_unpaused() {
    let l = Leases::new("a", 3, Arc::new(Gate::open()));
    assert!(l.gate().is_ok(), "no leases, no gate");
    assert!(l.activate(1, &hosts(), 60_000, Path::new("/nonexistent")));
    assert!(l.gate().is_ok(), "D to renew after leases come on");
    let now = l.now();
    assert!(l.renewed(now, now + 5, true));
    assert_eq!(l.deadline(), Some(now + 30_000));
    // A renewal that took longer than io does not count.
    assert!(!l.renewed(now + 10, now + 10 + 15_001, true));
    assert_eq!(l.deadline(), Some(now + 30_000));

    // A short timeout (D = 20 ms), and no renewal: the gate shuts.
    let l = Leases::new("a", 3, Arc::new(Gate::open()));
    assert!(l.activate(1, &hosts(), 40, Path::new("/nonexistent")));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(l.gate(), Err(PAUSED));
    let now = l.now();
    assert!(l.renewed(now, now + 1, true));
    assert_eq!(l.gate(), Err(PAUSED), "paused until the resume check");
    assert!(l.renewed_since(l.paused_since().unwrap()));
    l.unpause();
    assert!(l.gate().is_ok());
}

#[test]
fn a_host_outside_the_configuration_has_no_leases() {
    let l = Leases::new("c", 1, Arc::new(Gate::open()));
    assert!(!l.activate(1, &hosts(), 10_000, Path::new("/x")));
    assert!(!l.active());
    assert!(l.activate(1, &["c".to_string()], 10_000, Path::new("/x")));
    assert_eq!(l.view().unwrap().me, 0);
    assert!(l.deactivate().is_empty());
    assert!(!l.active());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_moves_only_when_released_or_when_its_owners_host_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (host("a", dir.path()), host("b", dir.path()));
    let (stop_a, stop_b) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let keep_a = keep(a.clone(), stop_a.clone());
    let _keep_b = keep(b.clone(), stop_b.clone());
    until_held(&a).await;
    until_held(&b).await;

    assert_eq!(acquire(&a, "vm").await.unwrap(), 1);
    // While a renews, b gives up at once: a is alive (no waiting while
    // the caller may hold the pool's write lock).
    let asked = Instant::now();
    let e = acquire(&b, "vm").await.unwrap_err();
    assert!(matches!(e, LeaseError::Busy { ref owner, .. } if owner == "a"), "{e}");
    assert!(asked.elapsed() < Duration::from_millis(T / 2), "{:?}", asked.elapsed());

    // a stops renewing (it died): b, trying again as the restart executor
    // does, takes the VM once a's lease expired, no sooner than L after
    // a's last renewal (the last tries wait for the expiry, which is near).
    stop_a.store(true, Ordering::SeqCst);
    keep_a.await.unwrap();
    let died = Instant::now();
    let taken = loop {
        match acquire(&b, "vm").await {
            Ok(k) => break k,
            Err(LeaseError::Busy { .. }) if died.elapsed() < Duration::from_millis(3 * T) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(taken, 2);
    assert!(died.elapsed() >= Duration::from_millis(T - 60), "{:?}", died.elapsed());
    let owners = acquire::owner_files(&b.view().unwrap().layout, "vm", &hosts());
    assert_eq!(
        owners[1].1.as_ref().map(|f| (f.instance, f.owner.host.as_str())),
        Some((2, "b"))
    );

    // a's guest, paused meanwhile, may not run again.
    assert_eq!(may_resume(&a, "vm").await, Some(false));
    release(&a, "vm").await;
    assert_eq!(may_resume(&b, "vm").await, Some(true));

    // b lets the VM go: a, renewing again, takes it at once (b still
    // renews: no waiting for its lease).
    release(&b, "vm").await;
    let stop_a = Arc::new(AtomicBool::new(false));
    let _keep_a = keep(a.clone(), stop_a.clone());
    until_held(&a).await;
    let t0 = Instant::now();
    assert_eq!(acquire(&a, "vm").await.unwrap(), 3);
    assert!(t0.elapsed() < Duration::from_millis(T), "{:?}", t0.elapsed());
    stop_b.store(true, Ordering::SeqCst);
    stop_a.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_own_lease_lapsed_takes_nothing_until_it_holds_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let a = host("a", dir.path());
    // No renewal yet: a does not hold its lease.
    assert!(acquire(&a, "vm").await.is_err());
    let stop = Arc::new(AtomicBool::new(false));
    let _ka = keep(a.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        acquire(&a, "vm").await.unwrap(),
        1,
        "nothing was decided while a held no lease"
    );
    stop.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_hosts_taking_one_free_vm_at_once_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (host("a", dir.path()), host("b", dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let _ka = keep(a.clone(), stop.clone());
    let _kb = keep(b.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for round in 0..10 {
        let vm = format!("vm-{round}");
        let (ra, rb) = tokio::join!(acquire(&a, &vm), acquire(&b, &vm));
        let won: Vec<&str> = [("a", &ra), ("b", &rb)]
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(h, _)| *h)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {ra:?} {rb:?}");
        let winner = won[0];
        let owners = acquire::owner_files(&a.view().unwrap().layout, &vm, &hosts());
        for (_, f) in owners.iter().filter_map(|(h, f)| Some((h, f.as_ref()?))) {
            assert_eq!(f.owner.host, winner, "round {round}: an owner file names the loser");
        }
    }
    stop.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_released_here_is_never_held_again_though_the_owner_files_lag() {
    let dir = tempfile::tempdir().unwrap();
    let a = host("a", dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let _ka = keep(a.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(acquire(&a, "vm").await.unwrap(), 1);
    release(&a, "vm").await;
    // The owner file is gone, as if its writes had failed: only the
    // blocks say instance 1 was decided for a.
    let layout = a.view().unwrap().layout;
    std::fs::remove_file(layout.owner("vm", "a")).unwrap();
    // Taking the VM again must not decide instance 1 again (a taker that
    // read a's released mark may hold instance 2 by now).
    assert_eq!(acquire(&a, "vm").await.unwrap(), 2);
    stop.store(true, Ordering::SeqCst);
}

#[test]
fn a_busy_lease_says_the_words_the_master_looks_for() {
    let e = LeaseError::Busy {
        vm: "v".into(),
        owner: "h".into(),
    };
    assert!(e.to_string().contains(crate::lease::BUSY), "{e}");
}
