//! Container networking on a node.
//!
//! Each node owns a /24 of the cluster's container range (assigned by the
//! scheduler at registration). The agent puts a bridge on the node holding
//! the subnet's first address as the containers' gateway; each container
//! with `network: private` gets a veth pair, one end on the bridge and the
//! other as `eth0` inside its network namespace, with an address from the
//! node's IPAM. Other nodes' subnets are reached through plain routes via
//! those nodes' addresses (no overlay: the nodes share a network, as the
//! local cluster's bridge does, and routes cost no encapsulation).
//! Addresses are released and links removed when containers stop; a
//! restarted agent finds its bridge and the IPAM files as it left them.
//! Every link carries the marker `drover:<state-dir>` (see
//! `crate::leftovers`), and the subnet is claimed before use (see
//! [`conflict`]): what a killed agent left is reclaimed, anything else that
//! holds the gateway or routes the subnet makes the network refuse to start.
//!
//! The bridge comes with an nftables table that keeps containers from the
//! control plane's ports (see [`guard`]).
//!
//! The kernel is driven through iproute2's `ip`, which every Linux node
//! has, and nftables' `nft`.

pub mod conflict;
pub mod guard;
pub mod inventory;
mod ipam;
pub mod routes;

pub use conflict::{delete_link, links, reclaim_gone};
pub use ipam::Ipam;

use crate::leftovers::Owner;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run `ip`: {0}")]
    Spawn(std::io::Error),
    #[error("`nft {args}` failed: {stderr}")]
    Nft { args: String, stderr: String },
    #[error("{0:?} is not a /24 subnet")]
    Subnet(String),
    #[error("ipam: {0}")]
    Ipam(#[from] ipam::IpamError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("`ip {args}` printed output drover cannot read: {source}")]
    Parse {
        args: String,
        source: serde_json::Error,
    },
    #[error("gateway {gateway} of subnet {subnet} is already on interface {interface}, {owner}")]
    AddressTaken {
        gateway: Ipv4Addr,
        subnet: String,
        interface: String,
        owner: Owner,
    },
    #[error("subnet {subnet} is already routed by `{route}` on interface {interface}, {owner}")]
    RouteTaken {
        subnet: String,
        route: String,
        interface: String,
        owner: Owner,
    },
    #[error("bridge {bridge} for subnet {subnet} already exists, {owner}")]
    BridgeTaken {
        bridge: String,
        subnet: String,
        owner: Owner,
    },
}

/// Runs `ip ARGS`; `Ok(stdout)` when it succeeds.
fn ip(args: &[&str]) -> Result<String, NetworkError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetworkError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetworkError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip` where "already there" / "not there" is fine.
fn ip_idempotent(args: &[&str]) -> Result<(), NetworkError> {
    match ip(args) {
        Ok(_) => Ok(()),
        Err(NetworkError::Ip { stderr, .. })
            if [
                "File exists",
                "already assigned",
                "Cannot find device",
                "No such process",
            ]
            .iter()
            .any(|m| stderr.contains(m)) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A short, stable name from `seed` (interface names are at most 15 bytes).
fn short(prefix: &str, seed: &str) -> String {
    let mut h: u32 = 2166136261;
    for b in seed.bytes() {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    format!("{prefix}{h:08x}")
}

/// Whether `name` is a bridge or veth name as [`short`] makes them.
fn named_like_ours(name: &str) -> bool {
    ["drv", "dvh", "dvc"].iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// The host-side veth of allocation `alloc`'s container.
pub fn container_link(alloc: &str) -> String {
    short("dvh", alloc)
}

/// Removes what the network holds for a container of the agent on
/// `state_dir` that no agent runs any more: its veth and its address.
pub fn forget_container(state_dir: &Path, alloc: &str) -> Result<(), NetworkError> {
    ip_idempotent(&["link", "del", &container_link(alloc)])?;
    let dir = state_dir.join("ipam");
    if dir.exists() {
        Ipam::open(&dir, [0; 4])?.release(alloc);
    }
    Ok(())
}

/// This node's container network.
#[derive(Debug)]
pub struct NodeNetwork {
    pub bridge: String,
    pub subnet: String,
    pub gateway: Ipv4Addr,
    ipam: Ipam,
    /// The agent's state dir, canonical (what the marker names).
    state_dir: PathBuf,
    marker: String,
    /// Other nodes' subnets this agent routes, and via which node (removed
    /// when they leave the set, and at teardown); recorded in the state dir.
    routed: std::sync::Mutex<routes::Routes>,
}

impl NodeNetwork {
    /// Creates (or finds) the bridge for `subnet` and the IPAM under
    /// `state_dir`, and keeps containers on it from `control_plane`.
    pub fn setup(
        node: &str,
        subnet: &str,
        state_dir: &Path,
        control_plane: &guard::ControlPlane,
    ) -> Result<NodeNetwork, NetworkError> {
        let (net, len) = subnet
            .split_once('/')
            .ok_or_else(|| NetworkError::Subnet(subnet.into()))?;
        let net: Ipv4Addr = net
            .parse()
            .map_err(|_| NetworkError::Subnet(subnet.into()))?;
        if len != "24" {
            return Err(NetworkError::Subnet(subnet.into()));
        }
        let o = net.octets();
        let gateway = Ipv4Addr::new(o[0], o[1], o[2], 1);
        let bridge = short("drv", node);
        let marker = crate::leftovers::marker(state_dir);
        let own_dir = crate::leftovers::parse_marker(&marker).unwrap_or(state_dir.into());
        for name in conflict::claim(&bridge, &own_dir, subnet, gateway)? {
            tracing::warn!(link = %name, subnet = %subnet, "reclaimed a link a gone agent left holding this node's subnet");
        }
        ip_idempotent(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["link", "set", "dev", &bridge, "alias", &marker])?;
        ip_idempotent(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        // Containers of different nodes (and of bridges on one host) reach each
        // other through this host's routing.
        let fwd = "/proc/sys/net/ipv4/ip_forward";
        std::fs::write(fwd, "1").map_err(|source| NetworkError::Io {
            path: fwd.into(),
            source,
        })?;
        let ipam = Ipam::open(&state_dir.join("ipam"), o)?;
        // Replicas a previous agent process let through keep their pass
        // while their address is still theirs.
        let held: Vec<Ipv4Addr> = ipam.list().into_iter().map(|(a, _)| a).collect();
        let mut allowed = guard::allowed(&bridge);
        allowed.retain(|a| held.contains(a));
        guard::install(&bridge, control_plane, &allowed)?;
        // What this state dir's previous agent routed: the first sync prunes it.
        let routed = routes::load(&own_dir);
        Ok(NodeNetwork {
            bridge,
            subnet: subnet.into(),
            gateway,
            ipam,
            state_dir: own_dir,
            marker,
            routed: std::sync::Mutex::new(routed),
        })
    }

    /// Checks the subnet is still this node's alone (reclaiming what gone
    /// agents left since); an error names what took it.
    pub fn check(&self) -> Result<(), NetworkError> {
        for name in conflict::claim(&self.bridge, &self.state_dir, &self.subnet, self.gateway)? {
            tracing::warn!(link = %name, subnet = %self.subnet, "reclaimed a link a gone agent left holding this node's subnet");
        }
        Ok(())
    }

    /// Gives the container whose init is `pid` an `eth0` on the bridge; returns its address.
    /// With `control_plane_access` it may reach the control plane's ports.
    pub fn attach(
        &self,
        alloc: &str,
        pid: i32,
        control_plane_access: bool,
    ) -> Result<Ipv4Addr, NetworkError> {
        self.check()?;
        let addr = self.ipam.allocate(alloc)?;
        let host = container_link(alloc);
        let peer = short("dvc", alloc);
        let netns = format!("/proc/{pid}/ns/net");
        let r = (|| {
            // The address may have belonged to a container that just went: forget
            // its old MAC, or packets go to a port that no longer exists.
            let _ = ip_idempotent(&["neigh", "del", &addr.to_string(), "dev", &self.bridge]);
            ip_idempotent(&["link", "del", &host])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", "dev", &host, "alias", &self.marker])?;
            ip(&["link", "set", &host, "master", &self.bridge, "up"])?;
            ip(&["link", "set", &peer, "netns", &pid.to_string()])?;
            let inside = |args: &[&str]| nsenter_ip(&netns, args);
            inside(&["link", "set", &peer, "name", "eth0"])?;
            inside(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["route", "add", "default", "via", &self.gateway.to_string()])?;
            if control_plane_access {
                guard::allow(&self.bridge, addr)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = ip_idempotent(&["link", "del", &host]);
            self.ipam.release(alloc);
            return Err(e);
        }
        Ok(addr)
    }

    /// Releases the container's address and removes its link (gone already
    /// when its network namespace ended). Idempotent.
    pub fn detach(&self, alloc: &str) {
        let _ = ip_idempotent(&["link", "del", &container_link(alloc)]);
        for (addr, a) in self.ipam.list() {
            if a == alloc {
                let _ = ip_idempotent(&["neigh", "del", &addr.to_string(), "dev", &self.bridge]);
                guard::disallow(&self.bridge, addr);
            }
        }
        self.ipam.release(alloc);
    }

    /// Makes the routes to other nodes' subnets exactly `routes` (subnet, via),
    /// and records them in the state dir.
    pub fn sync_routes(&self, routes: &[(String, String)]) {
        let mut routed = self.routed.lock().unwrap_or_else(|e| e.into_inner());
        let before = routed.clone();
        routed.retain(|subnet, via| {
            if routes.iter().any(|(s, v)| s == subnet && v == via) {
                return true;
            }
            let _ = routes::delete(subnet, via);
            false
        });
        for (subnet, via) in routes {
            if subnet == &self.subnet || via.is_empty() {
                continue;
            }
            // A node on this same host (tests, drover dev) is reached through its bridge.
            let local = ip(&["route", "show", subnet])
                .map(|s| s.contains("proto kernel"))
                .unwrap_or(false);
            if local || via.starts_with("127.") {
                continue;
            }
            // Recorded first: a crash between the two leaves a record of a
            // route that may not exist (deleting it is a no-op), never a
            // route nobody knows about.
            if routed.get(subnet) != Some(via) {
                routed.insert(subnet.clone(), via.clone());
                self.record(&routed);
            }
            let proto = conflict::ROUTE_PROTO;
            if let Err(e) = ip(&["route", "replace", subnet, "via", via, "proto", proto]) {
                routed.remove(subnet);
                tracing::warn!(subnet = %subnet, via = %via, error = %e, "cannot route to a node's containers")
            }
        }
        if *routed != before {
            self.record(&routed);
        }
    }

    fn record(&self, routed: &routes::Routes) {
        if let Err(e) = routes::save(&self.state_dir, routed) {
            tracing::warn!(error = %e, "cannot record this node's routes: a crash would leave them behind");
        }
    }

    /// Removes the bridge and the routes to other nodes' subnets (when the
    /// node is shutting down with no containers).
    pub fn teardown(&self) {
        let mut routed = self.routed.lock().unwrap_or_else(|e| e.into_inner());
        for (subnet, via) in std::mem::take(&mut *routed) {
            let _ = routes::delete(&subnet, &via);
        }
        self.record(&routed);
        let _ = ip_idempotent(&["link", "del", &self.bridge]);
        guard::remove(&self.bridge);
    }

    pub fn allocated(&self) -> Vec<(Ipv4Addr, String)> {
        self.ipam.list()
    }
}

/// Runs `ip ARGS` inside the network namespace at `netns`.
fn nsenter_ip(netns: &str, args: &[&str]) -> Result<(), NetworkError> {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("ip")
        .args(args)
        .output()
        .map_err(NetworkError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_like_ours_are_recognised() {
        assert!(super::named_like_ours(&super::short("drv", "node-1")));
        assert!(super::named_like_ours("dvh0011aabb"));
        assert!(!super::named_like_ours("drvold"));
        assert!(!super::named_like_ours("eth0"));
    }

    #[test]
    fn interface_names_fit() {
        let n = super::short("dvh", "0123456789abcdef0123456789abcdef");
        assert!(n.len() <= 15, "{n}");
        assert_eq!(n, super::short("dvh", "0123456789abcdef0123456789abcdef"));
        assert_ne!(n, super::short("dvh", "0123456789abcdef0123456789abcdee"));
    }
}
