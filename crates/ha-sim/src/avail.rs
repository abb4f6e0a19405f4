//! The availability report: the oracle's verdicts counted over seeds.
//!
//! [`assess`] judges one run's fences (`oracle::judge_all`); reports add up
//! with [`AvailReport::add`], and [`AvailReport::tables`] prints them.

use std::collections::BTreeMap;
use std::fmt::Write;

use ha_liveness::{Millis, Timeouts};

use crate::oracle::{judge_all, Class, Windows};
use crate::single::SingleFault;
use crate::truth::Recorder;

/// One row of the single-fault table: runs with that fault kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SingleRow {
    pub seeds: usize,
    /// Seeds where a host other than the faulty one fenced.
    pub seeds_other_fenced: usize,
    /// Fences of the faulty host.
    pub own_fences: usize,
    /// Fences of the other hosts.
    pub other_fences: usize,
    /// Of those, the ones the oracle calls unnecessary.
    pub other_unnecessary: usize,
}

impl SingleRow {
    fn add(&mut self, o: &SingleRow) {
        self.seeds += o.seeds;
        self.seeds_other_fenced += o.seeds_other_fenced;
        self.own_fences += o.own_fences;
        self.other_fences += o.other_fences;
        self.other_unnecessary += o.other_unnecessary;
    }
}

/// What the oracle found, over one seed or many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvailReport {
    /// Fences by code, then by class.
    pub by_code: BTreeMap<String, BTreeMap<Class, usize>>,
    pub whole_pool: usize,
    /// Whole-pool fences with an unnecessary fence in their burst.
    pub avoidable: usize,
    /// Avoidable, and every fence of the burst unnecessary.
    pub all_unnecessary: usize,
    /// Per fault kind, in `--single` runs.
    pub single: BTreeMap<String, SingleRow>,
    /// One line per non-justified fence and per whole-pool fence.
    pub log: Vec<String>,
    /// The windows the fences were judged with.
    pub windows: Option<Windows>,
}

impl AvailReport {
    /// Add another report's counts and lines to this one.
    pub fn add(&mut self, o: &AvailReport) {
        for (code, row) in &o.by_code {
            let mine = self.by_code.entry(code.clone()).or_default();
            for (c, k) in row {
                *mine.entry(*c).or_insert(0) += k;
            }
        }
        self.whole_pool += o.whole_pool;
        self.avoidable += o.avoidable;
        self.all_unnecessary += o.all_unnecessary;
        for (kind, row) in &o.single {
            self.single.entry(kind.clone()).or_default().add(row);
        }
        self.log.extend(o.log.iter().cloned());
        self.windows = self.windows.or(o.windows);
    }

    /// Fences of this class, every code.
    pub fn count(&self, c: Class) -> usize {
        self.by_code.values().filter_map(|r| r.get(&c)).sum()
    }

    pub fn fences(&self) -> usize {
        self.by_code.values().flat_map(|r| r.values()).sum()
    }

    /// A fence of a clean, healthy host, or an avoidable whole-pool fence.
    pub fn failing(&self) -> bool {
        self.count(Class::UnnecessaryClean) > 0 || self.avoidable > 0
    }

    /// The summary tables.
    pub fn tables(&self) -> String {
        let mut s = String::new();
        let pct = |k: usize| {
            let all = self.fences().max(1);
            format!("{k} ({}%)", k * 100 / all)
        };
        let secs = |ms: Millis| format!("{:.1} s", ms as f64 / 1000.0);
        let w = self.windows.map_or(String::new(), |w| {
            format!(" (P = {}, L = {}, burst {})", secs(w.p), secs(w.l), secs(w.burst))
        });
        let _ = writeln!(s, "fences by code and class{w}");
        let head: Vec<&str> = Class::ALL.iter().map(|c| c.name()).collect();
        let _ = writeln!(s, "  {:<26} {:>7} {}", "code", "fences", head.join(" "));
        let mut rows: Vec<(String, Vec<usize>)> = self
            .by_code
            .iter()
            .map(|(code, r)| {
                (
                    code.clone(),
                    Class::ALL.iter().map(|c| r.get(c).copied().unwrap_or(0)).collect(),
                )
            })
            .collect();
        rows.push(("all".into(), Class::ALL.iter().map(|&c| self.count(c)).collect()));
        for (code, r) in rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&head)
                .map(|(k, h)| format!("{k:>w$}", w = h.len()))
                .collect();
            let _ = writeln!(s, "  {code:<26} {:>7} {}", r.iter().sum::<usize>(), cells.join(" "));
        }
        let un = self.count(Class::Unnecessary) + self.count(Class::UnnecessaryClean);
        let _ = writeln!(
            s,
            "unnecessary fences: {}, of which clean {}",
            pct(un),
            self.count(Class::UnnecessaryClean)
        );
        let _ = writeln!(
            s,
            "whole-pool fences: {} all, {} avoidable ({} with every fence of the burst unnecessary)",
            self.whole_pool, self.avoidable, self.all_unnecessary
        );
        if !self.single.is_empty() {
            let _ = writeln!(
                s,
                "single faults: {:<18} {:>6} {:>13} {:>10} {:>12} {:>11}",
                "kind", "seeds", "other fenced", "own fences", "other fences", "unnecessary"
            );
            for (kind, r) in &self.single {
                let _ = writeln!(
                    s,
                    "               {kind:<18} {:>6} {:>13} {:>10} {:>12} {:>11}",
                    r.seeds, r.seeds_other_fenced, r.own_fences, r.other_fences, r.other_unnecessary
                );
            }
        }
        s
    }
}

/// Judge one run's fences. `replay` is the command that replays the seed,
/// for the log lines.
pub fn assess(
    rec: &Recorder,
    timeouts: &Timeouts,
    budget: Millis,
    single: Option<&SingleFault>,
    replay: &str,
) -> AvailReport {
    let w = Windows::new(timeouts, budget);
    let (classes, pools) = judge_all(rec, &w);
    let mut r = AvailReport {
        windows: Some(w),
        ..AvailReport::default()
    };
    for (f, c) in rec.fences.iter().zip(&classes) {
        *r.by_code.entry(f.code.clone()).or_default().entry(*c).or_insert(0) += 1;
        if *c != Class::Justified {
            r.log.push(format!(
                "{} ms host {} {} in {:?}: {}  ({replay})",
                f.at,
                f.host,
                f.code,
                f.phase,
                c.name()
            ));
        }
    }
    for p in &pools {
        r.whole_pool += 1;
        let avoidable = p.avoidable();
        let every = p.burst.iter().all(|(_, c)| c.unnecessary());
        if avoidable {
            r.avoidable += 1;
            if every {
                r.all_unnecessary += 1;
            }
        }
        let hosts: Vec<String> = p.burst.iter().map(|(h, c)| format!("{h}:{}", c.name())).collect();
        r.log.push(format!(
            "{} ms whole-pool fence, {}, burst [{}]  ({replay})",
            p.at,
            if avoidable { "AVOIDABLE" } else { "not avoidable" },
            hosts.join(", ")
        ));
    }
    if let Some(s) = single {
        let mut row = SingleRow {
            seeds: 1,
            ..Default::default()
        };
        for (f, c) in rec.fences.iter().zip(&classes) {
            if f.host == s.host {
                row.own_fences += 1;
            } else {
                row.other_fences += 1;
                row.other_unnecessary += usize::from(c.unnecessary());
            }
        }
        row.seeds_other_fenced = usize::from(row.other_fences > 0);
        r.single.insert(s.kind.name().to_string(), row);
    }
    r
}
