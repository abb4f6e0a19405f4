//! Real cables for the lab: each host in its own network namespace
//! (`xapid lab --netns`, root only, iproute2 and nftables).
//!
//! The namespaces hang off one bridge, the lab's switch, which also holds
//! the address `A.B.C.254` so the lab, xe and the chaos run reach the hosts
//! at `A.B.C.1`, `A.B.C.2`, ... from this machine's own namespace. Nothing
//! is routed beyond the bridge.
//! - A cable pull takes the host's port on the switch (the root side of its
//!   veth pair) down: the host sees no carrier, nothing gets in or out.
//! - A one-way cut (`xapid lab block FROM TO`) is an nftables rule in
//!   FROM's namespace dropping what it sends to TO; heartbeats from TO
//!   still reach FROM.
//! - Storage is not networked in the lab: its cut stays the fault switch.
//!
//! Names: bridge `pha<id>`, ports `pha<id>h<i>`, namespaces `pha<id>-host<i>`,
//! with `<id>` four random hex digits recorded in `lab.json`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// The lab's switch and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    /// Four hex digits naming the bridge, ports and namespaces.
    pub id: String,
    /// The hosts' /24, as its first three octets.
    pub subnet: String,
}

impl Net {
    /// A new switch on `subnet` (three octets), or a free one in 10.200–254.
    pub fn new(subnet: Option<&str>) -> Result<Net> {
        usable()?;
        let routes = routes()?;
        let subnet = match subnet {
            Some(s) => {
                let n = parse_subnet(s).ok_or_else(|| anyhow!("--subnet {s}: give three octets, e.g. 10.213.7"))?;
                if let Some(r) = routes.iter().find(|r| overlaps(**r, (n, 24))) {
                    bail!(
                        "--subnet {s} overlaps this machine's route to {}/{}: choose another",
                        fmt_ip(r.0),
                        r.1
                    );
                }
                s.to_string()
            }
            None => (0..200)
                .map(|_| format!("10.{}.{}", rand::random_range(200..=254u8), rand::random::<u8>()))
                .find(|s| parse_subnet(s).is_some_and(|n| !routes.iter().any(|r| overlaps(*r, (n, 24)))))
                .ok_or_else(|| anyhow!("no free /24 in 10.200.0.0-10.254.255.0 for the lab's switch"))?,
        };
        Ok(Net {
            id: format!("{:04x}", rand::random::<u16>()),
            subnet,
        })
    }

    pub fn bridge(&self) -> String {
        format!("pha{}", self.id)
    }

    /// Host `i`'s port on the switch (`i` from 1).
    pub fn port(&self, i: usize) -> String {
        format!("pha{}h{i}", self.id)
    }

    pub fn namespace(&self, i: usize) -> String {
        format!("pha{}-host{i}", self.id)
    }

    pub fn address(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// Build the switch and one namespace per host, removing any left from
    /// an earlier run first.
    pub fn setup(&self, hosts: usize) -> Result<()> {
        self.teardown(hosts);
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}.254/24", self.subnet), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 1..=hosts {
            let (ns, port, peer) = (self.namespace(i), self.port(i), format!("pha{}p{i}", self.id));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &port, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.address(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["link", "set", &port, "master", &br])?;
            ip(&["link", "set", &port, "up"])?;
        }
        Ok(())
    }

    /// Remove the namespaces (their ports go with them) and the switch.
    pub fn teardown(&self, hosts: usize) {
        for i in 1..=hosts {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
            let _ = ip(&["link", "del", &self.port(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }

    /// Plug (`true`) or pull host `i`'s cable.
    pub fn cable(&self, i: usize, plugged: bool) -> Result<()> {
        ip(&["link", "set", &self.port(i), if plugged { "up" } else { "down" }])
    }

    /// Drop everything host `i` sends to `blocked` (addresses); an empty
    /// set removes every rule.
    pub fn block(&self, i: usize, blocked: &BTreeSet<String>) -> Result<()> {
        let mut rules = String::from("table inet pha\ndelete table inet pha\n");
        if !blocked.is_empty() {
            let list: Vec<&str> = blocked.iter().map(String::as_str).collect();
            rules += &format!(
                "table inet pha {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {{ {} }} drop\n  }}\n}}\n",
                list.join(", ")
            );
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.namespace(i), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run nft (install nftables for one-way cuts)")?;
        use std::io::Write;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("nft has no stdin"))?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {}: {}",
                self.namespace(i),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `exe` run inside host `i`'s namespace.
    pub fn command(&self, i: usize, exe: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.namespace(i)]).arg(exe);
        c
    }
}

/// Why this machine cannot run a netns lab, if it cannot.
pub fn usable() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("--netns needs root: network namespaces and a bridge are created");
    }
    let ok = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("--netns needs iproute2's `ip` on PATH");
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// This namespace's IPv4 routes and addresses, as (network, prefix length).
fn routes() -> Result<Vec<(u32, u8)>> {
    let mut out = Vec::new();
    let lists: [&[&str]; 2] = [&["-4", "route", "show", "table", "all"], &["-4", "-o", "addr", "show"]];
    for args in lists {
        let text = Command::new("ip").args(args).output().context("cannot run `ip`")?;
        for word in String::from_utf8_lossy(&text.stdout).split_whitespace() {
            if let Some(r) = parse_prefix(word) {
                out.push(r);
            }
        }
    }
    // Loopback's 127/8 is never the switch's.
    out.retain(|(n, _)| n >> 24 != 127);
    Ok(out)
}

fn parse_subnet(s: &str) -> Option<u32> {
    let ip = parse_ip(&format!("{s}.0"))?;
    (s.split('.').count() == 3).then_some(ip)
}

fn parse_ip(s: &str) -> Option<u32> {
    let o: Vec<u8> = s.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    (o.len() == 4).then(|| u32::from_be_bytes([o[0], o[1], o[2], o[3]]))
}

/// `a.b.c.d/len` or a bare address (a /32).
fn parse_prefix(word: &str) -> Option<(u32, u8)> {
    let (ip, len) = match word.split_once('/') {
        Some((ip, len)) => (ip, len.parse().ok().filter(|l| *l <= 32)?),
        None => (word, 32),
    };
    Some((parse_ip(ip)?, len))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

/// Whether two prefixes share an address.
fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let len = a.1.min(b.1);
    a.0 & mask(len) == b.0 & mask(len)
}

fn fmt_ip(ip: u32) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let n = parse_subnet("10.213.7").unwrap();
        assert!(overlaps((n, 24), parse_prefix("10.0.0.0/8").unwrap()));
        assert!(overlaps((n, 24), parse_prefix("10.213.7.9").unwrap()));
        assert!(!overlaps((n, 24), parse_prefix("10.213.8.0/24").unwrap()));
        assert!(!overlaps((n, 24), parse_prefix("192.0.2.0/24").unwrap()));
        assert!(
            overlaps((n, 24), (0, 0)),
            "a default route covers all, and is not listed as a prefix"
        );
        assert_eq!(parse_prefix("default"), None);
        assert_eq!(parse_prefix("10.0.0.0/33"), None);
        assert_eq!(parse_subnet("10.1"), None);
        assert_eq!(parse_subnet("10.1.2.3"), None);
    }

    #[test]
    fn names_fit_the_kernels_limit() {
        let net = Net {
            id: "beef".into(),
            subnet: "10.213.7".into(),
        };
        for name in [net.bridge(), net.port(64), format!("pha{}p64", net.id)] {
            assert!(name.len() <= 15, "{name}");
        }
        assert_eq!(net.address(3), "10.213.7.3");
    }
}
