//! The snapshot format: the planner's `Pool` as JSON, exactly as issue 27
//! shows it.
//!
//! ```json
//! {"hosts":[{"uuid":"h0","memory_free":541165879296,"live":true,"reaches":["sr:A","network:N"]}],
//!  "vms":[{"uuid":"v0","memory":206158430208,"resident_on":"h0","needs":["sr:A"]}]}
//! ```
//!
//! Memory in bytes, as the planner counts it; `resident_on` null for a VM
//! that is down; resources `sr:UUID` or `network:UUID`. Unknown fields are
//! refused, so a typo is not silently ignored.

use std::collections::BTreeSet;

use ha_planner::{Host, Pool, Resource, Vm};
use serde::Deserialize;

/// Why a snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a pool snapshot: {source}")]
    Json { path: String, source: serde_json::Error },
    #[error("{path}: resource '{resource}' is neither sr:UUID nor network:UUID")]
    Resource { path: String, resource: String },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        source: ha_planner::PlanError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostJson {
    uuid: String,
    memory_free: i64,
    live: bool,
    reaches: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmJson {
    uuid: String,
    memory: i64,
    resident_on: Option<String>,
    needs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolJson {
    hosts: Vec<HostJson>,
    vms: Vec<VmJson>,
}

fn resource(path: &str, s: &str) -> Result<Resource, SnapshotError> {
    match s.split_once(':') {
        Some(("sr", uuid)) if !uuid.is_empty() => Ok(Resource::Sr(uuid.to_string())),
        Some(("network", uuid)) if !uuid.is_empty() => Ok(Resource::Network(uuid.to_string())),
        _ => Err(SnapshotError::Resource {
            path: path.to_string(),
            resource: s.to_string(),
        }),
    }
}

fn resources(path: &str, list: &[String]) -> Result<BTreeSet<Resource>, SnapshotError> {
    list.iter().map(|r| resource(path, r)).collect()
}

/// Parse a snapshot's text (`path` only names it in errors) and check it
/// as the planner would.
pub fn parse(path: &str, text: &str) -> Result<Pool, SnapshotError> {
    let json: PoolJson = serde_json::from_str(text).map_err(|source| SnapshotError::Json {
        path: path.to_string(),
        source,
    })?;
    let pool = Pool {
        hosts: json
            .hosts
            .into_iter()
            .map(|h| {
                Ok(Host {
                    reaches: resources(path, &h.reaches)?,
                    uuid: h.uuid,
                    memory_free: h.memory_free,
                    live: h.live,
                })
            })
            .collect::<Result<_, SnapshotError>>()?,
        vms: json
            .vms
            .into_iter()
            .map(|v| {
                Ok(Vm {
                    needs: resources(path, &v.needs)?,
                    uuid: v.uuid,
                    memory: v.memory,
                    resident_on: v.resident_on,
                })
            })
            .collect::<Result<_, SnapshotError>>()?,
    };
    pool.validate().map_err(|source| SnapshotError::Invalid {
        path: path.to_string(),
        source,
    })?;
    Ok(pool)
}

/// Read and parse the snapshot at `path`.
pub fn read(path: &str) -> Result<Pool, SnapshotError> {
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
        path: path.to_string(),
        source,
    })?;
    parse(path, &text)
}
