//! Chaos: clients submit and read jobs while faults are injected at random
//! into a cluster of network namespaces, then the recorded history is
//! checked (see `drover_e2e::history`): job versions linearizable, no
//! acknowledged write lost, no replica slot running on two nodes at once,
//! and no container on a healthy node stopped because of a scheduler fault.
//!
//! The faults (chosen by a seeded generator; the seed is printed, and
//! `DROVER_CHAOS_SEED` replays it) hit the scheduler peers: a replica
//! silenced without resets, frozen (SIGSTOP), killed and restarted, made
//! to drop a fifth of its packets, or the leader isolated from its peers.
//!
//! The short run is a test (`DROVER_CHAOS_SECS`, default 40). The long one
//! is the same test run with more time and replicas, as a bench:
//! `examples/bench/chaos.sh` (`DROVER_CHAOS_SECS=600 DROVER_CHAOS_SCHEDULERS=5`,
//! the table written to `DROVER_CHAOS_REPORT` and from there into the README).
//!
//! With `DROVER_CHAOS_VM=1` (`examples/bench/chaos.sh --vm`) the same run
//! hits a cluster of virtual machines (`examples/vm-cluster`): a kill is a
//! VM's power cut and a boot from its disk, a pause freezes the whole VM,
//! and the network faults drop its frames on the host's bridge.

use drover_e2e::history::{
    check_acked_kept, check_linearizable, check_no_double_run, Event, EventKind, JobRegister, Op,
    Ret,
};
use drover_e2e::netcluster::NetCluster;
use drover_e2e::vmcluster::Vms;
use drover_e2e::*;
use drover_proto::pb;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

/// Many jobs, so that each one's history (which the checker searches
/// whole) stays short even in a long run.
const JOBS: usize = 8;
const CLIENTS: u64 = 3;
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// The fault schedule CI replays: silences, kills, a lossy link and an
/// isolated leader within 40 s.
const CI_SEED: u64 = 1796014420666101231;

/// A small seeded generator (xorshift), so a run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn job_name(i: usize) -> String {
    format!("c{i}")
}

/// The image the jobs run: the example layout on this host, or the VM
/// cluster's registry.
static IMAGE: OnceLock<String> = OnceLock::new();

/// The spec of `job` with argument `arg`. It keeps 1000 versions, not the
/// default 10, so the lost-write check can find every acknowledged one.
fn spec_json(job: &str, arg: u32) -> String {
    let image = IMAGE.get().expect("the image is chosen before any spec");
    let yaml = format!(
        "name: {job}\nreplicas: 1\nimage: {image}\ncommand: [/bin/sleep, '{arg}']\n\
         resources: {{cpu: 10m, memory: 16Mi}}\nstop_grace_period: 1s\n\
         update: {{max_surge: 0, max_unavailable: 1, keep_versions: 1000}}\n"
    );
    drover_proto::spec::from_yaml(&yaml).unwrap().to_json()
}

fn arg_of(spec_json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(spec_json).ok()?;
    v["command"][1].as_str()?.parse().ok()
}

/// Everything the clients saw, in one order.
#[derive(Default)]
struct Recorder {
    seq: AtomicU64,
    events: Mutex<Vec<Event>>,
    acked: Mutex<Vec<(String, u64)>>,
    /// Submits whose outcome is unknown: (thread, job, spec, request id).
    unknown: Mutex<Vec<(u64, String, String, String)>>,
    ok_ops: AtomicU64,
    failed_ops: AtomicU64,
    /// Failed submits answered when sent again.
    retried_ops: AtomicU64,
    /// Every submit answered at the first try: (sent, answered).
    writes: Mutex<Vec<(Instant, Instant)>>,
}

impl Recorder {
    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Records a submit's answer, and the version it made if it made one.
    fn submitted(&self, thread: u64, job: String, r: &pb::SubmitJobResponse) {
        self.push(
            self.next(),
            thread,
            &job,
            EventKind::Return(Ret::Submitted(r.version)),
        );
        if r.changed {
            self.acked.lock().unwrap().push((job, r.version));
        }
    }

    fn push(&self, seq: u64, thread: u64, job: &str, kind: EventKind) {
        self.events.lock().unwrap().push(Event {
            seq,
            thread,
            job: job.to_string(),
            kind,
        });
    }
}

async fn connect(addr: &str) -> Option<drover_e2e::Api> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(1));
    let ch = drover_e2e::client_tls(addr).connect(&endpoint).await.ok()?;
    Some(drover_e2e::api(ch, addr))
}

/// A connection to whichever replica answers first, trying each in turn for
/// up to a minute: right after the faults heal, one replica may still be
/// restarting or catching up, and the checks must not depend on which.
async fn connect_any(addrs: &[String]) -> drover_e2e::Api {
    let until = Instant::now() + Duration::from_secs(60);
    let mut at = 0;
    loop {
        if let Some(c) = connect(&addrs[at % addrs.len()]).await {
            return c;
        }
        assert!(
            Instant::now() < until,
            "no replica of {addrs:?} accepted a connection for a minute after the faults healed"
        );
        at += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `read`, moving to another replica until one answers (for up to a minute).
async fn read_any(c: &mut drover_e2e::Api, addrs: &[String], job: &str) -> (u64, u32) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = read(c, job).await {
            return r;
        }
        assert!(
            Instant::now() < until,
            "no replica answered a read of {job} for a minute after the faults healed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        *c = connect_any(addrs).await;
    }
}

async fn submit(
    c: &mut drover_e2e::Api,
    spec_json: &str,
    request_id: &str,
) -> Option<pb::SubmitJobResponse> {
    let req = pb::SubmitJobRequest {
        spec_json: spec_json.to_string(),
        request_id: request_id.to_string(),
    };
    match tokio::time::timeout(OP_TIMEOUT, c.submit_job(req)).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        _ => None,
    }
}

async fn read(c: &mut drover_e2e::Api, job: &str) -> Option<(u64, u32)> {
    let req = pb::GetJobRequest {
        name: job.to_string(),
        read: None,
    };
    let r = tokio::time::timeout(OP_TIMEOUT, c.get_job(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some((r.version, arg_of(&r.spec_json)?))
}

/// One client: submits and reads at random until `deadline`, moving to
/// another replica whenever one fails it.
async fn client(id: u64, addrs: Vec<String>, deadline: Instant, rec: Arc<Recorder>, seed: u64) {
    let mut rng = Rng(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut thread = id << 32;
    let mut at = rng.below(addrs.len() as u64) as usize;
    let mut conn: Option<drover_e2e::Api> = None;
    let mut n = 0;
    while Instant::now() < deadline {
        let Some(c) = conn.as_mut() else {
            conn = connect(&addrs[at % addrs.len()]).await;
            if conn.is_none() {
                at += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let job = job_name(rng.below(JOBS as u64) as usize);
        n += 1;
        if rng.below(2) == 0 {
            let arg = 1001 + rng.below(5) as u32;
            let spec = spec_json(&job, arg);
            let rid = format!("chaos-{seed}-{id}-{n}");
            rec.push(rec.next(), thread, &job, EventKind::Invoke(Op::Submit(arg)));
            let invoked = Instant::now();
            match submit(c, &spec, &rid).await {
                Some(r) => {
                    rec.submitted(thread, job, &r);
                    rec.ok_ops.fetch_add(1, Ordering::Relaxed);
                    rec.writes.lock().unwrap().push((invoked, Instant::now()));
                }
                None => {
                    // Maybe applied, maybe not: send it again, to the next
                    // replica, with the same request id (applied once), as
                    // a careful client does; the operation stays pending
                    // meanwhile. Only one still unanswered after a minute is
                    // settled after the run.
                    rec.failed_ops.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                    let give_up = Instant::now() + Duration::from_secs(60);
                    at += rng.below(addrs.len() as u64) as usize;
                    let mut answer = None;
                    while answer.is_none() && Instant::now() < give_up {
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if let Some(mut again) = connect(&addrs[at % addrs.len()]).await {
                            answer = submit(&mut again, &spec, &rid).await;
                            if answer.is_some() {
                                conn = Some(again);
                            }
                        }
                    }
                    match answer {
                        Some(r) => {
                            rec.submitted(thread, job, &r);
                            rec.retried_ops.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            rec.unknown.lock().unwrap().push((thread, job, spec, rid));
                            thread += 1;
                        }
                    }
                }
            }
        } else {
            // A read that fails had no effect: it is left out of the history.
            let invoked = rec.next();
            match read(c, &job).await {
                Some((version, arg)) => {
                    rec.push(invoked, thread, &job, EventKind::Invoke(Op::Read));
                    rec.push(
                        rec.next(),
                        thread,
                        &job,
                        EventKind::Return(Ret::Read(version, arg)),
                    );
                    rec.ok_ops.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    rec.failed_ops.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                    // A random other replica: clients that all stepped to the
                    // next one would end up together on one replica, and a
                    // fault there would stall every client at once.
                    at += 1 + rng.below(addrs.len() as u64 - 1) as usize;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50 + rng.below(100))).await;
    }
}

/// The cluster under test: network namespaces on this host, or VMs.
enum Cluster {
    Net(NetCluster),
    Vm(Vms),
}

impl Cluster {
    fn up(replicas: u32) -> Cluster {
        if std::env::var("DROVER_CHAOS_VM").as_deref() == Ok("1") {
            // Two agents: under software emulation each VM takes a core's
            // share, and the faults are the schedulers'.
            let (vms, took) = Vms::up_with("dvmc", "10.79.3", replicas, 2);
            eprintln!("chaos: VM cluster up in {:.0} s", took.as_secs_f64());
            IMAGE.get_or_init(|| format!("{}/toolbox:latest", vms.registry));
            Cluster::Vm(vms)
        } else {
            IMAGE.get_or_init(|| format!("oci:{}/toolbox:latest", images().display()));
            Cluster::Net(NetCluster::up("chaos", 10, replicas, 3, &[]))
        }
    }

    /// Runs the cluster script's fault command `args`, which must succeed.
    fn must(&mut self, args: &[&str]) {
        match self {
            Cluster::Net(c) => c.must(args),
            Cluster::Vm(v) => {
                v.must(args);
            }
        }
    }

    fn peer_addr(&self, i: u32) -> String {
        match self {
            Cluster::Net(c) => c.peer_addr(i),
            Cluster::Vm(v) => v.peer_addr(i),
        }
    }

    fn leader(&self) -> u32 {
        match self {
            Cluster::Net(c) => c.leader(),
            Cluster::Vm(v) => v.leader() as u32,
        }
    }

    fn members(&self) -> Option<serde_json::Value> {
        match self {
            Cluster::Net(c) => c.members(),
            Cluster::Vm(v) => v.members(),
        }
    }

    fn drover(&self, args: &[&str]) -> Run {
        match self {
            Cluster::Net(c) => c.drover(args),
            Cluster::Vm(v) => v.drover(args),
        }
    }

    /// How long a replica may take to be back after its fault is undone:
    /// a VM whose power was cut boots first.
    fn back_within(&self) -> Duration {
        match self {
            Cluster::Net(_) => Duration::from_secs(20),
            Cluster::Vm(_) => Duration::from_secs(90),
        }
    }

    /// After containers were fenced: what each agent logged of its link to
    /// the schedulers (the VMs' logs go with them at `down`).
    fn print_agent_links(&self) {
        let Cluster::Vm(v) = self else { return };
        for n in 1..=v.agents {
            let out = v.script(&["log", &format!("a{n}")]);
            eprintln!("agent a{n}'s link to the schedulers:");
            for l in out
                .stdout
                .lines()
                .filter(|l| l.contains("scheduler") || l.contains("fenc") || l.contains("leader"))
            {
                eprintln!("  {l}");
            }
        }
    }

    /// What the sampler reads, for the report.
    fn sampled(&self) -> &'static str {
        match self {
            Cluster::Net(_) => "hosts' cgroups, every 50 ms",
            Cluster::Vm(_) => "agent VMs' cgroups, read through their exec port",
        }
    }

    /// A thread sampling the containers running on the agents until `stop`
    /// (every 50 ms on this host; as fast as the VMs answer otherwise).
    fn sampler(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<BTreeSet<String>>> {
        let vms = match self {
            Cluster::Net(_) => None,
            Cluster::Vm(v) => Some((v.name, v.net, v.agents)),
        };
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match vms {
                    None => {
                        samples.push(running_containers());
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Some((name, net, agents)) => {
                        if let Some(s) =
                            drover_e2e::vmcluster::running_containers(name, net, agents)
                        {
                            samples.push(s);
                        }
                    }
                }
            }
            samples
        })
    }
}

/// Injects one fault into a replica (or the leader); returns what it was,
/// the replica it hit, and how to undo it.
fn inject(c: &mut Cluster, rng: &mut Rng, replicas: u32) -> (String, u32, Vec<String>) {
    let mut hit = 1 + rng.below(replicas as u64) as u32;
    let target = format!("s{hit}");
    let (what, args, undo): (&str, Vec<String>, Vec<String>) = match rng.below(5) {
        0 => (
            "silence",
            vec!["silence".into(), target.clone()],
            vec!["heal".into(), target],
        ),
        1 => (
            "pause",
            vec!["pause".into(), target.clone()],
            vec!["heal".into(), target],
        ),
        2 => (
            "kill",
            vec!["kill".into(), target.clone()],
            vec!["restart".into(), target],
        ),
        3 => (
            "lossy",
            vec!["lossy".into(), target.clone(), "20".into()],
            vec!["heal".into(), target],
        ),
        _ => {
            hit = c.leader();
            let leader = format!("s{hit}");
            (
                "isolate-leader",
                vec!["isolate".into(), leader.clone()],
                vec!["heal".into(), leader],
            )
        }
    };
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    c.must(&a);
    eprintln!("chaos: {}", args.join(" "));
    (what.to_string(), hit, undo)
}

/// For each kind of fault, the time from each injection to the first write
/// that was sent after it and acknowledged: (kind, count, median, max).
fn write_gaps(
    injected: &[(String, Instant)],
    writes: &[(Instant, Instant)],
) -> Vec<(String, usize, Duration, Duration)> {
    let mut by_kind: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for (kind, at) in injected {
        let first = writes
            .iter()
            .filter(|(sent, _)| sent >= at)
            .map(|(_, answered)| *answered - *at)
            .min();
        if let Some(gap) = first {
            by_kind.entry(kind).or_default().push(gap);
        }
    }
    by_kind
        .into_iter()
        .map(|(kind, mut gaps)| {
            gaps.sort();
            (
                kind.to_string(),
                gaps.len(),
                gaps[gaps.len() / 2],
                gaps[gaps.len() - 1],
            )
        })
        .collect()
}

#[test]
fn chaos_keeps_history_linearizable_and_replicas_single() {
    if !require_root("chaos_keeps_history_linearizable_and_replicas_single") {
        return;
    }
    let secs = env_u64("DROVER_CHAOS_SECS", 40);
    let replicas = env_u64("DROVER_CHAOS_SCHEDULERS", 3) as u32;
    // CI replays one fault schedule (timing still varies from run to run);
    // elsewhere every run draws a new one.
    let fresh = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let seed = env_u64("DROVER_CHAOS_SEED", if ci { CI_SEED } else { fresh });
    eprintln!("chaos: seed {seed} (DROVER_CHAOS_SEED={seed} replays the faults), {secs}s, {replicas} replicas");
    let mut c = Cluster::up(replicas);
    let addrs: Vec<String> = (1..=replicas).map(|i| c.peer_addr(i)).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Every job starts at version 1 with argument 1000, running.
    let mut init = BTreeMap::new();
    rt.block_on(async {
        let mut cl = connect(&addrs[0]).await.expect("connect");
        for i in 0..JOBS {
            let job = job_name(i);
            let r = submit(&mut cl, &spec_json(&job, 1000), &format!("init-{seed}-{i}"))
                .await
                .expect("initial submit");
            init.insert(
                job,
                JobRegister {
                    version: r.version,
                    arg: 1000,
                },
            );
        }
    });
    wait_for("the jobs to run", Duration::from_secs(60), || {
        let out = c.drover(&["job", "ls", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let all = v.as_array()?;
        (all.len() == JOBS && all.iter().all(|j| j["running"] == 1)).then_some(())
    });

    // Watch the containers from the host, independently of the scheduler.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = c.sampler(stop.clone());

    let rec = Arc::new(Recorder::default());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| rt.spawn(client(id, addrs.clone(), deadline, rec.clone(), seed)))
        .collect();

    let mut rng = Rng(seed);
    let mut faults: BTreeMap<String, u32> = BTreeMap::new();
    let mut injected: Vec<(String, Instant)> = Vec::new();
    while Instant::now() + Duration::from_secs(6) < deadline {
        std::thread::sleep(Duration::from_millis(1000 + rng.below(2000)));
        let leader = c.leader();
        // From the fault command's start (`cluster.sh kill` returns only
        // once the process is reaped, long after it died).
        let at = Instant::now();
        let (what, target, undo) = inject(&mut c, &mut rng, replicas);
        *faults.entry(what.clone()).or_default() += 1;
        let role = if target == leader {
            "leader"
        } else {
            "follower"
        };
        injected.push((format!("{what} ({role})"), at));
        std::thread::sleep(Duration::from_millis(2000 + rng.below(2000)));
        let u: Vec<&str> = undo.iter().map(String::as_str).collect();
        c.must(&u);
        // One failure at a time is the promise: a replica that was killed is
        // back (restarted, reachable, following a leader) before the next
        // fault, or the next one would be a second failure on top of it.
        wait_for(
            "every scheduler peer back in touch after the fault",
            c.back_within(),
            || {
                let m = c.members()?;
                let all_back = m["leader_id"].as_u64()? != 0
                    && m["members"]
                        .as_array()?
                        .iter()
                        .all(|r| r["role"] != "unreachable");
                all_back.then_some(())
            },
        );
    }
    rt.block_on(async {
        for h in clients {
            h.await.unwrap();
        }
    });

    // Settle the submits whose outcome was unknown, then read every job.
    let settled = rt.block_on(async {
        let mut settled = 0;
        let unknown = std::mem::take(&mut *rec.unknown.lock().unwrap());
        let final_thread = CLIENTS << 32 | 0xffff_0000;
        for (thread, job, spec, rid) in unknown {
            let r = 'retry: {
                for attempt in 0..100 {
                    if let Some(mut cl) = connect(&addrs[attempt % addrs.len()]).await {
                        if let Some(r) = submit(&mut cl, &spec, &rid).await {
                            break 'retry r;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                panic!("a submit could not be settled after the faults healed");
            };
            rec.submitted(thread, job, &r);
            settled += 1;
        }
        let mut cl = connect_any(&addrs).await;
        for i in 0..JOBS {
            let job = job_name(i);
            // A read has no effect, so retrying it elsewhere is safe; its
            // window opens before the first attempt.
            let invoked = rec.next();
            let (version, arg) = read_any(&mut cl, &addrs, &job).await;
            rec.push(invoked, final_thread, &job, EventKind::Invoke(Op::Read));
            rec.push(
                rec.next(),
                final_thread,
                &job,
                EventKind::Return(Ret::Read(version, arg)),
            );
        }
        settled
    });

    // Let every job converge, so each slot's last container is seen.
    let all_running = || {
        let out = c.drover(&["job", "ls", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .all(|j| j["running"] == 1)
            .then_some(())
    };
    let until = Instant::now() + Duration::from_secs(90);
    while all_running().is_none() {
        if Instant::now() > until {
            for args in [
                &["job", "ls"][..],
                &["alloc", "ls"],
                &["node", "ls"],
                &["cluster", "members"],
            ] {
                let out = c.drover(args);
                eprintln!("drover {}:\n{}{}", args.join(" "), out.stdout, out.stderr);
            }
            panic!("timed out after 90s waiting for the jobs to converge");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();

    // What the scheduler says about every allocation and version.
    let (slot_of, versions, lost_on_healthy) = rt.block_on(async {
        let mut cl = connect_any(&addrs).await;
        let allocs = cl
            .list_allocations(pb::ListAllocationsRequest {
                job: String::new(),
                read: None,
                all: true,
            })
            .await
            .expect("list allocations")
            .into_inner()
            .allocations;
        let slot_of: BTreeMap<String, (String, u32)> = allocs
            .iter()
            .map(|a| (a.id.clone(), (a.job.clone(), a.replica)))
            .collect();
        let lost: Vec<String> = allocs
            .iter()
            .filter(|a| {
                let why = format!("{} {}", a.reason, a.desired_reason);
                why.contains("node down") || why.contains("fencing")
            })
            .map(|a| format!("{} ({}: {} {})", a.id, a.node, a.reason, a.desired_reason))
            .collect();
        let mut versions = BTreeMap::new();
        for i in 0..JOBS {
            let job = job_name(i);
            let j = cl
                .get_job(pb::GetJobRequest {
                    name: job.clone(),
                    read: None,
                })
                .await
                .expect("get job")
                .into_inner();
            let vs: BTreeSet<u64> = j.versions.iter().map(|v| v.version).collect();
            versions.insert(job, vs);
        }
        (slot_of, versions, lost)
    });

    let events = rec.events.lock().unwrap().clone();
    let acked = rec.acked.lock().unwrap().clone();
    let double = check_no_double_run(&samples, &slot_of);
    let lost = check_acked_kept(&acked, &versions);
    let linear = check_linearizable(&init, &events, Duration::from_secs(120));
    if linear.is_err() {
        // Keep the history for a closer look (and a replay of the seed).
        let path = std::env::temp_dir().join(format!("drover-chaos-{seed}.history"));
        let text: String = events.iter().map(|e| format!("{e:?}\n")).collect();
        if std::fs::write(&path, text).is_ok() {
            eprintln!("chaos: history written to {}", path.display());
        }
    }
    let total: u32 = faults.values().sum();
    let kinds: Vec<String> = faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let mut rows = vec![
        format!("| faults injected, one at a time | {total}: {} |", kinds.join(", ")),
        format!(
            "| client operations | {} answered, {} failed or timed out while a fault lasted ({} submits answered when sent again with their request id, {settled} settled after the run) |",
            rec.ok_ops.load(Ordering::Relaxed),
            rec.failed_ops.load(Ordering::Relaxed),
            rec.retried_ops.load(Ordering::Relaxed)
        ),
        format!("| writes acknowledged (new job versions) | {} |", acked.len()),
        format!(
            "| acknowledged writes lost | {} |",
            match &lost {
                Ok(()) => "0".to_string(),
                Err(e) => format!("{e:?}"),
            }
        ),
        format!(
            "| history of job versions linearizable (stateright's linearizability tester, {} events) | {} |",
            events.len(),
            if linear.is_ok() { "yes" } else { "NO" }
        ),
        format!(
            "| replica slots running on two nodes at once ({} samples of the {}) | {} |",
            samples.len(),
            c.sampled(),
            match &double {
                Ok(()) => "0".to_string(),
                Err(e) => format!("{e:?}"),
            }
        ),
        format!(
            "| containers stopped on healthy nodes | {} |",
            lost_on_healthy.len()
        ),
    ];
    let writes = rec.writes.lock().unwrap().clone();
    for (kind, n, median, max) in write_gaps(&injected, &writes) {
        rows.push(format!(
            "| first acknowledged write after {kind} (from the fault's command), {n} fault{} | median {:.2} s, max {:.2} s |",
            if n == 1 { "" } else { "s" },
            median.as_secs_f64(),
            max.as_secs_f64()
        ));
    }
    let head = format!(
        "chaos: seed {seed}, {secs} s, {replicas} scheduler peers, {}",
        match &c {
            Cluster::Net(_) => "3 agents, in network namespaces".to_string(),
            Cluster::Vm(v) => format!("{} agents, every node a VM", v.agents),
        }
    );
    eprintln!("{head}");
    for row in &rows {
        eprintln!("{row}");
    }
    // The long run's table, for the README (examples/bench/chaos.sh).
    if let Ok(path) = std::env::var("DROVER_CHAOS_REPORT") {
        let text = format!(
            "{head}, {CLIENTS} clients on {JOBS} jobs\n\n| check | result |\n|---|---|\n{}\n",
            rows.join("\n")
        );
        std::fs::write(&path, text).expect("write the chaos report");
    }
    lost.unwrap();
    linear.unwrap();
    double.unwrap();
    if !lost_on_healthy.is_empty() {
        c.print_agent_links();
    }
    assert!(
        lost_on_healthy.is_empty(),
        "scheduler faults stopped containers on healthy nodes: {lost_on_healthy:?}"
    );
    assert!(
        acked.len() > 3,
        "too few writes got through to mean anything: {acked:?}"
    );
}
