//! The desired sets watch streams send, computed once per applied change
//! for every node together, not once per node.
//!
//! Every node's set has parts all nodes share (published services, the
//! names DNS answers, routes to the other nodes' subnets) and its own
//! (allocations to run and to stop, the secrets they mount). Built for each
//! node on every applied entry, the shared parts cost each watch a scan of
//! every job's allocations: O(nodes x allocations) per entry, which at a
//! thousand nodes starved the Raft tasks until appends timed out. Here one
//! task per peer builds a [`DesiredView`] in one pass over the state, at
//! most every [`MIN_INTERVAL`] (changes in between are coalesced), and
//! each watch takes its node's part from it.
//!
//! A change after a quiet moment goes out at once; in a burst, views are
//! built at most every [`interval`], which grows with the number of nodes:
//! every view reaches every node's stream. What a stream sends an agent
//! that takes deltas (every agent of this release) is only what changed
//! for it (`drover_proto::desired`), so the bytes grow with the change; the
//! stream still compares its node's whole set with the last it sent, so
//! the cpu does not yet.

use crate::cluster::Peer;
use crate::state::{AllocState, Allocation, Desired, HealthState, Job, SecretKind, State};
use drover_proto::pb;
use drover_proto::spec::JobSpec;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::watch;

/// The least time between two builds of the view.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// The time between two builds in a burst of changes, for a cluster of
/// `nodes` whose last build took `took`: at least [`MIN_INTERVAL`], twice
/// the build (never more than a third of the time building), and half a
/// millisecond per node (200 nodes: 100 ms; 1,000: 500 ms), at most 1 s.
/// Measured with `drover-bench scale` at 200 nodes: a view every 20 ms sent
/// agents 369 MiB while placing 2,000 replicas (237 placements/s); every
/// 100 ms, 17 MiB (4,281/s).
pub fn interval(nodes: usize, took: std::time::Duration) -> std::time::Duration {
    let per_node = std::time::Duration::from_micros(500) * nodes as u32;
    MIN_INTERVAL
        .max(took * 2)
        .max(per_node.min(std::time::Duration::from_secs(1)))
}

/// Every node's desired set, as of one applied index.
#[derive(Debug, Default)]
pub struct DesiredView {
    pub index: u64,
    /// The parts every node shares: the same `Arc` as the view before
    /// when they did not change, so a stream sees that at a glance.
    shared: Arc<Shared>,
    /// The last change of the shared parts, computed once for every stream.
    shared_delta: Option<Arc<SharedDelta>>,
    /// Deltas to these shared parts from older ones, for streams that
    /// missed views (a slow agent, a burst): made once for every stream
    /// that last sent the same parts, not once per stream (each is a copy
    /// and a comparison of every name and route).
    from_older: std::sync::Mutex<Vec<Arc<SharedDelta>>>,
    /// Each node's allocations to run and to stop (the `Arc` of the view
    /// before when they did not change).
    own: HashMap<String, Arc<Own>>,
}

/// What every node's set holds alike.
#[derive(Debug, Default, PartialEq)]
struct Shared {
    services: Vec<pb::Service>,
    names: Vec<pb::ServiceName>,
    /// Every ready node with a subnet (each node's set leaves itself out).
    routes: Vec<pb::NodeRoute>,
}

impl Shared {
    fn as_set(&self) -> pb::DesiredAllocations {
        pb::DesiredAllocations {
            services: self.services.clone(),
            names: self.names.clone(),
            routes: self.routes.clone(),
            ..Default::default()
        }
    }
}

/// The change from one view's shared parts to the next.
#[derive(Debug)]
struct SharedDelta {
    /// The parts it applies to.
    before: Arc<Shared>,
    delta: pb::DesiredAllocations,
    /// `delta` encoded: what most streams send of it.
    encoded: Vec<u8>,
    /// Nodes whose own route it adds or removes: their streams leave that
    /// out, so they send a copy of `delta` without it.
    route_nodes: std::collections::HashSet<String>,
}

impl SharedDelta {
    fn new(before: Arc<Shared>, delta: pb::DesiredAllocations) -> SharedDelta {
        use prost::Message;
        let route_nodes = delta
            .routes
            .iter()
            .map(|r| r.node.clone())
            .chain(delta.routes_removed.iter().cloned())
            .collect();
        SharedDelta {
            before,
            encoded: delta.encode_to_vec(),
            delta,
            route_nodes,
        }
    }
}

#[derive(Debug, Default, PartialEq)]
struct Own {
    allocations: Vec<pb::DesiredAllocation>,
    stopping: Vec<String>,
    secrets: Vec<pb::SecretData>,
}

impl DesiredView {
    /// Builds every node's part in one pass over `state`, sharing with
    /// `prev` (the view built before) what did not change.
    pub fn build(
        state: &State,
        key: &crate::secrets::SecretKey,
        prev: Option<&DesiredView>,
    ) -> DesiredView {
        let mut by_job: HashMap<&str, Vec<&Allocation>> = HashMap::new();
        let mut own: HashMap<String, Own> = HashMap::new();
        // A spec is encoded once, however many replicas it has.
        let mut spec_json: HashMap<(&str, u64), String> = HashMap::new();
        let mut wanted: HashMap<&str, BTreeSet<(&'static str, SecretKind, String)>> =
            HashMap::new();
        for a in state.allocations.values() {
            by_job.entry(a.job.as_str()).or_default().push(a);
            match a.desired {
                Desired::Run => {
                    let Some(v) = state.jobs.get(&a.job).and_then(|j| j.version(a.version)) else {
                        continue;
                    };
                    let json = spec_json
                        .entry((a.job.as_str(), a.version))
                        .or_insert_with(|| v.spec.for_agents().to_json())
                        .clone();
                    own.entry(a.node.clone()).or_default().allocations.push(
                        pb::DesiredAllocation {
                            id: a.id.clone(),
                            job: a.job.clone(),
                            version: a.version,
                            replica: a.replica,
                            spec_json: json,
                            name: a.name.clone(),
                        },
                    );
                    for kind in [SecretKind::Secret, SecretKind::Config] {
                        for name in kind.used_by(&v.spec) {
                            wanted.entry(a.node.as_str()).or_default().insert((
                                kind.word(),
                                kind,
                                name.to_string(),
                            ));
                        }
                    }
                }
                Desired::Stop if !a.state.is_terminal() => {
                    own.entry(a.node.clone())
                        .or_default()
                        .stopping
                        .push(a.id.clone());
                }
                Desired::Stop => {}
            }
        }
        for (node, wanted) in wanted {
            let secrets = unseal(state, node, wanted, key);
            own.entry(node.to_string()).or_default().secrets = secrets;
        }
        let routes = state
            .nodes
            .values()
            .filter(|n| !n.subnet.is_empty() && n.status == crate::state::NodeStatus::Ready)
            .map(|n| pb::NodeRoute {
                node: n.name.clone(),
                subnet: n.subnet.clone(),
                via: host_of(&n.address),
            })
            .collect();
        let shared = Shared {
            services: services_with(state, &by_job),
            names: names_with(state, &by_job),
            routes,
        };
        let (shared, shared_delta) = match prev {
            Some(p) if *p.shared == shared => (p.shared.clone(), p.shared_delta.clone()),
            Some(p) => {
                let delta = drover_proto::desired::diff(&p.shared.as_set(), &shared.as_set());
                let delta = SharedDelta::new(p.shared.clone(), delta);
                (Arc::new(shared), Some(Arc::new(delta)))
            }
            None => (Arc::new(shared), None),
        };
        let own = own
            .into_iter()
            .map(|(node, o)| {
                let o = match prev.and_then(|p| p.own.get(&node)) {
                    Some(before) if **before == o => before.clone(),
                    _ => Arc::new(o),
                };
                (node, o)
            })
            .collect();
        DesiredView {
            index: state.last_index,
            shared,
            shared_delta,
            from_older: Default::default(),
            own,
        }
    }

    /// What a watch stream for `node` sends next, given what it `sent`
    /// before (updated): the whole set first; then, to an agent that takes
    /// deltas, what changed for it, and to one that does not, the whole
    /// set again when anything did; nothing when nothing did. The shared
    /// parts' delta is the one computed with the view, unless the stream
    /// missed a view.
    pub fn next_for(
        &self,
        node: &str,
        sent: &mut Option<Sent>,
        deltas: bool,
    ) -> Option<pb::DesiredAllocations> {
        let own = self.own.get(node).cloned();
        let Some(last) = sent.as_mut() else {
            *sent = Some(Sent {
                shared: self.shared.clone(),
                own,
            });
            return Some(self.for_node(node));
        };
        let shared_same = Arc::ptr_eq(&last.shared, &self.shared);
        let none = Own::default();
        let own_same = match (&last.own, &own) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => true,
            (a, b) => a.as_deref().unwrap_or(&none) == b.as_deref().unwrap_or(&none),
        };
        if shared_same && own_same {
            return None;
        }
        if !deltas {
            last.shared = self.shared.clone();
            last.own = own;
            return Some(self.for_node(node));
        }
        // The shared parts' change as encoded once for every stream, when
        // this one can send it as it is.
        let mut pre_encoded: Option<Arc<SharedDelta>> = None;
        let mut message = if shared_same {
            pb::DesiredAllocations::default()
        } else {
            let sd = self.delta_from(&last.shared);
            let mut d = if !sd.route_nodes.contains(node) {
                pre_encoded = Some(sd);
                pb::DesiredAllocations::default()
            } else {
                sd.delta.clone()
            };
            // A node's set has no route to itself.
            d.routes.retain(|r| r.node != node);
            d.routes_removed.retain(|r| r != node);
            d
        };
        if !own_same {
            let set = |o: Option<&Own>| {
                let o = o.unwrap_or(&none);
                pb::DesiredAllocations {
                    allocations: o.allocations.clone(),
                    stopping: o.stopping.clone(),
                    secrets: o.secrets.clone(),
                    ..Default::default()
                }
            };
            let d = drover_proto::desired::diff(&set(last.own.as_deref()), &set(own.as_deref()));
            message.allocations = d.allocations;
            message.allocations_removed = d.allocations_removed;
            message.stopping = d.stopping;
            message.stopping_removed = d.stopping_removed;
            message.secrets = d.secrets;
            message.secrets_removed = d.secrets_removed;
        }
        last.shared = self.shared.clone();
        last.own = own;
        message.index = self.index;
        message.delta = true;
        match pre_encoded {
            // Not empty: the shared parts changed, and not only in this
            // node's route.
            Some(shared) => Some(drover_proto::codec::joined(&shared.encoded, &message)),
            None => (!drover_proto::desired::is_empty(&message)).then_some(message),
        }
    }

    /// The delta from `older` shared parts to these: the one made with the
    /// view, or one made by the first stream that missed the same views and
    /// kept for the others.
    fn delta_from(&self, older: &Arc<Shared>) -> Arc<SharedDelta> {
        if let Some(d) = self
            .shared_delta
            .as_ref()
            .filter(|d| Arc::ptr_eq(&d.before, older))
        {
            return d.clone();
        }
        let mut made = self.from_older.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = made.iter().find(|d| Arc::ptr_eq(&d.before, older)) {
            return d.clone();
        }
        let delta = drover_proto::desired::diff(&older.as_set(), &self.shared.as_set());
        let d = Arc::new(SharedDelta::new(older.clone(), delta));
        made.push(d.clone());
        d
    }

    /// The set desired on `node`.
    pub fn for_node(&self, node: &str) -> pb::DesiredAllocations {
        let own = self.own.get(node);
        pb::DesiredAllocations {
            index: self.index,
            allocations: own.map(|o| o.allocations.clone()).unwrap_or_default(),
            stopping: own.map(|o| o.stopping.clone()).unwrap_or_default(),
            secrets: own.map(|o| o.secrets.clone()).unwrap_or_default(),
            services: self.shared.services.clone(),
            names: self.shared.names.clone(),
            routes: self
                .shared
                .routes
                .iter()
                .filter(|r| r.node != node)
                .cloned()
                .collect(),
            ..Default::default()
        }
    }
}

/// What a watch stream has sent its node so far (see
/// [`DesiredView::next_for`]).
#[derive(Debug)]
pub struct Sent {
    shared: Arc<Shared>,
    own: Option<Arc<Own>>,
}

/// Keeps a [`DesiredView`] of `peer`'s state current, rebuilt after every
/// applied change (at most every [`MIN_INTERVAL`]); ends when the peer stops.
pub fn start(peer: Peer, key: Arc<crate::secrets::SecretKey>) -> watch::Receiver<Arc<DesiredView>> {
    // The first view is built before any watch can read one: an empty
    // placeholder would tell agents to run nothing.
    let first = {
        let state = peer.state.read().unwrap_or_else(|p| p.into_inner());
        DesiredView::build(&state, &key, None)
    };
    let (tx, rx) = watch::channel(Arc::new(first));
    let mut applied = peer.applied.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
            let began = std::time::Instant::now();
            let prev = tx.borrow().clone();
            let (view, nodes) = {
                let state = peer.state.read().unwrap_or_else(|p| p.into_inner());
                (
                    DesiredView::build(&state, &key, Some(&prev)),
                    state.nodes.len(),
                )
            };
            let took = began.elapsed();
            tx.send_replace(Arc::new(view));
            tokio::time::sleep(interval(nodes, took)).await;
        }
    });
    rx
}

/// The secrets and configs in `wanted`, in the clear: the only place a
/// secret is unsealed. One that cannot be (a peer given another key) is
/// left out, and its replicas fail to start saying so.
fn unseal(
    state: &State,
    node: &str,
    wanted: BTreeSet<(&'static str, SecretKind, String)>,
    key: &crate::secrets::SecretKey,
) -> Vec<pb::SecretData> {
    wanted
        .into_iter()
        .filter_map(|(word, kind, name)| {
            let stored = state.stored(kind).get(&name)?;
            let data = match kind {
                SecretKind::Config => stored.data.clone(),
                SecretKind::Secret => match key.open(&name, &stored.data) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(secret = %name, error = %e, "cannot unseal a secret for node {node}");
                        return None;
                    }
                },
            };
            Some(pb::SecretData {
                name,
                kind: word.into(),
                version: stored.version,
                data,
            })
        })
        .collect()
}

/// `job`'s allocations in `by_job` (none when it has none).
fn allocations_of<'a>(
    by_job: &'a HashMap<&str, Vec<&'a Allocation>>,
    job: &Job,
) -> &'a [&'a Allocation] {
    by_job.get(job.name.as_str()).map_or(&[], Vec::as_slice)
}

/// The host part of `host:port`.
fn host_of(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_matches(['[', ']']).to_string(),
        None => addr.to_string(),
    }
}

/// The replicas of `job` (its allocations are `allocations`) that take
/// traffic: running, healthy (or with no check and no verdict against
/// them), and not being stopped. A replica leaves the moment the scheduler
/// decides to stop it. Each comes with its spec and the address it is
/// reached at (its container's, or its node's with host networking).
fn serving<'a>(
    state: &'a State,
    job: &'a Job,
    allocations: &'a [&'a Allocation],
) -> impl Iterator<Item = (&'a Allocation, &'a JobSpec, String)> + 'a {
    allocations
        .iter()
        .copied()
        .filter(|a| a.desired == Desired::Run && a.state == AllocState::Running)
        .filter_map(move |a| {
            let spec = &job.version(a.version)?.spec;
            let checked = spec.health.is_some();
            let healthy = a.health == HealthState::Healthy
                || (!checked && a.health != HealthState::Unhealthy);
            if !healthy {
                return None;
            }
            let host = if spec.network == drover_proto::spec::Network::Host || a.ip.is_empty() {
                host_of(&state.nodes.get(&a.node)?.address)
            } else {
                a.ip.clone()
            };
            Some((a, &**spec, host))
        })
}

/// Every published service with the replicas that take its traffic (see
/// `serving`); `by_job` holds each job's allocations.
fn services_with(state: &State, by_job: &HashMap<&str, Vec<&Allocation>>) -> Vec<pb::Service> {
    let mut out = Vec::new();
    for job in state.jobs.values().filter(|j| !j.stopped) {
        let Some((port, _)) = job.current_spec().exposed_target() else {
            continue;
        };
        let mut endpoints: Vec<String> = serving(state, job, allocations_of(by_job, job))
            .filter_map(|(_, spec, host)| {
                let (_, target) = spec.exposed_target()?;
                Some(format!("{host}:{target}"))
            })
            .collect();
        endpoints.sort();
        out.push(pb::Service {
            job: job.name.clone(),
            port: port as u32,
            endpoints,
        });
    }
    out
}

/// Every running job's name with the replicas that take its traffic (see
/// `serving`) and its current version's named ports: what nodes' DNS
/// servers answer.
fn names_with(state: &State, by_job: &HashMap<&str, Vec<&Allocation>>) -> Vec<pb::ServiceName> {
    state
        .jobs
        .values()
        .filter(|j| !j.stopped)
        .map(|job| {
            let mut replicas: Vec<pb::NamedReplica> =
                serving(state, job, allocations_of(by_job, job))
                    .map(|(a, _, ip)| pb::NamedReplica {
                        name: a.name.clone(),
                        ip,
                    })
                    .collect();
            // In (name, address) order: a delta's merge gives the same.
            replicas.sort_by(|a, b| (&a.name, &a.ip).cmp(&(&b.name, &b.ip)));
            let ports = job
                .current_spec()
                .ports
                .iter()
                .map(|p| pb::NamedPort {
                    name: p.name.clone(),
                    port: p.container,
                })
                .collect();
            pb::ServiceName {
                job: job.name.clone(),
                replicas,
                ports,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, NewAllocation};
    use std::time::Duration;

    #[test]
    fn bursts_are_coalesced_more_the_larger_the_cluster() {
        let fast = Duration::from_micros(100);
        assert_eq!(interval(3, fast), MIN_INTERVAL, "a small cluster: at once");
        assert_eq!(interval(200, fast), Duration::from_millis(100));
        assert_eq!(
            interval(10_000, fast),
            Duration::from_secs(1),
            "at most 1 s"
        );
        assert_eq!(
            interval(3, Duration::from_millis(40)),
            Duration::from_millis(80)
        );
    }

    fn apply(s: &mut State, c: Command) {
        let i = s.last_index + 1;
        let r = s.apply(i, &c);
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn each_node_gets_its_own_part_and_the_shared_ones_but_its_own_route() {
        let mut s = State::default();
        for n in ["n1", "n2", "n3"] {
            apply(
                &mut s,
                Command::RegisterNode {
                    name: n.into(),
                    address: format!("10.0.0.{}:7401", &n[1..]),
                    cpu_millis: 2000,
                    memory_bytes: 1 << 30,
                    at_ms: 0,
                    cluster_cidr: "10.88.0.0/16".into(),
                    volumes: Default::default(),
                    disk_bytes: 0,
                    labels: Default::default(),
                    facts: Default::default(),
                },
            );
        }
        apply(
            &mut s,
            Command::SubmitJob {
                request_id: String::new(),
                spec: Box::new(
                    drover_proto::spec::from_yaml("name: web\nreplicas: 2\nimage: oci:/x:v1\n")
                        .unwrap(),
                ),
                at_ms: 0,
            },
        );
        let place = |id: &str, replica: u32, node: &str| NewAllocation {
            id: id.into(),
            job: "web".into(),
            version: 1,
            replica,
            node: node.into(),
            generation: 0,
            canary: false,
        };
        apply(
            &mut s,
            Command::PlaceAllocations {
                allocations: vec![place("a1", 0, "n1"), place("a2", 1, "n2")],
                at_ms: 0,
            },
        );
        let key = crate::secrets::SecretKey::random().unwrap();
        let view = DesiredView::build(&s, &key, None);
        let n1 = view.for_node("n1");
        assert_eq!(n1.index, s.last_index);
        let ids: Vec<&str> = n1.allocations.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a1"]);
        assert!(n1.allocations[0].spec_json.contains("\"name\":\"web\""));
        let routes: Vec<&str> = n1.routes.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(routes, ["n2", "n3"], "every other ready node, not itself");
        assert_eq!(n1.routes[0].via, "10.0.0.2");
        assert_eq!(n1.names.len(), 1, "every job's name, on every node");
        assert!(view.for_node("n3").allocations.is_empty());
        assert!(view.for_node("unknown").allocations.is_empty());
        // Built again from the same state, the same.
        assert_eq!(
            DesiredView::build(&s, &key, None).for_node("n2"),
            view.for_node("n2")
        );
        // Told to stop, an allocation moves to `stopping` until it ended.
        apply(
            &mut s,
            Command::StopAllocations {
                ids: vec!["a2".into()],
                reason: "test".into(),
                at_ms: 0,
            },
        );
        let n2 = DesiredView::build(&s, &key, None).for_node("n2");
        assert!(n2.allocations.is_empty());
        assert_eq!(n2.stopping, ["a2"]);
    }

    /// A stream's deltas, applied to its first whole set, give every later
    /// whole set, whether it saw each view or missed some; a node whose
    /// part did not change is sent nothing.
    #[test]
    fn a_stream_s_deltas_rebuild_each_whole_set() {
        let (mut s, key) = (
            State::default(),
            crate::secrets::SecretKey::random().unwrap(),
        );
        let mut views: Vec<Arc<DesiredView>> = Vec::new();
        let mut step = |s: &mut State, cmd: Option<Command>| {
            if let Some(cmd) = cmd {
                let i = s.last_index + 1;
                s.apply(i, &cmd);
            }
            let v = DesiredView::build(s, &key, views.last().map(|v| &**v));
            views.push(Arc::new(v));
            views.last().unwrap().clone()
        };
        let register = |n: &str| Command::RegisterNode {
            name: n.into(),
            address: format!("10.0.0.{}:7401", &n[1..]),
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            at_ms: 0,
            cluster_cidr: "10.88.0.0/16".into(),
            volumes: Default::default(),
            disk_bytes: 0,
            labels: Default::default(),
            facts: Default::default(),
        };
        let first = step(&mut s, Some(register("n1")));
        let (mut every, mut some, mut whole) = (None, None, None);
        let mut n1 = first.next_for("n1", &mut every, true).unwrap();
        let mut n1_missing = n1.clone();
        assert!(!n1.delta);
        first.next_for("n1", &mut some, true);
        first.next_for("n1", &mut whole, false);
        let cmds = [
            Some(register("n2")),
            Some(register("n3")),
            Some(Command::SubmitJob {
                request_id: String::new(),
                spec: Box::new(
                    drover_proto::spec::from_yaml(
                        "name: web\nreplicas: 2\nimage: oci:/x:v1\nports: [{name: http, container: 80}]\nexpose: {port: 8080, target: http}\n",
                    )
                    .unwrap(),
                ),
                at_ms: 0,
            }),
            Some(Command::PlaceAllocations {
                allocations: ["n1", "n2"]
                    .iter()
                    .enumerate()
                    .map(|(i, n)| NewAllocation {
                        id: format!("a{i}"),
                        job: "web".into(),
                        version: 1,
                        replica: i as u32,
                        node: n.to_string(),
                        generation: 0,
                        canary: false,
                    })
                    .collect(),
                at_ms: 0,
            }),
            Some(Command::SetNodeStatus {
                name: "n3".into(),
                status: crate::state::NodeStatus::Down,
                at_ms: 0,
            }),
            None,
        ];
        // Deltas of the shared parts sent as encoded once for all streams.
        let mut pre_encoded = 0;
        for (i, cmd) in cmds.into_iter().enumerate() {
            let view = step(&mut s, cmd);
            let whole_set = view.for_node("n1");
            match view.next_for("n1", &mut every, true) {
                Some(d) => {
                    pre_encoded += usize::from(!d.pre_encoded.is_empty());
                    let d = drover_proto::codec::as_received(d).unwrap();
                    assert!(d.delta);
                    drover_proto::desired::merge(&mut n1, d);
                }
                None => assert_eq!(
                    pb::DesiredAllocations {
                        index: 0,
                        ..n1.clone()
                    },
                    pb::DesiredAllocations {
                        index: 0,
                        ..whole_set.clone()
                    },
                    "step {i}: nothing sent, nothing changed"
                ),
            }
            assert_eq!(n1.allocations, whole_set.allocations, "step {i}");
            assert_eq!(n1.routes, whole_set.routes, "step {i}");
            assert_eq!(n1.services, whole_set.services, "step {i}");
            assert_eq!(n1.names, whole_set.names, "step {i}");
            // A stream that sees every other view only.
            if i % 2 == 1 {
                if let Some(d) = view.next_for("n1", &mut some, true) {
                    let d = drover_proto::codec::as_received(d).unwrap();
                    drover_proto::desired::merge(&mut n1_missing, d);
                }
                assert_eq!(n1_missing.routes, whole_set.routes, "step {i}");
                assert_eq!(n1_missing.names, whole_set.names, "step {i}");
            }
            // An agent that takes no deltas gets whole sets.
            if let Some(w) = view.next_for("n1", &mut whole, false) {
                assert!(!w.delta);
                assert_eq!(w, whole_set);
            }
        }
        assert!(n1.routes.iter().all(|r| r.node != "n1" && r.node != "n3"));
        assert_eq!(n1.routes.len(), 1);
        assert!(pre_encoded >= 2, "{pre_encoded} deltas went pre-encoded");
        // Nothing changed: nothing sent.
        let again = step(&mut s, None);
        assert!(again.next_for("n1", &mut every, true).is_none());
    }
}
