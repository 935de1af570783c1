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
//! Links, addresses and routes are made over rtnetlink ([`netlink`]): a
//! container's veth is created with its peer already in the container's
//! network namespace, and configured there through a socket opened inside
//! it, with no process started. The control-plane guard is nftables'
//! (`nft`).

pub mod conflict;
pub mod conntrack;
pub mod guard;
pub mod inventory;
mod ipam;
pub mod netlink;
pub mod routes;

pub use conflict::{delete_link, links, reclaim_gone};
pub use ipam::Ipam;

use crate::leftovers::Owner;
use netlink::{Netlink, NetlinkError};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot run `nft`: {0}")]
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

/// What a container on the bridge may reach besides the cluster's containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The control plane's ports (`security.control_plane_access`).
    pub control_plane: bool,
    /// Beyond the cluster, through the node (`egress`, on by default).
    pub egress: bool,
}

/// A netlink socket in the agent's network namespace.
fn host() -> Result<Netlink, NetworkError> {
    Netlink::open().map_err(NetworkError::Socket)
}

/// The index of link `name`, which must exist.
fn index_of(nl: &mut Netlink, name: &str) -> Result<u32, NetworkError> {
    nl.index(name)?.ok_or_else(|| {
        NetlinkError {
            what: format!("find link {name}"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        }
        .into()
    })
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
    host()?.delete_link(&container_link(alloc))?;
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
    /// Every node's subnet, as the guard's `nodes` set holds them (traffic
    /// to these is the cluster's: neither masqueraded nor egress).
    nodes: std::sync::Mutex<Vec<String>>,
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
        let mut nl = host()?;
        nl.add_bridge(&bridge)?;
        let index = index_of(&mut nl, &bridge)?;
        nl.set_link(index, true, None, Some(&marker))?;
        nl.add_address(index, gateway, 24)?;
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
        let mut sets = guard::Sets {
            allowed: guard::members(&bridge, "allowed"),
            no_egress: guard::members(&bridge, "no_egress"),
            nodes: Vec::new(),
        };
        sets.allowed.retain(|a| held.contains(a));
        sets.no_egress.retain(|a| held.contains(a));
        // What this state dir's previous agent routed: the first sync prunes it.
        let routed = routes::load(&own_dir);
        sets.nodes = std::iter::once(subnet.to_string())
            .chain(routed.keys().cloned())
            .collect();
        guard::install(&bridge, subnet, control_plane, &sets)?;
        // The nat rules just loaded conntrack; the mesh needs room in it.
        conntrack::raise_for_node();
        Ok(NodeNetwork {
            bridge,
            subnet: subnet.into(),
            gateway,
            ipam,
            state_dir: own_dir,
            marker,
            routed: std::sync::Mutex::new(routed),
            nodes: std::sync::Mutex::new(sets.nodes),
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

    /// Gives the container whose init is `pid` an `eth0` on the bridge, a
    /// default route through the node and what `access` allows; returns
    /// its address.
    pub fn attach(&self, alloc: &str, pid: i32, access: Access) -> Result<Ipv4Addr, NetworkError> {
        self.check()?;
        let addr = self.ipam.allocate(alloc)?;
        let host_link = container_link(alloc);
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let r = (|| {
            let mut nl = host()?;
            let bridge = index_of(&mut nl, &self.bridge)?;
            // The address may have belonged to a container that just went: forget
            // its old MAC, or packets go to a port that no longer exists.
            let _ = nl.delete_neighbour(bridge, addr);
            nl.delete_link(&host_link)?;
            // The peer is made inside the container's namespace as its eth0.
            let ns = std::fs::File::open(&netns).map_err(|e| NetworkError::Io {
                path: netns.display().to_string(),
                source: e,
            })?;
            nl.add_veth(&host_link, "eth0", &ns)?;
            let index = index_of(&mut nl, &host_link)?;
            nl.set_link(index, true, Some(bridge), Some(&self.marker))?;
            let mut inside = Netlink::open_in(&netns).map_err(|e| NetworkError::Io {
                path: netns.display().to_string(),
                source: e,
            })?;
            let eth0 = index_of(&mut inside, "eth0")?;
            inside.add_address(eth0, addr, 24)?;
            inside.set_link(eth0, true, None, None)?;
            inside.replace_route(Ipv4Addr::UNSPECIFIED, 0, self.gateway, netlink::RTPROT_BOOT)?;
            if access.control_plane {
                guard::allow(&self.bridge, addr)?;
            }
            if !access.egress {
                guard::deny_egress(&self.bridge, addr)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            if let Ok(mut nl) = host() {
                let _ = nl.delete_link(&host_link);
            }
            self.ipam.release(alloc);
            return Err(e);
        }
        Ok(addr)
    }

    /// Releases the container's address and removes its link (gone already
    /// when its network namespace ended). Idempotent.
    pub fn detach(&self, alloc: &str) {
        if let Ok(mut nl) = host() {
            let _ = nl.delete_link(&container_link(alloc));
            let bridge = nl.index(&self.bridge).ok().flatten();
            for (addr, a) in self.ipam.list() {
                if a == alloc {
                    if let Some(b) = bridge {
                        let _ = nl.delete_neighbour(b, addr);
                    }
                    guard::disallow(&self.bridge, addr);
                }
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
        // A node on this same host (tests, drover dev) is reached through
        // its bridge: the kernel routes its subnet already.
        let kernel: Vec<String> = host()
            .and_then(|mut nl| Ok(nl.routes()?))
            .map(|all| {
                all.into_iter()
                    .filter(|r| r.protocol.as_deref() == Some("kernel"))
                    .map(|r| r.dst)
                    .collect()
            })
            .unwrap_or_default();
        for (subnet, via) in routes {
            if subnet == &self.subnet || via.is_empty() {
                continue;
            }
            if kernel.contains(subnet) || via.starts_with("127.") {
                continue;
            }
            // Recorded first: a crash between the two leaves a record of a
            // route that may not exist (deleting it is a no-op), never a
            // route nobody knows about.
            if routed.get(subnet) != Some(via) {
                routed.insert(subnet.clone(), via.clone());
                self.record(&routed);
            }
            let route = match (inventory::parse_prefix(subnet), via.parse::<Ipv4Addr>()) {
                (Some((net, len)), Ok(gw)) => host().and_then(|mut nl| {
                    Ok(nl.replace_route(net, len, gw, conflict::ROUTE_PROTO)?)
                }),
                _ => Err(NetworkError::Subnet(format!("{subnet} via {via}"))),
            };
            if let Err(e) = route {
                routed.remove(subnet);
                tracing::warn!(subnet = %subnet, via = %via, error = %e, "cannot route to a node's containers")
            }
        }
        if *routed != before {
            self.record(&routed);
        }
        // The guard's `nodes` set: this node's subnet and every other's,
        // local ones included (their traffic is the cluster's).
        let mut nodes: Vec<String> = std::iter::once(self.subnet.clone())
            .chain(routes.iter().map(|(s, _)| s.clone()))
            .collect();
        nodes.sort();
        nodes.dedup();
        let mut known = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if *known != nodes {
            match guard::set_nodes(&self.bridge, &nodes) {
                Ok(()) => *known = nodes,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell the guard the nodes' subnets: traffic to some may be masqueraded")
                }
            }
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
        if let Ok(mut nl) = host() {
            let _ = nl.delete_link(&self.bridge);
        }
        guard::remove(&self.bridge);
    }

    pub fn allocated(&self) -> Vec<(Ipv4Addr, String)> {
        self.ipam.list()
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
