//! Faults that real clusters see, injected into a cluster of network
//! namespaces (`examples/cluster/cluster.sh`): a scheduler peer that goes
//! silent without a single TCP reset, one that freezes (SIGSTOP), and a
//! leader cut off from its peers while a node can still reach only it.
//!
//! What the tests watch is what a user would: the containers themselves,
//! found in the host's cgroup tree (independently of what the scheduler
//! says), and `drover node ls` / `drover alloc ls`.

use drover_e2e::netcluster::NetCluster;
use drover_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The node timeout the fencing test runs with (short, to be quick), and
/// when the leader may then replace a silent node's replicas
/// (`drover_proto::fencing::replace_after`). The silent-replica test runs
/// with the defaults (4 s, so 7 s), as users do.
const NODE_TIMEOUT: &str = "2s";
const DEFAULT_REPLACE_AFTER: Duration = Duration::from_secs(7);

/// `drover alloc ls -o json`: (id, job, node, pid, state).
type Alloc = (String, String, String, u64, String);

fn allocs(c: &NetCluster) -> Vec<Alloc> {
    try_allocs(c).unwrap_or_else(|e| panic!("alloc ls: {e}"))
}

/// `allocs`, or the CLI's error (while a fault lasts, the replica the CLI
/// picked may be unable to answer).
fn try_allocs(c: &NetCluster) -> Result<Vec<Alloc>, String> {
    try_allocs_at(&c.addr())
}

/// `try_allocs` through the replicas at `addr` only (e.g. a majority, when
/// the CLI would otherwise pick an isolated replica that cannot answer).
fn try_allocs_at(addr: &str) -> Result<Vec<Alloc>, String> {
    let out = run_drover(addr, &["alloc", "ls", "-o", "json"]);
    if !out.ok() {
        return Err(format!("{}{}", out.stdout, out.stderr));
    }
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let mut a: Vec<_> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            (
                s("id"),
                s("job"),
                s("node"),
                a["pid"].as_u64().unwrap_or(0),
                s("state"),
            )
        })
        .collect();
    a.sort();
    Ok(a)
}

fn node_status(c: &NetCluster) -> BTreeMap<String, String> {
    let out = c.drover(&["node", "ls", "-o", "json"]);
    assert!(out.ok(), "node ls: {}{}", out.stdout, out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_string(),
                n["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The scheduler peer (1-based) agent `agent` (e.g. "a1") is connected
/// to, from the agent namespace's own socket table.
fn replica_of(c: &mut NetCluster, agent: &str) -> u32 {
    wait_for(
        &format!("{agent}'s connection to a scheduler"),
        Duration::from_secs(20),
        || {
            let out = c.script(&["exec", agent, "ss", "-Htn", "state", "established"]);
            out.stdout.lines().find_map(|l| {
                let peer = l.split_whitespace().nth(3)?;
                let (ip, port) = peer.rsplit_once(':')?;
                if port != "7400" {
                    return None;
                }
                let last: u32 = ip.rsplit('.').next()?.parse().ok()?;
                (11..20).contains(&last).then_some(last - 10)
            })
        },
    )
}

fn job_spec(dir: &std::path::Path, name: &str, replicas: u32) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nreplicas: {replicas}\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sleep, '1000']\nresources: {{cpu: 10m, memory: 16Mi}}\nstop_grace_period: 1s\n",
            images().display()
        ),
    )
    .unwrap();
    p
}

/// Silences (then heals) the replica each agent talks to, then freezes
/// one: no node is marked down, no container stopped or restarted, and
/// writes keep working.
#[test]
fn a_silent_or_frozen_scheduler_peer_costs_no_container() {
    if !require_root("a_silent_or_frozen_scheduler_peer_costs_no_container") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("flsilent", 7, 3, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    for (job, n) in [("web", 2), ("db", 2)] {
        let spec = job_spec(dir.path(), job, n);
        let out = c.drover(&["job", "run", "--timeout", "60s", spec.to_str().unwrap()]);
        assert!(out.ok(), "job run {job}: {}{}", out.stdout, out.stderr);
    }
    let before = allocs(&c);
    assert_eq!(before.len(), 4, "{before:?}");
    assert!(
        before.iter().all(|a| a.3 > 0 && a.4 == "running"),
        "{before:?}"
    );
    let ids: BTreeSet<String> = before.iter().map(|a| a.0.clone()).collect();

    for (fault, undo, agent) in [
        ("silence", "heal", "a1"),
        ("silence", "heal", "a2"),
        ("pause", "resume", "a1"),
        ("pause", "resume", "leader"),
    ] {
        let leader = c.leader();
        let target = match agent {
            "leader" => leader,
            agent => replica_of(&mut c, agent),
        };
        let node = format!("s{target}");
        eprintln!("{fault} {node} (for {agent}; the leader is s{leader})");
        c.must(&[fault, &node]);
        // Longer than the fencing interval: any node wrongly given up on
        // would have been marked down and its containers stopped by now.
        let until = Instant::now() + DEFAULT_REPLACE_AFTER + Duration::from_secs(2);
        while Instant::now() < until {
            let running = running_containers();
            assert!(
                ids.is_subset(&running),
                "containers stopped while {node} was {fault}d: {:?} missing",
                ids.difference(&running).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let nodes = node_status(&c);
        assert!(
            nodes.values().all(|s| s == "ready"),
            "{fault} {node}: {nodes:?}"
        );
        assert_eq!(
            allocs(&c),
            before,
            "allocations changed while {node} was {fault}d"
        );
        // Writes work with the replica gone (the CLI tries the others).
        let spec = job_spec(dir.path(), &format!("probe-{fault}-{agent}"), 0);
        let out = c.drover(&["job", "run", "-d", spec.to_str().unwrap()]);
        assert!(
            out.ok(),
            "a write while {node} was {fault}d: {}{}",
            out.stdout,
            out.stderr
        );
        c.must(&[undo, &node]);
    }
    for (_, _, _, pid, _) in &before {
        assert!(pid_alive(*pid as u32), "container {pid} died");
    }
}

/// The leader is cut off from the other replicas while one agent can reach
/// only that leader. The deposed leader must stop acknowledging it, the
/// agent must stop its replica, and only then may the majority start it
/// elsewhere: at no sampled moment does the one-replica job run twice.
#[test]
fn a_node_behind_a_deposed_leader_never_runs_a_replica_twice() {
    if !require_root("a_node_behind_a_deposed_leader_never_runs_a_replica_twice") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("flfence", 8, 3, 2, &[("DROVER_NODE_TIMEOUT", NODE_TIMEOUT)]);
    let dir = tempfile::tempdir().unwrap();
    let spec = job_spec(dir.path(), "solo", 1);
    let out = c.drover(&["job", "run", "--timeout", "60s", spec.to_str().unwrap()]);
    assert!(out.ok(), "job run: {}{}", out.stdout, out.stderr);
    let first = allocs(&c);
    assert_eq!(first.len(), 1, "{first:?}");
    let (first_id, _, first_node, _, _) = first[0].clone();
    let agent = format!("a{}", first_node.rsplit('a').next().unwrap());
    let other = if agent == "a1" { "a2" } else { "a1" };

    // Watch the host: which of the job's containers run, every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.addr();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut solo: BTreeSet<String> = BTreeSet::new();
            let mut most = 0;
            let mut worst = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let running = running_containers();
                if running.iter().any(|id| !solo.contains(id)) {
                    // A container we have not attributed yet: ask which job.
                    let out = run_drover(&addr, &["alloc", "ls", "-o", "json"]);
                    if let Ok(Value::Array(all)) = serde_json::from_str::<Value>(&out.stdout) {
                        for a in all {
                            if a["job"] == "solo" {
                                solo.insert(a["id"].as_str().unwrap_or_default().to_string());
                            }
                        }
                    }
                }
                let now: BTreeSet<_> = running.intersection(&solo).cloned().collect();
                if now.len() > most {
                    most = now.len();
                    worst = now;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (most, worst)
        })
    };

    let leader = c.leader();
    let peers: Vec<String> = (1..=3)
        .filter(|i| *i != leader)
        .map(|i| format!("s{i}"))
        .collect();
    let majority: String = (1..=3)
        .filter(|i| *i != leader)
        .map(|i| c.peer_addr(i))
        .collect::<Vec<_>>()
        .join(",");
    eprintln!("isolating s{leader} from {peers:?}; {agent} (running solo) reaches only s{leader}");
    c.must(&["isolate", &format!("s{leader}")]);
    let mut cut = vec!["isolate", agent.as_str()];
    cut.extend(peers.iter().map(String::as_str));
    c.must(&cut);

    // The majority elects a new leader and, once the fencing interval has
    // passed, runs the replica on the other node.
    let replaced = wait_for(
        "solo replaced on the other node",
        Duration::from_secs(40),
        || {
            let now = try_allocs_at(&majority).ok()?;
            now.into_iter().find(|a| {
                a.1 == "solo" && a.0 != first_id && a.4 == "running" && a.2.ends_with(other)
            })
        },
    );
    assert!(
        !running_containers().contains(&first_id),
        "the fenced replica still runs"
    );
    c.must(&["heal", &format!("s{leader}")]);
    c.must(&["heal", &agent]);
    // Back in touch, the node does not start the old allocation again.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (most, worst) = sampler.join().unwrap();
    assert!(most <= 1, "solo ran {most} times at once: {worst:?}");
    let running = running_containers();
    assert!(running.contains(&replaced.0), "the replacement stopped");
    assert!(!running.contains(&first_id), "the old replica came back");
}

/// An agent killed for good (SIGKILL, never restarted) leaves its
/// containers to their monitors; the monitors fence them on the agent's
/// clock, so the replica started elsewhere never runs beside the old one.
#[test]
fn containers_of_a_dead_agent_stop_before_they_are_replaced() {
    if !require_root("containers_of_a_dead_agent_stop_before_they_are_replaced") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("fldead", 12, 1, 2, &[("DROVER_NODE_TIMEOUT", NODE_TIMEOUT)]);
    let dir = tempfile::tempdir().unwrap();
    let spec = job_spec(dir.path(), "solo", 1);
    let out = c.drover(&["job", "run", "--timeout", "60s", spec.to_str().unwrap()]);
    assert!(out.ok(), "job run: {}{}", out.stdout, out.stderr);
    let first = allocs(&c);
    let (first_id, _, first_node, _, _) = first[0].clone();
    let agent = format!("a{}", first_node.rsplit('a').next().unwrap());
    assert!(running_containers().contains(&first_id));

    c.must(&["kill", &agent]);
    let start = Instant::now();
    let mut most = 0;
    let replaced = loop {
        let running = running_containers();
        let now = try_allocs(&c).unwrap_or_default();
        let solo: BTreeSet<&String> = now.iter().filter(|a| a.1 == "solo").map(|a| &a.0).collect();
        most = most.max(running.iter().filter(|id| solo.contains(id)).count());
        if let Some(a) = now
            .iter()
            .find(|a| a.1 == "solo" && a.0 != first_id && a.4 == "running")
        {
            if running.contains(&a.0) {
                break a.clone();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(40), "never replaced");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(most <= 1, "solo ran twice at once");
    assert!(
        !running_containers().contains(&first_id),
        "the dead agent's container still runs beside its replacement {}",
        replaced.0
    );
}
