//! Placement: which node each new replica goes to.
//!
//! A pure function over plain data, in Borg's two steps. Feasibility: a node
//! is a candidate if it is ready, schedulable, has a working container
//! network when the replica needs one (private networking), and has the
//! replica's cpu and memory free. Scoring: among candidates, spread replicas of one job across
//! nodes first (fewest replicas of this job), then prefer the least loaded node
//! (lowest of the larger of its cpu and memory fractions in use), then the
//! name, so equal inputs always give equal answers. When a replica fits
//! nowhere the answer says why, in words a user can act on.
//!
//! A job's placement rules are feasibility too: its `constraints` must hold
//! on the node's attributes, and a node holding `max_per_node` of its
//! replicas takes no more. Its soft rules come first in the scoring: its
//! `spread` (the fewest replicas, weighted, in the node's value of each
//! spread attribute), then its `affinities` (the most weight matched).

use drover_proto::quantity::{Cpu, Size};
use drover_proto::spec::constraint::{Affinity, Constraint, Matcher, Spread};
use std::collections::{BTreeMap, HashMap};

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub ready: bool,
    pub schedulable: bool,
    pub cpu_total: u64,
    pub memory_total: u64,
    pub cpu_used: u64,
    pub memory_used: u64,
    /// Replicas of the job being placed already on this node.
    pub job_replicas: u32,
    /// Those of them of the version being placed: what `max_per_node`
    /// counts (during a rollout an old replica may share a node with a new
    /// one, or the rollout could not start on a full set of nodes).
    pub version_replicas: u32,
    /// Ports bound on the node's own network (host-network replicas, published services).
    #[doc(hidden)]
    pub host_ports: std::collections::BTreeSet<u16>,
    /// Why the node's container network is unavailable ("" when it works).
    pub network_error: String,
    /// Host volumes it offers: name, read-only.
    pub volumes: BTreeMap<String, bool>,
    /// Disk for writable layers (0: not said, not checked) and reserved.
    pub disk_total: u64,
    pub disk_used: u64,
    /// Its labels and facts, as constraints see them (`Node::attributes`).
    pub attributes: BTreeMap<String, String>,
}

/// What one replica needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// A host-network replica binds its ports on the node itself.
    pub host_ports: Vec<u16>,
    /// The replica gets its own network namespace on the node's container
    /// network (not the node's own network).
    pub private_network: bool,
    /// Host volumes it mounts: name, read-only.
    pub volumes: Vec<(String, bool)>,
    pub disk_bytes: u64,
    /// What the node's attributes must satisfy.
    pub constraints: Vec<Constraint>,
    /// At most this many replicas of the job on a node (0: no limit).
    pub max_per_node: u32,
    /// Preferences among the nodes that fit.
    pub affinities: Vec<Affinity>,
    pub spread: Vec<Spread>,
}

/// The outcome: a node for each replica that fits, and why the rest do not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub nodes: Vec<String>,
    pub unplaced: u32,
    pub reason: Option<String>,
}

/// Places `count` replicas, one after the other, each seeing the ones
/// before, on a copy of `candidates`.
pub fn place(candidates: &[Candidate], ask: &Ask, count: u32) -> Placement {
    place_on(&mut candidates.to_vec(), ask, count)
}

/// Places `count` replicas on `nodes`, which then count what the chosen
/// ones take (cpu, memory, disk, the job's replicas, host ports).
///
/// Without `spread` a node's score changes only when it is chosen, so the
/// nodes that fit wait in score order and each replica takes the first:
/// O(N + count log N) for the call, not O(N) per replica (100 replicas of a
/// job on 10,000 nodes compared a million nodes). With `spread`, choosing a node
/// changes the score of every node sharing its values, so each replica
/// looks at every node.
pub fn place_on(nodes: &mut [Candidate], ask: &Ask, count: u32) -> Placement {
    place_with(nodes, ask, count, ask.spread.is_empty())
}

fn place_with(nodes: &mut [Candidate], ask: &Ask, count: u32, ordered: bool) -> Placement {
    let rules = match Rules::new(ask) {
        Ok(r) => r,
        Err(why) => {
            return Placement {
                nodes: vec![],
                unplaced: count,
                reason: Some(why),
            }
        }
    };
    // What does not change as replicas are placed: each node's affinity
    // score.
    let preferred: Vec<i64> = nodes
        .iter()
        .map(|n| rules.preference(&n.attributes))
        .collect();
    let mut chosen = Vec::new();
    let mut picker = if ordered {
        Picker::Ordered(Ordered::new(nodes, ask, &rules, &preferred))
    } else {
        Picker::Scan(Scan::new(nodes, ask))
    };
    for _ in 0..count {
        let best = match &mut picker {
            Picker::Ordered(o) => o.next(),
            Picker::Scan(s) => s.best(nodes, ask, &rules, &preferred),
        };
        let Some(i) = best else {
            let unplaced = count - chosen.len() as u32;
            return Placement {
                nodes: chosen,
                unplaced,
                reason: Some(explain(nodes, ask, &rules)),
            };
        };
        let n = &mut nodes[i];
        n.cpu_used += ask.cpu_millis;
        n.memory_used += ask.memory_bytes;
        n.disk_used += ask.disk_bytes;
        n.job_replicas += 1;
        n.version_replicas += 1;
        n.host_ports.extend(ask.host_ports.iter().copied());
        chosen.push(n.name.clone());
        match &mut picker {
            Picker::Ordered(o) => o.chosen(nodes, i, ask, &rules, &preferred),
            Picker::Scan(s) => s.chosen(i),
        }
    }
    Placement {
        nodes: chosen,
        unplaced: 0,
        reason: None,
    }
}

/// How the next node is chosen (see [`place_on`]).
enum Picker {
    Ordered(Ordered),
    Scan(Scan),
}

/// A node's place in the order without spread: the most preferred, then
/// the fewest of the job's replicas, then the least loaded, then the name
/// (its rank among the names); and the node.
type Rank = (i64, u32, u64, usize, usize);

/// The nodes that fit, in score order (a heap: made in O(N), and a call
/// that places a few replicas takes only a few out).
struct Ordered {
    queue: std::collections::BinaryHeap<std::cmp::Reverse<Rank>>,
    /// Each node's position in name order.
    by_name: Vec<usize>,
}

impl Ordered {
    fn new(nodes: &[Candidate], ask: &Ask, rules: &Rules, preferred: &[i64]) -> Ordered {
        // The reconciler's nodes come in name order already.
        let mut names: Vec<usize> = (0..nodes.len()).collect();
        if !nodes.windows(2).all(|w| w[0].name <= w[1].name) {
            names.sort_by(|a, b| nodes[*a].name.cmp(&nodes[*b].name));
        }
        let mut by_name = vec![0; nodes.len()];
        for (position, i) in names.into_iter().enumerate() {
            by_name[i] = position;
        }
        let mut o = Ordered {
            queue: Default::default(),
            by_name,
        };
        let fitting: Vec<_> = (0..nodes.len())
            .filter(|&i| fits(&nodes[i], ask, rules).is_ok())
            .map(|i| std::cmp::Reverse(o.rank(nodes, i, preferred)))
            .collect();
        o.queue = fitting.into();
        o
    }

    fn rank(&self, nodes: &[Candidate], i: usize, preferred: &[i64]) -> Rank {
        let n = &nodes[i];
        (
            -preferred[i],
            n.job_replicas,
            load_permille(n),
            self.by_name[i],
            i,
        )
    }

    /// The best node, taken out of the queue until [`Ordered::chosen`].
    fn next(&mut self) -> Option<usize> {
        self.queue.pop().map(|r| r.0 .4)
    }

    /// Node `i` took a replica: back in the queue, where its new score
    /// puts it, if another still fits.
    fn chosen(
        &mut self,
        nodes: &[Candidate],
        i: usize,
        ask: &Ask,
        rules: &Rules,
        preferred: &[i64],
    ) {
        if fits(&nodes[i], ask, rules).is_ok() {
            let r = self.rank(nodes, i, preferred);
            self.queue.push(std::cmp::Reverse(r));
        }
    }
}

/// Every node looked at for each replica (with spread).
struct Scan {
    /// Each node's value of each spread attribute ("" when it has none).
    spread_values: Vec<Vec<String>>,
    /// The job's replicas in each value of each spread attribute.
    in_value: Vec<HashMap<String, u64>>,
}

impl Scan {
    fn new(nodes: &[Candidate], ask: &Ask) -> Scan {
        let spread_values: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                ask.spread
                    .iter()
                    .map(|s| n.attributes.get(&s.attr).cloned().unwrap_or_default())
                    .collect()
            })
            .collect();
        let mut in_value: Vec<HashMap<String, u64>> = vec![HashMap::new(); ask.spread.len()];
        for (n, values) in nodes.iter().zip(&spread_values) {
            for (j, v) in values.iter().enumerate() {
                *in_value[j].entry(v.clone()).or_default() += u64::from(n.job_replicas);
            }
        }
        Scan {
            spread_values,
            in_value,
        }
    }

    fn best(
        &self,
        nodes: &[Candidate],
        ask: &Ask,
        rules: &Rules,
        preferred: &[i64],
    ) -> Option<usize> {
        let key = |i: usize| {
            let spread: u64 = ask
                .spread
                .iter()
                .zip(&self.spread_values[i])
                .enumerate()
                .map(|(j, (s, v))| {
                    u64::from(s.weight) * self.in_value[j].get(v).copied().unwrap_or(0)
                })
                .sum();
            let n = &nodes[i];
            (spread, -preferred[i], n.job_replicas, load_permille(n))
        };
        // Each candidate's key once, not once per comparison.
        (0..nodes.len())
            .filter(|&i| fits(&nodes[i], ask, rules).is_ok())
            .map(|i| (key(i), i))
            .min_by(|(ka, a), (kb, b)| ka.cmp(kb).then_with(|| nodes[*a].name.cmp(&nodes[*b].name)))
            .map(|(_, i)| i)
    }

    fn chosen(&mut self, i: usize) {
        for (j, v) in self.spread_values[i].iter().enumerate() {
            *self.in_value[j].entry(v.clone()).or_default() += 1;
        }
    }
}

/// A job's placement rules, ready to check on many nodes.
pub struct Rules {
    matchers: Vec<Matcher>,
    affinities: Vec<(Matcher, i64)>,
}

impl Rules {
    /// Compiles the ask's constraints (validated when the job was
    /// submitted; an error here says which one is broken).
    pub fn new(ask: &Ask) -> Result<Rules, String> {
        let matchers = ask
            .constraints
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.matcher()
                    .map_err(|(f, m)| format!("constraints[{i}].{f}: {m}"))
            })
            .collect::<Result<_, _>>()?;
        let affinities = ask
            .affinities
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.rule()
                    .matcher()
                    .map(|m| (m, i64::from(a.weight)))
                    .map_err(|(f, m)| format!("affinities[{i}].{f}: {m}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Rules {
            matchers,
            affinities,
        })
    }

    /// The weight of the affinities a node with `attributes` matches.
    pub fn preference(&self, attributes: &BTreeMap<String, String>) -> i64 {
        self.affinities
            .iter()
            .filter(|(m, _)| m.matches(attributes))
            .map(|(_, w)| w)
            .sum()
    }

    /// The first constraint a node with `attributes` breaks.
    pub fn broken(&self, attributes: &BTreeMap<String, String>) -> Option<usize> {
        self.matchers.iter().position(|m| !m.matches(attributes))
    }
}

/// Why a node cannot take the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    Down,
    Cordoned,
    /// It breaks the ask's `constraints[i]`.
    Constraint(usize),
    /// It already holds `max_per_node` replicas of the job.
    MaxPerNode,
    Network,
    Port(u16),
    Cpu,
    Memory,
    /// It lacks the `volumes[i]` the ask names (or offers it read-only only).
    Volume(usize),
    Disk,
}

/// Whether the node could take the replica if it had the cpu, memory and
/// disk free: every other rule holds there (preemption may free those).
pub fn fits_but_for_resources(n: &Candidate, ask: &Ask, rules: &Rules) -> bool {
    matches!(
        fits(n, ask, rules),
        Ok(()) | Err(Misfit::Disk | Misfit::Memory | Misfit::Cpu)
    )
}

fn fits(n: &Candidate, ask: &Ask, rules: &Rules) -> Result<(), Misfit> {
    if !n.ready {
        return Err(Misfit::Down);
    }
    if !n.schedulable {
        return Err(Misfit::Cordoned);
    }
    if let Some(i) = rules.broken(&n.attributes) {
        return Err(Misfit::Constraint(i));
    }
    if ask.max_per_node > 0 && n.version_replicas >= ask.max_per_node {
        return Err(Misfit::MaxPerNode);
    }
    if ask.private_network && !n.network_error.is_empty() {
        return Err(Misfit::Network);
    }
    if let Some(p) = ask.host_ports.iter().find(|p| n.host_ports.contains(p)) {
        return Err(Misfit::Port(*p));
    }
    for (i, (name, read_only)) in ask.volumes.iter().enumerate() {
        match n.volumes.get(name) {
            Some(true) if !read_only => return Err(Misfit::Volume(i)),
            Some(_) => {}
            None => return Err(Misfit::Volume(i)),
        }
    }
    if n.disk_total > 0 && n.disk_total.saturating_sub(n.disk_used) < ask.disk_bytes {
        return Err(Misfit::Disk);
    }
    if n.memory_total.saturating_sub(n.memory_used) < ask.memory_bytes {
        return Err(Misfit::Memory);
    }
    if n.cpu_total.saturating_sub(n.cpu_used) < ask.cpu_millis {
        return Err(Misfit::Cpu);
    }
    Ok(())
}

fn load_permille(n: &Candidate) -> u64 {
    let frac = |used: u64, total: u64| (used * 1000).checked_div(total).unwrap_or(1000);
    frac(n.cpu_used, n.cpu_total).max(frac(n.memory_used, n.memory_total))
}

fn explain(nodes: &[Candidate], ask: &Ask, rules: &Rules) -> String {
    if nodes.is_empty() {
        return "no nodes have registered".into();
    }
    let mut by: BTreeMap<Misfit, u32> = BTreeMap::new();
    for n in nodes {
        if let Err(m) = fits(n, ask, rules) {
            *by.entry(m).or_default() += 1;
        }
    }
    let checked = nodes.len();
    let plural = if checked == 1 { "" } else { "s" };
    let words = |m: Misfit| match m {
        Misfit::Down => "is down".to_string(),
        Misfit::Cordoned => "is cordoned".to_string(),
        Misfit::Constraint(i) => format!("does not match constraint `{}`", ask.constraints[i]),
        Misfit::MaxPerNode => format!(
            "already runs {} of its replicas (max_per_node)",
            ask.max_per_node
        ),
        Misfit::Network => "has no working container network".to_string(),
        Misfit::Port(p) => format!("has port {p} in use"),
        Misfit::Cpu => format!("lacks {} cpu", Cpu(ask.cpu_millis)),
        Misfit::Memory => format!("lacks {} memory", Size(ask.memory_bytes)),
        Misfit::Volume(i) => format!("lacks {}", volume_words(ask, i)),
        Misfit::Disk => format!("lacks {} disk", Size(ask.disk_bytes)),
    };
    if by.len() == 1 {
        let (m, _) = by.iter().next().expect("one entry");
        let head = match m {
            Misfit::Down => "no node is ready".to_string(),
            Misfit::Cordoned => "every ready node is cordoned".to_string(),
            Misfit::Constraint(i) => {
                format!("no node matches constraint `{}`", ask.constraints[*i])
            }
            Misfit::MaxPerNode => format!(
                "every node already runs {} of its replicas (max_per_node)",
                ask.max_per_node
            ),
            Misfit::Network => "no node has a working container network".to_string(),
            Misfit::Port(p) => format!("no node has port {p} free"),
            Misfit::Cpu => format!("no node has {} cpu free", Cpu(ask.cpu_millis)),
            Misfit::Memory => format!("no node has {} free memory", Size(ask.memory_bytes)),
            Misfit::Volume(i) => format!("no node has {}", volume_words(ask, *i)),
            Misfit::Disk => format!("no node has {} disk free", Size(ask.disk_bytes)),
        };
        return format!(
            "{head}: {checked} node{plural} checked{}",
            networks(nodes, ask, rules)
        );
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(m, n)| format!("{n} {}", words(*m)))
        .collect();
    format!(
        "no node fits: {} ({checked} node{plural} checked){}",
        parts.join(", "),
        networks(nodes, ask, rules)
    )
}

/// `host volume "data"` (`writable host volume "data"` for a mount that
/// writes: a node offering it read-only does not do).
fn volume_words(ask: &Ask, i: usize) -> String {
    match ask.volumes.get(i) {
        Some((name, true)) => format!("host volume {name:?}"),
        Some((name, false)) => format!("writable host volume {name:?}"),
        None => "a host volume".into(),
    }
}

/// How many nodes' network errors an explanation quotes.
const NETWORK_ERRORS_QUOTED: usize = 3;

/// The reasons of the nodes ruled out for their container network, quoted
/// (a few of them) so the user can fix the node: `; node a: container
/// network unavailable: ...`.
fn networks(nodes: &[Candidate], ask: &Ask, rules: &Rules) -> String {
    let broken: Vec<&Candidate> = nodes
        .iter()
        .filter(|n| fits(n, ask, rules) == Err(Misfit::Network))
        .collect();
    let mut out = String::new();
    for n in broken.iter().take(NETWORK_ERRORS_QUOTED) {
        out.push_str(&format!(
            "; node {}: container network unavailable: {}",
            n.name, n.network_error
        ));
    }
    if broken.len() > NETWORK_ERRORS_QUOTED {
        out.push_str(&format!(
            "; and {} more",
            broken.len() - NETWORK_ERRORS_QUOTED
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str, cpu: u64, mem_mi: u64) -> Candidate {
        Candidate {
            name: name.into(),
            ready: true,
            schedulable: true,
            cpu_total: cpu,
            memory_total: mem_mi << 20,
            cpu_used: 0,
            memory_used: 0,
            job_replicas: 0,
            version_replicas: 0,
            host_ports: Default::default(),
            network_error: String::new(),
            volumes: Default::default(),
            disk_total: 0,
            disk_used: 0,
            attributes: Default::default(),
        }
    }

    fn small() -> Ask {
        Ask {
            cpu_millis: 100,
            memory_bytes: 64 << 20,
            host_ports: vec![],
            private_network: true,
            volumes: vec![],
            disk_bytes: 0,
            constraints: vec![],
            max_per_node: 0,
            affinities: vec![],
            spread: vec![],
        }
    }

    #[test]
    fn spreads_replicas_across_nodes() {
        let nodes = [
            node("a", 4000, 4096),
            node("b", 4000, 4096),
            node("c", 4000, 4096),
        ];
        let p = place(&nodes, &small(), 6);
        let count = |n: &str| p.nodes.iter().filter(|x| *x == n).count();
        assert_eq!((count("a"), count("b"), count("c")), (2, 2, 2));
        assert_eq!(p.reason, None);
    }

    #[test]
    fn spread_beats_load() {
        let mut a = node("a", 4000, 4096);
        a.job_replicas = 1;
        let mut b = node("b", 4000, 4096);
        b.cpu_used = 3000;
        assert_eq!(place(&[a, b], &small(), 1).nodes, vec!["b"]);
    }

    #[test]
    fn prefers_least_loaded() {
        let mut a = node("a", 4000, 4096);
        a.memory_used = 2048 << 20;
        let b = node("b", 4000, 4096);
        assert_eq!(place(&[a, b], &small(), 1).nodes, vec!["b"]);
    }

    #[test]
    fn skips_down_cordoned_and_full_nodes() {
        let mut down = node("a", 4000, 4096);
        down.ready = false;
        let mut cordoned = node("b", 4000, 4096);
        cordoned.schedulable = false;
        let full = node("c", 4000, 32);
        let ok = node("d", 4000, 4096);
        let p = place(&[down, cordoned, full, ok], &small(), 1);
        assert_eq!(p.nodes, vec!["d"]);
    }

    #[test]
    fn explains_why_nothing_fits() {
        let nodes = [
            node("a", 4000, 256),
            node("b", 4000, 256),
            node("c", 4000, 256),
        ];
        let big = Ask {
            memory_bytes: 512 << 20,
            ..small()
        };
        let p = place(&nodes, &big, 2);
        assert_eq!(p.unplaced, 2);
        assert_eq!(
            p.reason.as_deref(),
            Some("no node has 512Mi free memory: 3 nodes checked")
        );

        let mut down = node("x", 4000, 4096);
        down.ready = false;
        let p = place(&[down.clone(), node("y", 50, 4096)], &small(), 1);
        assert_eq!(
            p.reason.as_deref(),
            Some("no node fits: 1 is down, 1 lacks 0.1 cpu (2 nodes checked)")
        );
        assert_eq!(
            place(&[], &small(), 1).reason.as_deref(),
            Some("no nodes have registered")
        );
        assert_eq!(
            place(&[down], &small(), 1).reason.as_deref(),
            Some("no node is ready: 1 node checked")
        );
    }

    #[test]
    fn host_ports_conflict() {
        let mut a = node("a", 4000, 4096);
        a.host_ports.insert(8080);
        let b = node("b", 4000, 4096);
        let ask = Ask {
            host_ports: vec![8080],
            ..small()
        };
        // One replica per node at most, and never where the port is taken.
        let p = place(&[a.clone(), b], &ask, 2);
        assert_eq!(p.nodes, vec!["b"]);
        assert_eq!(
            p.reason.as_deref(),
            Some("no node has port 8080 free: 2 nodes checked")
        );
        assert_eq!(
            place(&[a], &small(), 1).nodes,
            vec!["a"],
            "other jobs are not affected"
        );
    }

    #[test]
    fn volumes_and_disk_decide_where_a_replica_may_go() {
        let mut ro = node("a", 4000, 4096);
        ro.volumes.insert("data".into(), true);
        let mut rw = node("b", 4000, 4096);
        rw.volumes.insert("data".into(), false);
        let none = node("c", 4000, 4096);
        let mut ask = small();
        ask.volumes = vec![("data".into(), true)];
        // Read-only mounts go where the volume is, either way offered.
        let p = place(&[ro.clone(), rw.clone(), none.clone()], &ask, 2);
        assert_eq!(p.nodes, vec!["a", "b"]);
        // A writable mount needs the volume offered writable.
        ask.volumes = vec![("data".into(), false)];
        let p = place(&[ro.clone(), none.clone()], &ask, 1);
        assert_eq!(
            p.reason.as_deref(),
            Some("no node has writable host volume \"data\": 2 nodes checked")
        );
        assert_eq!(place(&[ro, rw.clone(), none], &ask, 1).nodes, vec!["b"]);
        // Disk: reserved as it is placed; a node that did not say is not checked.
        let mut disk = rw.clone();
        disk.disk_total = 3 << 30;
        ask.disk_bytes = 1 << 30;
        let p = place(&[disk.clone()], &ask, 4);
        assert_eq!((p.nodes.len(), p.unplaced), (3, 1));
        assert_eq!(
            p.reason.as_deref(),
            Some("no node has 1Gi disk free: 1 node checked")
        );
        assert_eq!(place(&[rw], &ask, 4).unplaced, 0);
    }

    const BR0: &str =
        "gateway 10.88.0.1 of subnet 10.88.0.0/24 is already on interface br0, not made by drover";

    #[test]
    fn a_node_without_a_working_network_takes_no_private_network_replicas() {
        let mut broken = node("a", 4000, 4096);
        broken.network_error = BR0.into();
        let ok = node("b", 4000, 4096);
        // Spread would prefer a (b already has one); the network rules it out.
        let mut ok_busy = ok.clone();
        ok_busy.job_replicas = 1;
        let p = place(&[broken.clone(), ok_busy], &small(), 2);
        assert_eq!(p.nodes, vec!["b", "b"]);
        assert_eq!(p.reason, None);

        let p = place(&[broken.clone()], &small(), 1);
        assert_eq!(p.unplaced, 1);
        assert_eq!(
            p.reason.as_deref(),
            Some(
                "no node has a working container network: 1 node checked; \
                 node a: container network unavailable: gateway 10.88.0.1 of subnet \
                 10.88.0.0/24 is already on interface br0, not made by drover"
            )
        );
        let mut down = node("c", 4000, 4096);
        down.ready = false;
        let p = place(&[broken.clone(), down], &small(), 1);
        assert_eq!(
            p.reason.as_deref(),
            Some(&*format!(
                "no node fits: 1 is down, 1 has no working container network \
                 (2 nodes checked); node a: container network unavailable: {BR0}"
            ))
        );

        // Host-network replicas do not use the container network.
        let host = Ask {
            private_network: false,
            volumes: vec![],
            disk_bytes: 0,
            ..small()
        };
        assert_eq!(place(&[broken], &host, 1).nodes, vec!["a"]);
    }

    #[test]
    fn many_broken_networks_are_quoted_a_few_at_a_time() {
        let nodes: Vec<Candidate> = (0..5)
            .map(|i| {
                let mut n = node(&format!("n{i}"), 4000, 4096);
                n.network_error = format!("problem {i}");
                n
            })
            .collect();
        let reason = place(&nodes, &small(), 1).reason.unwrap();
        assert!(reason.contains("node n0: container network unavailable: problem 0"));
        assert!(reason.contains("node n2: container network unavailable: problem 2"));
        assert!(!reason.contains("problem 3"), "{reason}");
        assert!(reason.ends_with("; and 2 more"), "{reason}");
    }

    #[test]
    fn partial_placement_counts_the_rest() {
        let p = place(&[node("a", 250, 4096)], &small(), 3);
        assert_eq!(p.nodes, vec!["a", "a"]);
        assert_eq!(p.unplaced, 1);
        assert_eq!(
            p.reason.as_deref(),
            Some("no node has 0.1 cpu free: 1 node checked")
        );
    }

    fn constraint(json: &str) -> Constraint {
        serde_json::from_str(json).unwrap()
    }

    fn zoned(name: &str, zone: &str) -> Candidate {
        let mut n = node(name, 4000, 4096);
        n.attributes.insert("zone".into(), zone.into());
        n.attributes.insert("node.name".into(), name.into());
        n
    }

    #[test]
    fn constraints_rule_out_nodes_and_say_which_rule() {
        let nodes = [zoned("a", "eu-1"), zoned("b", "us-1"), zoned("c", "eu-2")];
        let ask = Ask {
            constraints: vec![constraint(
                r#"{"attr": "zone", "op": "regex", "value": "eu-.*"}"#,
            )],
            ..small()
        };
        let p = place(&nodes, &ask, 4);
        assert_eq!(p.nodes, vec!["a", "c", "a", "c"]);
        let ask = Ask {
            constraints: vec![
                constraint(r#"{"attr": "zone", "op": "in", "values": ["eu-1", "us-1"]}"#),
                constraint(r#"{"attr": "node.name", "op": "!=", "value": "a"}"#),
            ],
            ..small()
        };
        assert_eq!(place(&nodes, &ask, 2).nodes, vec!["b", "b"]);
        let ask = Ask {
            constraints: vec![constraint(
                r#"{"attr": "zone", "op": "=", "value": "ap-1"}"#,
            )],
            ..small()
        };
        assert_eq!(
            place(&nodes, &ask, 1).reason.as_deref(),
            Some("no node matches constraint `zone = ap-1`: 3 nodes checked")
        );
        let mut down = zoned("d", "ap-1");
        down.ready = false;
        assert_eq!(
            place(&[nodes[0].clone(), down], &ask, 1).reason.as_deref(),
            Some("no node fits: 1 is down, 1 does not match constraint `zone = ap-1` (2 nodes checked)")
        );
    }

    #[test]
    fn max_per_node_keeps_replicas_apart() {
        let mut a = node("a", 4000, 4096);
        a.job_replicas = 2;
        a.version_replicas = 1;
        let mut b = node("b", 4000, 4096);
        b.job_replicas = 1;
        let nodes = [a, b, node("c", 4000, 4096)];
        let ask = Ask {
            max_per_node: 1,
            ..small()
        };
        // b's replica is of an older version: it counts for spread, not
        // for the limit.
        let p = place(&nodes, &ask, 3);
        assert_eq!(p.nodes, vec!["c", "b"]);
        assert_eq!(p.unplaced, 1);
        assert_eq!(
            p.reason.as_deref(),
            Some("every node already runs 1 of its replicas (max_per_node): 3 nodes checked")
        );
    }

    #[test]
    fn spread_evens_out_values_before_affinities_choose_nodes() {
        // Two nodes in eu, one in us; eu-1b has an SSD the job prefers.
        let mut nodes = vec![
            zoned("eu-1a", "eu"),
            zoned("eu-1b", "eu"),
            zoned("us-1", "us"),
        ];
        nodes[1].attributes.insert("disk".into(), "ssd".into());
        let prefer_ssd: Affinity =
            serde_json::from_str(r#"{"attr": "disk", "op": "=", "value": "ssd", "weight": 50}"#)
                .unwrap();
        let by_zone: Spread = serde_json::from_str(r#"{"attr": "zone"}"#).unwrap();
        // Spread alone: us gets as many as eu's two nodes together.
        let ask = Ask {
            spread: vec![by_zone.clone()],
            ..small()
        };
        let p = place(&nodes, &ask, 4);
        let us = p.nodes.iter().filter(|n| *n == "us-1").count();
        assert_eq!(us, 2, "{:?}", p.nodes);
        // Affinity alone: the SSD node first, then the spread over nodes.
        let ask = Ask {
            affinities: vec![prefer_ssd.clone()],
            ..small()
        };
        assert_eq!(place(&nodes, &ask, 2).nodes, vec!["eu-1b", "eu-1b"]);
        // Both: even over zones, and within eu the SSD node.
        let ask = Ask {
            affinities: vec![prefer_ssd.clone()],
            spread: vec![by_zone],
            ..small()
        };
        assert_eq!(place(&nodes, &ask, 2).nodes, vec!["eu-1b", "us-1"]);
        // A negative weight repels.
        let avoid_ssd = Affinity {
            weight: -50,
            ..prefer_ssd
        };
        let ask = Ask {
            affinities: vec![avoid_ssd],
            ..small()
        };
        let p = place(&nodes, &ask, 4);
        assert!(!p.nodes.contains(&"eu-1b".to_string()), "{:?}", p.nodes);
    }

    proptest! {
        /// With room everywhere, a spread keeps every value of the
        /// attribute within one replica of the others, however many nodes
        /// each value has and however replicas were spread before.
        #[test]
        fn spread_stays_within_one_of_even(
            zones in proptest::collection::vec(0u8..4, 1..10),
            count in 0u32..40,
        ) {
            let nodes: Vec<Candidate> = zones.iter().enumerate()
                .map(|(i, z)| zoned(&format!("n{i}"), &format!("z{z}")))
                .collect();
            let ask = Ask {
                spread: vec![Spread { attr: "zone".into(), weight: 100 }],
                ..small()
            };
            let p = place(&nodes, &ask, count);
            prop_assert_eq!(p.unplaced, 0);
            let mut per_zone: BTreeMap<&str, i64> = BTreeMap::new();
            for n in &nodes {
                per_zone.entry(n.attributes["zone"].as_str()).or_default();
            }
            for name in &p.nodes {
                let n = nodes.iter().find(|n| &n.name == name).unwrap();
                *per_zone.get_mut(n.attributes["zone"].as_str()).unwrap() += 1;
            }
            let most = per_zone.values().max().unwrap();
            let least = per_zone.values().min().unwrap();
            prop_assert!(most - least <= 1, "{:?}", per_zone);
        }
    }

    proptest! {
        /// Constraints and max_per_node are never broken, and a replica
        /// left unplaced had no node that could take it.
        #[test]
        fn placement_rules_always_hold(
            zones in proptest::collection::vec(0u8..4, 1..8),
            existing in proptest::collection::vec(0u32..3, 8),
            allowed in proptest::collection::btree_set(0u8..4, 1..4),
            max_per_node in 0u32..3,
            count in 0u32..20,
        ) {
            let nodes: Vec<Candidate> = zones.iter().enumerate().map(|(i, z)| {
                let mut n = zoned(&format!("n{i}"), &format!("z{z}"));
                n.job_replicas = existing[i];
                n.version_replicas = existing[i];
                n
            }).collect();
            let values: Vec<String> = allowed.iter().map(|z| format!("z{z}")).collect();
            let ask = Ask {
                constraints: vec![Constraint {
                    attr: "zone".into(),
                    op: drover_proto::spec::constraint::Op::In,
                    value: None,
                    values: values.clone(),
                }],
                max_per_node,
                ..small()
            };
            let p = place(&nodes, &ask, count);
            prop_assert_eq!(p.nodes.len() as u32 + p.unplaced, count);
            for n in &nodes {
                let k = p.nodes.iter().filter(|x| **x == n.name).count() as u32;
                if k > 0 {
                    prop_assert!(values.contains(&n.attributes["zone"]), "{} is not allowed", n.name);
                }
                if max_per_node > 0 {
                    prop_assert!(k == 0 || n.version_replicas + k <= max_per_node);
                }
                if p.unplaced > 0 && values.contains(&n.attributes["zone"]) {
                    prop_assert!(max_per_node > 0 && n.version_replicas + k >= max_per_node);
                }
            }
        }
    }

    proptest! {
        /// Never over-commits a node, places everything that fits, and keeps the
        /// spread within one replica whenever all nodes have room.
        #[test]
        fn never_overcommits(
            caps in proptest::collection::vec((100u64..4000, 64u64..4096), 1..6),
            cpu in 50u64..1000,
            mem_mi in 16u64..512,
            count in 0u32..30,
        ) {
            let nodes: Vec<Candidate> = caps.iter().enumerate()
                .map(|(i, (c, m))| node(&format!("n{i}"), *c, *m)).collect();
            let ask = Ask { cpu_millis: cpu, memory_bytes: mem_mi << 20, ..small() };
            let p = place(&nodes, &ask, count);
            prop_assert_eq!(p.nodes.len() as u32 + p.unplaced, count);
            prop_assert_eq!(p.unplaced > 0, p.reason.is_some());
            for n in &nodes {
                let k = p.nodes.iter().filter(|x| **x == n.name).count() as u64;
                prop_assert!(k * cpu <= n.cpu_total);
                prop_assert!(k * (mem_mi << 20) <= n.memory_total);
            }
            if p.unplaced > 0 {
                // Nothing placed afterwards could have fit anywhere.
                for n in &nodes {
                    let k = p.nodes.iter().filter(|x| **x == n.name).count() as u64;
                    prop_assert!((k + 1) * cpu > n.cpu_total || (k + 1) * (mem_mi << 20) > n.memory_total);
                }
            }
        }
    }

    proptest! {
        /// Without spread, taking nodes from the score-ordered queue
        /// chooses exactly the nodes, in the order, that looking at every
        /// node for each replica does: with affinities, constraints,
        /// max_per_node, replicas already placed, nodes full, down or
        /// cordoned, and names out of order.
        #[test]
        fn the_ordered_queue_chooses_what_a_full_scan_does(
            nodes in proptest::collection::vec(
                (0u8..4, 0u32..3, 100u64..3000, 64u64..2048, 0u64..2000, 0u8..10),
                0..12,
            ),
            cpu in 50u64..800,
            max_per_node in 0u32..4,
            prefer in 0u8..4,
            count in 0u32..30,
        ) {
            let candidates: Vec<Candidate> = nodes
                .iter()
                .enumerate()
                .map(|(i, (zone, existing, cpu_total, mem_mi, cpu_used, state))| {
                    // Names out of index order, some sharing a prefix.
                    let mut n = zoned(&format!("n{}", (i * 7) % 12), &format!("z{zone}"));
                    n.cpu_total = *cpu_total;
                    n.memory_total = mem_mi << 20;
                    n.cpu_used = (*cpu_used).min(*cpu_total);
                    n.job_replicas = *existing;
                    n.version_replicas = *existing;
                    n.ready = *state != 0;
                    n.schedulable = *state != 1;
                    n
                })
                .collect();
            let ask = Ask {
                cpu_millis: cpu,
                max_per_node,
                constraints: vec![constraint(r#"{"attr": "zone", "op": "!=", "value": "z3"}"#)],
                affinities: vec![serde_json::from_str(&format!(
                    r#"{{"attr": "zone", "op": "=", "value": "z{prefer}", "weight": 50}}"#
                )).unwrap()],
                ..small()
            };
            let (mut ordered, mut scanned) = (candidates.clone(), candidates.clone());
            let a = place_with(&mut ordered, &ask, count, true);
            let b = place_with(&mut scanned, &ask, count, false);
            prop_assert_eq!(a, b);
            prop_assert_eq!(ordered, scanned);
        }
    }
}
