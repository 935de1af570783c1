//! A cluster of real virtual machines for the end-to-end tests: scheduler
//! replicas and agents each a qemu VM with its own kernel, cgroup v2 tree,
//! network stack and disk, on a host-only bridge, pulling images from a
//! registry on the host; brought up, broken and torn down by
//! `examples/vm-cluster/vm-cluster.sh` (the very script users run).

use crate::{bin_dir, register_pki, repo_root, run_drover, wait_for, Run};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// The VM cluster; `down` when dropped.
pub struct Vms {
    /// Its short name (prefix of its links, tables and agents' names).
    pub name: &'static str,
    /// The first three octets of its /24.
    pub net: &'static str,
    pub addr: String,
    pub registry: String,
    pub schedulers: u32,
    pub agents: u32,
}

/// Runs `vm-cluster.sh ARGS` for the cluster `name` on `net`.
pub fn script_for(name: &str, net: &str, args: &[&str]) -> Run {
    let out = Command::new("bash")
        .arg(repo_root().join("examples/vm-cluster/vm-cluster.sh"))
        .args(args)
        .env("DROVER_BIN", bin_dir())
        .env("DROVER_VM_NAME", name)
        .env("DROVER_VM_NET", net)
        .output()
        .expect("run vm-cluster.sh");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Vms {
    /// Brings up 3 scheduler VMs and 2 agent VMs named `name` (at most 5
    /// characters) on the /24 `net` (three octets); how long it took.
    pub fn up(name: &'static str, net: &'static str) -> (Vms, Duration) {
        Vms::up_with(name, net, 3, 2)
    }

    /// Brings up `schedulers` scheduler VMs and `agents` agent VMs.
    pub fn up_with(
        name: &'static str,
        net: &'static str,
        schedulers: u32,
        agents: u32,
    ) -> (Vms, Duration) {
        let script = |args: &[&str]| script_for(name, net, args);
        script(&["down"]);
        let start = Instant::now();
        let out = script(&[
            "up",
            "--schedulers",
            &schedulers.to_string(),
            "--agents",
            &agents.to_string(),
        ]);
        if !out.ok() {
            // What the VMs printed, before `down` removes it.
            let console = std::fs::read_to_string(format!("/tmp/drover-vm-{name}/s1/console.log"))
                .unwrap_or_default();
            script(&["down"]);
            panic!(
                "vm-cluster.sh up failed: {}{}\ns1's console (tail):\n{}",
                out.stdout,
                out.stderr,
                console
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let took = start.elapsed();
        let export = |k: &str| {
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {k}=")))
                .unwrap_or_else(|| panic!("up prints {k}: {}", out.stdout))
                .to_string()
        };
        let vms = Vms {
            name,
            net,
            schedulers,
            agents,
            addr: export("DROVER_ADDR"),
            registry: export("DROVER_VM_REGISTRY"),
        };
        register_pki(&vms.addr, std::path::Path::new(&export("DROVER_PKI_DIR")));
        eprintln!("{}", out.stdout.lines().next().unwrap_or_default());
        (vms, took)
    }

    pub fn script(&self, args: &[&str]) -> Run {
        script_for(self.name, self.net, args)
    }

    /// Runs `vm-cluster.sh ARGS` and insists it succeeds.
    pub fn must(&self, args: &[&str]) -> Run {
        let out = self.script(args);
        assert!(
            out.ok(),
            "vm-cluster.sh {args:?} failed: {}{}",
            out.stdout,
            out.stderr
        );
        out
    }

    pub fn drover(&self, args: &[&str]) -> Run {
        run_drover(&self.addr, args)
    }

    /// An agent VM's node name, e.g. `dvmt-a1`.
    pub fn agent(&self, n: u32) -> String {
        format!("{}-a{n}", self.name)
    }

    /// Brings the cluster down and checks nothing it made is left: no link,
    /// no VM, no directory, no nftables table.
    pub fn down_leaves_nothing(self) {
        let name = self.name;
        drop(self);
        let links = Command::new("ip").args(["-br", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(
            !links.lines().any(|l| l.starts_with(name)),
            "links left behind: {links}"
        );
        let qemu = Command::new("pgrep")
            .args(["-f", &format!("qemu-system.*{name}-")])
            .output()
            .unwrap();
        assert!(
            qemu.stdout.is_empty(),
            "VMs left running: {}",
            String::from_utf8_lossy(&qemu.stdout)
        );
        assert!(!std::path::Path::new(&format!("/tmp/drover-vm-{name}")).exists());
        let tables = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&tables.stdout).contains(name));
    }

    pub fn leader(&self) -> u64 {
        wait_for("a leader", Duration::from_secs(60), || {
            let out = self.drover(&["cluster", "members", "-o", "json"]);
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            v["leader_id"].as_u64().filter(|l| *l > 0)
        })
    }

    /// The items of a `drover ... -o json` list (none when the call fails).
    pub fn list(&self, args: &[&str]) -> Vec<Value> {
        let out = self.drover(args);
        match serde_json::from_str(&out.stdout) {
            Ok(Value::Array(items)) => items,
            _ => Vec::new(),
        }
    }

    /// (name, node, state) of every allocation of `job`.
    pub fn allocs(&self, job: &str) -> Vec<(String, String, String)> {
        self.list(&["alloc", "ls", "-o", "json"])
            .iter()
            .filter(|a| a["job"] == job)
            .map(|a| {
                let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
                (s("name"), s("node"), s("state"))
            })
            .collect()
    }

    pub fn running_on(&self, job: &str) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .allocs(job)
            .into_iter()
            .filter(|(_, _, s)| s == "running")
            .map(|(_, n, _)| n)
            .collect();
        nodes.sort();
        nodes
    }

    pub fn node_status(&self, node: &str) -> String {
        self.list(&["node", "ls", "-o", "json"])
            .iter()
            .find(|n| n["name"] == node)
            .and_then(|n| n["status"].as_str().map(String::from))
            .unwrap_or_default()
    }
}

impl Drop for Vms {
    fn drop(&mut self) {
        self.script(&["down"]);
    }
}

impl Vms {
    /// Scheduler replica `i`'s API address.
    pub fn peer_addr(&self, i: u32) -> String {
        format!("{}.{}:7400", self.net, 10 + i)
    }

    /// `drover cluster members -o json`, when a replica answers.
    pub fn members(&self) -> Option<Value> {
        let out = self.drover(&["cluster", "members", "-o", "json"]);
        out.ok()
            .then(|| serde_json::from_str(&out.stdout).ok())
            .flatten()
    }

    /// The allocations with a process in their cgroup on any agent VM (see
    /// [`running_containers`]); `None` when a VM did not answer.
    pub fn running_containers(&self) -> Option<BTreeSet<String>> {
        running_containers(self.name, self.net, self.agents)
    }
}

/// The allocations with a process in their cgroup on any agent VM of the
/// cluster `name` on `net`, as `crate::running_containers` sees the host's:
/// one instant of the cluster. The VMs are read one after another, so each
/// one but the last is read twice, around the others, and a container
/// counts only if both reads saw it: what is returned all ran at the moment
/// the last VM was read (never a container that stopped before another
/// started). `None` when a VM did not answer.
pub fn running_containers(name: &str, net: &str, agents: u32) -> Option<BTreeSet<String>> {
    // (cgroup files have no size: read them.)
    const LIST: &str = "for d in /sys/fs/cgroup/drover/*/; do \
        [ -n \"$(cat $d/cgroup.procs)\" ] && basename $d; done; true";
    let read = |n: u32| -> Option<BTreeSet<String>> {
        let out = script_for(name, net, &["exec", &format!("a{n}"), LIST]);
        out.ok()
            .then(|| out.stdout.lines().map(str::to_string).collect())
    };
    let agents: Vec<u32> = (1..=agents).collect();
    let first: Vec<BTreeSet<String>> = agents.iter().map(|n| read(*n)).collect::<Option<_>>()?;
    let mut out = BTreeSet::new();
    let last = *agents.last()?;
    for (i, n) in agents.iter().enumerate() {
        if *n == last {
            out.extend(first[i].iter().cloned());
        } else {
            // Read again after the others.
            let again = read(*n)?;
            out.extend(first[i].intersection(&again).cloned());
        }
    }
    Some(out)
}
