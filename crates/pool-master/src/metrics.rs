//! What the API counts for Prometheus (`GET /metrics`, issue 22): calls and
//! errors by method. The counters live for the process; the gauges of the
//! pool's state are read at each scrape (`scrape`). Labels stay bounded:
//! a method the API does not serve is counted as `unknown`, and error codes
//! are XAPI's.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
}
