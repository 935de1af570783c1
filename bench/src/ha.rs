//! `drover-bench failover`, `commit` and `handshake`: the replicated
//! scheduler's two headline numbers, each on a fresh 3-peer cluster on
//! loopback with real durable storage.
//!
//! Failover starts real `drover-scheduler` processes (found next to this
//! binary), kills the leader with SIGKILL and times the first write that then
//! succeeds through the CLI's own client (any peer; followers forward).
//! Commit runs three peers in this process and measures how many
//! durable, quorum-replicated commands per second the leader commits with
//! many proposers at once (openraft batches concurrent proposals into one
//! log append, one fsync per peer).

use anyhow::{bail, Context, Result};
use drover_ctl::client::{self, status};
use drover_ctl::output::table;
use drover_e2e::free_port;
use drover_proto::pb;
use drover_scheduler::cluster::ClusterConfig;
use drover_scheduler::server::{Config, Scheduler};
use drover_scheduler::state::Command;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::{secs, Samples};

pub(crate) fn scratch(what: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("drover-bench-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}

/// Three peer processes on loopback.
pub(crate) struct Processes {
    bin: PathBuf,
    dir: PathBuf,
    peers: BTreeMap<u64, String>,
    election_timeout: String,
    /// More flags for every peer.
    extra: Vec<String>,
    children: BTreeMap<u64, Child>,
    /// Keep `dir` (the peers' logs) when dropped.
    keep_dir: bool,
}

impl Processes {
    /// Stops every peer but keeps their directory, to read their logs
    /// after a failure; says where it is.
    pub(crate) fn stop_keeping_logs(mut self) -> String {
        self.keep_dir = true;
        self.dir.display().to_string()
    }

    /// Where the peers keep their state, logs and the cluster CA (`ca/`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Each running peer's process id, by Raft id.
    pub(crate) fn pids(&self) -> BTreeMap<u64, u32> {
        self.children.iter().map(|(id, c)| (*id, c.id())).collect()
    }

    /// Each peer's address, by Raft id.
    pub(crate) fn peer_addrs(&self) -> &BTreeMap<u64, String> {
        &self.peers
    }

    /// Kills peer `id` with SIGKILL.
    pub(crate) fn kill_peer(&mut self, id: u64) {
        self.kill(id);
    }

    fn start(&mut self, id: u64) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("s{id}.log")))?;
        let peers: Vec<String> = self.peers.iter().map(|(i, a)| format!("{i}={a}")).collect();
        let child = std::process::Command::new(&self.bin)
            .args(["--id", &id.to_string(), "--listen", &self.peers[&id]])
            .args(["--peers", &peers.join(",")])
            .args(["--election-timeout", &self.election_timeout])
            .args(&self.extra)
            .arg("--data-dir")
            .arg(self.dir.join(format!("s{id}")))
            .arg("--pki-dir")
            .arg(self.dir.join(format!("s{id}/pki")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.children.insert(id, child);
        Ok(())
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn addrs(&self) -> String {
        self.peers.values().cloned().collect::<Vec<_>>().join(",")
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for id in self.children.keys().copied().collect::<Vec<_>>() {
            self.kill(id);
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The members as the leader sees them, once every peer answers.
async fn healthy(addrs: &str) -> Option<pb::MembersResponse> {
    let mut c = client::cluster(addrs).await.ok()?;
    let r = c
        .members(pb::MembersRequest { read: None })
        .await
        .ok()?
        .into_inner();
    let top = r.members.iter().map(|m| m.applied_index).max()?;
    let ok = r.leader_id != 0
        && r.members
            .iter()
            .all(|m| (m.role == "leader" || m.role == "follower") && m.applied_index == top);
    ok.then_some(r)
}

async fn wait_healthy(addrs: &str) -> Result<pb::MembersResponse> {
    let start = Instant::now();
    loop {
        if let Some(r) = healthy(addrs).await {
            return Ok(r);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the cluster did not become healthy within 30s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn job(name: &str) -> Result<String> {
    Ok(drover_proto::spec::from_json(&format!(
        r#"{{"name":"{name}","image":"oci:/bench:latest","resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
    ))?
    .to_json())
}

/// Starts three `drover-scheduler` peers on loopback, over mutual TLS with
/// one cluster CA (this process uses its admin credential), and waits until
/// they are a healthy cluster; returns them and their members then.
pub(crate) async fn three_peers(
    what: &str,
    election_timeout: &str,
    extra: &[&str],
) -> Result<(Processes, pb::MembersResponse)> {
    let bin = drover_e2e::bin_dir().join("drover-scheduler");
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        peers.insert(id, format!("127.0.0.1:{}", free_port()));
    }
    let mut p = Processes {
        bin,
        dir: scratch(what)?,
        peers,
        election_timeout: election_timeout.to_string(),
        extra: extra.iter().map(|a| a.to_string()).collect(),
        children: BTreeMap::new(),
        keep_dir: false,
    };
    // One cluster CA, copied to every peer; the CLI side uses its admin.
    let ca = drover_scheduler::pki::init(&p.dir.join("ca"))?;
    drover_ctl::client::use_pki_dir(&p.dir.join("ca"));
    for id in 1..=3 {
        let dir = p.dir.join(format!("s{id}/pki"));
        if !drover_proto::pki::ca::Ca::exists(&dir) {
            ca.save(&dir)?;
        }
        p.start(id)?;
    }
    let members = wait_healthy(&p.addrs()).await?;
    Ok((p, members))
}

/// What `drover bench failover` measured.
pub struct FailoverReport {
    /// Each trial: from SIGKILL to the first acknowledged write.
    pub times: Samples,
    /// Elections during the run (one per trial when nothing else caused one).
    pub elections: u64,
}

pub async fn failover(trials: usize, election_timeout: &str, etcd: bool) -> Result<i32> {
    let r = failover_report(trials, election_timeout).await?;
    let mut rows = vec![vec![
        "drover".into(),
        "3".into(),
        trials.to_string(),
        secs(r.times.median()),
        secs(r.times.min()),
        secs(r.times.max()),
        r.elections.to_string(),
    ]];
    if etcd {
        let e = async { crate::etcd::Etcd::start().await?.failover(trials).await };
        match e.await {
            Ok(t) => rows.push(vec![
                "etcd (defaults)".into(),
                "3".into(),
                trials.to_string(),
                secs(t.median()),
                secs(t.min()),
                secs(t.max()),
                "-".into(),
            ]),
            Err(e) => eprintln!("etcd: {e:#}"),
        }
    }
    println!();
    print!(
        "{}",
        table(
            &[
                "SYSTEM",
                "PEERS",
                "TRIALS",
                "MEDIAN_S",
                "MIN_S",
                "MAX_S",
                "TERMS_USED"
            ],
            &rows
        )
    );
    println!("(TERMS_USED = {trials} when every failover took exactly one election and nothing else caused one)");
    Ok(0)
}

/// `trials` leader kills on three peer processes.
pub async fn failover_report(trials: usize, election_timeout: &str) -> Result<FailoverReport> {
    let (mut p, members) = three_peers("failover", election_timeout, &[]).await?;
    let addrs = p.addrs();
    let first_term = members.members[0].term;
    let mut times = Vec::new();
    for t in 0..trials {
        let members = wait_healthy(&addrs).await?;
        let leader = members.leader_id;
        let spec_json = job(&format!("failover-{t}"))?;
        let request_id = format!("bench-failover-{}-{t}", std::process::id());
        p.kill(leader);
        let start = Instant::now();
        loop {
            // Exactly what `drover job run` does: connect to the first
            // peer that answers, submit; a retry keeps the request id.
            let r = match client::connect(&addrs).await {
                Ok(mut c) => c
                    .submit_job(pb::SubmitJobRequest {
                        spec_json: spec_json.clone(),
                        request_id: request_id.clone(),
                    })
                    .await
                    .map_err(status),
                Err(e) => Err(e),
            };
            if r.is_ok() {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("no write succeeded within 30s of killing the leader");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        println!(
            "  trial {}: killed leader {leader}, first write after {}s",
            t + 1,
            secs(took)
        );
        times.push(took);
        p.start(leader)?;
    }
    let last = wait_healthy(&addrs).await?;
    Ok(FailoverReport {
        times: Samples {
            name: "failover",
            durations: times,
        },
        elections: last.members.iter().map(|m| m.term).max().unwrap_or(0) - first_term,
    })
}

/// Three in-process peers (mutual TLS between them, or with `plaintext`
/// none); returns them with the leader first.
async fn in_process(dir: &Path, plaintext: bool) -> Result<Vec<Scheduler>> {
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        peers.insert(id, format!("127.0.0.1:{}", free_port()));
    }
    let ca = drover_scheduler::pki::init(&dir.join("ca"))?;
    drover_ctl::client::use_pki_dir(&dir.join("ca"));
    let mut all = Vec::new();
    for (id, addr) in &peers {
        let pki =
            drover_scheduler::pki::Pki::open_with_ca(&ca, &dir.join(format!("s{id}/pki")), *id)?;
        let s = Scheduler::start(Config {
            pki: (!plaintext).then_some(pki),
            rate_limits: Some(Default::default()),
            metrics: None,
            id: *id,
            listen: addr.parse()?,
            advertise: addr.clone(),
            data_dir: dir.join(format!("s{id}")),
            node_timeout: Duration::from_secs(5),
            node_gc_after: None,
            snapshot_every: 10_000,
            cluster_cidr: "10.88.0.0/16".into(),
            cluster: ClusterConfig {
                peers: peers.clone(),
                ..Default::default()
            },
        })
        .await?;
        all.push(s);
    }
    let start = Instant::now();
    while !all.iter().any(|s| s.peer.is_leader()) {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("no leader elected within 20s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    all.sort_by_key(|s| !s.peer.is_leader());
    Ok(all)
}

/// Commits `make(i)` from `proposers` concurrent tasks for `secs`; returns commits/s.
async fn hammer(
    s: &Scheduler,
    proposers: usize,
    secs: f64,
    make: impl Fn(u64) -> Command + Send + Sync + 'static,
) -> Result<Hammered> {
    let make = Arc::new(make);
    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..proposers {
        let (peer, make, done, next, stop) = (
            s.peer.clone(),
            make.clone(),
            done.clone(),
            next.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // A failed write is counted and reported, not fatal: a long run
            // should show how many failed and why, not stop at the first.
            let mut failed = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let cmd = make(next.fetch_add(1, Ordering::Relaxed));
                match peer.write(cmd).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            failed
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await?);
    }
    Ok(Hammered { rate, failed })
}

/// What [`hammer`] measured.
struct Hammered {
    /// Acknowledged commits per second.
    rate: f64,
    /// The error of every write that failed.
    failed: Vec<String>,
}

/// Jobs the submission phase cycles over: each submission is a new version
/// of one of them, so a long run measures a busy cluster, not one whose
/// state grows by a job per commit.
const BENCH_JOBS: u64 = 1000;

/// One row of `drover bench commit`.
pub struct CommitRow {
    /// "tls" or "plaintext": replication between the peers.
    pub mode: String,
    pub proposers: usize,
    pub noop_per_s: f64,
    pub submit_per_s: f64,
    pub failed: usize,
}

/// What `drover bench commit` measured: its rows and what happened.
pub struct CommitReport {
    pub rows: Vec<CommitRow>,
    /// Elections per mode during its run.
    pub elections: Vec<(String, u64)>,
    /// Notes: failed writes (the first error), a leader that changed.
    pub notes: Vec<String>,
    /// The longest a 10 ms timer on this process's runtime fired late:
    /// how long the peers' tasks (heartbeats among them) could not run.
    pub worst_stall: Duration,
}

/// Watches this process's runtime: a 10 ms timer that fires much later
/// than asked means every task on the runtime, the peers' heartbeats
/// among them, waited that long. Logs each stall over 100 ms (with
/// RUST_LOG=warn) and keeps the longest.
struct StallWatch {
    worst: Arc<std::sync::Mutex<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl StallWatch {
    fn start() -> Self {
        let worst = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let w = worst.clone();
        let task = tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            loop {
                let asked = Instant::now();
                tokio::time::sleep(tick).await;
                let late = asked.elapsed().saturating_sub(tick);
                if late > Duration::from_millis(100) {
                    tracing::warn!(late_ms = late.as_millis() as u64, "runtime stall");
                }
                let mut worst = w.lock().unwrap_or_else(|e| e.into_inner());
                *worst = (*worst).max(late);
            }
        });
        StallWatch { worst, task }
    }

    fn stop(self) -> Duration {
        self.task.abort();
        let worst = *self.worst.lock().unwrap_or_else(|e| e.into_inner());
        worst
    }
}

pub async fn commit(proposers: &[usize], secs: f64, modes: &[String]) -> Result<i32> {
    let r = commit_report(proposers, secs, modes).await?;
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|r| {
            vec![
                r.mode.clone(),
                "3".into(),
                r.proposers.to_string(),
                format!("{:.0}", r.noop_per_s),
                format!("{:.0}", r.submit_per_s),
                r.failed.to_string(),
            ]
        })
        .collect();
    println!();
    print!(
        "{}",
        table(
            &[
                "REPLICATION",
                "PEERS",
                "PROPOSERS",
                "NOOP_COMMITS_S",
                "SUBMIT_COMMITS_S",
                "FAILED"
            ],
            &rows
        )
    );
    for (mode, n) in &r.elections {
        println!("{mode}: elections during the run: {n}");
    }
    println!(
        "longest runtime stall (a 10 ms timer fired this late): {} ms",
        r.worst_stall.as_millis()
    );
    for n in r.notes {
        println!("{n}");
    }
    Ok(0)
}

/// Each mode on a fresh in-process cluster, each proposer count for `secs`
/// of no-ops and `secs` of job submissions.
pub async fn commit_report(
    proposers: &[usize],
    secs: f64,
    modes: &[String],
) -> Result<CommitReport> {
    // The table says how many writes failed and how many elections there
    // were; RUST_LOG=warn shows why (Raft's own warnings, e.g. a follower's
    // AppendEntries timing out), drover_scheduler::raft=info each snapshot.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let mut report = CommitReport {
        rows: Vec::new(),
        elections: Vec::new(),
        notes: Vec::new(),
        worst_stall: Duration::ZERO,
    };
    let watch = StallWatch::start();
    for mode in modes {
        let plaintext = match mode.as_str() {
            "tls" => false,
            "plaintext" => true,
            other => bail!("--security: {other:?} is neither tls nor plaintext"),
        };
        println!("replication over {mode}:");
        let dir = scratch(&format!("commit-{mode}"))?;
        let all = in_process(&dir, plaintext).await?;
        let leader = &all[0];
        let term = |s: &Scheduler| s.peer.metrics().borrow().current_term;
        // The first election may take a second round (peers that all
        // start at once split their votes): count from a settled cluster,
        // so the figure is elections under load and nothing else.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first_term = all.iter().map(term).max().unwrap_or(0);
        // Each election as it happens (RUST_LOG=warn), to line it up with
        // the runtime stalls and Raft's own warnings around it.
        let watchers: Vec<_> = all
            .iter()
            .map(|s| {
                let id = s.peer.id;
                let mut m = s.peer.metrics();
                tokio::spawn(async move {
                    let mut seen = m.borrow().current_term;
                    while m.changed().await.is_ok() {
                        let (t, state, leader) = {
                            let now = m.borrow();
                            (now.current_term, now.state, now.current_leader)
                        };
                        if t != seen {
                            tracing::warn!(peer = id, term = t, ?state, ?leader, "new term");
                            seen = t;
                        }
                    }
                })
            })
            .collect();
        for &n in proposers {
            let noop = hammer(leader, n, secs, |_| Command::Noop).await?;
            println!("  {n} proposers, no-op commands: {:.0}/s", noop.rate);
            let run = std::process::id();
            let submit = hammer(leader, n, secs, move |i| Command::SubmitJob {
                request_id: format!("bench-{run}-{n}-{i}"),
                spec: Box::new(
                    drover_proto::spec::from_json(&format!(
                        r#"{{"name":"c{n}-{}","image":"oci:/bench:v{i}","resources":{{"cpu":"10m","memory":"16Mi"}}}}"#,
                        i % BENCH_JOBS
                    ))
                    .expect("a valid spec"),
                ),
                at_ms: 0,
            })
            .await?;
            println!("  {n} proposers, job submissions: {:.0}/s", submit.rate);
            let failed = noop.failed.len() + submit.failed.len();
            if let Some(e) = noop.failed.first().or(submit.failed.first()) {
                report.notes.push(format!(
                    "{mode}, {n} proposers: {failed} writes failed, the first: {e}"
                ));
            }
            report.rows.push(CommitRow {
                mode: mode.clone(),
                proposers: n,
                noop_per_s: noop.rate,
                submit_per_s: submit.rate,
                failed,
            });
        }
        let elections = all.iter().map(term).max().unwrap_or(0) - first_term;
        for w in watchers {
            w.abort();
        }
        if !leader.peer.is_leader() {
            report.notes.push(format!(
                "{mode}: the leader changed: figures after that went through a follower"
            ));
        }
        for s in all {
            s.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        report.elections.push((mode.clone(), elections));
    }
    report.worst_stall = watch.stop();
    Ok(report)
}

/// `drover bench handshake`: what a new CLI connection costs with mutual
/// TLS, beside plaintext, in one run: a one-peer scheduler of each kind
/// in this process, and `connections` fresh connections to each (TCP and,
/// for TLS, the handshake with the client certificate), each making one
/// call. Connections alternate between the two so both see the same
/// machine.
pub async fn handshake(connections: usize) -> Result<i32> {
    let [tls, plain] = handshake_report(connections).await?;
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    let rows: Vec<Vec<String>> = [("mutual TLS", &tls), ("plaintext", &plain)]
        .iter()
        .map(|(name, s)| {
            vec![
                name.to_string(),
                connections.to_string(),
                ms(s.median()),
                ms(s.percentile(90)),
                ms(s.percentile(99)),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["CONNECTION", "N", "MEDIAN_MS", "P90_MS", "P99_MS"], &rows)
    );
    println!(
        "mutual TLS adds {} ms to a new connection and its first call (median; goal: at most 5 ms)",
        ms(tls.median().saturating_sub(plain.median()))
    );
    Ok(0)
}

/// `connections` fresh connections and first calls of each kind: [mutual TLS, plaintext].
pub async fn handshake_report(connections: usize) -> Result<[Samples; 2]> {
    let dir = scratch("handshake")?;
    let ca = drover_scheduler::pki::init(&dir.join("ca"))?;
    let mut servers = Vec::new();
    for (i, plaintext) in [false, true].into_iter().enumerate() {
        let addr = format!("127.0.0.1:{}", free_port());
        let pki = drover_scheduler::pki::Pki::open_with_ca(&ca, &dir.join(format!("s{i}/pki")), 1)?;
        servers.push(
            Scheduler::start(Config {
                pki: (!plaintext).then_some(pki),
                rate_limits: None,
                metrics: None,
                id: 1,
                listen: addr.parse()?,
                advertise: addr.clone(),
                data_dir: dir.join(format!("s{i}")),
                node_timeout: Duration::from_secs(5),
                node_gc_after: None,
                snapshot_every: 10_000,
                cluster_cidr: "10.88.0.0/16".into(),
                cluster: ClusterConfig::default(),
            })
            .await?,
        );
    }
    let material = drover_proto::pki::tls::TlsMaterial::load(&dir.join("ca"), "admin")?;
    let tls = drover_proto::pki::tls::ClientTls::new(
        material.client_config()?,
        drover_proto::pki::SCHEDULER_NAME,
    );
    let kinds = [("mutual TLS", tls), ("plaintext", Default::default())];
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    // One warm-up each (first-use costs are not a connection's).
    for round in 0..=connections {
        for (k, (_, t)) in kinds.iter().enumerate() {
            let addr = servers[k].local_addr.to_string();
            let start = Instant::now();
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
            let ch = t.connect(&endpoint).await?;
            pb::cluster_client::ClusterClient::new(ch)
                .local_status(pb::LocalStatusRequest {})
                .await
                .map_err(status)?;
            if round > 0 {
                times[k].push(start.elapsed());
            }
        }
    }
    for s in servers {
        s.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let [tls, plain] = times;
    Ok([
        Samples {
            name: "mutual TLS",
            durations: tls,
        },
        Samples {
            name: "plaintext",
            durations: plain,
        },
    ])
}
