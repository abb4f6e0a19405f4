//! What the process counts for Prometheus (`GET /metrics`, issue 22): API
//! calls and errors by method, and the HA agent's and restart executor's
//! timings (statefile cycles, fault-handler rounds, restarts, planning).
//! The counters live for the process; the gauges of the pool's state are
//! read at each scrape (`scrape`). Labels stay bounded: a method the API
//! does not serve is counted as `unknown`, and error codes are XAPI's.

use std::sync::OnceLock;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The API's counters.
#[derive(Default)]
pub struct ApiCounters {
    calls: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
}

/// The process's counters.
pub fn api() -> &'static ApiCounters {
    static API: OnceLock<ApiCounters> = OnceLock::new();
    API.get_or_init(ApiCounters::default)
}

impl ApiCounters {
    /// One call of `method` (already bounded by the caller), failed with
    /// `error` or not.
    pub fn count(&self, method: &str, error: Option<&str>) {
        self.calls.get_or_create(&vec![("method".into(), method.into())]).inc();
        if let Some(code) = error {
            self.errors
                .get_or_create(&vec![("method".into(), method.into()), ("code".into(), code.into())])
                .inc();
        }
    }

    /// Add the counters to a scrape's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("pool_ha_api_calls", "API calls by method", self.calls.clone());
        registry.register(
            "pool_ha_api_errors",
            "API calls that failed, by method and XAPI error code",
            self.errors.clone(),
        );
    }
}

/// The HA agent's and the restart executor's counters and timings.
pub struct HaCounters {
    statefile_cycle: Histogram,
    statefile_failures: Counter,
    fault_handler_rounds: Counter,
    restart_latency: Histogram,
    planning: Histogram,
}

impl Default for HaCounters {
    fn default() -> Self {
        // From 5 ms (a local disk) to over a minute (an NFS server that
        // stalls past any HA timeout).
        let io = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        // From a start at once to several HA timeouts.
        let restart = [1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0];
        let planning = [0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        HaCounters {
            statefile_cycle: Histogram::new(io),
            statefile_failures: Counter::default(),
            fault_handler_rounds: Counter::default(),
            restart_latency: Histogram::new(restart),
            planning: Histogram::new(planning),
        }
    }
}

/// The process's HA counters.
pub fn ha() -> &'static HaCounters {
    static HA: OnceLock<HaCounters> = OnceLock::new();
    HA.get_or_init(HaCounters::default)
}

impl HaCounters {
    /// One statefile cycle (write this host's slot, read every slot) took
    /// `took`; `ok` when it succeeded.
    pub fn statefile_cycle(&self, took: Duration, ok: bool) {
        self.statefile_cycle.observe(took.as_secs_f64());
        if !ok {
            self.statefile_failures.inc();
        }
    }

    /// This host's HA agent began a fault-handler round.
    pub fn fault_handler_round(&self) {
        self.fault_handler_rounds.inc();
    }

    /// A protected VM ran again `took` after the restart executor first
    /// tried it (its host declared dead and it recorded halted).
    pub fn restarted(&self, took: Duration) {
        self.restart_latency.observe(took.as_secs_f64());
    }

    /// The restart executor's planning (the pool's failover status) took
    /// `took`.
    pub fn planned(&self, took: Duration) {
        self.planning.observe(took.as_secs_f64());
    }

    /// Add the counters to a scrape's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pool_ha_statefile_cycle_seconds",
            "Statefile cycles of this host (write its slot, read every slot), by duration",
            self.statefile_cycle.clone(),
        );
        registry.register(
            "pool_ha_statefile_failures",
            "Statefile cycles of this host that failed",
            self.statefile_failures.clone(),
        );
        registry.register(
            "pool_ha_fault_handler_rounds",
            "Fault-handler rounds this host's HA agent began",
            self.fault_handler_rounds.clone(),
        );
        registry.register(
            "pool_ha_restart_latency_seconds",
            "Protected VMs restarted by this host as master: from the restart executor's first try to running again",
            self.restart_latency.clone(),
        );
        registry.register(
            "pool_ha_planning_seconds",
            "The failover planner's runs for the pool's status on this host as master, by duration",
            self.planning.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_errors_are_counted_by_method_and_code() {
        let c = ApiCounters::default();
        c.count("VM.start", None);
        c.count("VM.start", Some("HOST_OFFLINE"));
        c.count("pool.get_all", None);
        let mut r = Registry::default();
        c.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("pool_ha_api_calls_total{method=\"VM.start\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("pool_ha_api_calls_total{method=\"pool.get_all\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pool_ha_api_errors_total{method=\"VM.start\",code=\"HOST_OFFLINE\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn ha_timings_are_histograms_in_seconds() {
        let h = HaCounters::default();
        h.statefile_cycle(Duration::from_millis(7), true);
        h.statefile_cycle(Duration::from_secs(12), false);
        h.fault_handler_round();
        h.restarted(Duration::from_secs(14));
        h.planned(Duration::from_micros(570));
        let mut r = Registry::default();
        h.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for line in [
            "pool_ha_statefile_cycle_seconds_count 2",
            "pool_ha_statefile_cycle_seconds_bucket{le=\"0.01\"} 1",
            "pool_ha_statefile_cycle_seconds_bucket{le=\"30.0\"} 2",
            "pool_ha_statefile_failures_total 1",
            "pool_ha_fault_handler_rounds_total 1",
            "pool_ha_restart_latency_seconds_bucket{le=\"10.0\"} 0",
            "pool_ha_restart_latency_seconds_bucket{le=\"20.0\"} 1",
            "pool_ha_planning_seconds_bucket{le=\"0.001\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
