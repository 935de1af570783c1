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

use super::inventory::{parse_prefix, within, Address, Link, Route};
use super::NetworkError;
use crate::leftovers::{parse_marker, Owner};
use std::net::Ipv4Addr;
use std::path::Path;

/// The routing protocol number Drover marks its routes to other nodes' subnets with.
pub const ROUTE_PROTO: u8 = 215;

pub fn links() -> Result<Vec<Link>, NetworkError> {
    Ok(super::host()?.links()?)
}

/// Routes for `subnet` or any prefix inside it.
fn routes_within(routes: Vec<Route>, subnet: &str) -> Result<Vec<Route>, NetworkError> {
    let net = parse_prefix(subnet).ok_or_else(|| NetworkError::Subnet(subnet.into()))?;
    Ok(routes
        .into_iter()
        .filter(|r| parse_prefix(&r.dst).is_some_and(|p| within(p, net)))
        .collect())
}

/// Deletes a link and, for a bridge, the veths plugged into it (their
/// addresses and routes go with them) and its nftables table. Idempotent.
pub fn delete_link(name: &str) -> Result<(), NetworkError> {
    let mut nl = super::host()?;
    for port in nl
        .links()?
        .iter()
        .filter(|l| l.master.as_deref() == Some(name))
    {
        nl.delete_link(&port.name)?;
    }
    nl.delete_link(name)?;
    if name.starts_with("drv") {
        super::guard::remove(name);
    }
    Ok(())
}

/// Who owns link `name`, seen from the agent on `own_dir`: `None` for a
/// link marked with our own state dir (ours, or a leftover of ours).
fn owner(links: &[Link], name: &str, own_dir: &Path) -> Option<Owner> {
    let alias = links
        .iter()
        .find(|l| l.name == name)
        .and_then(|l| l.alias.as_deref());
    match alias.and_then(parse_marker) {
        Some(dir) if dir == own_dir => None,
        None if super::named_like_ours(name) => Some(Owner::Unmarked { link: name.into() }),
        _ => Some(Owner::of_alias(alias)),
    }
}

/// What claiming the subnet takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete a link a gone agent (or an earlier process of ours) left, with its ports.
    DeleteLink(String),
    /// Delete a Drover route to the subnet (from when it was another node's).
    DeleteRoute(String),
}

/// Decides how `bridge` gets to hold `gateway` and route `subnet` alone,
/// given the host's links, addresses and routes (routes within the subnet)
/// and who owns each link (`owner`: `None` for our own): the actions that
/// reclaim what gone agents left, or the error naming what else holds it.
/// Pure: the caller reads the host and carries the actions out.
pub fn plan(
    bridge: &str,
    subnet: &str,
    gateway: Ipv4Addr,
    addresses: &[Address],
    routes: &[Route],
    bridge_exists: bool,
    owner: &dyn Fn(&str) -> Option<Owner>,
) -> Result<Vec<Action>, NetworkError> {
    let mut actions = Vec::new();
    let deleted =
        |actions: &[Action], name: &str| actions.contains(&Action::DeleteLink(name.into()));
    // A bridge by our name but another agent's marker. An unmarked one was
    // made by an earlier Drover without markers, and is adopted.
    if bridge_exists {
        match owner(bridge) {
            Some(o @ (Owner::Live { .. } | Owner::Dormant { .. })) => {
                return Err(NetworkError::BridgeTaken {
                    bridge: bridge.into(),
                    subnet: subnet.into(),
                    owner: o,
                })
            }
            Some(Owner::Gone { .. }) => actions.push(Action::DeleteLink(bridge.into())),
            _ => {}
        }
    }
    for a in addresses {
        if a.ip != gateway || a.interface == bridge || deleted(&actions, &a.interface) {
            continue;
        }
        match owner(&a.interface) {
            None => {}
            Some(o) if o.is_gone() => {}
            Some(o) => {
                return Err(NetworkError::AddressTaken {
                    gateway,
                    subnet: subnet.into(),
                    interface: a.interface.clone(),
                    owner: o,
                })
            }
        }
        actions.push(Action::DeleteLink(a.interface.clone()));
    }
    for r in routes {
        let dev = r.dev.clone().unwrap_or_default();
        // Our own, or one that goes with a link being deleted.
        if dev == bridge || deleted(&actions, &dev) {
            continue;
        }
        if r.protocol.as_deref() == Some(ROUTE_PROTO.to_string().as_str()) {
            actions.push(Action::DeleteRoute(r.dst.clone()));
            continue;
        }
        match (dev.is_empty(), owner(&dev)) {
            (false, None) => {}
            (false, Some(o)) if o.is_gone() => {}
            (_, o) => {
                return Err(NetworkError::RouteTaken {
                    subnet: subnet.into(),
                    route: r.describe(),
                    interface: if dev.is_empty() { "(none)".into() } else { dev },
                    owner: o.unwrap_or(Owner::Foreign),
                })
            }
        }
        actions.push(Action::DeleteLink(dev));
    }
    Ok(actions)
}

/// Makes sure only `bridge` will hold `gateway` and route `subnet` (see
/// [`plan`]). Returns the links it deleted.
pub fn claim(
    bridge: &str,
    own_dir: &Path,
    subnet: &str,
    gateway: Ipv4Addr,
) -> Result<Vec<String>, NetworkError> {
    let mut nl = super::host()?;
    let inventory = nl.inventory()?;
    let links = inventory.links;
    let actions = plan(
        bridge,
        subnet,
        gateway,
        &inventory.addresses,
        &routes_within(inventory.routes, subnet)?,
        links.iter().any(|l| l.name == bridge),
        &|name| owner(&links, name, own_dir),
    )?;
    let mut reclaimed = Vec::new();
    for a in actions {
        match a {
            Action::DeleteLink(name) => {
                delete_link(&name)?;
                // A gone agent's routes go with its bridge (ours are pruned by sync).
                let dir = links.iter().find(|l| l.name == name);
                if let Some(dir) = dir.and_then(|l| l.alias.as_deref().and_then(parse_marker)) {
                    if dir != own_dir {
                        super::routes::forget(&dir)?;
                    }
                }
                reclaimed.push(name);
            }
            Action::DeleteRoute(dst) => {
                if let Some((net, len)) = parse_prefix(&dst) {
                    nl.delete_route(net, len, None, ROUTE_PROTO)?;
                }
            }
        }
    }
    Ok(reclaimed)
}

/// Deletes every Drover-marked link whose agent is gone for good (not the
/// links of `own_dir`), and the routes that agent recorded. Returns the
/// links it deleted.
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
            super::routes::forget(&dir)?;
            deleted.push(l.name);
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
    const SUBNET: &str = "10.88.0.0/24";

    fn addr(interface: &str) -> Address {
        Address {
            interface: interface.into(),
            ip: GW,
            prefix_len: 24,
        }
    }

    fn route(dst: &str, dev: &str, protocol: &str) -> Route {
        Route {
            dst: dst.into(),
            dev: Some(dev.into()),
            gateway: None,
            protocol: Some(protocol.into()),
        }
    }

    fn gone() -> Option<Owner> {
        Some(Owner::Gone {
            state_dir: PathBuf::from("/old"),
        })
    }

    fn live() -> Option<Owner> {
        Some(Owner::Live {
            state_dir: PathBuf::from("/other"),
            pid: "42".into(),
        })
    }

    /// A link's name and how to make its owner.
    type Known = (&'static str, fn() -> Option<Owner>);

    /// Owners by link name; anything unnamed is foreign.
    fn owners(known: &'static [Known]) -> impl Fn(&str) -> Option<Owner> {
        move |name| {
            known
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Some(Owner::Foreign), |(_, o)| o())
        }
    }

    #[test]
    fn nothing_else_on_the_subnet_takes_nothing() {
        let routes = [route(SUBNET, "drvme", "kernel")];
        let own = owners(&[("drvme", || None)]);
        assert_eq!(
            plan("drvme", SUBNET, GW, &[addr("drvme")], &routes, true, &own).unwrap(),
            []
        );
    }

    #[test]
    fn a_gone_agents_bridge_goes_and_its_route_with_it() {
        let routes = [route(SUBNET, "drvold", "kernel")];
        let own = owners(&[("drvold", gone)]);
        assert_eq!(
            plan("drvme", SUBNET, GW, &[addr("drvold")], &routes, false, &own).unwrap(),
            [Action::DeleteLink("drvold".into())]
        );
    }

    #[test]
    fn a_foreign_or_live_holder_is_refused_by_name() {
        let e = plan(
            "drvme",
            SUBNET,
            GW,
            &[addr("br0")],
            &[],
            false,
            &owners(&[]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "gateway 10.88.0.1 of subnet 10.88.0.0/24 is already on interface br0, not made by drover"
        );
        let own = owners(&[("drvother", live)]);
        let e = plan("drvme", SUBNET, GW, &[addr("drvother")], &[], false, &own).unwrap_err();
        assert!(
            matches!(e, NetworkError::AddressTaken { ref interface, owner: Owner::Live { .. }, .. } if interface == "drvother"),
            "{e}"
        );
    }

    #[test]
    fn our_bridge_name_under_another_marker_is_reclaimed_only_when_gone() {
        let own = owners(&[("drvme", gone)]);
        assert_eq!(
            plan("drvme", SUBNET, GW, &[], &[], true, &own).unwrap(),
            [Action::DeleteLink("drvme".into())]
        );
        let own = owners(&[("drvme", live)]);
        assert!(matches!(
            plan("drvme", SUBNET, GW, &[], &[], true, &own),
            Err(NetworkError::BridgeTaken { .. })
        ));
        // Unmarked (an older drover's): adopted.
        let own = owners(&[("drvme", || {
            Some(Owner::Unmarked {
                link: "drvme".into(),
            })
        })]);
        assert_eq!(plan("drvme", SUBNET, GW, &[], &[], true, &own).unwrap(), []);
    }

    #[test]
    fn routes_into_the_subnet_are_drovers_to_replace_or_refused() {
        let routes = [
            route("10.88.0.0/24", "eth0", "215"),
            route("10.88.0.64/26", "eth1", "boot"),
        ];
        let e = plan("drvme", SUBNET, GW, &[], &routes, false, &owners(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 10.88.0.0/24 is already routed by `10.88.0.64/26 dev eth1` on interface eth1, not made by drover"
        );
        assert_eq!(
            plan("drvme", SUBNET, GW, &[], &routes[..1], false, &owners(&[])).unwrap(),
            [Action::DeleteRoute("10.88.0.0/24".into())]
        );
    }
}
