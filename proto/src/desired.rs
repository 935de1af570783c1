//! Deltas of a node's desired set: what a watch stream sends after its
//! first message, to agents that ask for them.
//!
//! A full set carries everything a node must know, and most of it (the
//! routes to every other node, every published service, every name) is
//! the same for every node and grows with the cluster: sent whole on each
//! change, one node's loss cost each other node the whole table. A delta
//! holds only the entries added or changed since the stream's previous
//! message, and the keys of those gone, so what a node receives grows with
//! the change. Every list is keyed (allocations and stopping by id,
//! services and names by job, routes by node, secrets by kind and name)
//! and kept in key order, so [`merge`] of [`diff`] gives back exactly the
//! newer set. A stream's first message is always whole; an agent that
//! meets a delta with nothing to apply it to reconnects for a whole one.

use crate::pb::{DesiredAllocations, JobReplica, NamedReplica, SecretData, ServiceEndpoint};

/// The delta that turns `old` into `new` (both whole sets).
pub fn diff(old: &DesiredAllocations, new: &DesiredAllocations) -> DesiredAllocations {
    let (allocations, allocations_removed) =
        lists(&old.allocations, &new.allocations, |a| a.id.clone());
    let (stopping, stopping_removed) = lists(&old.stopping, &new.stopping, Clone::clone);
    let (services, services_removed) = lists(&old.services, &new.services, |s| s.job.clone());
    let (names, names_removed) = lists(&old.names, &new.names, |n| n.job.clone());
    // A service or name kept, with only its endpoints or replicas changed,
    // goes as those changes.
    let (services, endpoints_added, endpoints_removed) = finer(
        &old.services,
        services,
        |s| s.job.clone(),
        |o, n| o.port == n.port,
        |s| &s.endpoints,
        |job, endpoint| ServiceEndpoint {
            job: job.to_string(),
            endpoint: endpoint.clone(),
        },
    );
    let (names, replicas_added, replicas_removed) = finer(
        &old.names,
        names,
        |n| n.job.clone(),
        |o, n| o.ports == n.ports,
        |n| &n.replicas,
        |job, replica| JobReplica {
            job: job.to_string(),
            replica: Some(replica.clone()),
        },
    );
    let (routes, routes_removed) = lists(&old.routes, &new.routes, |r| r.node.clone());
    let (secrets, secrets_removed) = lists(&old.secrets, &new.secrets, secret_key);
    DesiredAllocations {
        index: new.index,
        delta: true,
        allocations,
        allocations_removed,
        stopping,
        stopping_removed,
        services,
        services_removed,
        names,
        names_removed,
        routes,
        routes_removed,
        secrets,
        secrets_removed,
        endpoints_added,
        endpoints_removed,
        replicas_added,
        replicas_removed,
        pre_encoded: Vec::new(),
    }
}

/// Of `changed` (entries of a new list whose old entry differs), those
/// whose old entry is the same but for its inner list go as the inner
/// entries added and removed; the others stay whole.
fn finer<T, I: Clone + PartialEq, D>(
    old: &[T],
    changed: Vec<T>,
    key: impl Fn(&T) -> String,
    same_but_list: impl Fn(&T, &T) -> bool,
    inner: impl Fn(&T) -> &Vec<I>,
    item: impl Fn(&str, &I) -> D,
) -> (Vec<T>, Vec<D>, Vec<D>) {
    let before: std::collections::HashMap<String, &T> = old.iter().map(|x| (key(x), x)).collect();
    let (mut whole, mut added, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for n in changed {
        let k = key(&n);
        match before.get(&k) {
            Some(o) if same_but_list(o, &n) => {
                let (was, is) = (inner(o), inner(&n));
                added.extend(is.iter().filter(|x| !was.contains(x)).map(|x| item(&k, x)));
                removed.extend(was.iter().filter(|x| !is.contains(x)).map(|x| item(&k, x)));
            }
            _ => whole.push(n),
        }
    }
    (whole, added, removed)
}

/// Whether a delta changes nothing (but perhaps the index).
pub fn is_empty(delta: &DesiredAllocations) -> bool {
    delta.allocations.is_empty()
        && delta.allocations_removed.is_empty()
        && delta.stopping.is_empty()
        && delta.stopping_removed.is_empty()
        && delta.services.is_empty()
        && delta.services_removed.is_empty()
        && delta.names.is_empty()
        && delta.names_removed.is_empty()
        && delta.routes.is_empty()
        && delta.routes_removed.is_empty()
        && delta.secrets.is_empty()
        && delta.secrets_removed.is_empty()
        && delta.endpoints_added.is_empty()
        && delta.endpoints_removed.is_empty()
        && delta.replicas_added.is_empty()
        && delta.replicas_removed.is_empty()
}

/// Applies `delta` to the whole set `base`; a whole set replaces it.
pub fn merge(base: &mut DesiredAllocations, delta: DesiredAllocations) {
    if !delta.delta {
        *base = delta;
        return;
    }
    base.index = delta.index;
    apply(
        &mut base.allocations,
        delta.allocations,
        &delta.allocations_removed,
        |a| a.id.clone(),
    );
    apply(
        &mut base.stopping,
        delta.stopping,
        &delta.stopping_removed,
        Clone::clone,
    );
    apply(
        &mut base.services,
        delta.services,
        &delta.services_removed,
        |s| s.job.clone(),
    );
    apply(&mut base.names, delta.names, &delta.names_removed, |n| {
        n.job.clone()
    });
    apply(&mut base.routes, delta.routes, &delta.routes_removed, |r| {
        r.node.clone()
    });
    apply(
        &mut base.secrets,
        delta.secrets,
        &delta.secrets_removed,
        secret_key,
    );
    for e in delta.endpoints_removed {
        if let Some(s) = base.services.iter_mut().find(|s| s.job == e.job) {
            s.endpoints.retain(|x| *x != e.endpoint);
        }
    }
    for e in delta.endpoints_added {
        if let Some(s) = base.services.iter_mut().find(|s| s.job == e.job) {
            if let Err(at) = s.endpoints.binary_search(&e.endpoint) {
                s.endpoints.insert(at, e.endpoint);
            }
        }
    }
    let order = |r: &NamedReplica| (r.name.clone(), r.ip.clone());
    for r in delta.replicas_removed {
        let (Some(n), Some(gone)) = (base.names.iter_mut().find(|n| n.job == r.job), r.replica)
        else {
            continue;
        };
        n.replicas.retain(|x| *x != gone);
    }
    for r in delta.replicas_added {
        let (Some(n), Some(new)) = (base.names.iter_mut().find(|n| n.job == r.job), r.replica)
        else {
            continue;
        };
        if let Err(at) = n.replicas.binary_search_by_key(&order(&new), order) {
            n.replicas.insert(at, new);
        }
    }
}

fn secret_key(s: &SecretData) -> String {
    format!("{}/{}", s.kind, s.name)
}

/// The entries of `new` that `old` lacks or holds otherwise, and the keys
/// of `old` that `new` lacks.
fn lists<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Vec<String>) {
    let before: std::collections::HashMap<String, &T> = old.iter().map(|x| (key(x), x)).collect();
    let after: std::collections::HashSet<String> = new.iter().map(&key).collect();
    let changed = new
        .iter()
        .filter(|x| before.get(&key(x)).is_none_or(|o| *o != *x))
        .cloned()
        .collect();
    let removed = old
        .iter()
        .map(&key)
        .filter(|k| !after.contains(k))
        .collect();
    (changed, removed)
}

/// Replaces or adds `changed` in `list`, drops `removed`, and keeps the
/// list in key order.
fn apply<T>(list: &mut Vec<T>, changed: Vec<T>, removed: &[String], key: impl Fn(&T) -> String) {
    let mut by_key: std::collections::BTreeMap<String, T> = std::mem::take(list)
        .into_iter()
        .map(|x| (key(&x), x))
        .collect();
    for k in removed {
        by_key.remove(k);
    }
    for x in changed {
        by_key.insert(key(&x), x);
    }
    *list = by_key.into_values().collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{DesiredAllocation, NodeRoute, Service, ServiceName};
    use proptest::prelude::*;

    fn set(seed: &[(u8, u8)]) -> DesiredAllocations {
        let mut s = DesiredAllocations::default();
        for (k, v) in seed {
            s.allocations.push(DesiredAllocation {
                id: format!("a{k:03}"),
                spec_json: format!("{v}"),
                ..Default::default()
            });
            s.routes.push(NodeRoute {
                node: format!("n{k:03}"),
                subnet: format!("10.0.{v}.0/24"),
                via: String::new(),
            });
            if k % 2 == 0 {
                s.stopping.push(format!("s{k:03}"));
                s.services.push(Service {
                    job: format!("j{k:03}"),
                    port: (*v / 2) as u32,
                    endpoints: (0..*v).map(|e| format!("10.0.0.{e}:80")).collect(),
                });
            } else {
                s.names.push(ServiceName {
                    job: format!("j{k:03}"),
                    replicas: {
                        let mut r: Vec<NamedReplica> = (0..*v)
                            .map(|e| NamedReplica {
                                name: format!("j{k:03}-{}", e % 2),
                                ip: format!("10.0.1.{e}"),
                            })
                            .collect();
                        // As the scheduler sends them: by name, then address.
                        r.sort_by(|a, b| (&a.name, &a.ip).cmp(&(&b.name, &b.ip)));
                        r
                    },
                    ports: vec![],
                });
                s.secrets.push(SecretData {
                    name: format!("x{k:03}"),
                    kind: "secret".into(),
                    version: *v as u64,
                    data: vec![*v],
                });
            }
        }
        s
    }

    proptest! {
        /// A delta applied to the older set gives the newer one, whatever
        /// was added, changed or removed.
        #[test]
        fn merging_a_diff_gives_the_newer_set(
            old in proptest::collection::btree_map(0u8..40, 0u8..6, 0..30),
            new in proptest::collection::btree_map(0u8..40, 0u8..6, 0..30),
        ) {
            let old = set(&old.into_iter().collect::<Vec<_>>());
            let mut new = set(&new.into_iter().collect::<Vec<_>>());
            new.index = 9;
            let delta = diff(&old, &new);
            let mut merged = old.clone();
            merge(&mut merged, delta.clone());
            prop_assert_eq!(&merged, &new);
            prop_assert_eq!(is_empty(&delta), old.allocations == new.allocations
                && old.routes == new.routes);
        }
    }

    #[test]
    fn one_route_gone_costs_one_key() {
        let old = set(&(0..200).map(|k| (k, 1)).collect::<Vec<_>>());
        let mut new = old.clone();
        new.routes.retain(|r| r.node != "n007");
        let delta = diff(&old, &new);
        assert_eq!(delta.routes_removed, ["n007"]);
        assert!(delta.routes.is_empty() && delta.allocations.is_empty());
        use prost::Message;
        assert!(delta.encoded_len() < 16, "{} bytes", delta.encoded_len());
        assert!(old.encoded_len() > 10_000);
    }
}

#[cfg(test)]
mod finer_tests {
    use super::*;
    use crate::pb::{Service, ServiceName};
    use prost::Message;

    #[test]
    fn a_replica_gone_costs_its_endpoint_and_name_not_its_whole_service() {
        let ips: Vec<String> = (0..100).map(|i| format!("10.1.{i}.2")).collect();
        let set = |skip: Option<usize>| {
            let kept = || ips.iter().enumerate().filter(|(i, _)| Some(*i) != skip);
            DesiredAllocations {
                services: vec![Service {
                    job: "web".into(),
                    port: 80,
                    endpoints: {
                        let mut e: Vec<String> =
                            kept().map(|(_, ip)| format!("{ip}:8080")).collect();
                        e.sort();
                        e
                    },
                }],
                names: vec![ServiceName {
                    job: "web".into(),
                    replicas: kept()
                        .map(|(i, ip)| NamedReplica {
                            name: format!("web-{i:03}"),
                            ip: ip.clone(),
                        })
                        .collect(),
                    ports: vec![],
                }],
                ..Default::default()
            }
        };
        let (old, new) = (set(None), set(Some(40)));
        let delta = diff(&old, &new);
        assert!(delta.services.is_empty() && delta.names.is_empty());
        assert_eq!(delta.endpoints_removed.len(), 1);
        assert_eq!(delta.replicas_removed.len(), 1);
        assert!(delta.encoded_len() < 80, "{} bytes", delta.encoded_len());
        assert!(old.encoded_len() > 3_000);
        let mut merged = old.clone();
        merge(&mut merged, delta);
        assert_eq!(merged, new);
    }
}
