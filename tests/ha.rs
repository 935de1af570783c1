//! The highly available scheduler, end to end: 3- and 5-peer clusters
//! whose every node is a network namespace on a bridge
//! (`examples/cluster/cluster.sh`), real processes killed with SIGKILL,
//! real partitions, the real `drover` CLI.
//!
//! The tests take turns (one cluster at a time): each starts several
//! peers, and on a small machine concurrent clusters would only measure
//! each other.

use drover_e2e::netcluster::NetCluster;
use drover_e2e::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A job that needs no agent: with no nodes it simply stays pending.
fn spec_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!("name: {name}\nimage: oci:/nowhere:latest\ncommand: [/bin/sleep, '1000']\nresources: {{cpu: 10m, memory: 16Mi}}\n"),
    )
    .unwrap();
    p
}

/// A pseudo-random number below `n` (the tests need no reproducible seed,
/// only a kill that does not always land at the same moment).
fn random_below(n: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (t ^ (t >> 7)).wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
}

/// Submits uniquely named jobs through `drover job run -d` until `stop`;
/// returns the names acknowledged and the names that failed.
fn submit_until(
    addr: String,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, Vec<String>)> {
    std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        let (mut acked, mut failed) = (Vec::new(), Vec::new());
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let name = format!("{prefix}-{i}");
            let spec = spec_file(dir.path(), &name);
            let out = run_drover(&addr, &["job", "run", "-d", spec.to_str().unwrap()]);
            if out.ok() {
                acked.push(name);
            } else {
                failed.push(name);
            }
            i += 1;
        }
        (acked, failed)
    })
}

/// Waits until peer `i` holds every job in `names` (read from it alone).
fn wait_holds(c: &NetCluster, i: u32, names: &[String]) -> Vec<(String, u64)> {
    wait_for(
        &format!("peer {i} to hold all {} jobs", names.len()),
        Duration::from_secs(30),
        || {
            let jobs = c.jobs_on(i)?;
            let have: BTreeSet<&str> = jobs.iter().map(|(n, _)| n.as_str()).collect();
            names
                .iter()
                .all(|n| have.contains(n.as_str()))
                .then_some(jobs)
        },
    )
}

#[test]
fn acknowledged_submissions_survive_the_leader_being_killed() {
    if !require_root("acknowledged_submissions_survive_the_leader_being_killed") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("hakill", 1, 3, 0, &[]);
    let leader = c.leader();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = submit_until(c.addr(), "ack", stop.clone());
    std::thread::sleep(Duration::from_millis(800 + random_below(700)));
    c.must(&["kill", &format!("s{leader}")]);
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.join().unwrap();
    assert!(
        acked.len() > 5,
        "too few writes went through: {acked:?} / {failed:?}"
    );
    let new_leader = c.leader();
    assert_ne!(
        new_leader, leader,
        "the killed leader is still named leader"
    );
    eprintln!(
        "{} acknowledged, {} failed; new leader elected {:?} after the kill",
        acked.len(),
        failed.len(),
        killed_at.elapsed()
    );

    c.must(&["restart", &format!("s{leader}")]);
    for i in 1..=3 {
        let jobs = wait_holds(&c, i, &acked);
        // Unacknowledged submissions may or may not have committed, but none
        // twice: each name exists once, at version 1 (a retried submit is
        // de-duplicated by its request id).
        let mut seen = BTreeMap::new();
        for (name, version) in &jobs {
            assert_eq!(*version, 1, "peer {i}: {name} was applied more than once");
            *seen.entry(name.clone()).or_insert(0) += 1;
        }
        assert!(
            seen.values().all(|n| *n == 1),
            "peer {i}: duplicates {seen:?}"
        );
        let known: BTreeSet<&String> = acked.iter().chain(failed.iter()).collect();
        assert!(
            seen.keys().all(|n| known.contains(n)),
            "peer {i} holds a job nobody submitted"
        );
    }
}

#[test]
fn a_partitioned_minority_cannot_commit_and_converges_after_healing() {
    if !require_root("a_partitioned_minority_cannot_commit_and_converges_after_healing") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("hapart", 2, 3, 0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let leader = c.leader();
    let f = (1..=3).find(|i| *i != leader).unwrap();
    let before = spec_file(dir.path(), "before");
    assert!(c
        .drover(&["job", "run", "-d", before.to_str().unwrap()])
        .ok());
    wait_holds(&c, f, &["before".to_string()]);

    c.must(&["partition", &format!("s{f}")]);
    let majority = spec_file(dir.path(), "majority");
    let out = c.drover(&["job", "run", "-d", majority.to_str().unwrap()]);
    assert!(out.ok(), "the majority must still commit: {}", out.stderr);

    // The minority refuses writes and linearizable reads...
    let minority = spec_file(dir.path(), "minority");
    let out = c.drover_on(f, &["job", "run", "-d", minority.to_str().unwrap()]);
    assert!(
        !out.ok(),
        "a partitioned peer accepted a write: {}",
        out.stdout
    );
    assert!(out.stderr.contains("no leader reachable"), "{}", out.stderr);
    assert!(!out.stderr.contains("not the leader"), "{}", out.stderr);
    assert!(!c.drover_on(f, &["job", "ls"]).ok());
    // ...and its stale reads say they are stale and how old they are.
    let out = c.drover_on(f, &["job", "ls", "--stale"]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(out.stdout.contains("before"), "{}", out.stdout);
    assert!(!out.stdout.contains("majority"), "{}", out.stdout);
    assert!(out.stdout.contains("(stale read from"), "{}", out.stdout);
    assert!(
        out.stdout.contains("when last heard from it"),
        "{}",
        out.stdout
    );
    let st = c.drover_on(f, &["job", "status", "before", "--stale", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["read"]["stale"], true);
    assert!(
        v["read"]["leader_contact_ms"].as_i64().unwrap() >= 1000,
        "{}",
        v["read"]
    );

    c.must(&["heal", &format!("s{f}")]);
    let jobs = wait_holds(&c, f, &["before".into(), "majority".into()]);
    assert!(
        jobs.iter().all(|(n, _)| n != "minority"),
        "a write to the minority was committed: {jobs:?}"
    );
    for i in 1..=3 {
        let jobs = wait_holds(&c, i, &["before".into(), "majority".into()]);
        assert_eq!(jobs.len(), 2, "peer {i}: {jobs:?}");
    }
}

/// The addresses of peers `ids`, in that order: a `DROVER_ADDR`.
fn in_order(c: &NetCluster, ids: impl Iterator<Item = u32>) -> String {
    ids.map(|i| c.peer_addr(i)).collect::<Vec<_>>().join(",")
}

/// A leader cut off from its peers (the CLI still reaches it) refuses
/// writes within seconds, naming why, instead of holding them until they
/// time out; and the CLI given every peer, that leader first, moves on
/// to the majority and its write lands there.
#[test]
fn the_cli_moves_past_a_leader_cut_off_from_its_peers() {
    if !require_root("the_cli_moves_past_a_leader_cut_off_from_its_peers") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("hacut", 14, 3, 0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let leader = c.leader();
    let others: Vec<u32> = (1..=3).filter(|i| *i != leader).collect();
    c.must(&["isolate", &format!("s{leader}")]);

    // Straight to the cut-off leader: refused, and said so, in seconds.
    let alone = spec_file(dir.path(), "alone");
    let start = Instant::now();
    let out = c.drover_on(leader, &["job", "run", "-d", alone.to_str().unwrap()]);
    let took = start.elapsed();
    assert!(
        !out.ok(),
        "a cut-off leader accepted a write: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("cut off from its peers"),
        "{}",
        out.stderr
    );
    assert!(took < Duration::from_secs(6), "refused only after {took:?}");

    // Every peer, the cut-off leader first: the write lands.
    let addrs = in_order(&c, std::iter::once(leader).chain(others.iter().copied()));
    let moved = spec_file(dir.path(), "moved");
    let start = Instant::now();
    let out = run_drover(&addrs, &["job", "run", "-d", moved.to_str().unwrap()]);
    let took = start.elapsed();
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    assert!(took < Duration::from_secs(10), "the write took {took:?}");
    eprintln!("through {addrs}: {took:?}; stderr: {}", out.stderr.trim());
    let jobs = wait_holds(&c, others[0], &["moved".to_string()]);
    assert!(jobs.iter().all(|(n, _)| n != "alone"), "{jobs:?}");

    c.must(&["heal", &format!("s{leader}")]);
    let jobs = wait_holds(&c, leader, &["moved".to_string()]);
    assert!(
        jobs.iter().all(|(n, _)| n != "alone"),
        "the cut-off leader's refused write was committed: {jobs:?}"
    );

    // The peer a command is using dies under it (here a follower, so no
    // election muddles it): the command goes on through another. With no
    // nodes the rollout `job run` follows never ends, so it polls until
    // its timeout, and says where it moved.
    let leader = c.leader();
    let f = (1..=3).find(|i| *i != leader).unwrap();
    let addrs = in_order(&c, std::iter::once(f).chain((1..=3).filter(|i| *i != f)));
    let waiting = spec_file(dir.path(), "waiting");
    let child = drover_command(&addrs)
        .args(["job", "run", "--timeout", "8s", waiting.to_str().unwrap()])
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    c.must(&["kill", &format!("s{f}")]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} cannot serve", c.peer_addr(f))) && stderr.contains("trying"),
        "the CLI did not move on from the dead peer: {stderr}"
    );
    c.must(&["restart", &format!("s{f}")]);
}

#[test]
fn five_peers_keep_accepting_writes_with_two_down() {
    if !require_root("five_peers_keep_accepting_writes_with_two_down") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("ha5", 3, 5, 0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let leader = c.leader();
    let other = (1..=5).find(|i| *i != leader).unwrap();
    c.must(&["kill", &format!("s{leader}")]);
    c.must(&["kill", &format!("s{other}")]);
    for n in 0..5 {
        let name = format!("with-two-down-{n}");
        let spec = spec_file(dir.path(), &name);
        let out = c.drover(&["job", "run", "-d", spec.to_str().unwrap()]);
        assert!(out.ok(), "write {n} with two peers down: {}", out.stderr);
    }
    let out = c.drover(&["job", "ls", "-o", "json"]);
    assert!(out.ok(), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    let members = c.members().unwrap();
    let unreachable = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "unreachable")
        .count();
    assert_eq!(unreachable, 2, "{members}");
}

/// Submits `n` jobs over gRPC, a few at a time (faster than `n` CLI runs).
fn submit_many(addr: &str, prefix: &str, n: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use drover_proto::pb;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let ch = drover_e2e::client_tls(addr).connect(&endpoint).await.unwrap();
        let client = drover_e2e::api(ch, addr);
        let mut tasks = Vec::new();
        for w in 0..8 {
            let mut client = client.clone();
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(8) {
                    let name = format!("{prefix}-{i}");
                    let spec = drover_proto::spec::from_json(&format!(
                        r#"{{"name":"{name}","image":"oci:/nowhere:latest","resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
                    ))
                    .unwrap();
                    client
                        .submit_job(pb::SubmitJobRequest {
                            spec_json: spec.to_json(),
                            request_id: format!("req-{name}"),
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn many_writes_at_once_through_a_follower_each_get_their_own_answer() {
    if !require_root("many_writes_at_once_through_a_follower_each_get_their_own_answer") {
        return;
    }
    let _turn = one_at_a_time();
    let c = NetCluster::up("hafw", 3, 3, 0, &[]);
    let leader = c.leader();
    let follower = c.peer_addr((1..=3).find(|i| *i != leader).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answers = rt.block_on(async {
        use drover_proto::pb;
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{follower}")).unwrap();
        let ch = drover_e2e::client_tls(&c.addr())
            .connect(&endpoint)
            .await
            .unwrap();
        let client = drover_e2e::api(ch, &c.addr());
        // 200 at once: the follower sends them to the leader in batches.
        // Jobs w-0..w-99 get two versions each, the second submitted under
        // the first's request id with another spec, which the state machine
        // answers as a replay of the first: each caller its own answer.
        let calls: Vec<_> = (0..200).map(|k| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let (job, v) = (k % 100, k / 100);
                let spec = drover_proto::spec::from_json(&format!(
                    r#"{{"name":"w-{job}","image":"oci:/nowhere:latest","env":{{"V":"{v}"}},"resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
                ))
                .unwrap();
                let r = client
                    .submit_job(pb::SubmitJobRequest {
                        spec_json: spec.to_json(),
                        request_id: format!("fw-{job}"),
                    })
                    .await
                    .map(|r| r.into_inner());
                (job, r)
            })
        }).collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    });
    for (job, r) in &answers {
        let r = r.as_ref().unwrap_or_else(|s| panic!("w-{job}: {s}"));
        assert_eq!(r.name, format!("w-{job}"));
        assert_eq!(r.version, 1, "w-{job}: one request id, one version");
    }
    let out = c.drover(&["job", "ls", "-o", "json"]);
    assert!(out.ok(), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 100, "{v}");
}

#[test]
fn a_peer_added_after_many_writes_catches_up_through_a_snapshot() {
    if !require_root("a_peer_added_after_many_writes_catches_up_through_a_snapshot") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("hasnap", 4, 3, 0, &[("DROVER_SNAPSHOT_EVERY", "50")]);
    submit_many(&c.peer_addr(1), "many", 400);
    // The leader has snapshotted and purged the start of its log: a new
    // peer can only get those entries through a snapshot.
    let members = c.members().unwrap();
    let leader = members["leader_id"].as_u64().unwrap();
    let lm = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == leader)
        .unwrap()
        .clone();
    assert!(
        lm["purged_index"].as_u64().unwrap() > 0,
        "no log purged: {lm}"
    );

    c.must(&["join", "s4"]);
    let add = c.drover(&["cluster", "add", "4", &c.peer_addr(4)]);
    assert!(add.ok(), "cluster add: {}{}", add.stdout, add.stderr);
    assert!(
        add.stdout.contains("peer 4 is a voter now"),
        "{}",
        add.stdout
    );
    let names: Vec<String> = (0..400).map(|i| format!("many-{i}")).collect();
    let jobs = wait_holds(&c, 4, &names);
    assert_eq!(jobs.len(), 400);
    let members = c.members().unwrap();
    let m4 = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .unwrap()
        .clone();
    assert_eq!(m4["voter"], true, "{m4}");
    assert!(m4["snapshot_index"].as_u64().unwrap() > 0, "{m4}");

    // And it can be removed again.
    let rm = c.drover(&["cluster", "remove", "4"]);
    assert!(rm.ok(), "cluster remove: {}", rm.stderr);
    let members = c.members().unwrap();
    assert!(
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != 4),
        "{members}"
    );
}

#[test]
fn a_snapshot_too_large_for_one_log_entry_restores_through_three_peers() {
    if !require_root("a_snapshot_too_large_for_one_log_entry_restores_through_three_peers") {
        return;
    }
    let _turn = one_at_a_time();
    let c = NetCluster::up("harest", 16, 3, 0, &[]);
    // Restores in parts need every peer at cluster version 3 or later; a
    // fast start may still run at 1.
    wait_for(
        "the cluster version to reach 3",
        Duration::from_secs(30),
        || {
            let out = c.drover(&["cluster", "members"]);
            let version: u32 = out.stdout.lines().find_map(|l| {
                l.strip_prefix("cluster version ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })?;
            (version >= 3).then_some(())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    // 12 jobs of 200KiB each: one 2.4MB log entry would not reach the
    // followers within the heartbeat interval; six parts of 512KiB do.
    let big = "x".repeat(200 << 10);
    let write_spec = |name: &str, image: &str| {
        let p = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &p,
            format!("name: {name}\nimage: {image}\nenv: {{BIG: {big}}}\nresources: {{cpu: 10m, memory: 16Mi}}\n"),
        )
        .unwrap();
        p
    };
    let names: Vec<String> = (0..12).map(|i| format!("big-{i}")).collect();
    for n in &names {
        let p = write_spec(n, "oci:/nowhere:latest");
        let out = c.drover(&["job", "run", "-d", p.to_str().unwrap()]);
        assert!(out.ok(), "job run {n}: {}", out.stderr);
    }
    let snap = dir.path().join("big.snap");
    let out = c.drover(&["operator", "snapshot", "save", snap.to_str().unwrap()]);
    assert!(
        out.ok() && out.stdout.contains("12 jobs"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // After the save: big-0 gets a second version, and a job is added.
    for (name, image) in [
        ("big-0", "oci:/nowhere:v2"),
        ("extra", "oci:/nowhere:latest"),
    ] {
        let p = write_spec(name, image);
        let out = c.drover(&["job", "run", "-d", p.to_str().unwrap()]);
        assert!(out.ok(), "job run {name}: {}", out.stderr);
    }

    let out = c.drover(&["operator", "snapshot", "restore", snap.to_str().unwrap()]);
    assert!(out.ok(), "restore: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("restored 12 jobs") && out.stdout.contains("log entries)"),
        "{}",
        out.stdout
    );
    // Every peer holds the saved jobs at their saved versions, and only them.
    let want: Vec<(String, u64)> = names.iter().map(|n| (n.clone(), 1)).collect();
    let mut want = want;
    want.sort();
    for i in 1..=3 {
        wait_for(
            &format!("peer {i} to hold the restored jobs"),
            Duration::from_secs(30),
            || {
                let mut jobs = c.jobs_on(i)?;
                jobs.sort();
                (jobs == want).then_some(())
            },
        );
    }
}

#[test]
fn a_peer_killed_at_any_moment_restarts_intact_and_rejoins() {
    if !require_root("a_peer_killed_at_any_moment_restarts_intact_and_rejoins") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("hacrash", 5, 3, 0, &[("DROVER_SNAPSHOT_EVERY", "30")]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = submit_until(c.addr(), "crash", stop.clone());
    for round in 0..3u32 {
        std::thread::sleep(Duration::from_millis(200 + random_below(800)));
        let victim = 1 + (round + random_below(3) as u32) % 3;
        c.must(&["kill", &format!("s{victim}")]);
        std::thread::sleep(Duration::from_millis(random_below(500)));
        c.must(&["restart", &format!("s{victim}")]);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (acked, _) = writer.join().unwrap();
    assert!(!acked.is_empty());
    let reference = wait_holds(&c, 1, &acked);
    for i in 2..=3 {
        wait_for(
            &format!("peer {i} to hold the same jobs as peer 1"),
            Duration::from_secs(30),
            || {
                let mut mine = c.jobs_on(i)?;
                let mut theirs = c.jobs_on(1)?;
                mine.sort();
                theirs.sort();
                (mine == theirs && mine.len() >= reference.len()).then_some(())
            },
        );
    }
    // Every peer is a healthy member again.
    let members = wait_for("every peer to answer", Duration::from_secs(20), || {
        let m = c.members()?;
        m["members"]
            .as_array()?
            .iter()
            .all(|m| m["role"] == "leader" || m["role"] == "follower")
            .then_some(m)
    });
    assert_eq!(members["members"].as_array().unwrap().len(), 3);
}

#[test]
fn agents_keep_their_containers_through_a_leader_change() {
    if !require_root("agents_keep_their_containers_through_a_leader_change") {
        return;
    }
    let images = images();
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("haagent", 6, 3, 1, &[("DROVER_NODE_TIMEOUT", "2s")]);
    let dir = tempfile::tempdir().unwrap();
    let spec = |name: &str| two_sleepers(dir.path(), &images, name);
    let first = spec("before");
    let out = c.drover(&["job", "run", "--timeout", "60s", first.to_str().unwrap()]);
    assert!(out.ok(), "job run: {}{}", out.stdout, out.stderr);
    let before = c.allocs();
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before
        .iter()
        .all(|(_, pid, st)| *pid > 0 && st == "running"));

    let leader = c.leader();
    c.must(&["kill", &format!("s{leader}")]);
    let new_leader = wait_for("a new leader", Duration::from_secs(20), || {
        let l = c.leader();
        (l != leader).then_some(l)
    });
    assert_ne!(new_leader, leader);
    // Longer than the node timeout: the new leader must not call the node
    // down, because the agent now heartbeats through a live peer.
    std::thread::sleep(Duration::from_secs(4));
    let nodes = c.drover(&["node", "ls", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&nodes.stdout).unwrap();
    assert_eq!(v[0]["status"], "ready", "{v}");
    assert_eq!(
        c.allocs(),
        before,
        "the containers changed across the leader change"
    );
    for (_, pid, _) in &before {
        assert!(pid_alive(*pid as u32), "container {pid} died");
    }
    // The agent watches and reports through the new leader: a new job runs.
    let second = spec("after");
    let out = c.drover(&["job", "run", "--timeout", "60s", second.to_str().unwrap()]);
    assert!(
        out.ok(),
        "job run after the leader change: {}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("running"), "{}", out.stdout);
}

#[test]
fn rotating_the_ca_of_three_peers_and_two_nodes_stops_nothing() {
    if !require_root("rotating_the_ca_of_three_peers_and_two_nodes_stops_nothing") {
        return;
    }
    let images = images();
    let _turn = one_at_a_time();
    let mut c = NetCluster::up("harot", 13, 3, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let spec = |name: &str| two_sleepers(dir.path(), &images, name);
    let out = c.drover(&[
        "job",
        "run",
        "--timeout",
        "60s",
        spec("steady").to_str().unwrap(),
    ]);
    assert!(out.ok(), "job run: {}{}", out.stdout, out.stderr);
    let before = c.allocs();
    assert_eq!(before.len(), 2, "{before:?}");

    // The CLI here holds copies of the CA and the admin credential (as an
    // operator's workstation would): rotate-ca keeps them current itself.
    let out = c.drover(&[
        "cluster",
        "rotate-ca",
        "--min-phase",
        "3s",
        "--timeout",
        "3m",
    ]);
    assert!(out.ok(), "rotate-ca: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("CA rotation done"), "{}", out.stdout);
    assert_eq!(c.allocs(), before, "a container was stopped or replaced");

    // Every peer answers over the new certificates, and after the leader
    // dies the others elect one and commit (new connections, new CA only).
    let members = c.members().expect("members");
    let roles: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert!(!roles.contains(&"unreachable"), "{members}");
    let leader = c.leader();
    c.must(&["kill", &format!("s{leader}")]);
    wait_for("a new leader", Duration::from_secs(20), || {
        let l = c.leader();
        (l != 0 && l != leader).then_some(l)
    });
    let out = c.drover(&[
        "job",
        "run",
        "--timeout",
        "60s",
        spec("after").to_str().unwrap(),
    ]);
    assert!(
        out.ok(),
        "job run after the rotation: {}{}",
        out.stdout,
        out.stderr
    );
    let after = c.allocs();
    for a in &before {
        assert!(after.contains(a), "{a:?} changed: {after:?}");
    }
}
