//! `drover-bench scale`: the scheduler at the size of a large cell.
//!
//! A real three-peer cluster (the `drover-scheduler` binaries, Raft with
//! fsync, mutual TLS) and N simulated agents in this process: each speaks
//! the real node API over gRPC — registers, heartbeats, watches its desired
//! set and reports every allocation it is given as running, without
//! starting a container. Each has its own node certificate from the
//! cluster CA and its own mutual-TLS connection, to one of the three peers
//! in turn, as real agents do.
//!
//! It measures what the cost of the control plane depends on: how fast
//! replicas are placed and reach their node, the latency of one placement
//! while the cluster is busy, the peers' memory and cpu, what agents
//! receive when nothing changes and when one node is lost, the state on
//! disk, and a leader failover at that size.

use anyhow::{bail, Context, Result};
use drover_ctl::client::{self, status};
use drover_ctl::output::table;
use drover_proto::pb;
use drover_proto::pb::node_service_client::NodeServiceClient;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

use crate::stats::Samples;

/// What the agents saw, shared by all of them.
struct Seen {
    base: Instant,
    /// Allocations delivered to an agent for the first time.
    placed: AtomicU64,
    /// When the last of them arrived (ns after `base`).
    last_placed_ns: AtomicU64,
    /// Bytes of desired sets received (protobuf-encoded size), in all and
    /// per agent.
    bytes: AtomicU64,
    messages: AtomicU64,
    per_agent: Vec<AtomicU64>,
    /// Agents still alive (one is stopped to measure a node loss).
    alive: Vec<AtomicBool>,
    registered: AtomicU64,
    errors: AtomicU64,
    /// The first error of each call, to say what failed.
    first_errors: Mutex<BTreeMap<&'static str, String>>,
    /// Agents joining at once: a cluster comes up as its machines boot,
    /// not all in one instant.
    joining: Arc<tokio::sync::Semaphore>,
    /// When an allocation of each probe job first reached an agent.
    probes: Mutex<HashMap<String, Instant>>,
}

impl Seen {
    fn failed(&self, call: &'static str, e: &tonic::Status) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(call)
            .or_insert_with(|| format!("{}: {}", e.code(), e.message()));
    }

    fn reset_bytes(&self) {
        self.bytes.store(0, Ordering::Relaxed);
        self.messages.store(0, Ordering::Relaxed);
        for b in &self.per_agent {
            b.store(0, Ordering::Relaxed);
        }
    }
}

pub struct Args {
    pub nodes: usize,
    pub jobs: usize,
    pub replicas_per_job: u32,
    pub heartbeat: Duration,
    pub node_timeout: Duration,
}

/// The node timeout a cluster of `nodes` is run with here: the default 4 s
/// up to 2,000 nodes, then 2 ms per node, so the leader hears some 2,000
/// heartbeats a second however large the cluster (as Nomad lengthens its
/// heartbeat TTL with the number of nodes, and Kubernetes' 40 s grace).
pub fn node_timeout_for(nodes: usize) -> Duration {
    drover_proto::fencing::DEFAULT_NODE_TIMEOUT.max(Duration::from_millis(2) * nodes as u32)
}

/// How often a simulated agent of a cluster of `nodes` with node timeout
/// `t` heartbeats: a quarter of `t`, as agents are told to, and no more
/// than every second (the agent's default) in a small cluster.
pub fn heartbeat_for(nodes: usize, t: Duration) -> Duration {
    if nodes <= 2000 {
        (t / 4).min(Duration::from_secs(1))
    } else {
        t / 4
    }
}

/// How many simulated agents join at once.
const JOINING_AT_ONCE: usize = 500;

/// A pause of about `base` (between half and one and a half times it), so
/// agents that failed together do not all retry together.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::random::<f64>() + 0.5)
}

fn node_name(i: usize) -> String {
    format!("sim-{i:05}")
}

/// One simulated agent: registers, heartbeats and watches until it is
/// told to die; reports what it is given as running and what it is told
/// to stop as stopped.
async fn agent(i: usize, channel: Channel, seen: Arc<Seen>, heartbeat: Duration) {
    let name = node_name(i);
    let mut c = NodeServiceClient::new(channel.clone()).max_decoding_message_size(256 << 20);
    let register = pb::RegisterRequest {
        name: name.clone(),
        address: format!("127.0.0.1:{}", 20000 + i % 40000),
        cpu_millis: 4000,
        memory_bytes: 16 << 30,
        ..Default::default()
    };
    // Until its first desired set arrives (the semaphore is never closed).
    let mut joining = seen.joining.clone().acquire_owned().await.ok();
    loop {
        match c.register(register.clone()).await {
            Ok(_) => break,
            Err(e) => {
                seen.failed("register", &e);
                tokio::time::sleep(jittered(Duration::from_millis(500))).await;
            }
        }
    }
    seen.registered.fetch_add(1, Ordering::Relaxed);
    let beats = {
        let (mut c, seen, name, register) =
            (c.clone(), seen.clone(), name.clone(), register.clone());
        tokio::spawn(async move {
            // Not all at once: each agent's beat at its own phase.
            tokio::time::sleep(heartbeat.mul_f64((i % 997) as f64 / 997.0)).await;
            while seen.alive[i].load(Ordering::Relaxed) {
                let r = c
                    .heartbeat(pb::HeartbeatRequest {
                        name: name.clone(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(r) if !r.get_ref().known => {
                        let _ = c.register(register.clone()).await;
                    }
                    Ok(_) => {}
                    Err(e) => seen.failed("heartbeat", &e),
                }
                tokio::time::sleep(heartbeat).await;
            }
        })
    };
    let mut known: HashSet<String> = HashSet::new();
    while seen.alive[i].load(Ordering::Relaxed) {
        let request = pb::WatchRequest {
            name: name.clone(),
            deltas: true,
        };
        let mut stream = match light::watch(channel.clone(), request).await {
            Ok(s) => s,
            Err(e) => {
                seen.failed("watch", &e);
                tokio::time::sleep(jittered(Duration::from_millis(500))).await;
                continue;
            }
        };
        while let Ok(Some((size, set))) = stream.message().await {
            if !seen.alive[i].load(Ordering::Relaxed) {
                break;
            }
            drop(joining.take());
            seen.bytes.fetch_add(size, Ordering::Relaxed);
            seen.messages.fetch_add(1, Ordering::Relaxed);
            seen.per_agent[i].fetch_add(size, Ordering::Relaxed);
            let mut reports = Vec::new();
            for a in &set.allocations {
                if known.insert(a.id.clone()) {
                    if !a.job.starts_with("probe-") {
                        seen.placed.fetch_add(1, Ordering::Relaxed);
                        let ns = seen.base.elapsed().as_nanos() as u64;
                        seen.last_placed_ns.fetch_max(ns, Ordering::Relaxed);
                    } else {
                        seen.probes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(a.job.clone())
                            .or_insert_with(Instant::now);
                    }
                    reports.push(report(&a.id, pb::AllocationPhase::Running));
                }
            }
            for id in &set.stopping {
                reports.push(report(id, pb::AllocationPhase::Stopped));
            }
            if !reports.is_empty() {
                let r = c
                    .report(pb::ReportRequest {
                        node: name.clone(),
                        allocations: reports,
                    })
                    .await;
                if let Err(e) = r {
                    seen.failed("report", &e);
                }
            }
        }
    }
    beats.abort();
}

/// What a simulated agent reads of a desired set: the real `Watch` call
/// and the real messages, decoded for only the fields it acts on (which
/// allocations to run and to stop). The names, services, routes and specs
/// a real agent reads are skipped unparsed, so the bench's own cpu goes to
/// the peers, not to decoding what no simulated agent uses; each message
/// is still counted whole, in bytes as received.
mod light {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::http::uri::PathAndQuery;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Set {
        #[prost(message, repeated, tag = "2")]
        pub allocations: Vec<Allocation>,
        #[prost(string, repeated, tag = "5")]
        pub stopping: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Allocation {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub job: String,
    }

    /// Encodes requests as prost does; decodes a set with its size.
    #[derive(Default)]
    pub struct Light;

    pub struct Enc;
    pub struct Dec;

    impl Codec for Light {
        type Encode = super::pb::WatchRequest;
        type Decode = (u64, Set);
        type Encoder = Enc;
        type Decoder = Dec;
        fn encoder(&mut self) -> Enc {
            Enc
        }
        fn decoder(&mut self) -> Dec {
            Dec
        }
    }

    impl Encoder for Enc {
        type Item = super::pb::WatchRequest;
        type Error = tonic::Status;
        fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
            prost::Message::encode(&item, dst).map_err(|e| tonic::Status::internal(e.to_string()))
        }
    }

    impl Decoder for Dec {
        type Item = (u64, Set);
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
            let size = prost::bytes::Buf::remaining(src) as u64;
            let set: Set =
                prost::Message::decode(src).map_err(|e| tonic::Status::internal(e.to_string()))?;
            Ok(Some((size, set)))
        }
    }

    /// `NodeService/Watch`, read lightly.
    pub async fn watch(
        channel: tonic::transport::Channel,
        request: super::pb::WatchRequest,
    ) -> Result<tonic::codec::Streaming<(u64, Set)>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::from_static("/drover.v1.NodeService/Watch");
        Ok(grpc
            .server_streaming(tonic::Request::new(request), path, Light)
            .await?
            .into_inner())
    }
}

fn report(id: &str, phase: pb::AllocationPhase) -> pb::AllocationReport {
    let running = phase == pb::AllocationPhase::Running;
    pb::AllocationReport {
        id: id.to_string(),
        state: if running { "running" } else { "stopped" }.into(),
        pid: if running { 1 } else { 0 },
        exit_code: (!running).then_some(0),
        phase: phase.into(),
        ..Default::default()
    }
}

fn spec_json(name: &str, replicas: u32) -> String {
    format!(
        r#"{{"name":"{name}","replicas":{replicas},"image":"oci:/bench:latest","resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
    )
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

pub async fn command(a: Args) -> Result<i32> {
    let total = a.jobs as u64 * u64::from(a.replicas_per_job);
    println!(
        "scale: 3 scheduler peers, {} simulated nodes, {} jobs x {} replicas = {total} replicas",
        a.nodes, a.jobs, a.replicas_per_job
    );
    println!(
        "  node timeout {} ms, a heartbeat every {} ms ({:.0} a second)",
        a.node_timeout.as_millis(),
        a.heartbeat.as_millis(),
        a.nodes as f64 / a.heartbeat.as_secs_f64()
    );
    let node_timeout = format!("{}ms", a.node_timeout.as_millis());
    let (mut peers, members) =
        // A /24 per node: the default /16 holds 256 nodes, a /8 65,536.
        crate::ha::three_peers(
            "scale",
            "150ms",
            &[
                "--rate-limit",
                "0",
                "--cluster-cidr",
                "10.0.0.0/8",
                "--node-timeout",
                &node_timeout,
            ],
        )
        .await?;
    let addrs = peers.addrs();
    let ca = drover_proto::pki::ca::Ca::load(&peers.dir().join("ca"))?;
    let peer_list: Vec<String> = peers.peer_addrs().values().cloned().collect();
    // Each agent its certificate (a node may speak only for itself) and
    // its connection.
    let issuing = Instant::now();
    let mut channels: Vec<Channel> = Vec::with_capacity(a.nodes);
    for i in 0..a.nodes {
        let credential = ca.issue(
            &drover_proto::pki::Identity::Node(node_name(i)),
            Duration::from_secs(24 * 3600),
        )?;
        let config = drover_proto::pki::tls::client_config(&ca.cert_pem, Some(&credential))?;
        let tls = drover_proto::pki::tls::ClientTls::new(config, drover_proto::pki::SCHEDULER_NAME);
        let e = Endpoint::from_shared(format!("https://{}", peer_list[i % peer_list.len()]))
            .expect("a loopback address")
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5));
        channels.push(tls.connect_lazy(&e));
    }
    println!(
        "  {} node certificates issued in {:.1} s",
        a.nodes,
        issuing.elapsed().as_secs_f64()
    );

    let seen = Arc::new(Seen {
        base: Instant::now(),
        placed: AtomicU64::new(0),
        last_placed_ns: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        messages: AtomicU64::new(0),
        per_agent: (0..a.nodes).map(|_| AtomicU64::new(0)).collect(),
        alive: (0..a.nodes).map(|_| AtomicBool::new(true)).collect(),
        registered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_errors: Mutex::default(),
        joining: Arc::new(tokio::sync::Semaphore::new(JOINING_AT_ONCE)),
        probes: Mutex::default(),
    });
    let started = Instant::now();
    let agents: Vec<_> = channels
        .into_iter()
        .enumerate()
        .map(|(i, ch)| tokio::spawn(agent(i, ch, seen.clone(), a.heartbeat)))
        .collect();
    while seen.registered.load(Ordering::Relaxed) < a.nodes as u64 {
        if started.elapsed()
            > Duration::from_secs(120).max(Duration::from_millis(30) * a.nodes as u32)
        {
            let logs = peers.stop_keeping_logs();
            let first = seen
                .first_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            bail!(
                "only {} of {} nodes registered in {:.0} s ({} agent RPC errors, first of each: {first:?}); the peers' logs are in {logs}",
                seen.registered.load(Ordering::Relaxed),
                a.nodes,
                started.elapsed().as_secs_f64(),
                seen.errors.load(Ordering::Relaxed),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registered_in = started.elapsed();
    println!(
        "  {} nodes registered in {:.1} s",
        a.nodes,
        registered_in.as_secs_f64()
    );
    // Let the first desired sets (empty) go out before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    seen.reset_bytes();

    // Submit every job (8 at a time) while a probe measures the latency of
    // one placement meanwhile.
    let t0 = Instant::now();
    let t0_ns = seen.base.elapsed().as_nanos() as u64;
    let submitted = Arc::new(AtomicU64::new(0));
    let mut submitters = Vec::new();
    for w in 0..8usize {
        let (addrs, submitted) = (addrs.clone(), submitted.clone());
        let (jobs, replicas) = (a.jobs, a.replicas_per_job);
        submitters.push(tokio::spawn(async move {
            let mut c = client::connect(&addrs).await?;
            for j in (w..jobs).step_by(8) {
                c.submit_job(pb::SubmitJobRequest {
                    spec_json: spec_json(&format!("s-{j}"), replicas),
                    request_id: format!("scale-{}-{j}", std::process::id()),
                })
                .await
                .map_err(status)
                .with_context(|| format!("submitting job s-{j}"))?;
                submitted.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let probe = {
        let (addrs, seen) = (addrs.clone(), seen.clone());
        tokio::spawn(async move {
            let mut c = client::connect(&addrs).await?;
            let mut lat = Vec::new();
            for k in 0..20 {
                let job = format!("probe-{k}");
                let t = Instant::now();
                c.submit_job(pb::SubmitJobRequest {
                    spec_json: spec_json(&job, 1),
                    request_id: format!("scale-probe-{}-{k}", std::process::id()),
                })
                .await
                .map_err(status)?;
                let until = Instant::now() + Duration::from_secs(60);
                loop {
                    let at = seen
                        .probes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&job)
                        .copied();
                    if let Some(at) = at {
                        lat.push(at.saturating_duration_since(t));
                        break;
                    }
                    if Instant::now() > until {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<_, anyhow::Error>(lat)
        })
    };
    for s in submitters {
        s.await??;
    }
    let submit_took = t0.elapsed();
    let want = total;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last_print = Instant::now();
    while seen.placed.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline {
            bail!(
                "only {} of {want} replicas reached their nodes in 15 minutes",
                seen.placed.load(Ordering::Relaxed)
            );
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!(
                "  ... {} of {want} placed after {:.0} s",
                seen.placed.load(Ordering::Relaxed),
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let placed_in = Duration::from_nanos(
        seen.last_placed_ns
            .load(Ordering::Relaxed)
            .saturating_sub(t0_ns),
    );
    let bytes_placing = seen.bytes.load(Ordering::Relaxed);
    let probes = Samples {
        name: "placement while busy",
        durations: probe.await??,
    };
    let sustained = want as f64 / placed_in.as_secs_f64().max(1e-9);
    println!(
        "  {want} replicas at their nodes {:.1} s after the first submit ({:.0}/s); submits took {:.1} s",
        placed_in.as_secs_f64(),
        sustained,
        submit_took.as_secs_f64()
    );

    // Quiet: what agents receive when nothing changes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    seen.reset_bytes();
    let quiet = Duration::from_secs(5);
    tokio::time::sleep(quiet).await;
    let idle_bytes = seen.bytes.load(Ordering::Relaxed);

    let usage_now: BTreeMap<u64, (u64, f64)> = peers
        .pids()
        .into_iter()
        .map(|(id, pid)| (id, crate::stats::usage(pid)))
        .collect();
    let state_bytes: BTreeMap<u64, u64> = peers
        .peer_addrs()
        .keys()
        .map(|id| (*id, dir_bytes(&peers.dir().join(format!("s{id}")))))
        .collect();

    // One node lost: what the other agents receive until its replicas run
    // elsewhere.
    let victim = 0usize;
    let victim_had = {
        let mut c = client::connect(&addrs).await?;
        let r = c
            .list_allocations(pb::ListAllocationsRequest::default())
            .await
            .map_err(status)?
            .into_inner();
        r.allocations
            .iter()
            .filter(|x| {
                x.node == node_name(victim) && x.desired == "run" && x.job.starts_with("s-")
            })
            .count() as u64
    };
    seen.reset_bytes();
    let before = seen.placed.load(Ordering::Relaxed);
    let lost_at = Instant::now();
    seen.alive[victim].store(false, Ordering::Relaxed);
    agents[victim].abort();
    let mut moved_in = None;
    let give_up =
        Duration::from_secs(60).max(drover_proto::fencing::replace_after(a.node_timeout) * 2);
    while lost_at.elapsed() < give_up {
        if seen.placed.load(Ordering::Relaxed) >= before + victim_had {
            moved_in = Some(lost_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = lost_at.elapsed();
    let others: Vec<u64> = seen
        .per_agent
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, b)| b.load(Ordering::Relaxed))
        .collect();
    let others_max = others.iter().copied().max().unwrap_or(0);
    let others_mean = others.iter().sum::<u64>() as f64 / others.len().max(1) as f64;

    // Errors up to here; the failover below refuses the agents of the
    // killed peer, as it should.
    let errors = seen.errors.load(Ordering::Relaxed);
    let first_errors =
        std::mem::take(&mut *seen.first_errors.lock().unwrap_or_else(|p| p.into_inner()));
    // A leader failover at this size: SIGKILL, then the first write.
    let leader = members.leader_id;
    let killed = Instant::now();
    peers.kill_peer(leader);
    let survivors: Vec<String> = peers
        .peer_addrs()
        .iter()
        .filter(|(id, _)| **id != leader)
        .map(|(_, a)| a.clone())
        .collect();
    let mut failover = None;
    while killed.elapsed() < Duration::from_secs(30) {
        if let Ok(mut c) = client::connect(&survivors.join(",")).await {
            let r = c
                .submit_job(pb::SubmitJobRequest {
                    spec_json: spec_json("after-failover", 0),
                    request_id: format!("scale-failover-{}", std::process::id()),
                })
                .await;
            if r.is_ok() {
                failover = Some(killed.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, t) in agents.iter().enumerate() {
        seen.alive[i].store(false, Ordering::Relaxed);
        t.abort();
    }

    let rss_max = usage_now.values().map(|u| u.0).max().unwrap_or(0);
    let cpu: f64 = usage_now.values().map(|u| u.1).sum();
    let leader_usage = usage_now.get(&leader).copied().unwrap_or_default();
    let rows = vec![
        vec!["nodes".into(), a.nodes.to_string()],
        vec!["replicas placed".into(), want.to_string()],
        vec![
            "registration of every node".into(),
            format!("{:.1} s", registered_in.as_secs_f64()),
        ],
        vec![
            "submit -> all at their nodes".into(),
            format!("{:.1} s", placed_in.as_secs_f64()),
        ],
        vec![
            "placements/s (through Raft, to the agent)".into(),
            format!("{sustained:.0}"),
        ],
        vec![
            "one placement while busy, p50 / p99".into(),
            format!(
                "{:.0} / {:.0} ms ({} probes)",
                probes.median().as_secs_f64() * 1e3,
                probes.percentile(99).as_secs_f64() * 1e3,
                probes.durations.len()
            ),
        ],
        vec![
            "leader RSS / largest peer RSS".into(),
            format!("{} / {}", mib(leader_usage.0), mib(rss_max)),
        ],
        vec![
            "cpu used by the 3 peers so far".into(),
            format!("{cpu:.1} s (leader {:.1} s)", leader_usage.1),
        ],
        vec![
            "state on disk, largest peer".into(),
            format!(
                "{:.1} MiB",
                state_bytes.values().copied().max().unwrap_or(0) as f64 / (1 << 20) as f64
            ),
        ],
        vec![
            "sent to agents while placing".into(),
            format!("{:.1} MiB", bytes_placing as f64 / (1 << 20) as f64),
        ],
        vec![
            "sent to agents while idle".into(),
            format!("{:.0} B/s", idle_bytes as f64 / quiet.as_secs_f64()),
        ],
        vec![
            format!("one node lost ({victim_had} replicas): moved in"),
            moved_in.map_or("not within 60 s".into(), |d| {
                format!("{:.1} s", d.as_secs_f64())
            }),
        ],
        vec![
            "  meanwhile to each other agent, mean / max".into(),
            format!(
                "{:.0} B / {} B over {:.1} s",
                others_mean,
                others_max,
                window.as_secs_f64()
            ),
        ],
        vec![
            "leader failover at this size (SIGKILL -> first write)".into(),
            failover.map_or("not within 30 s".into(), |d| {
                format!("{:.2} s", d.as_secs_f64())
            }),
        ],
        vec![
            "agent RPC errors (before the failover)".into(),
            errors.to_string(),
        ],
    ];
    println!();
    print!("{}", table(&["", "drover"], &rows));
    for (call, e) in &first_errors {
        println!("first {call} error: {e}");
    }
    println!("sustained: {sustained:.0} placements/s");
    Ok(0)
}
