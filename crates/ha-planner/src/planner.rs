//! The planner's public questions: how many failures the pool tolerates,
//! whether a plan exists for `r`, and where VMs restart after failures.

use std::fmt;
use std::str::FromStr;

use crate::bounds::{certify, refute, Certificate};
use crate::exact::{Outcome, Search};
use crate::model::{PlanError, Pool, Reason};
use crate::pack::{greedy, Rule};
use crate::policy::{self, Variant};
use crate::problem::{bit, Problem, State};
use crate::xapi;

/// How the planner answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The true answer, proven; a sound lower bound when the search budget
    /// runs out (never below the `xapi` answer).
    #[default]
    Exact,
    /// XAPI's own algorithm, kept as the reference.
    Xapi,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exact" => Ok(Mode::Exact),
            "xapi" => Ok(Mode::Xapi),
            other => Err(format!("unknown planner mode '{other}' (expected exact or xapi)")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Exact => "exact",
            Mode::Xapi => "xapi",
        })
    }
}

/// Search steps allowed per question by default: enough for exact answers
/// on pools of XenServer's size with typical VM mixes, and a few hundred
/// milliseconds at worst.
pub const DEFAULT_BUDGET: u64 = 2_000;

/// A failure set no plan survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// The hosts that fail, in order.
    pub failed_hosts: Vec<String>,
    /// Protected VMs that are then left without a host.
    pub unplaced_vms: Vec<String>,
}

/// How much an answer is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The true maximum.
    Exact,
    /// The search budget ran out: the true maximum is at least the answer
    /// and at most `at_most`.
    LowerBound { at_most: u32 },
    /// XAPI's algorithm: a safe answer, not claimed to be the maximum.
    Reference,
}

/// What proved the number of failures a [`Tolerance`] reports (the lower
/// bound; the upper bound is the witness, or `at_most`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenBy {
    /// Nothing: not even the VMs running now can all be placed.
    Nothing,
    /// A closed-form sufficient condition.
    Certificate(Certificate),
    /// The game search, finished within its budget.
    Search,
    /// XAPI's planner (a verified plan) when the search ran out of budget.
    Xapi,
}

impl ProvenBy {
    /// A short name for explanations and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ProvenBy::Nothing => "nothing",
            ProvenBy::Certificate(c) => c.name(),
            ProvenBy::Search => "search",
            ProvenBy::Xapi => "xapi",
        }
    }
}

/// The answer to "how many host failures can this pool tolerate?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tolerance {
    /// The number of host failures every protected VM survives (0 also
    /// when no plan exists even without failures).
    pub failures: u32,
    pub proof: Proof,
    /// What proved `failures` (exact mode; `Nothing` in XAPI's mode, whose
    /// answer is its own).
    pub proven_by: ProvenBy,
    /// Every protected VM can run now (a plan for 0 failures exists).
    pub restartable_now: bool,
    /// Why one more failure is too many (exact mode, when proven).
    pub witness: Option<Witness>,
}

/// The answer to "does a plan exist for `r` failures?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Exists,
    NoPlan(Option<Witness>),
    /// The search budget ran out before a plan was proven.
    Unknown,
}

impl Verdict {
    /// A plan is proven to exist.
    pub fn exists(&self) -> bool {
        matches!(self, Verdict::Exists)
    }
}

/// Where one VM goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Host(String),
    Unplaced(Reason),
}

/// Where the VMs of failed hosts (and protected VMs already down) restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPlan {
    /// Every VM that needs a host, by uuid.
    pub placements: Vec<(String, Placement)>,
    /// How many further failures the pool still tolerates after this plan,
    /// as proven while choosing it (exact mode; at most the number asked for).
    pub tolerates_after: Option<u32>,
}

/// The failover planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planner {
    pub mode: Mode,
    /// Search steps per question (exact mode).
    pub budget: u64,
}

impl Default for Planner {
    fn default() -> Self {
        Planner {
            mode: Mode::Exact,
            budget: DEFAULT_BUDGET,
        }
    }
}

impl Planner {
    pub fn new(mode: Mode) -> Self {
        Planner {
            mode,
            ..Planner::default()
        }
    }

    /// The most host failures after which every protected VM can still be
    /// restarted.
    pub fn max_host_failures_to_tolerate(&self, pool: &Pool) -> Result<Tolerance, PlanError> {
        let (p, st, down) = Problem::compile(pool)?;
        Ok(match self.mode {
            Mode::Xapi => Tolerance {
                failures: xapi::max_failures(&p, &st, &down),
                proof: Proof::Reference,
                proven_by: ProvenBy::Nothing,
                restartable_now: xapi::plan_status(&p, &st, &down, 0) == xapi::Status::AllVms,
                witness: None,
            },
            Mode::Exact => self.exact_tolerance(&p, &st, &down),
        })
    }

    fn exact_tolerance(&self, p: &Problem, st: &State, down: &[u32]) -> Tolerance {
        let alive = st.alive_count();
        let mut search = Search::new(p, self.budget);
        let mut lower: Option<u32> = None;
        let mut proven_by = ProvenBy::Nothing;
        let mut witness = None;
        let mut upper = alive;
        let mut exact = true;
        for k in 0..=alive {
            if let Some(f) = refute(p, st, down, k) {
                witness = Some(search.witness(st, down, &f));
                upper = k.saturating_sub(1);
                break;
            }
            if let Some(c) = certify(p, st, down, k) {
                lower = Some(k);
                proven_by = ProvenBy::Certificate(c);
                continue;
            }
            match search.place_then_win(st, down, k).0 {
                Outcome::Yes => {
                    lower = Some(k);
                    proven_by = ProvenBy::Search;
                }
                Outcome::No(w) => {
                    witness = Some(w);
                    upper = k.saturating_sub(1);
                    break;
                }
                Outcome::Unknown => {
                    // The first k the refutations allow is the upper bound.
                    upper = (k..=alive)
                        .take_while(|&j| refute(p, st, down, j).is_none())
                        .last()
                        .unwrap_or(k);
                    exact = false;
                    break;
                }
            }
        }
        let restartable_now = lower.is_some();
        let mut failures = lower.unwrap_or(0);
        if !exact {
            // XAPI's answer is a proven plan too (a verified or provably
            // safe strategy); never report less.
            let reference = xapi::max_failures(p, st, down);
            if reference > failures && xapi::plan_status(p, st, down, reference as usize) == xapi::Status::AllVms {
                failures = reference.min(upper);
                proven_by = ProvenBy::Xapi;
            }
            exact = failures == upper;
        }
        Tolerance {
            failures,
            proof: if exact {
                Proof::Exact
            } else {
                Proof::LowerBound { at_most: upper }
            },
            proven_by,
            restartable_now,
            witness: witness.filter(|_| exact).map(|w| self.named(p, w)),
        }
    }

    /// Does a plan exist for `r` host failures?
    pub fn plan_exists(&self, pool: &Pool, r: u32) -> Result<Verdict, PlanError> {
        let (p, st, down) = Problem::compile(pool)?;
        let xapi_says = || xapi::plan_status(&p, &st, &down, r as usize) == xapi::Status::AllVms;
        if self.mode == Mode::Xapi {
            return Ok(if xapi_says() {
                Verdict::Exists
            } else {
                Verdict::NoPlan(None)
            });
        }
        let mut search = Search::new(&p, self.budget);
        if let Some(f) = refute(&p, &st, &down, r) {
            return Ok(Verdict::NoPlan(Some(self.named(&p, search.witness(&st, &down, &f)))));
        }
        if certify(&p, &st, &down, r).is_some() {
            return Ok(Verdict::Exists);
        }
        Ok(match search.place_then_win(&st, &down, r).0 {
            Outcome::Yes => Verdict::Exists,
            Outcome::No(w) => Verdict::NoPlan(Some(self.named(&p, w))),
            Outcome::Unknown if xapi_says() => Verdict::Exists,
            Outcome::Unknown => Verdict::Unknown,
        })
    }

    /// Where to restart the protected VMs of `failed_hosts` (and any already
    /// down), choosing a placement that keeps a plan for `keep` further
    /// failures when one exists, else for as many as possible.
    pub fn restart_plan(&self, pool: &Pool, failed_hosts: &[String], keep: u32) -> Result<RestartPlan, PlanError> {
        let (p, mut st, mut batch) = Problem::compile(pool)?;
        let before = st.clone();
        let down = batch.clone();
        let mut failed = Vec::new();
        for uuid in failed_hosts {
            let h = p.host_index(uuid).ok_or_else(|| PlanError::UnknownHost(uuid.clone()))?;
            if st.alive & bit(h) != 0 {
                batch.extend(st.fail(h));
                failed.push(h);
            }
        }
        batch.sort_unstable();
        let (plan, tolerates_after) = match self.mode {
            Mode::Xapi => (xapi::restart_plan(&p, &st, &batch), None),
            Mode::Exact => {
                // The pool does what was proven: when the restart policy's
                // certificate covers the state before these failures, its
                // placement keeps the rest of what it proved.
                let by_policy = policy::max_certified(&p, &before, &down, before.alive_count(), Variant::Sound)
                    .filter(|&(k, _)| k as usize >= failed.len())
                    .and_then(|(k, proof)| {
                        let plan = policy::replay(&p, &before, &down, &failed, proof.big_above)?;
                        Some((plan, (k - failed.len() as u32).min(keep)))
                    });
                let floor = by_policy.as_ref().map_or(0, |&(_, k)| k + 1);
                let mut search = Search::new(&p, self.budget);
                let proven = (floor..=keep)
                    .rev()
                    .find_map(|k| match search.place_then_win(&st, &batch, k) {
                        (Outcome::Yes, Some(plan)) => Some((plan, k)),
                        _ => None,
                    })
                    .or(by_policy);
                match proven {
                    Some((plan, k)) => (plan, Some(k)),
                    None => {
                        // No full placement proven: place as many as we can.
                        let candidates = [
                            greedy(&p, &st, &batch, Rule::MostFree).0,
                            greedy(&p, &st, &batch, Rule::LeastFree).0,
                            xapi::restart_plan(&p, &st, &batch),
                        ];
                        let best = candidates.into_iter().max_by_key(|c| c.len()).unwrap_or_default();
                        (best, None)
                    }
                }
            }
        };
        let mut after = st.clone();
        for &(vm, h) in &plan {
            after.place(&p, vm, h);
        }
        let placements = batch
            .iter()
            .map(|&vm| {
                let placed = plan.iter().find(|(v, _)| *v == vm).map(|&(_, h)| h);
                let placement = match placed {
                    Some(h) => Placement::Host(p.host_uuid[h].clone()),
                    None if self.mode == Mode::Xapi && !p.agile(vm) => Placement::Unplaced(Reason::NotAgile),
                    None => Placement::Unplaced(p.reason(&after, vm)),
                };
                (p.vm_uuid[vm as usize].clone(), placement)
            })
            .collect();
        Ok(RestartPlan {
            placements,
            tolerates_after,
        })
    }

    pub(crate) fn named(&self, p: &Problem, w: crate::exact::Witness) -> Witness {
        Witness {
            failed_hosts: w.failed.iter().map(|&h| p.host_uuid[h].clone()).collect(),
            unplaced_vms: w.unplaced.iter().map(|&v| p.vm_uuid[v as usize].clone()).collect(),
        }
    }
}

/// What the restart policy's certificate alone proves about a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyCertificate {
    /// Every sequence of this many failures is survived by the policy.
    pub failures: u32,
    /// [`Certificate::Fluid`] or [`Certificate::Hole`].
    pub certificate: Certificate,
    /// The policy's threshold: VMs larger than this are big (each goes to
    /// the host without a big VM that has the most free memory; the others
    /// onto the host that took their batch's big VM, else onto a host
    /// carrying one, else by best fit; `policy.rs` has the details).
    pub big_above: i64,
}

/// The most failures the restart policy's certificate alone proves
/// (`policy.rs`), with the policy's threshold; `None` when it does not even
/// prove that the VMs place now. No search: the tests replay the policy
/// against this answer.
pub fn policy_certificate(pool: &Pool) -> Result<Option<PolicyCertificate>, PlanError> {
    policy_max(pool, Variant::Sound)
}

/// As [`policy_certificate`] with the hole condition H_j dropped: a
/// deliberately unsound certificate, for the tests to show they catch it.
#[doc(hidden)]
pub fn policy_certificate_without_holes(pool: &Pool) -> Result<Option<PolicyCertificate>, PlanError> {
    policy_max(pool, Variant::WithoutHoles)
}

fn policy_max(pool: &Pool, variant: Variant) -> Result<Option<PolicyCertificate>, PlanError> {
    let (p, st, down) = Problem::compile(pool)?;
    Ok(
        policy::max_certified(&p, &st, &down, st.alive_count(), variant).map(|(failures, proof)| PolicyCertificate {
            failures,
            certificate: proof.kind.into(),
            big_above: proof.big_above,
        }),
    )
}

/// [`Planner::max_host_failures_to_tolerate`] in exact mode.
pub fn max_host_failures_to_tolerate(pool: &Pool) -> Result<Tolerance, PlanError> {
    Planner::default().max_host_failures_to_tolerate(pool)
}

/// [`Planner::plan_exists`] in exact mode.
pub fn plan_exists(pool: &Pool, r: u32) -> Result<Verdict, PlanError> {
    Planner::default().plan_exists(pool, r)
}

/// [`Planner::restart_plan`] in exact mode, keeping a plan for no further
/// failures.
pub fn restart_plan(pool: &Pool, failed_hosts: &[String]) -> Result<RestartPlan, PlanError> {
    Planner::default().restart_plan(pool, failed_hosts, 0)
}
