//! Taking, releasing and checking one VM's lease (`docs/LEASES.md`,
//! "Acquire v", "Release", and why a paused guest may resume), with the
//! rules of `ha_lease` and the files of [`super::files`].

use std::time::Duration;

use ha_lease::paxos::{Block, Next, Outcome, Owner, Round};
use ha_lease::vm::{self, LeaseRecord};
use rand::Rng;

use super::files::{self, BlockOnDisk, HostLease, Layout, OwnerFile, OwnerOnDisk};
use super::{LeaseError, Leases, View};

/// Every host's block and owner file of one VM, by HA index.
struct VmFiles {
    blocks: Vec<Option<Block>>,
    owners: Vec<Option<OwnerFile>>,
}

impl VmFiles {
    /// The owner files as `ha_lease` takes them: instance and owner.
    fn decided(&self, view: &View) -> Vec<Option<(u64, Owner)>> {
        self.owners
            .iter()
            .map(|f| {
                let f = f.as_ref()?;
                Some((f.instance, to_owner(view, &f.owner)?))
            })
            .collect()
    }
}

fn to_owner(view: &View, o: &OwnerOnDisk) -> Option<Owner> {
    Some(Owner {
        host: u16::try_from(view.index_of(&o.host)?).ok()?,
        boot: o.boot,
    })
}

fn on_disk(view: &View, o: Owner) -> OwnerOnDisk {
    OwnerOnDisk {
        host: view.hosts.get(usize::from(o.host)).cloned().unwrap_or_default(),
        boot: o.boot,
    }
}

fn to_block(view: &View, b: BlockOnDisk) -> Block {
    Block {
        instance: b.instance,
        mbal: b.mbal,
        bal: b.bal,
        // A value naming a host outside the configuration (it left the
        // pool, which it may only without guests) counts as none.
        value: b.value.and_then(|v| to_owner(view, &v)),
    }
}

fn block_on_disk(view: &View, b: Block) -> BlockOnDisk {
    BlockOnDisk {
        instance: b.instance,
        mbal: b.mbal,
        bal: b.bal,
        value: b.value.map(|v| on_disk(view, v)),
    }
}

fn fail(vm: &str, why: impl ToString) -> LeaseError {
    LeaseError::Failed {
        vm: vm.to_string(),
        why: why.to_string(),
    }
}

/// Read every host's block and owner file of `vm`, after writing `write`
/// (this host's block) when given: one batch within `io`.
async fn exchange(view: &View, vm: &str, write: Option<Block>) -> Result<VmFiles, LeaseError> {
    let (layout, hosts, me) = (view.layout.clone(), view.hosts.clone(), view.me);
    let write = write.map(|b| block_on_disk(view, b));
    let vm_owned = vm.to_string();
    let (blocks, owners) = files::with_limit(&view.gate, view.io(), move || {
        if let Some(b) = &write {
            files::write_json(&layout.block(&vm_owned, &hosts[me]), b)?;
        }
        let mut blocks = Vec::with_capacity(hosts.len());
        let mut owners = Vec::with_capacity(hosts.len());
        for h in &hosts {
            blocks.push(files::read_json::<BlockOnDisk>(&layout.block(&vm_owned, h))?);
            owners.push(files::read_json::<OwnerFile>(&layout.owner(&vm_owned, h))?);
        }
        Ok((blocks, owners))
    })
    .await
    .map_err(|e| fail(vm, e))?;
    Ok(VmFiles {
        blocks: blocks.into_iter().map(|b| b.map(|b| to_block(view, b))).collect(),
        owners,
    })
}

async fn write_owner(view: &View, vm: &str, file: OwnerFile) -> Result<(), LeaseError> {
    let path = view.layout.owner(vm, &view.hosts[view.me]);
    files::with_limit(&view.gate, view.io(), move || files::write_json(&path, &file))
        .await
        .map_err(|e| fail(vm, e))
}

async fn read_host_lease(view: &View, host: usize) -> Option<Option<LeaseRecord>> {
    let path = view.layout.host_lease(view.hosts.get(host)?);
    let rec = files::with_limit(&view.gate, view.io(), move || files::read_json::<HostLease>(&path))
        .await
        .ok()?;
    Some(rec.map(|r| LeaseRecord {
        boot: r.boot,
        counter: r.counter,
    }))
}

/// How a VM's current owner lets a taker in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Nobody ever held it, or this host did (in this boot or before).
    Free,
    /// Its owner marked it released at the instance it holds.
    Released,
    /// Its owner's boot is over or its host lease expired: the owner's
    /// lease file as judged, to read again after the decision.
    Taken(Option<LeaseRecord>),
}

/// How long [`acquire`] waits at most for an owner's host lease to expire
/// (L, a few renewals of the owner's that landed late, a read), in ms.
pub fn wait_bound(timing: &ha_lease::host::Timing) -> u64 {
    timing.l + 4 * timing.renew_every + timing.io
}

/// Take VM `vm`'s lease for this host: the instance it holds. Waits (up
/// to L and a little) for an owner's host lease to expire; fails at once
/// when another host wins the instance.
pub async fn acquire(leases: &Leases, vm: &str) -> Result<u64, LeaseError> {
    let Some(view) = leases.view() else {
        return Ok(0);
    };
    if let Some(k) = leases.owned(vm).filter(|&k| k > leases.spent(vm)) {
        return Ok(k);
    }
    let give_up = leases.now() + wait_bound(&view.timing);
    let pause = Duration::from_millis(view.timing.renew_every.max(50));
    loop {
        match attempt(leases, &view, vm).await {
            Ok(k) => return Ok(k),
            Err(Retry::Later(e)) if leases.now() < give_up => {
                tracing::debug!(vm, "lease not taken yet: {e}");
                let jitter = rand::rng().random_range(0..pause.as_millis() as u64 + 1);
                tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
            }
            Err(Retry::Later(e) | Retry::Never(e)) => return Err(e),
        }
    }
}

enum Retry {
    Later(LeaseError),
    Never(LeaseError),
}

async fn attempt(leases: &Leases, view: &View, vm: &str) -> Result<u64, Retry> {
    let me = view.me();
    let began = leases.now();
    if !leases.held_since(began) {
        // Not worth waiting for (the caller holds the pool's write lock):
        // the restart executor tries again.
        return Err(Retry::Never(fail(vm, "this host does not hold its own lease now")));
    }
    // Step 1: whose is it, and may this host take it?
    let files = exchange(view, vm, None).await.map_err(Retry::Later)?;
    let decided = files.decided(view);
    // An instance this host released is spent, even when the owner files
    // lag behind it (an owner-file write failed): running a guest under it
    // again would make this host's own released mark a lie (the lease
    // world, seed 3062093).
    let spent = leases.spent(vm);
    let current = match vm::owner_of(&decided) {
        Some((k, o)) if k >= spent => Some((k, o)),
        _ if spent > 0 => Some((spent, me)),
        none => none,
    };
    let seen = files.blocks.iter().flatten().map(|b| b.mbal).max().unwrap_or(0);
    leases.note_seen(vm, seen);
    let way = match current {
        None => Way::Free,
        Some((_, o)) if o.host == me.host => Way::Free,
        Some((k, o)) => {
            let released = files.owners[usize::from(o.host)]
                .as_ref()
                .is_some_and(|f| f.released && f.instance == k && to_owner(view, &f.owner) == Some(o));
            let (record, observer, fenced) = leases
                .judge(usize::from(o.host))
                .ok_or_else(|| Retry::Never(fail(vm, "leases are off")))?;
            // The owner's boot fenced after its guests were gone.
            let fenced = fenced && record.is_some_and(|r| r.boot == o.boot);
            if released {
                Way::Released
            } else if fenced || vm::may_take(o, record, &observer) {
                Way::Taken(record)
            } else {
                let busy = LeaseError::Busy {
                    vm: vm.to_string(),
                    owner: on_disk(view, o).host,
                };
                // Worth waiting for only when the owner has been silent
                // long enough that its lease is about to expire here (this
                // observer may lag another's by a renewal and a read). An
                // owner that renewed lately is alive: fail at once, and
                // the caller (who may hold the pool's write lock) retries
                // later.
                let t = view.timing;
                let near = t.l.saturating_sub(2 * t.renew_every + t.io);
                return Err(if observer.unchanged_for(leases.now()).is_some_and(|s| s >= near) {
                    Retry::Later(busy)
                } else {
                    Retry::Never(busy)
                });
            }
        }
    };
    let (k, from) = current.map_or((0, None), |(k, o)| (k, Some(o)));
    let Some(next) = k.checked_add(1) else {
        return Err(Retry::Never(fail(vm, "its lease files name an impossible instance")));
    };
    // Steps 2 and 3: Disk Paxos on instance k + 1 (`next`).
    let own = files.blocks[view.me].unwrap_or_default();
    let (mut round, mut step) = Round::start(view.me, view.hosts.len(), next, me, own, leases.seen(vm));
    let value = loop {
        match step {
            Next::Write(b) => {
                let files = exchange(view, vm, Some(b)).await.map_err(Retry::Later)?;
                step = round.on_read(&files.blocks);
            }
            Next::Done(Outcome::Decided(v)) => break v,
            Next::Done(Outcome::Aborted { seen, .. }) => {
                leases.note_seen(vm, seen);
                return Err(Retry::Later(fail(vm, "another host is taking it")));
            }
        }
    };
    // Step 4: the owner it was taken from must not have come back.
    if let (Way::Taken(judged), Some(o)) = (way, from) {
        let now = read_host_lease(view, usize::from(o.host))
            .await
            .ok_or_else(|| Retry::Later(fail(vm, "cannot read the old owner's host lease again")))?;
        let rebooted = now.is_some_and(|r| r.boot > o.boot);
        if !rebooted && now != judged {
            return Err(Retry::Later(fail(
                vm,
                "its owner's host lease moved: the owner is back",
            )));
        }
    }
    write_owner(
        view,
        vm,
        OwnerFile {
            instance: next,
            owner: on_disk(view, value),
            released: false,
        },
    )
    .await
    .map_err(Retry::Later)?;
    if value != me {
        return Err(Retry::Never(LeaseError::Lost {
            vm: vm.to_string(),
            owner: on_disk(view, value).host,
        }));
    }
    // This host's own lease must have held all along: in a lapse, another
    // host may have taken the VM from it, above the instance it decided
    // (the lease world, seed 5228502). The next attempt starts from itself.
    if !leases.held_since(began) {
        // Decided, recorded, and not to be run: let it go at once, so that
        // no taker waits for this host's lease.
        leases.set_owned(vm, Some(next));
        release(leases, vm).await;
        return Err(Retry::Later(fail(
            vm,
            "this host's own lease lapsed while it took the VM",
        )));
    }
    leases.set_owned(vm, Some(next));
    Ok(next)
}

/// Let VM `vm`'s lease go: its guest here has stopped. Nothing when this
/// host holds none.
pub async fn release(leases: &Leases, vm: &str) {
    let (Some(view), Some(k)) = (leases.view(), leases.owned(vm)) else {
        return;
    };
    // Spent at once (the guest is gone); held until the mark is written,
    // so that the lease keeper writes it again if this write fails.
    leases.note_spent(vm, k);
    if release_in(&view, vm, k).await {
        leases.set_owned(vm, None);
    }
}

/// Mark instance `k` of VM `vm` released in this host's owner file of
/// `view`'s SR: whether the mark was written.
pub async fn release_in(view: &View, vm: &str, k: u64) -> bool {
    let file = OwnerFile {
        instance: k,
        owner: on_disk(view, view.me()),
        released: true,
    };
    match write_owner(view, vm, file).await {
        Ok(()) => true,
        Err(e) => {
            // Not fatal: takers wait for this host's lease to expire meanwhile.
            tracing::warn!(vm, "cannot mark the lease released: {e}");
            false
        }
    }
}

/// May this host's paused guest of `vm` run again? Asked after a renewal
/// that counted was issued after the pause: no host may have begun a later
/// instance than the one held here. `None` when the files cannot be read.
pub async fn may_resume(leases: &Leases, vm: &str) -> Option<bool> {
    let view = leases.view()?;
    let Some(k) = leases.owned(vm) else {
        // Running without a lease (never taken): the caller takes one.
        return Some(true);
    };
    let files = exchange(&view, vm, None).await.ok()?;
    Some(vm::may_resume(k, &files.blocks, &files.decided(&view)))
}

/// The lease files of `layout` for the checkers and tests: every host's
/// owner file of `vm`, by host uuid.
pub fn owner_files(layout: &Layout, vm: &str, hosts: &[String]) -> Vec<(String, Option<OwnerFile>)> {
    hosts
        .iter()
        .map(|h| (h.clone(), files::read_json(&layout.owner(vm, h)).ok().flatten()))
        .collect()
}
