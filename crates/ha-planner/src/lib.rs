//! The HA failover planner: how many host failures a pool tolerates, and
//! where each protected VM restarts.
//!
//! Pure by design: no I/O, no clock, no async runtime, deterministic. The
//! pool master describes hosts and protected VMs ([`Pool`]) and acts on the
//! answers of a [`Planner`]:
//! - [`Planner::max_host_failures_to_tolerate`], with a witness for one
//!   failure more;
//! - [`Planner::plan_exists`] for a given number of failures (the
//!   overcommit check);
//! - [`Planner::restart_plan`] for a set of failed hosts.
//!
//! Two modes: `exact` (the default) searches the failure game and proves
//! its answers; `xapi` re-implements XAPI's binpack as the reference.
//!
//! Layout: `model` (input), `problem` (dense form and state), `pack`
//! (greedy placement and the search budget), `bounds` (cheap necessary and
//! sufficient conditions), `incremental` (the overcommit check on a
//! pool compiled once, changes applied as deltas), `policy` (a fixed restart policy and its
//! closed-form certificate), `exact` (the game search), `xapi` (the
//! reference), `planner` (the public questions).

mod bounds;
mod exact;
mod incremental;
mod model;
mod pack;
mod planner;
mod policy;
mod problem;
mod xapi;

pub use bounds::Certificate;
pub use incremental::{apply as apply_deltas, Check, Compiled, Delta, SEARCH_AT_MOST_VMS};
pub use model::{human, Host, PlanError, Pool, Reason, Resource, Vm, MAX_HOSTS, MAX_TOTAL_MEMORY};
pub use planner::{
    max_host_failures_to_tolerate, plan_exists, policy_certificate, policy_certificate_without_holes, restart_plan,
    Mode, Placement, Planner, PolicyCertificate, Proof, ProvenBy, RestartPlan, Tolerance, Verdict, Witness,
    DEFAULT_BUDGET,
};
