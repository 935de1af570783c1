//! Claiming a node subnet on the host: before the agent puts its gateway
//! address on its bridge, and again before each container is attached, it
//! checks that nothing else on the host holds the gateway address or routes
//! any part of the subnet. The kernel would accept both and route through
//! whichever came first, so a stale bridge from a killed agent silently
//! swallows the traffic of a healthy new one. A conflicting interface that a
//! gone Drover agent left (its marker names a state dir no live process
//! holds, see `crate::leftovers`) is reclaimed: deleted with its ports and
//! routes. Anything else (a foreign interface, a running agent's bridge, or
//! a gone agent's bridge whose containers still run) is refused with an
//! error naming the interface and its owner.

use super::inventory::{Address, Link, Route};
use super::{ip, ip_idempotent, NetworkError};
use crate::leftovers::{parse_marker, Owner};
use std::net::Ipv4Addr;
use std::path::Path;

/// The routing protocol number Drover marks its routes to other nodes' subnets with.
pub const ROUTE_PROTO: &str = "215";

pub fn links() -> Result<Vec<Link>, NetworkError> {
    let args = ["-j", "link", "show"];
    super::inventory::parse_links(&ip(&args)?).map_err(|e| parse_error(&args, e))
}

fn addresses() -> Result<Vec<Address>, NetworkError> {
    let args = ["-j", "-4", "addr", "show"];
    super::inventory::parse_addresses(&ip(&args)?).map_err(|e| parse_error(&args, e))
}

/// Routes for `subnet` or any prefix inside it.
fn routes_within(subnet: &str) -> Result<Vec<Route>, NetworkError> {
    let args = ["-j", "route", "show", "root", subnet];
    super::inventory::parse_routes(&ip(&args)?).map_err(|e| parse_error(&args, e))
}

fn parse_error(args: &[&str], source: serde_json::Error) -> NetworkError {
    NetworkError::Parse {
        args: args.join(" "),
        source,
    }
}

/// Deletes a link and, for a bridge, the veths plugged into it (their
/// addresses and routes go with them). Idempotent.
pub fn delete_link(name: &str) -> Result<(), NetworkError> {
    for port in links()?
        .iter()
        .filter(|l| l.master.as_deref() == Some(name))
    {
        ip_idempotent(&["link", "del", &port.name])?;
    }
    ip_idempotent(&["link", "del", name])
}

/// Who owns link `name`, seen from the agent on `own_dir`: a link marked
/// with our own state dir but not our bridge is a leftover of ours.
fn owner(links: &[Link], name: &str, own_dir: &Path) -> Owner {
    let alias = links
        .iter()
        .find(|l| l.name == name)
        .and_then(|l| l.alias.as_deref());
    match alias.and_then(parse_marker) {
        Some(dir) if dir == own_dir => Owner::Gone { state_dir: dir },
        None if super::named_like_ours(name) => Owner::Unmarked { link: name.into() },
        _ => Owner::of_alias(alias),
    }
}

/// Makes sure only `bridge` will hold `gateway` and route `subnet`:
/// reclaims what gone agents left, refuses anything else. Returns the links
/// it deleted.
pub fn claim(
    bridge: &str,
    own_dir: &Path,
    subnet: &str,
    gateway: Ipv4Addr,
) -> Result<Vec<String>, NetworkError> {
    let links = links()?;
    let mut reclaimed = Vec::new();
    // A bridge by our name but another agent's marker (an unmarked one was
    // made by an earlier Drover without markers, and is adopted).
    if let Some(l) = links.iter().find(|l| l.name == bridge) {
        let theirs = l
            .alias
            .as_deref()
            .and_then(parse_marker)
            .is_some_and(|d| d != own_dir);
        if theirs {
            let owner = Owner::of_alias(l.alias.as_deref());
            if !owner.is_gone() {
                return Err(NetworkError::BridgeTaken {
                    bridge: bridge.into(),
                    subnet: subnet.into(),
                    owner,
                });
            }
            delete_link(bridge)?;
            reclaimed.push(bridge.to_string());
        }
    }
    for a in addresses()? {
        if a.ip != gateway || a.interface == bridge || reclaimed.contains(&a.interface) {
            continue;
        }
        let owner = owner(&links, &a.interface, own_dir);
        if !owner.is_gone() {
            return Err(NetworkError::AddressTaken {
                gateway,
                subnet: subnet.into(),
                interface: a.interface,
                owner,
            });
        }
        delete_link(&a.interface)?;
        reclaimed.push(a.interface);
    }
    for r in routes_within(subnet)? {
        let dev = r.dev.clone().unwrap_or_default();
        if dev == bridge {
            continue;
        }
        if r.protocol.as_deref() == Some(ROUTE_PROTO) {
            // An agent's route to this subnet as another node's: the
            // scheduler has given the subnet to this node since.
            ip_idempotent(&["route", "del", &r.dst, "proto", ROUTE_PROTO])?;
            continue;
        }
        let owner = owner(&links, &dev, own_dir);
        if !owner.is_gone() || dev.is_empty() {
            return Err(NetworkError::RouteTaken {
                subnet: subnet.into(),
                route: r.describe(),
                interface: if dev.is_empty() { "(none)".into() } else { dev },
                owner,
            });
        }
        delete_link(&dev)?;
        reclaimed.push(dev);
    }
    Ok(reclaimed)
}

/// Deletes every Drover-marked link whose agent is gone for good (not the
/// links of `own_dir`). Returns what it deleted.
pub fn reclaim_gone(own_dir: &Path) -> Result<Vec<String>, NetworkError> {
    let mut deleted = Vec::new();
    for l in links()? {
        let Some(dir) = l.alias.as_deref().and_then(parse_marker) else {
            continue;
        };
        if dir == own_dir || deleted.contains(&l.name) {
            continue;
        }
        if Owner::of_state_dir(&dir).is_gone() {
            delete_link(&l.name)?;
            deleted.push(l.name);
        }
    }
    Ok(deleted)
}
