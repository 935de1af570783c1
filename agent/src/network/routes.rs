//! The routes an agent made to other nodes' subnets, written down in its
//! state dir (`<state-dir>/routes`, one `SUBNET VIA` per line) whenever the
//! set changes, so that they can be taken back by whoever outlives it.
//!
//! A route carries no alias the way a link does, and two agents on one
//! host share the main table; so a route is attributed through this file.
//! The agent's bridge is the handle: whoever removes the bridge of a gone
//! agent (the next agent's sweep or claim, `drover-agent cleanup`) also
//! removes the routes its file lists ([`forget`]); an agent that restarts on
//! the same state dir picks up its own list and prunes it on the first sync.

use super::inventory::parse_prefix;
use super::{conflict::ROUTE_PROTO, NetworkError};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The file under a state dir that lists its agent's routes.
pub const FILE: &str = "routes";

/// Subnet → the node address it is routed via.
pub type Routes = BTreeMap<String, String>;

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Parses a routes file; lines that are not `SUBNET VIA` are skipped (the
/// file is only ever ours, but a torn write must not stop a cleanup).
pub fn parse(text: &str) -> Routes {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some(s), Some(v), None) => Some((s.to_string(), v.to_string())),
                _ => None,
            }
        })
        .collect()
}

fn render(routes: &Routes) -> String {
    routes.iter().map(|(s, v)| format!("{s} {v}\n")).collect()
}

/// The routes the agent on `state_dir` recorded (none if it never wrote any).
pub fn load(state_dir: &Path) -> Routes {
    std::fs::read_to_string(path(state_dir))
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Records `routes` as the agent's (atomically: written aside, then
/// renamed). An empty set removes the file.
pub fn save(state_dir: &Path, routes: &Routes) -> Result<(), NetworkError> {
    let p = path(state_dir);
    let io = |source| NetworkError::Io {
        path: p.display().to_string(),
        source,
    };
    if routes.is_empty() {
        return match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
    }
    let tmp = state_dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, render(routes)).map_err(io)?;
    std::fs::rename(&tmp, &p).map_err(io)
}

/// Deletes one route this agent made (only a Drover route to that subnet
/// via that node: a route someone else put there since is left alone).
pub fn delete(subnet: &str, via: &str) -> Result<(), NetworkError> {
    let (Some((net, len)), Ok(via)) = (parse_prefix(subnet), via.parse::<Ipv4Addr>()) else {
        // Not a route this agent could have made: nothing to delete.
        return Ok(());
    };
    Ok(super::host()?.delete_route(net, len, Some(via), ROUTE_PROTO)?)
}

/// Removes every route the (gone) agent on `state_dir` recorded, then its
/// file. Returns the subnets whose routes it deleted.
pub fn forget(state_dir: &Path) -> Result<Vec<String>, NetworkError> {
    let mut deleted = Vec::new();
    for (subnet, via) in load(state_dir) {
        delete(&subnet, &via)?;
        deleted.push(subnet);
    }
    save(state_dir, &Routes::new())?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_torn_lines_are_skipped() {
        let mut r = Routes::new();
        r.insert("10.88.1.0/24".into(), "192.0.2.2".into());
        r.insert("10.88.2.0/24".into(), "192.0.2.3".into());
        assert_eq!(parse(&render(&r)), r);
        let torn = "10.88.1.0/24 192.0.2.2\n10.88.2.0/24\nx y z\n";
        assert_eq!(parse(torn).len(), 1);
    }

    #[test]
    fn saving_nothing_removes_the_file_and_loading_none_is_empty() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).is_empty());
        let mut r = Routes::new();
        r.insert("10.88.1.0/24".into(), "192.0.2.2".into());
        save(d.path(), &r).unwrap();
        assert_eq!(load(d.path()), r);
        save(d.path(), &Routes::new()).unwrap();
        assert!(!d.path().join(FILE).exists());
        save(d.path(), &Routes::new()).unwrap();
    }
}
