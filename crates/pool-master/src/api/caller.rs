//! Where the call being served came from: the network address of the
//! client, set by the API server around each call it dispatches (a
//! task-local, so the handlers' signatures stay about the call itself).
//! Calls made inside the daemon, and tests that dispatch directly, have
//! no source.

use std::future::Future;
use std::net::IpAddr;

tokio::task_local! {
    static SOURCE: Option<IpAddr>;
}

/// Run `call` as a call from `source`.
pub async fn from<F: Future>(source: Option<IpAddr>, call: F) -> F::Output {
    SOURCE.scope(source, call).await
}

/// The network source of the call being served, if it came over the
/// network.
pub fn source() -> Option<IpAddr> {
    SOURCE.try_with(|s| *s).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_knows_its_source_and_others_have_none() {
        assert_eq!(source(), None);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(from(Some(ip), async { source() }).await, Some(ip));
        assert_eq!(from(None, async { source() }).await, None);
        assert_eq!(source(), None);
    }
}
