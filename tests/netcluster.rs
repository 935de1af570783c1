//! A cluster of network namespaces for the end-to-end tests: scheduler
//! replicas and agents each in their own namespace on a private bridge,
//! brought up, broken and torn down by `examples/cluster/cluster.sh` (the
//! very script users run, not a copy).

use crate::{bin_dir, pki_dir_for, repo_root, run_drover, wait_for, Run};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// A running `cluster.sh` cluster; `down` when dropped.
pub struct NetCluster {
    pub name: String,
    net: String,
    env: Vec<(String, String)>,
    schedulers: u32,
}

impl NetCluster {
    /// Brings up `schedulers` replicas and `agents` agents on the /24
    /// `10.77.<octet>.0`, named `name` (at most 8 characters). `env` passes
    /// extra settings to the script (e.g. `DROVER_SNAPSHOT_EVERY`).
    pub fn up(
        name: &str,
        octet: u8,
        schedulers: u32,
        agents: u32,
        env: &[(&str, &str)],
    ) -> NetCluster {
        let mut c = NetCluster {
            name: name.to_string(),
            net: format!("10.77.{octet}"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            schedulers,
        };
        // Leftovers of an aborted earlier run.
        c.script(&["down"]);
        let out = c.script(&[
            "up",
            "--schedulers",
            &schedulers.to_string(),
            "--agents",
            &agents.to_string(),
        ]);
        assert!(
            out.ok(),
            "cluster.sh up failed: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(out
            .stdout
            .contains(&format!("export DROVER_ADDR={}", c.addr())));
        let pki = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("export DROVER_PKI_DIR="))
            .expect("cluster.sh up prints DROVER_PKI_DIR");
        crate::register_pki(&c.addr(), std::path::Path::new(pki));
        c
    }

    /// Runs `cluster.sh ARGS` for this cluster.
    pub fn script(&mut self, args: &[&str]) -> Run {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("examples/cluster/cluster.sh"))
            .args(args)
            .env("DROVER_BIN", bin_dir())
            .env("DROVER_CLUSTER_NAME", &self.name)
            .env("DROVER_CLUSTER_NET", &self.net)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = cmd.output().expect("run cluster.sh");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `cluster.sh ARGS` and insists it succeeds.
    pub fn must(&mut self, args: &[&str]) {
        let out = self.script(args);
        assert!(
            out.ok(),
            "cluster.sh {args:?} failed: {}{}",
            out.stdout,
            out.stderr
        );
    }

    /// cluster.sh's directory for this cluster (pids, logs, state).
    fn dir(&self) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == "DROVER_CLUSTER_DIR")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("/tmp/drover-cluster-{}", self.name))
    }

    /// The address of scheduler peer `i` (1-based).
    pub fn peer_addr(&self, i: u32) -> String {
        format!("{}.{}:7400", self.net, 10 + i)
    }

    /// The pid of node `node`'s process (e.g. "s1"), from cluster.sh's
    /// directory for this cluster.
    pub fn pid(&self, node: &str) -> u32 {
        let dir = self.dir();
        let path = format!("{dir}/{node}/pid");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Every replica's address: the `DROVER_ADDR` to use.
    pub fn addr(&self) -> String {
        (1..=self.schedulers)
            .map(|i| self.peer_addr(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `drover` from the host against every replica.
    pub fn drover(&self, args: &[&str]) -> Run {
        run_drover(&self.addr(), args)
    }

    /// Runs `drover` inside replica `i`'s namespace against that replica
    /// alone (reachable even when it is partitioned off the bridge).
    pub fn drover_on(&self, i: u32, args: &[&str]) -> Run {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}-s{i}", self.name))
            .arg("--")
            .arg(bin_dir().join("drover"))
            .args(args)
            .env("DROVER_ADDR", self.peer_addr(i))
            .envs(pki_dir_for(&self.addr()).map(|d| ("DROVER_PKI_DIR", d)))
            .current_dir(repo_root())
            .output()
            .expect("run drover in a namespace");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `drover cluster members -o json` as the leader sees it.
    pub fn members(&self) -> Option<Value> {
        let out = self.drover(&["cluster", "members", "-o", "json"]);
        out.ok()
            .then(|| serde_json::from_str(&out.stdout).ok())
            .flatten()
    }

    /// The leader's id, once a leader is known and answers.
    pub fn leader(&self) -> u32 {
        wait_for("a leader", Duration::from_secs(20), || {
            let id = self.members()?["leader_id"].as_u64()?;
            (id != 0).then_some(id as u32)
        })
    }

    /// After a failed test: prints what the cluster says of its jobs,
    /// allocations, nodes and members, and copies every node's log to
    /// `/tmp/drover-failed-NAME-TIME/` (`down` removes the originals).
    fn keep_for_a_post_mortem(&self) {
        for args in [
            &["cluster", "members"][..],
            &["node", "ls"],
            &["job", "ls"],
            &["alloc", "ls", "--all"],
        ] {
            let out = self.drover(args);
            eprintln!("drover {}:\n{}{}", args.join(" "), out.stdout, out.stderr);
        }
        let dir = self.dir();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kept = format!("/tmp/drover-failed-{}-{secs}", self.name);
        let Ok(nodes) = std::fs::read_dir(&dir) else {
            return;
        };
        for node in nodes.flatten() {
            let log = node.path().join("log");
            if log.exists() {
                let to = std::path::Path::new(&kept).join(node.file_name());
                if std::fs::create_dir_all(&to).is_ok() {
                    let _ = std::fs::copy(&log, to.join("log"));
                }
            }
        }
        eprintln!("the nodes' logs are kept in {kept}");
    }

    /// Every allocation of the cluster as (id, pid, state), sorted.
    pub fn allocs(&self) -> Vec<(String, u64, String)> {
        let out = self.drover(&["alloc", "ls", "-o", "json"]);
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        let mut a: Vec<_> = v
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().unwrap_or_default().to_string(),
                    a["pid"].as_u64().unwrap_or(0),
                    a["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        a.sort();
        a
    }

    /// The names of the jobs replica `i` holds, read from it alone (stale).
    pub fn jobs_on(&self, i: u32) -> Option<Vec<(String, u64)>> {
        let out = self.drover_on(i, &["job", "ls", "--stale", "-o", "json"]);
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        Some(
            v.as_array()?
                .iter()
                .map(|j| {
                    (
                        j["name"].as_str().unwrap_or_default().to_string(),
                        j["version"].as_u64().unwrap_or(0),
                    )
                })
                .collect(),
        )
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_for_a_post_mortem();
        }
        let out = self.script(&["down"]);
        if !out.ok() {
            eprintln!("cluster.sh down failed: {}{}", out.stdout, out.stderr);
        }
    }
}
