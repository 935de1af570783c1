//! `drover-bench figures`: every figure the README shows, regenerated in one
//! run on the current code, each beside its peer where one runs here (runc,
//! Docker Swarm, etcd, skopeo), and written into the README's table with the
//! date, the commit, the machine and the peers' versions.
//!
//! Each figure is measured by the same code as its own subcommand (`job-run`,
//! `rollout`, `failover`, ...): this only runs them in order, starts what
//! they run against (a `drover dev`, a Docker daemon with a one-node swarm,
//! a registry), and writes the table. A figure that fails says so in its row
//! (and the command exits non-zero); the others are still measured.

use anyhow::{bail, Context, Result};
use drover_e2e::{free_port, Proc};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::stats::Samples;

/// What `drover-bench figures` was asked.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The README whose figures section (between the `figures:begin` and
    /// `figures:end` markers) is rewritten.
    #[arg(long, default_value = "README.md")]
    pub readme: PathBuf,
    /// Print the section; leave the README as it is.
    #[arg(long)]
    pub dry_run: bool,
    /// Trials per figure (rollouts, node losses, leader faults; failovers
    /// take twice as many; Swarm's 100 replicas at most 3).
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    /// Container starts per runtime.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// The commit soak at full load, in seconds (half no-ops, half job
    /// submissions); 0 leaves its row out.
    #[arg(long, default_value_t = 600)]
    pub soak_seconds: u64,
    /// Measure only these groups, comma-separated, and print them (the
    /// README is written only by a whole run): runtime, attach, dev (job run,
    /// rollout, mesh, the demo's traffic), memory, swarm, node-loss,
    /// failover, faults, commit, writes, soak, handshake, snapshot, pull.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

const GROUPS: [&str; 14] = [
    "runtime",
    "attach",
    "dev",
    "memory",
    "swarm",
    "node-loss",
    "failover",
    "faults",
    "commit",
    "writes",
    "soak",
    "handshake",
    "snapshot",
    "pull",
];

/// One row of the table.
struct Row {
    benchmark: String,
    drover: String,
    peer: String,
}

fn row(benchmark: impl Into<String>, drover: impl Into<String>, peer: impl Into<String>) -> Row {
    Row {
        benchmark: benchmark.into(),
        drover: drover.into(),
        peer: peer.into(),
    }
}

/// A measurement, or why it could not be made.
type Got<T> = std::result::Result<T, String>;

/// Which groups of figures to measure (`--only`; empty: all).
struct Selection(Vec<String>);

const NOT_RUN: &str = "not run (--only)";

impl Selection {
    /// Runs one step of `group`, saying what it is; its error becomes its
    /// row's words. A group not selected is not run.
    async fn attempt<T>(
        &self,
        group: &str,
        what: &str,
        f: impl Future<Output = Result<T>>,
    ) -> Got<T> {
        if !self.0.is_empty() && !self.0.iter().any(|g| g == group) {
            return Err(NOT_RUN.into());
        }
        attempt(what, f).await
    }
}

/// Runs one step, saying what it is; its error becomes its row's words.
async fn attempt<T>(what: &str, f: impl Future<Output = Result<T>>) -> Got<T> {
    println!("\n==> {what}");
    let start = Instant::now();
    let r = f.await.map_err(|e| format!("failed: {e:#}"));
    match &r {
        Ok(_) => println!("    ({what}: {:.0} s)", start.elapsed().as_secs_f64()),
        Err(e) => println!("    {what}: {e}"),
    }
    r
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The first line a command prints of `args` (its version), if it runs.
pub fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .to_string();
    out.status.success().then_some(line)
}

/// The machine, as the table's heading describes it.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "cgroup v2"
    } else if Path::new("/sys/fs/cgroup/unified").exists() {
        "cgroup v1 (hybrid)"
    } else {
        "cgroup v1"
    };
    format!(
        "{cores} cores ({model}), {:.0} GiB, Linux {kernel}, {cgroup}",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

/// The commit measured, and whether the tree differed from it.
fn code_version() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c)
            if git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()) =>
        {
            format!("{c} with uncommitted changes")
        }
        Some(c) => c,
        None => "an unknown commit (not a git checkout)".into(),
    }
}

/// The peers' versions, each as the program says it.
fn peers() -> String {
    let skopeo = first_line("skopeo", &["--version"]);
    let registry = first_line("/usr/bin/docker-registry", &["--version"]);
    [
        first_line("runc", &["--version"]),
        crate::swarm::version(),
        crate::etcd::version(),
        skopeo,
        registry,
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("; ")
}

/// A `drover dev` on a state directory of its own; stopped (SIGINT) when dropped.
struct Dev {
    _proc: Proc,
    addr: String,
}

impl Dev {
    async fn start(dir: &Path) -> Result<Dev> {
        let addr = format!("127.0.0.1:{}", free_port());
        let state = dir.join("dev");
        std::fs::create_dir_all(&state)?;
        let p = Proc::spawn(
            "drover dev",
            Command::new(drover_e2e::bin_dir().join("drover"))
                .args(["dev", "--listen", &addr])
                .arg("--state-dir")
                .arg(&state),
            dir.join("dev.log"),
        );
        let pki = state.join("pki");
        let start = Instant::now();
        loop {
            if pki.join("admin.pem").exists() {
                drover_ctl::client::use_pki_dir(&pki);
                if let Ok(mut c) = drover_ctl::client::connect(&addr).await {
                    let nodes = c
                        .list_nodes(drover_proto::pb::ListNodesRequest { read: None })
                        .await;
                    if nodes.is_ok_and(|n| n.get_ref().nodes.iter().any(|n| n.status == "ready")) {
                        return Ok(Dev { _proc: p, addr });
                    }
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "drover dev: no ready node within 60s (log: {})",
                    dir.join("dev.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A `docker-registry` on loopback holding demo-web:v1 (pushed by skopeo).
struct Registry {
    proc: Proc,
    host: String,
}

impl Registry {
    async fn start(dir: &Path, layout: &str) -> Result<Registry> {
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                dir.join("registry").display()
            ),
        )?;
        let proc = Proc::spawn(
            "docker-registry",
            Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&config),
            dir.join("registry.log"),
        );
        let start = Instant::now();
        while tokio::net::TcpStream::connect(&host).await.is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                bail!("docker-registry did not listen within 20s (Debian: apt install docker-registry)");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", layout])
            .arg(format!("docker://{host}/demo-web:v1"))
            .output()
            .context("cannot run skopeo (Debian: apt install skopeo)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy to the registry: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Registry { proc, host })
    }
}

/// `drover-bench runtime ... --json` as a process of its own (it runs from a
/// sealed copy of itself, as the agent does); its medians.
fn runtime_medians(runs: usize, extra: &[&str]) -> Result<crate::runtime::Medians> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["runtime", "--runs", &runs.to_string(), "--json"])
        .args(extra)
        .output()?;
    if !out.status.success() {
        bail!(
            "drover-bench runtime: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("drover-bench runtime printed {text}"))
}

/// Runs every benchmark and writes the table.
pub async fn command(a: Args) -> Result<i32> {
    let started = Instant::now();
    // The code measured is what was built before the run: read it now,
    // not after half an hour in which the tree may have changed.
    let code = code_version();
    let toolbox = "oci:examples/images/out/toolbox:latest";
    let demo_v1 = "oci:examples/images/out/demo-web:v1";
    for layout in [
        "examples/images/out/toolbox",
        "examples/images/out/demo-web",
    ] {
        if !Path::new(layout).exists() {
            bail!(
                "{layout} is missing: run from the repository root, after examples/images/build.sh"
            );
        }
    }
    if let Some(g) = a.only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        bail!("--only: no group {g:?} (the groups: {})", GROUPS.join(", "));
    }
    let sel = Selection(a.only.clone());
    let dry_run = a.dry_run || !a.only.is_empty();
    if !dry_run {
        // Fail now, not after half an hour of measuring.
        splice(
            &std::fs::read_to_string(&a.readme)
                .with_context(|| format!("cannot read {}", a.readme.display()))?,
            "",
        )?;
    }
    let work = crate::ha::scratch("figures")?;
    let trials = a.trials.max(1);
    let mut rows = Vec::new();

    // Container start, beside runc on the same bundle.
    let plain = sel
        .attempt(
            "runtime",
            "container starts (drover-bench runtime)",
            async { runtime_medians(a.runs, &[]) },
        )
        .await;
    let userns = sel
        .attempt("runtime", "container starts in a user namespace", async {
            runtime_medians(a.runs, &["--user-namespace", "--no-monitor"])
        })
        .await;
    rows.push(match &plain {
        Ok(m) => {
            let x = |v: Option<f64>| match (v, m.runc_ms) {
                (Some(v), Some(r)) => format!("{:.2}×", v / r),
                _ => "-".into(),
            };
            let (u_drover, u_runc) = match &userns {
                Ok(u) => (
                    format!("; in a user namespace {:.1} ms", u.drover_ms),
                    match u.runc_ms {
                        Some(r) => format!("; in a user namespace {r:.1} ms ({:.2}×)", u.drover_ms / r),
                        None => String::new(),
                    },
                ),
                Err(e) => (format!("; in a user namespace: {e}"), String::new()),
            };
            row(
                format!("container start, busybox `/bin/true`, median of {}, Docker's default seccomp profile", m.runs),
                format!(
                    "{:.1} ms; {} under its monitor{u_drover}",
                    m.drover_ms,
                    m.monitored_ms.map_or("-".into(), |v| format!("{v:.1} ms"))
                ),
                match m.runc_ms {
                    Some(r) => format!(
                        "`runc run` of the same bundle: {r:.1} ms (Drover {}; monitored {}){u_runc}",
                        x(Some(m.drover_ms)),
                        x(m.monitored_ms)
                    ),
                    None => "runc: not installed".into(),
                },
            )
        }
        Err(e) => row("container start", e.clone(), "-"),
    });

    let attach = sel
        .attempt("attach", "network attach per container", async {
            crate::attach::report(50)
        })
        .await;
    rows.push(row(
        "network attach per container (veth on the bridge, address and default route inside), median of 50",
        match &attach {
            Ok((nl, _)) => format!("{} over netlink (p90 {})", ms2(nl.median()), ms2(nl.percentile(90))),
            Err(e) => e.clone(),
        },
        match &attach {
            Ok((_, ip)) => format!(
                "the same steps as `ip` and `nsenter ip` commands (Drover before): {} (p90 {})",
                ms2(ip.median()),
                ms2(ip.percentile(90))
            ),
            Err(_) => "-".into(),
        },
    ));

    // Against a drover dev: job run, rollout, the mesh, the demo's
    // traffic, DNS.
    let (job_run, rollout, mesh, traffic, dns) =
        match sel.attempt("dev", "drover dev", Dev::start(&work)).await {
            Ok(dev) => {
                let job_run = sel
                    .attempt(
                        "dev",
                        "drover: job run of 20 and 100 replicas",
                        crate::cluster::job_run_report(&dev.addr, &[20, 100], trials, toolbox),
                    )
                    .await;
                let rollout = sel
                    .attempt(
                        "dev",
                        "drover: rollout of 10 replicas",
                        crate::cluster::rollout_report(
                            &dev.addr,
                            10,
                            trials,
                            toolbox,
                            crate::cluster::Strategy::SWARM,
                        ),
                    )
                    .await;
                let mesh = sel
                    .attempt(
                        "dev",
                        "drover: the routing mesh vs one replica",
                        mesh(&dev.addr),
                    )
                    .await;
                let traffic = sel
                    .attempt(
                        "dev",
                        "drover: the demo's rollouts under traffic",
                        crate::cluster::traffic_report(&dev.addr, Path::new("examples/jobs"), 250),
                    )
                    .await;
                let dns = sel
                    .attempt(
                        "dev",
                        "drover: DNS from inside a container",
                        crate::dns::dns_report(&dev.addr, demo_v1, 5000),
                    )
                    .await;
                (job_run, rollout, mesh, traffic, dns)
            }
            Err(e) => (
                Err(e.clone()),
                Err(e.clone()),
                Err(e.clone()),
                Err(e.clone()),
                Err(e),
            ),
        };
    let memory = sel
        .attempt(
            "memory",
            "drover: agent memory with 50 containers",
            crate::rss::drover(50, toolbox),
        )
        .await;

    // Docker Swarm, on the same machine, the same images.
    let (swarm_20, swarm_100, swarm_rollout, swarm_memory) = match sel
        .attempt(
            "swarm",
            "docker swarm",
            crate::swarm::Swarm::start(&[(toolbox, "toolbox:latest")]),
        )
        .await
    {
        Ok(sw) => (
            sel.attempt(
                "swarm",
                "swarm: service of 20 replicas",
                sw.job_run("toolbox:latest", 20, trials),
            )
            .await,
            sel.attempt(
                "swarm",
                "swarm: service of 100 replicas",
                sw.job_run("toolbox:latest", 100, trials.min(3)),
            )
            .await,
            sel.attempt(
                "swarm",
                "swarm: rolling update of 10 replicas",
                sw.rollout("toolbox:latest", 10, trials.min(3)),
            )
            .await,
            sel.attempt(
                "swarm",
                "swarm: memory with 50 containers",
                sw.memory("toolbox:latest", 50),
            )
            .await,
        ),
        Err(e) => (Err(e.clone()), Err(e.clone()), Err(e.clone()), Err(e)),
    };
    for (i, n, swarm) in [(0, 20, &swarm_20), (1, 100, &swarm_100)] {
        let drover = match &job_run {
            Ok(r) => spread(&r[i].1),
            Err(e) => e.clone(),
        };
        rows.push(row(
            format!("`job run` of {n} replicas until all run (image cached), TLS and ACLs on"),
            drover,
            peer_spread("Docker Swarm, `docker service create`", swarm),
        ));
    }
    rows.push(row(
        "rolling update of 10 replicas (surge 1, start first, no health gating)",
        match &rollout {
            Ok(r) => format!(
                "{}; its lower bound, 10 × one replica's fastest start to running, {}",
                spread(&r.times),
                s(r.lower_bound())
            ),
            Err(e) => e.clone(),
        },
        peer_spread("Docker Swarm, `docker service update` (parallelism 1, start-first, no delay or monitor)", &swarm_rollout),
    ));
    rows.push(row(
        "failed requests at 250 req/s through the mesh during a rollout to v2 and a broken v3 rolled back (the demo)",
        match &traffic {
            Ok(t) => format!(
                "{} of {}{}",
                thousands(t.failed as f64),
                thousands((t.ok + t.failed) as f64),
                if t.as_expected { "" } else { " (the rollouts did not end as the demo expects)" }
            ),
            Err(e) => e.clone(),
        },
        "goal: 0",
    ));
    rows.push(row(
        "routing mesh (2 replicas) vs straight to one replica, 16 connections, closed loop",
        match &mesh {
            Ok((d, m)) => format!(
                "{:.0} vs {:.0} req/s ({:.0}%); p99 {:.1} vs {:.1} ms; {} failed",
                m.requests_per_s,
                d.requests_per_s,
                m.requests_per_s / d.requests_per_s * 100.0,
                m.p99_ms,
                d.p99_ms,
                m.failed + d.failed
            ),
            Err(e) => e.clone(),
        },
        "goal: ≥ 80% of the throughput, p99 < +20%",
    ));
    rows.push(row(
        "DNS from inside a container: 5,000 queries for a job's name, one at a time; then a replica frozen (SIGSTOP, 500 ms check, 2 failures)",
        match &dns {
            Ok(d) => format!(
                "p50 {}, p99 {}; the frozen replica left the answers after {} (its check's verdict by {})",
                ms2(d.answers.median()),
                ms2(d.answers.percentile(99)),
                s(d.left_after),
                s(d.verdict_by)
            ),
            Err(e) => e.clone(),
        },
        "goal: p99 ≤ 1 ms; gone by the verdict + 1.5 s",
    ));
    rows.push(row(
        "node-side memory with 50 containers running (PSS: shared pages split between processes)",
        match &memory {
            Ok((idle, m)) => m.describe(
                "the agent",
                &format!("; {:.1} MiB idle", *idle as f64 / 1024.0),
                "monitors",
            ),
            Err(e) => e.clone(),
        },
        match &swarm_memory {
            Ok(m) => format!(
                "Docker: {}",
                m.describe("dockerd and containerd", "", "shims")
            ),
            Err(e) => format!("Docker: {e}"),
        },
    ));

    let node_loss = sel
        .attempt(
            "node-loss",
            "drover: node lost",
            crate::node_loss::node_loss_report(trials, 4, toolbox),
        )
        .await;
    rows.push(row(
        "node lost (agent SIGKILLed) → its replicas running elsewhere, defaults (heartbeat 1 s, node timeout 4 s, fencing on)",
        match &node_loss {
            Ok(t) => format!(
                "{}: node timeout 4 s + 3 s of fencing, by design",
                spread(t)
            ),
            Err(e) => e.clone(),
        },
        "not measured here (Swarm and Nomad need a second machine for it); by their defaults about 15 s (Swarm) and 20 s (Nomad)",
    ));

    let failover = sel
        .attempt(
            "failover",
            "drover: leader killed",
            crate::ha::failover_report(trials * 2, "150ms"),
        )
        .await;
    let etcd_failover = sel
        .attempt("failover", "etcd: leader killed", async {
            crate::etcd::Etcd::start().await?.failover(trials * 2).await
        })
        .await;
    rows.push(row(
        "leader killed (SIGKILL) → first acknowledged write, 3 peers, defaults",
        match &failover {
            Ok(f) => format!(
                "{} median, max {}, {} elections in {} kills (TLS)",
                s(f.times.median()),
                s(f.times.max()),
                f.elections,
                f.times.durations.len()
            ),
            Err(e) => e.clone(),
        },
        match &etcd_failover {
            Ok(t) => format!(
                "etcd, 3 members (default 1 s election timeout): {} median, max {}",
                s(t.median()),
                s(t.max())
            ),
            Err(e) => format!("etcd: {e}"),
        },
    ));

    let faults = sel
        .attempt(
            "faults",
            "drover: faults at the leader (network namespaces)",
            async {
                // The cluster harness panics on a broken cluster: a task of its
                // own turns that into this row's error.
                let kinds = crate::faults::KINDS.map(String::from);
                tokio::spawn(async move { crate::faults::report(&kinds, trials).await })
                    .await
                    .map_err(|e| anyhow::anyhow!("the fault cluster broke: {e}"))?
            },
        )
        .await;
    rows.push(row(
        "leader killed, silent (every packet dropped, no resets), frozen (SIGSTOP), isolated from its peers → first acknowledged write through another peer",
        match &faults {
            Ok(r) => r
                .iter()
                .map(|(k, t)| format!("{k}: {} (max {})", s(t.median()), s(t.max())))
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => e.clone(),
        },
        "goals: silent ≤ 1.5 s, killed ≤ 0.75 s",
    ));

    let modes = ["tls".to_string(), "plaintext".to_string()];
    let commit = sel
        .attempt(
            "commit",
            "drover: commits inside the leader",
            crate::ha::commit_report(&[256], 5.0, &modes),
        )
        .await;
    let writes = sel
        .attempt(
            "writes",
            "drover: writes as clients see them, beside etcd",
            crate::writes::writes_report(&[16, 64, 256, crate::writes::ETCD_CLIENTS], 10.0, true),
        )
        .await;
    let etcd_rate = match &writes {
        Ok(w) => match &w.etcd {
            Ok(r) => Ok(*r),
            Err(e) => Err(format!("{e:#}")),
        },
        Err(e) => Err(e.clone()),
    };
    rows.push(row(
        "durable writes/s as clients see them: 3 `drover-scheduler` processes over mutual TLS, clients over gRPC from another process, each write a new job version",
        match &writes {
            Ok(w) => {
                let runs: Vec<String> = w
                    .runs
                    .iter()
                    .rev()
                    .map(|r| format!("{} clients: {}/s (p50 {:.0} ms, p99 {:.0} ms)", r.clients, thousands(r.per_s()), r.ms(0.5), r.ms(0.99)))
                    .collect();
                let failed: u64 = w.runs.iter().map(|r| r.failed).sum();
                // Like for like: as many clients as etcd's load tool runs.
                let same = w.runs.iter().find(|r| r.clients == crate::writes::ETCD_CLIENTS);
                let vs = match (&etcd_rate, same) {
                    (Ok(e), Some(r)) if *e > 0 => format!(
                        " (Drover {:.2}× etcd, both with {} clients)",
                        r.per_s() / *e as f64,
                        crate::writes::ETCD_CLIENTS
                    ),
                    _ => String::new(),
                };
                format!("{}; {failed} failed{vs}", runs.join("; "))
            }
            Err(e) => e.clone(),
        },
        match &etcd_rate {
            Ok(r) => format!("etcd, 3 members on loopback (plaintext), `etcdctl check perf --load l` ({} clients): {}/s", crate::writes::ETCD_CLIENTS, thousands(*r as f64)),
            Err(e) => format!("etcd: {e}"),
        },
    ));
    rows.push(row(
        "durable commits/s inside the leader (proposers in-process, no gRPC, up to 512 commands per entry), 3 peers, 256 proposers: no-ops, job submissions",
        match &commit {
            Ok(c) => c
                .rows
                .iter()
                .map(|r| format!("{}: {}/s, {}/s ({} failed)", r.mode, thousands(r.noop_per_s), thousands(r.submit_per_s), r.failed))
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => e.clone(),
        },
        match &etcd_rate {
            Ok(r) => format!("not a client's figure: compare the row above (etcd there: {}/s)", thousands(*r as f64)),
            Err(_) => "not a client's figure: compare the row above".into(),
        },
    ));
    if a.soak_seconds > 0 {
        let half = a.soak_seconds as f64 / 2.0;
        let soak = sel
            .attempt(
                "soak",
                "drover: commits at full load, long",
                crate::ha::commit_report(&[256], half, &modes[..1]),
            )
            .await;
        rows.push(row(
            format!(
                "the same for {} at full load ({:.0} s of each), TLS",
                minutes(a.soak_seconds),
                half
            ),
            match &soak {
                Ok(c) => {
                    let r = &c.rows[0];
                    let elections: u64 = c.elections.iter().map(|(_, n)| n).sum();
                    format!(
                        "{}/s, {}/s; {elections} elections, {} failed writes",
                        thousands(r.noop_per_s),
                        thousands(r.submit_per_s),
                        r.failed
                    )
                }
                Err(e) => e.clone(),
            },
            "goal: 0 elections",
        ));
    }

    let handshake = sel
        .attempt(
            "handshake",
            "drover: a new connection, mutual TLS vs plaintext",
            crate::ha::handshake_report(300),
        )
        .await;
    rows.push(row(
        "a new CLI connection and its first call: mutual TLS vs plaintext, median of 300",
        match &handshake {
            Ok([tls, plain]) => format!(
                "{} vs {} (+{})",
                ms2(tls.median()),
                ms2(plain.median()),
                ms2(tls.median().saturating_sub(plain.median()))
            ),
            Err(e) => e.clone(),
        },
        "goal: ≤ +5 ms",
    ));

    let snapshot = sel
        .attempt(
            "snapshot",
            "drover: snapshot save and restore of 10,000 jobs",
            crate::snapshot::report(10_000, 5),
        )
        .await;
    rows.push(row(
        "`operator snapshot save` of 10,000 jobs (1,000 with two versions), 3 peers, TLS; then `restore` into a fresh 3-peer cluster",
        match &snapshot {
            Ok(r) => format!(
                "save {} median of 5 (max {}), {:.1} MiB; restore {}: {} jobs back, {} lost",
                s(r.save.median()),
                s(r.save.max()),
                r.bytes as f64 / f64::from(1 << 20),
                s(r.restore),
                thousands(r.back as f64),
                r.lost
            ),
            Err(e) => e.clone(),
        },
        "goal: save ≤ 2 s; 0 lost",
    ));

    let pull = sel
        .attempt(
            "pull",
            "drover: pull from a registry, beside skopeo",
            async {
                let dir = work.join("pull");
                std::fs::create_dir_all(&dir)?;
                let reg = Registry::start(&dir, demo_v1).await?;
                let report = crate::pull::report(crate::pull::Args {
                    image: format!("{}/demo-web:v1", reg.host),
                    runs: 10,
                    insecure_registry: vec![reg.host.clone()],
                    skopeo: "skopeo".into(),
                    no_skopeo: false,
                });
                drop(reg.proc);
                report
            },
        )
        .await;
    rows.push(match &pull {
        Ok(p) => match &p.rows[..] {
            [drover, cached, skopeo] => row(
                "pull + unpack of demo-web:v1 from a local `docker-registry`, median of 10",
                format!(
                    "{} ({} with its layers cached)",
                    ms(drover.median()),
                    ms(cached.median())
                ),
                format!(
                    "`skopeo copy docker://… oci:…` (no unpacking): {} (Drover {:.2}×)",
                    ms(skopeo.median()),
                    drover.median().as_secs_f64() / skopeo.median().as_secs_f64()
                ),
            ),
            other => row(
                "pull + unpack from a registry",
                format!("failed: {} rows, not 3", other.len()),
                "-",
            ),
        },
        Err(e) => row("pull + unpack from a registry", e.clone(), "-"),
    });

    let _ = std::fs::remove_dir_all(&work);
    let failed = rows
        .iter()
        .filter(|r| r.drover.starts_with("failed") || r.peer.contains("failed:"))
        .count();
    let section = render(&rows, &code, started.elapsed());
    println!("\n{section}");
    if !dry_run {
        let readme = std::fs::read_to_string(&a.readme)?;
        std::fs::write(&a.readme, splice(&readme, &section)?)?;
        println!("wrote the figures into {}", a.readme.display());
    }
    if failed > 0 {
        eprintln!("{failed} row(s) say what failed");
        return Ok(1);
    }
    Ok(0)
}

fn ms2(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn minutes(secs: u64) -> String {
    if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// "M s (median of N; min–max)" of samples in seconds.
fn spread(t: &Samples) -> String {
    format!(
        "{} (median of {}; {}–{})",
        s(t.median()),
        t.durations.len(),
        s(t.min()),
        s(t.max())
    )
}

/// The [`spread`] of a peer's samples, or why there are none.
fn peer_spread(what: &str, got: &Got<Samples>) -> String {
    match got {
        Ok(t) => format!("{what}: {}", spread(t)),
        Err(e) => format!("{what}: {e}"),
    }
}

/// demo-web × 2 through the mesh (port 18080) and straight to one of them.
async fn mesh(addr: &str) -> Result<(crate::cluster::PathLoad, crate::cluster::PathLoad)> {
    let text = std::fs::read_to_string("examples/jobs/web.yaml")?;
    let mut spec = drover_proto::spec::from_yaml_in(&text, Some(&std::env::current_dir()?))?;
    spec.replicas = 2;
    spec.name = "bench-mesh".into();
    let port = spec
        .expose
        .as_ref()
        .map(|e| e.port)
        .context("web.yaml exposes no port")?;
    let container_port = spec
        .exposed_target()
        .map(|(_, container)| container)
        .context("web.yaml: no exposed target port")?;
    let mut c = drover_ctl::client::connect(addr).await?;
    crate::cluster::submit(&mut c, &spec).await?;
    let start = Instant::now();
    let ip = loop {
        let allocs = c
            .list_allocations(drover_proto::pb::ListAllocationsRequest {
                job: spec.name.clone(),
                read: None,
                all: false,
            })
            .await
            .map_err(drover_ctl::client::status)?
            .into_inner()
            .allocations;
        let running: Vec<_> = allocs
            .iter()
            .filter(|a| {
                a.typed_phase() == drover_proto::pb::AllocationPhase::Running
                    && a.typed_health() == drover_proto::pb::Health::Healthy
            })
            .collect();
        if running.len() == 2 {
            break running[0].ip.clone();
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("bench-mesh: not 2 healthy replicas after 60s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The mesh learns of healthy replicas from the watch; give it a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = crate::cluster::mesh_report(
        &format!("http://127.0.0.1:{port}/"),
        &format!("http://{ip}:{container_port}/"),
        10,
        16,
    )
    .await;
    crate::cluster::stop_purge(&mut c, &spec.name).await?;
    r
}

const BEGIN: &str = "<!-- figures:begin";
const END: &str = "<!-- figures:end -->";

/// The README with its figures section replaced by `section`.
fn splice(readme: &str, section: &str) -> Result<String> {
    let b = readme
        .find(BEGIN)
        .with_context(|| format!("the README has no `{BEGIN} ... -->` marker"))?;
    let b_end = b
        + readme[b..]
            .find("-->")
            .context("unterminated figures:begin marker")?
        + 3;
    let e = readme[b_end..]
        .find(END)
        .with_context(|| format!("the README has no `{END}` marker"))?
        + b_end;
    Ok(format!("{}\n{section}\n{}", &readme[..b_end], &readme[e..]))
}

/// The section: when, on what, then the table.
fn render(rows: &[Row], code: &str, took: Duration) -> String {
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
    let mut out = format!(
        "Measured on {date} by `examples/bench/figures.sh` (`drover-bench figures`, {:.0} min) on commit {}, release build, \
         on {}. Every row is from this one run, each peer beside Drover: {}.\n\n\
         | benchmark | Drover | peer, same run |\n|---|---|---|\n",
        took.as_secs_f64() / 60.0,
        code,
        machine(),
        peers()
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            cell(&r.benchmark),
            cell(&r.drover),
            cell(&r.peer)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_between_the_markers_is_replaced_and_nothing_else() {
        let readme = "# Drover\n\nbefore\n<!-- figures:begin (generated) -->\nold table\n<!-- figures:end -->\nafter\n";
        let new = splice(readme, "new table").unwrap();
        assert_eq!(
            new,
            "# Drover\n\nbefore\n<!-- figures:begin (generated) -->\nnew table\n<!-- figures:end -->\nafter\n"
        );
        // Again: the markers are kept, so the next run finds them.
        assert_eq!(splice(&new, "newer").unwrap().matches("newer").count(), 1);
        assert!(splice("no markers", "x").is_err());
        assert!(splice("<!-- figures:begin -->\nno end", "x").is_err());
    }

    #[test]
    fn big_numbers_get_thousands_separators() {
        assert_eq!(thousands(9758.4), "9,758");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(0.0), "0");
    }
}
