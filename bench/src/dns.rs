//! `drover-bench dns`: the node's DNS server, from inside a container.
//!
//! Against a live cluster on this machine (`drover dev`): runs three
//! demo-web replicas with an HTTP check (every 500 ms, unhealthy after two
//! failures), then from inside one replica's network namespace asks the
//! node's DNS server (the container's resolv.conf's nameserver) for the
//! job's name, one query at a time, and times each answer. Then it freezes
//! another replica (SIGSTOP) and times until that replica's address has
//! left the answers: its check needs 2 × 500 ms (each up to 400 ms) to call
//! it unhealthy; the goal is that it leaves within one interval + 1 s more.

use crate::cluster::Client;
use crate::stats::Samples;
use anyhow::{bail, Context, Result};
use drover_ctl::client::{self, status};
use drover_ctl::cmd::job::new_request_id;
use drover_proto::pb;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

const JOB: &str = "bench-dns";
/// The check's interval, failure threshold and timeout.
const INTERVAL: Duration = Duration::from_millis(500);
const THRESHOLD: u32 = 2;
const TIMEOUT: Duration = Duration::from_millis(400);

pub struct DnsReport {
    /// Each query's round trip from inside a container.
    pub answers: Samples,
    /// From SIGSTOP of a replica until its address left the answers.
    pub left_after: Duration,
    /// The longest its check can take to call it unhealthy.
    pub verdict_by: Duration,
}

impl DnsReport {
    /// The goal: it leaves within one health interval + 1 s of the verdict.
    pub fn bound(&self) -> Duration {
        self.verdict_by + INTERVAL + Duration::from_secs(1)
    }
}

pub async fn command(addr: &str, image: &str, queries: usize) -> Result<i32> {
    let r = dns_report(addr, image, queries).await?;
    let a = &r.answers;
    println!();
    println!(
        "{} answers from inside a container: median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        a.durations.len(),
        ms(a.median()),
        ms(a.percentile(99)),
        ms(a.max())
    );
    println!(
        "a frozen replica left the answers {:.2} s after SIGSTOP (its check's verdict by {:.2} s; goal: by {:.2} s)",
        r.left_after.as_secs_f64(),
        r.verdict_by.as_secs_f64(),
        r.bound().as_secs_f64()
    );
    Ok(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn dns_report(addr: &str, image: &str, queries: usize) -> Result<DnsReport> {
    let mut c = client::connect(addr).await?;
    let image = crate::cluster::resolve(image)?;
    let spec = format!(
        r#"{{"name":"{JOB}","replicas":3,"image":"{image}","env":{{"PORT":"8080"}},
            "resources":{{"cpu":"50m","memory":"32Mi"}},"stop_grace_period":"1s",
            "ports":[{{"name":"http","container":8080}}],
            "health":{{"http":{{"path":"/healthz","port":8080}},"interval":"{}ms",
                       "timeout":"{}ms","failure_threshold":{THRESHOLD}}}}}"#,
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    );
    let spec = drover_proto::spec::from_json(&spec)?;
    c.submit_job(pb::SubmitJobRequest {
        spec_json: spec.to_json(),
        request_id: new_request_id(),
    })
    .await
    .map_err(status)?;
    let result = measure(&mut c, queries).await;
    let _ = c
        .stop_job(pb::StopJobRequest {
            name: JOB.into(),
            purge: true,
            request_id: new_request_id(),
        })
        .await;
    result
}

async fn measure(c: &mut Client, queries: usize) -> Result<DnsReport> {
    let started = Instant::now();
    let replicas = loop {
        let all = c
            .list_allocations(pb::ListAllocationsRequest {
                job: JOB.into(),
                ..Default::default()
            })
            .await
            .map_err(status)?
            .into_inner()
            .allocations;
        let serving: Vec<pb::Allocation> = all
            .into_iter()
            .filter(|a| a.state == "running" && a.health == "healthy" && !a.ip.is_empty())
            .collect();
        if serving.len() == 3 {
            break serving;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{JOB}: 3 healthy replicas not running after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (inside, victim) = (&replicas[0], &replicas[1]);
    let ip: Ipv4Addr = inside.ip.parse().context("a replica's address")?;
    let [a, b, c3, _] = ip.octets();
    let server = Ipv4Addr::new(a, b, c3, 1);
    let pid = inside.pid;
    let victim_ip = victim.ip.clone();
    let victim_pid = victim.pid;
    tokio::task::spawn_blocking(move || in_netns(pid, server, queries, &victim_ip, victim_pid))
        .await?
}

/// On a thread of its own that has joined the network namespace of `pid`.
fn in_netns(
    pid: u32,
    server: Ipv4Addr,
    queries: usize,
    victim_ip: &str,
    victim_pid: u32,
) -> Result<DnsReport> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("join the replica's network namespace")?;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.connect((server, 53))?;
    let name = format!("{JOB}.service.drover");
    let mut durations = Vec::with_capacity(queries);
    for i in 0..queries + 100 {
        let t = Instant::now();
        let got = ask(&sock, i as u16, &name)?;
        // The first hundred warm up (caches, the server's task).
        if i >= 100 {
            durations.push(t.elapsed());
        }
        if got.len() != 3 {
            bail!("{name}: {} addresses answered, not 3", got.len());
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim_pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )?;
    let frozen = Instant::now();
    let left = loop {
        let now = ask(&sock, 1, &name)?;
        if !now.iter().any(|a| a == victim_ip) {
            break frozen.elapsed();
        }
        if frozen.elapsed() > Duration::from_secs(30) {
            break frozen.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim_pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    );
    Ok(DnsReport {
        answers: Samples {
            name: "dns answer",
            durations,
        },
        left_after: left,
        verdict_by: INTERVAL * THRESHOLD + TIMEOUT,
    })
}

/// One A query; the addresses answered.
fn ask(sock: &UdpSocket, id: u16, name: &str) -> Result<Vec<String>> {
    use drover_agent::daemon::dns::wire;
    sock.send(&wire::query(id, name, wire::TYPE_A, None))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = sock.recv(&mut buf).context("no DNS answer within 2 s")?;
        let Some((got, rcode, addrs)) = wire::read_addresses(&buf[..n]) else {
            bail!("{name}: a short answer");
        };
        if got != id {
            continue;
        }
        if rcode != 0 {
            bail!("{name}: rcode {rcode}");
        }
        return Ok(addrs.iter().map(|a| a.to_string()).collect());
    }
}
