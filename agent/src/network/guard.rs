//! Keeping containers away from the control plane.
//!
//! A container on the node's bridge could otherwise open connections to
//! the agent's API and the schedulers' ports: mutual TLS refuses it, but
//! an orchestrator should not rely on one wall where two are cheap (Docker
//! and Kubernetes network policies put the same rule in front of the
//! kubelet). So with the bridge comes an nftables table of the same name
//! (`inet drvXXXXXXXX`) that drops, for packets coming in on the bridge:
//!
//! - those to the control-plane ports on this host (any of its addresses:
//!   the gateway, the node's own, another bridge's), and
//! - those forwarded to a scheduler peer's address and port elsewhere.
//!
//! Replicas of a job that asks for it (`security.control_plane_access`)
//! have their address in the table's `allowed` set and pass.
//!
//! The same table lets containers out: traffic from the node's subnet that
//! leaves the node for anything but another node's containers (the `nodes`
//! set: every node's subnet, kept in step with the routes) is masqueraded
//! to the node's address. Replicas of a job with `egress: none` have their
//! address in the `no_egress` set, whose traffic to anything outside the
//! cluster's containers is dropped. The table is
//! replaced whole and atomically (one `nft -f` transaction) and goes with
//! the bridge: whoever deletes the bridge deletes the table
//! (`super::delete_link`, teardown), so the leftovers sweep that reclaims a
//! gone agent's bridge reclaims its table too.

use super::NetworkError;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Command, Stdio};

/// What containers may not reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlPlane {
    /// Ports on this host: the agent's API, the schedulers'.
    pub ports: Vec<u16>,
    /// Scheduler replicas elsewhere (IPv4: containers have no IPv6).
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

impl ControlPlane {
    /// The agent's own API port and its scheduler peers (`HOST:PORT`,
    /// resolved now; one that does not resolve is skipped with a warning:
    /// its port is still closed on this host).
    pub fn of(agent_port: u16, schedulers: &[String]) -> ControlPlane {
        let mut cp = ControlPlane {
            ports: vec![agent_port],
            endpoints: Vec::new(),
        };
        for s in schedulers {
            let s = s
                .trim_start_matches("http://")
                .trim_start_matches("https://");
            match s.to_socket_addrs() {
                Ok(addrs) => {
                    for a in addrs {
                        if let SocketAddr::V4(v4) = a {
                            cp.endpoints.push((*v4.ip(), v4.port()));
                        }
                        cp.ports.push(a.port());
                    }
                }
                Err(e) => {
                    tracing::warn!(scheduler = %s, error = %e, "cannot resolve a scheduler address to keep containers from it")
                }
            }
        }
        cp.ports.sort_unstable();
        cp.ports.dedup();
        cp.endpoints.sort_unstable();
        cp.endpoints.dedup();
        cp
    }
}

/// What a bridge's table holds besides the control plane's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sets {
    /// Replicas let through to the control plane.
    pub allowed: Vec<Ipv4Addr>,
    /// Replicas kept inside the cluster (`egress: none`).
    pub no_egress: Vec<Ipv4Addr>,
    /// Every node's container subnet (this node's first).
    pub nodes: Vec<String>,
}

/// The nftables script that makes the table for `bridge` (whose subnet is
/// `subnet`) exactly what `cp` and `sets` say. Adding the table first makes
/// the delete valid whether or not it existed; the whole script is one
/// transaction, so there is never a moment without the rules.
pub fn ruleset(bridge: &str, subnet: &str, cp: &ControlPlane, sets: &Sets) -> String {
    let mut s = String::new();
    let list = |items: Vec<String>| items.join(", ");
    let _ = writeln!(s, "table inet {bridge} {{}}");
    let _ = writeln!(s, "delete table inet {bridge}");
    let _ = writeln!(s, "table inet {bridge} {{");
    let _ = writeln!(s, "  set allowed {{ type ipv4_addr; }}");
    let _ = writeln!(s, "  set no_egress {{ type ipv4_addr; }}");
    let _ = writeln!(s, "  set nodes {{ type ipv4_addr; flags interval; }}");
    // Ahead of the usual filter chains (priority 0): a drop here is final
    // whatever other tables accept.
    let _ = writeln!(
        s,
        "  chain input {{ type filter hook input priority -10; policy accept;"
    );
    if !cp.ports.is_empty() {
        let _ = writeln!(s, "    iifname \"{bridge}\" ip saddr @allowed accept");
        let ports = list(cp.ports.iter().map(u16::to_string).collect());
        let _ = writeln!(s, "    iifname \"{bridge}\" tcp dport {{ {ports} }} drop");
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  chain forward {{ type filter hook forward priority -10; policy accept;"
    );
    let _ = writeln!(
        s,
        "    iifname \"{bridge}\" ip saddr @no_egress ip daddr != @nodes drop"
    );
    if !cp.endpoints.is_empty() {
        let _ = writeln!(s, "    iifname \"{bridge}\" ip saddr @allowed accept");
        let ends = list(
            cp.endpoints
                .iter()
                .map(|(ip, port)| format!("{ip} . {port}"))
                .collect(),
        );
        let _ = writeln!(
            s,
            "    iifname \"{bridge}\" ip daddr . tcp dport {{ {ends} }} drop"
        );
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        s,
        "    ip saddr {subnet} ip daddr != @nodes oifname != \"drv*\" masquerade"
    );
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    for (set, ips) in [("allowed", &sets.allowed), ("no_egress", &sets.no_egress)] {
        if !ips.is_empty() {
            let ips = list(ips.iter().map(Ipv4Addr::to_string).collect());
            let _ = writeln!(s, "add element inet {bridge} {set} {{ {ips} }}");
        }
    }
    let mut nodes = sets.nodes.clone();
    if !nodes.iter().any(|n| n == subnet) {
        nodes.insert(0, subnet.to_string());
    }
    let _ = writeln!(s, "add element inet {bridge} nodes {{ {} }}", list(nodes));
    s
}

/// The script that makes `bridge`'s `nodes` set exactly `subnets`.
pub fn nodes_script(bridge: &str, subnets: &[String]) -> String {
    let mut s = format!(
        "flush set inet {bridge} nodes
"
    );
    if !subnets.is_empty() {
        let _ = writeln!(
            s,
            "add element inet {bridge} nodes {{ {} }}",
            subnets.join(", ")
        );
    }
    s
}

fn nft_script(script: &str) -> Result<(), NetworkError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::Nft {
            args: "-f -".into(),
            stderr: format!(
                "cannot run nft ({e}): install nftables, which keeps containers from the control plane"
            ),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(NetworkError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Nft {
            args: "-f -".into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Installs (or replaces) the table for `bridge`.
pub fn install(
    bridge: &str,
    subnet: &str,
    cp: &ControlPlane,
    sets: &Sets,
) -> Result<(), NetworkError> {
    nft_script(&ruleset(bridge, subnet, cp, sets))
}

/// Makes the `nodes` set of `bridge`'s table exactly `subnets` (every
/// node's container subnet, this node's among them).
pub fn set_nodes(bridge: &str, subnets: &[String]) -> Result<(), NetworkError> {
    nft_script(&nodes_script(bridge, subnets))
}

/// Keeps the container at `ip` inside the cluster (`egress: none`).
pub fn deny_egress(bridge: &str, ip: Ipv4Addr) -> Result<(), NetworkError> {
    nft_script(&format!("add element inet {bridge} no_egress {{ {ip} }}\n"))
}

/// Lets the container at `ip` reach the control plane.
pub fn allow(bridge: &str, ip: Ipv4Addr) -> Result<(), NetworkError> {
    nft_script(&format!("add element inet {bridge} allowed {{ {ip} }}\n"))
}

/// Takes `ip` out of the allowed set (its container is gone; the address
/// goes to another). Idempotent.
pub fn disallow(bridge: &str, ip: Ipv4Addr) {
    // `add` then `delete` in one transaction: valid whether or not it was there.
    let mut script = String::new();
    for set in ["allowed", "no_egress"] {
        let _ = writeln!(
            script,
            "add element inet {bridge} {set} {{ {ip} }}\ndelete element inet {bridge} {set} {{ {ip} }}"
        );
    }
    let _ = nft_script(&script);
}

/// Removes the table for `bridge`, if there is one.
pub fn remove(bridge: &str) {
    let _ = nft_script(&format!(
        "table inet {bridge} {{}}\ndelete table inet {bridge}\n"
    ));
}

/// Whether the table for `bridge` is there.
pub fn exists(bridge: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", bridge])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What `nft -j ARGS` lists (its `nftables` array); empty when nft fails.
fn nft_json(args: &[&str]) -> Vec<serde_json::Value> {
    let Ok(out) = Command::new("nft").arg("-j").args(args).output() else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    match v {
        serde_json::Value::Object(mut m) => match m.remove("nftables") {
            Some(serde_json::Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The addresses in set `set` (`allowed`, `no_egress`) of `bridge`'s
/// table now (none if there is no table).
pub fn members(bridge: &str, set: &str) -> Vec<Ipv4Addr> {
    nft_json(&["list", "set", "inet", bridge, set])
        .iter()
        .filter_map(|o| o["set"]["elem"].as_array())
        .flatten()
        .filter_map(|e| e.as_str()?.parse().ok())
        .collect()
}

/// Guard tables whose bridge is gone (a crash between removing the one
/// and the other): nothing uses them.
pub fn orphan_tables() -> Vec<String> {
    // Without the list of links nothing can be called gone.
    let Ok(links) = super::links() else {
        return Vec::new();
    };
    nft_json(&["list", "tables"])
        .iter()
        .filter_map(|o| {
            let t = &o["table"];
            (t["family"] == "inet").then(|| t["name"].as_str())?
        })
        .filter(|n| n.starts_with("drv") && !links.iter().any(|l| l.name == *n))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_drops_control_plane_ports_from_the_bridge_except_for_allowed_replicas() {
        let cp = ControlPlane {
            ports: vec![7400, 7401],
            endpoints: vec![(Ipv4Addr::new(10, 0, 0, 1), 7400)],
        };
        let sets = Sets {
            allowed: vec![Ipv4Addr::new(10, 88, 1, 5)],
            ..Default::default()
        };
        let s = ruleset("drv0000abcd", "10.88.1.0/24", &cp, &sets);
        assert!(s.starts_with("table inet drv0000abcd {}\ndelete table inet drv0000abcd\n"));
        assert!(
            s.contains("iifname \"drv0000abcd\" tcp dport { 7400, 7401 } drop"),
            "{s}"
        );
        assert!(
            s.contains("iifname \"drv0000abcd\" ip daddr . tcp dport { 10.0.0.1 . 7400 } drop"),
            "{s}"
        );
        // The allowed set is consulted before the drops, in both chains.
        let accept = s.find("ip saddr @allowed accept").unwrap();
        assert!(accept < s.find("tcp dport {").unwrap());
        assert_eq!(s.matches("ip saddr @allowed accept").count(), 2);
        assert!(s.contains("add element inet drv0000abcd allowed { 10.88.1.5 }\n"));
        assert!(s.ends_with("add element inet drv0000abcd nodes { 10.88.1.0/24 }\n"));
    }

    #[test]
    fn traffic_leaving_the_cluster_is_masqueraded_and_kept_in_for_egress_none() {
        let sets = Sets {
            no_egress: vec![Ipv4Addr::new(10, 88, 1, 9)],
            nodes: vec!["10.88.2.0/24".into()],
            ..Default::default()
        };
        let s = ruleset(
            "drv0000abcd",
            "10.88.1.0/24",
            &ControlPlane::default(),
            &sets,
        );
        assert!(
            s.contains("ip saddr 10.88.1.0/24 ip daddr != @nodes oifname != \"drv*\" masquerade"),
            "{s}"
        );
        assert!(
            s.contains("iifname \"drv0000abcd\" ip saddr @no_egress ip daddr != @nodes drop"),
            "{s}"
        );
        assert!(s.contains("add element inet drv0000abcd no_egress { 10.88.1.9 }\n"));
        // This node's subnet is always among the nodes.
        assert!(s.ends_with("add element inet drv0000abcd nodes { 10.88.1.0/24, 10.88.2.0/24 }\n"));
        assert_eq!(
            nodes_script("drv0000abcd", &["10.88.1.0/24".into(), "10.88.2.0/24".into()]),
            "flush set inet drv0000abcd nodes\nadd element inet drv0000abcd nodes { 10.88.1.0/24, 10.88.2.0/24 }\n"
        );
    }

    #[test]
    fn the_control_plane_is_the_agent_port_and_every_scheduler() {
        let cp = ControlPlane::of(
            7401,
            &[
                "127.0.0.1:7400".into(),
                "http://10.1.2.3:7500".into(),
                "10.1.2.3:7500".into(),
            ],
        );
        assert_eq!(cp.ports, [7400, 7401, 7500]);
        assert_eq!(
            cp.endpoints,
            [
                (Ipv4Addr::new(10, 1, 2, 3), 7500),
                (Ipv4Addr::new(127, 0, 0, 1), 7400)
            ]
        );
    }
}
