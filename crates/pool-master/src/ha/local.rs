//! This host's own HA configuration (xapi's `ha_armed` in the local
//! database and xhad's `xhad.conf`), kept in the host's store so the agent
//! starts at boot before the pool database is reachable.

use std::path::PathBuf;

use serde_json::{json, Value};

/// The local-database key holding [`HaLocal`].
pub const KEY: &str = "ha";

/// Why a stored HA configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no {0}")]
    Missing(&'static str),
    #[error("bad {0}")]
    Bad(&'static str),
    #[error("hosts and addresses differ")]
    HostsAndAddresses,
}

/// How this host runs HA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaLocal {
    /// The agent starts at boot and fences when it must.
    pub armed: bool,
    /// New at every enable.
    pub generation: u128,
    /// The HA timeout T, in seconds.
    pub timeout_s: u64,
    /// Lab mode: T may go down to 3 s.
    pub lab: bool,
    /// Every host's uuid, sorted: the index of a host in the statefile.
    pub hosts: Vec<String>,
    /// Each host's address, in the order of `hosts`.
    pub addresses: Vec<String>,
    /// The heartbeat port (the API port number, over UDP).
    pub port: u16,
    pub statefile: PathBuf,
    pub metadata: PathBuf,
}

impl HaLocal {
    pub fn to_json(&self) -> String {
        json!({
            "armed": self.armed,
            "generation": format!("{:032x}", self.generation),
            "timeout_s": self.timeout_s,
            "lab": self.lab,
            "hosts": self.hosts,
            "addresses": self.addresses,
            "port": self.port,
            "statefile": self.statefile,
            "metadata": self.metadata,
        })
        .to_string()
    }

    pub fn from_json(text: &str) -> Result<HaLocal, LocalError> {
        use LocalError::{Bad, Missing};
        let v: Value = serde_json::from_str(text)?;
        let s = |k: &'static str| v.get(k).and_then(Value::as_str).ok_or(Missing(k));
        let list = |k: &'static str| -> Result<Vec<String>, LocalError> {
            v.get(k)
                .and_then(Value::as_array)
                .ok_or(Missing(k))?
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or(Bad(k)))
                .collect()
        };
        let local = HaLocal {
            armed: v.get("armed").and_then(Value::as_bool).ok_or(Missing("armed"))?,
            generation: u128::from_str_radix(s("generation")?, 16).map_err(|_| Bad("generation"))?,
            timeout_s: v.get("timeout_s").and_then(Value::as_u64).ok_or(Missing("timeout_s"))?,
            lab: v.get("lab").and_then(Value::as_bool).unwrap_or(false),
            hosts: list("hosts")?,
            addresses: list("addresses")?,
            port: v
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(Missing("port"))?,
            statefile: PathBuf::from(s("statefile")?),
            metadata: PathBuf::from(s("metadata")?),
        };
        if local.hosts.len() != local.addresses.len() || local.hosts.is_empty() {
            return Err(LocalError::HostsAndAddresses);
        }
        Ok(local)
    }

    /// The index of `uuid` in the statefile.
    pub fn index_of(&self, uuid: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h == uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let l = HaLocal {
            armed: true,
            generation: u128::MAX - 3,
            timeout_s: 5,
            lab: true,
            hosts: vec!["a".into(), "b".into()],
            addresses: vec!["127.0.0.1".into(), "127.0.0.2".into()],
            port: 8090,
            statefile: "/sr/ha-statefile".into(),
            metadata: "/sr/ha-metadata".into(),
        };
        assert_eq!(HaLocal::from_json(&l.to_json()).unwrap(), l);
        assert!(HaLocal::from_json("{}").is_err());
        assert!(HaLocal::from_json("not json").is_err());
    }
}
