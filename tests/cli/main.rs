//! Black-box tests: real `xapid` processes (a lab pool) driven by the real
//! `xe` binary, as an admin would.

#![allow(clippy::unwrap_used)]

// The harness: start a lab pool, run xe against it, stop it.
mod util;

// Bringing up a pool; hosts, SRs, VMs as xe lists them.
mod lab;
// VM lifecycle: start on a host, guest writes, live migration, shutdown.
mod lifecycle;
// Real VMs: QEMU guests fail over, die with their host, migrate live.
mod qemu;
// Bad input and failures: the exact messages and exit codes.
mod errors;
// Durability: settings survive restarts; a killed member keeps a sound replica.
mod durability;
// xe help, record for record against XAPI's command table.
mod help;
// xe for scripts: --format, param-add/-remove/-clear, bad input, ignored parameters.
mod scripting;
// Shell completion in real bash, zsh and fish, with live values.
mod completion;
// xe on a real terminal: the evacuation progress bar, the protected-shutdown question.
mod terminal;
// HA capacity: failures to tolerate, What-If, failover plan, agility.
mod planning;
// HA runtime: enable/disable, cable pulls, fencing, election (T = 5 s).
mod ha;
// Hostile input: replayed heartbeats.
mod hostile;
// The clients admins already use: the official XenAPI Python package over XML-RPC.
mod clients;
// xe over HTTPS: pinned certificates, trust on first use at a terminal.
mod tls;
// The restart executor: protected VMs back after cable pulls, order groups, guest halts.
mod failover;
// A fault of one host never fences a healthy one: a second failure, short stalls.
mod availability;
// VM leases: the lease follows a protected VM; a live owner keeps it.
mod leases;
// Recovery by hand with HA off: vm-reset-powerstate, host-declare-dead.
mod recovery;
// Chaos: a seeded fault schedule on a lab pool, and the split-brain checker.
mod chaos;
// Pool membership: the checks a join must pass.
mod membership;
// Alerts by mail and webhook on a power pull; the audit log.
mod alerts;
// xe pool-ha-status --watch: redrawn on changes, stopped by Ctrl-C.
mod watch;
// Running as a system service: the systemd unit, readiness by sd_notify.
mod service;
// The Debian packages and the manual pages (issue 21).
mod package;
// docs/deploy.md, run as written on three hosts (issue 21).
mod deploy;
// The installed packages on three hosts in network namespaces: a cable pull (issue 21).
mod deb_netns;
// The pool secret: its own file, moved out of an older database.
mod secrets;
// Moving the master role by hand: pool-designate-new-master, with HA off and on.
mod handover;
