//! Upgrades, end to end.
//!
//! A cluster of the previous commit's binaries (three scheduler peers and
//! an agent in network namespaces, built from a git worktree by
//! `tests/upgrade-base.sh`) is upgraded to this commit's one node at a time
//! with `cluster.sh upgrade`, as an operator would, while a client writes
//! without pause and two replicas run: no write fails, no container
//! restarts, and the cluster version moves up (when the new release
//! supports a newer one) only once the last peer runs the new release. And a release refuses a newer release's data instead
//! of misreading it.

use drover_e2e::netcluster::NetCluster;
use drover_e2e::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The previous release's binaries: `DROVER_UPGRADE_BASE_BIN`, or what
/// `tests/upgrade-base.sh` built last.
fn previous_release() -> Option<PathBuf> {
    let dir = match std::env::var_os("DROVER_UPGRADE_BASE_BIN") {
        Some(d) => PathBuf::from(d),
        None => {
            let current = repo_root().join("target/upgrade-base/current");
            PathBuf::from(std::fs::read_to_string(current).ok()?.trim())
        }
    };
    ["drover", "drover-scheduler", "drover-agent"]
        .iter()
        .all(|b| dir.join(b).exists())
        .then_some(dir)
}

/// The cluster version, and what each member supports, as the leader says.
fn versions(c: &NetCluster) -> Option<(u64, Vec<(u64, u64)>)> {
    let m = c.members()?;
    let members = m["members"]
        .as_array()?
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap_or(0),
                p["supports_version"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    Some((m["cluster_version"].as_u64()?, members))
}

#[test]
fn a_rolling_upgrade_from_the_previous_commit_fails_no_write_and_restarts_nothing() {
    let test = "a_rolling_upgrade_from_the_previous_commit_fails_no_write_and_restarts_nothing";
    if !require_root(test) {
        return;
    }
    let Some(old) = previous_release() else {
        skip_or_fail(
            test,
            "no previous commit's binaries: tests/upgrade-base.sh builds them (tests/run.sh runs it)",
        );
        return;
    };
    let new = bin_dir();
    let images = images();
    let mut c = NetCluster::up(
        "upgrade",
        15,
        3,
        1,
        &[("DROVER_BIN", old.to_str().unwrap())],
    );
    let dir = tempfile::tempdir().unwrap();
    let steady = two_sleepers(dir.path(), &images, "steady");
    let out = c.drover(&["job", "run", "--timeout", "60s", steady.to_str().unwrap()]);
    assert!(out.ok(), "job run: {}{}", out.stdout, out.stderr);
    let before = c.allocs();
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before
        .iter()
        .all(|(_, pid, st)| *pid > 0 && st == "running"));
    // The previous release runs at the newest version it supports (1 for a
    // release from before versions, which reports none).
    let (_, members) = versions(&c).expect("cluster members");
    assert_eq!(members.len(), 3, "{members:?}");
    let old_supports = members.iter().map(|(_, s)| *s).min().unwrap().max(1);
    wait_for(
        &format!("the previous release's cluster at version {old_supports}"),
        Duration::from_secs(20),
        || (versions(&c)?.0 == old_supports).then_some(()),
    );

    // A client writing throughout: each write retried (as clients do)
    // until it is acknowledged or 30 s have passed.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let addr = c.addr();
        let dir = dir.path().to_owned();
        std::thread::spawn(move || {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w-{i}");
                let spec = dir.join(format!("{name}.yaml"));
                std::fs::write(
                    &spec,
                    format!("name: {name}\nreplicas: 0\nimage: oci:/nowhere:latest\ncommand: [/bin/true]\n"),
                )
                .unwrap();
                let began = Instant::now();
                loop {
                    let out = run_drover(&addr, &["job", "run", "-d", spec.to_str().unwrap()]);
                    if out.ok() {
                        acked.push(name);
                        break;
                    }
                    if began.elapsed() > Duration::from_secs(30) {
                        failed.push(format!("{name}: {}", out.stderr.trim()));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                i += 1;
            }
            (acked, failed)
        })
    };

    // Followers first, the leader last (one election, not three).
    let leader = c.leader();
    let order: Vec<u32> = (1..=3).filter(|i| *i != leader).chain([leader]).collect();
    let mut new_supports = 0;
    for (step, i) in order.iter().enumerate() {
        c.must(&["upgrade", &format!("s{i}"), new.to_str().unwrap()]);
        let (runs, members) = wait_for(
            &format!("s{i} to say what it supports"),
            Duration::from_secs(20),
            || {
                let v = versions(&c)?;
                let s = v.1.iter().find(|(id, _)| *id == u64::from(*i))?.1;
                (s >= old_supports).then_some(v)
            },
        );
        new_supports = members
            .iter()
            .find(|(id, _)| *id == u64::from(*i))
            .unwrap()
            .1;
        if step < 2 {
            assert_eq!(
                runs, old_supports,
                "the cluster version moved while a peer still runs the previous release: {members:?}"
            );
        }
    }
    // Once every peer runs the new release, the leader raises the version
    // to what they all support.
    eprintln!("cluster version {old_supports} -> {new_supports}");
    wait_for(
        &format!("cluster version {new_supports}"),
        Duration::from_secs(20),
        || (versions(&c)?.0 == new_supports).then_some(()),
    );
    // The agent last: its containers stay with their monitors meanwhile.
    c.must(&["upgrade", "a1", new.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.join().unwrap();
    assert!(
        failed.is_empty(),
        "writes failed during the upgrade: {failed:?}"
    );
    assert!(
        acked.len() >= 20,
        "the client wrote too little to tell: {} writes",
        acked.len()
    );
    eprintln!("{} writes during the upgrade, none failed", acked.len());

    // Every acknowledged write is there, on every peer.
    for i in 1..=3 {
        let jobs = wait_for(
            &format!("s{i} to hold every write"),
            Duration::from_secs(20),
            || {
                let jobs = c.jobs_on(i)?;
                acked
                    .iter()
                    .all(|n| jobs.iter().any(|(j, _)| j == n))
                    .then_some(jobs)
            },
        );
        assert!(jobs.iter().any(|(j, _)| j == "steady"));
    }
    // Nothing restarted: the same allocations, the same processes.
    assert_eq!(c.allocs(), before, "a container was stopped or replaced");
    for (_, pid, _) in &before {
        assert!(pid_alive(*pid as u32), "container {pid} died");
    }
    let nodes = c.drover(&["node", "ls", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&nodes.stdout).unwrap();
    assert_eq!(v[0]["status"], "ready", "{v}");
    // And the upgraded cluster places new work.
    let out = c.drover(&["job", "scale", "steady", "3"]);
    assert!(out.ok(), "job scale: {}{}", out.stdout, out.stderr);
    wait_for("a third replica running", Duration::from_secs(30), || {
        let a = c.allocs();
        (a.len() == 3 && a.iter().all(|(_, _, st)| st == "running")).then_some(())
    });
}

/// A format marker from a release newer than this one, in `dir`.
fn newer_marker(dir: &std::path::Path, format: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("drover-format.json"),
        format!(r#"{{"format": "{format}", "version": 99, "written_by": "drover 99.0.0"}}"#),
    )
    .unwrap();
}

/// `drover-agent run` on the state dir `state` (with a scheduler that is
/// never reached): whether it ran, and what it said.
fn agent_on(state: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(bin_dir().join("drover-agent"))
        .args(["run", "--name", "upgrade-refused"])
        .args(["--scheduler", "127.0.0.1:1"])
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_newer_releases_data_is_refused_at_start_and_left_alone() {
    let test = "a_newer_releases_data_is_refused_at_start_and_left_alone";
    if !require_root(test) {
        return;
    }
    let bin = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("scheduler");
    newer_marker(&data, "drover-scheduler-data");
    let port = free_port();
    let out = std::process::Command::new(bin.join("drover-scheduler"))
        .args(["--id", "1", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a newer data dir was used: {err}");
    assert!(
        err.contains("written by a newer Drover (drover 99.0.0")
            && err.contains("reads up to version 1"),
        "{err}"
    );
    assert!(
        !data.join("raft.redb").exists() && !data.join("pki").exists(),
        "the refused dir was written to"
    );

    let state = dir.path().join("agent");
    newer_marker(&state, "drover-agent-state");
    let (ok, err) = agent_on(&state);
    assert!(!ok, "a newer state dir was used: {err}");
    assert!(
        err.contains("written by a newer Drover (drover 99.0.0"),
        "{err}"
    );
    assert!(
        !state.join("pki").exists(),
        "the refused dir was written to"
    );
    // A scheduler's data dir is not an agent's.
    let (_, err) = agent_on(&data);
    assert!(
        err.contains("drover-scheduler-data directory, not a drover-agent-state one"),
        "{err}"
    );
}
