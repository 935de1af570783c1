//! `drover-bench events`: how fast an event reaches many subscribers, and
//! what they cost the leader.
//!
//! Three `drover-scheduler` peers on loopback over mutual TLS. A writer
//! submits new jobs at a steady rate (each submission is a few events:
//! submitted, rollout started, cannot place), once with no subscriber and
//! once with N subscribers following the leader's event stream, each on a
//! gRPC connection of its own. For every `job-submitted` event each
//! subscriber receives, the latency is from the leader's timestamp on the
//! submission (taken when it proposes, before replication and fsync; so an
//! upper bound on the time from commit) to receipt. The leader's cpu time
//! over each run shows what the subscribers cost it.

use anyhow::{bail, Result};
use drover_ctl::client;
use drover_ctl::output::table;
use drover_proto::pb;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stats::Samples;

/// One run: the subscribers, the submissions, what was delivered.
struct Run {
    subscribers: usize,
    submitted: usize,
    secs: f64,
    deliveries: usize,
    latencies: Samples,
    leader_cpu_s: f64,
}

pub async fn events(subscribers: usize, rate: u32, secs: f64) -> Result<i32> {
    let (peers, members) =
        crate::ha::three_peers("events", "500ms", &["--rate-limit", "0"]).await?;
    let leader = members.leader_id;
    let leader_addr = peers.peer_addrs()[&leader].clone();
    let pid = peers.pids()[&leader];
    let mut runs = Vec::new();
    for n in [0, subscribers] {
        let run = run(&leader_addr, pid, n, rate, secs, &format!("r{n}")).await?;
        println!(
            "  {n} subscriber(s): {} submissions, {} deliveries, leader cpu {:.2}s",
            run.submitted, run.deliveries, run.leader_cpu_s
        );
        runs.push(run);
    }
    drop(peers);
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let (p50, p99, max) = if r.subscribers == 0 {
                ("-".into(), "-".into(), "-".into())
            } else {
                (
                    ms(r.latencies.median()),
                    ms(r.latencies.percentile(99)),
                    ms(r.latencies.max()),
                )
            };
            vec![
                r.subscribers.to_string(),
                format!("{:.0}", r.submitted as f64 / r.secs),
                r.deliveries.to_string(),
                p50,
                p99,
                max,
                format!("{:.2}", r.leader_cpu_s),
                format!("{:.0}%", r.leader_cpu_s / r.secs * 100.0),
                format!("{:.1}", r.leader_cpu_s * 1000.0 / r.submitted.max(1) as f64),
            ]
        })
        .collect();
    println!();
    print!(
        "{}",
        table(
            &[
                "SUBSCRIBERS",
                "SUBMITS_PER_S",
                "DELIVERIES",
                "P50_MS",
                "P99_MS",
                "MAX_MS",
                "LEADER_CPU_S",
                "LEADER_CPU",
                "LEADER_MS_PER_SUBMIT"
            ],
            &rows
        )
    );
    println!("(latency: the leader's timestamp on a submission, before replication and fsync, to a subscriber receiving its job-submitted event; subscribers follow the leader, each on its own TLS connection, in this process)");
    if let Some(r) = runs.last().filter(|r| r.subscribers > 0) {
        println!(
            "events: p99 {} ms to {} subscribers",
            ms(r.latencies.percentile(99)),
            r.subscribers
        );
    }
    Ok(0)
}

async fn run(addr: &str, pid: u32, n: usize, rate: u32, secs: f64, tag: &str) -> Result<Run> {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let delivered = Arc::new(AtomicUsize::new(0));
    let warm = Arc::new(AtomicUsize::new(0));
    let marker = format!("{tag}-warm");
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (addr, latencies, delivered, warm, marker) = (
            addr.to_string(),
            latencies.clone(),
            delivered.clone(),
            warm.clone(),
            marker.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = client::connect(&addr).await?;
            let mut stream = c
                .events(pb::EventsRequest {
                    topics: vec![pb::EventTopic::Job as i32],
                    follow: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut counting = false;
            while let Ok(Some(batch)) = stream.message().await {
                let now = drover_scheduler::clock::now_ms();
                for e in batch.events {
                    if e.r#type() != pb::EventType::JobSubmitted {
                        continue;
                    }
                    if e.job.starts_with(&marker) {
                        if !counting {
                            warm.fetch_add(1, Ordering::Relaxed);
                            counting = true;
                        }
                        continue;
                    }
                    if counting {
                        let d = Duration::from_millis((now - e.at_ms).max(0) as u64);
                        latencies.lock().unwrap().push(d);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let mut c = client::connect(addr).await?;
    // Every subscriber is following once each has seen the marker.
    let started = Instant::now();
    for k in 0.. {
        submit(&mut c, &format!("{marker}-{k}")).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if warm.load(Ordering::Relaxed) >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {} of {n} subscribers followed within 120s",
                warm.load(Ordering::Relaxed)
            );
        }
    }
    let (_, cpu_before) = crate::stats::usage(pid);
    let began = Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut tick = tokio::time::interval(every);
    // At a fixed rate whatever the answers take, so both runs offer the
    // same load.
    let mut writes = Vec::new();
    while began.elapsed().as_secs_f64() < secs {
        tick.tick().await;
        let (mut c, name) = (c.clone(), format!("{tag}-{}", writes.len()));
        writes.push(tokio::spawn(async move { submit(&mut c, &name).await }));
    }
    let submitted = writes.len();
    for w in writes {
        w.await??;
    }
    // The last events reach everyone.
    let want = submitted * n;
    let waiting = Instant::now();
    while delivered.load(Ordering::Relaxed) < want && waiting.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = began.elapsed().as_secs_f64();
    let (_, cpu_after) = crate::stats::usage(pid);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            bail!("a subscriber failed: {e:#}");
        }
    }
    let deliveries = delivered.load(Ordering::Relaxed);
    if deliveries < want {
        bail!("only {deliveries} of {want} events reached the subscribers within 30s");
    }
    let durations = std::mem::take(&mut *latencies.lock().unwrap());
    Ok(Run {
        subscribers: n,
        submitted,
        secs: took,
        deliveries,
        latencies: Samples {
            name: "event",
            durations,
        },
        leader_cpu_s: cpu_after - cpu_before,
    })
}

async fn submit(
    c: &mut pb::drover_client::DroverClient<client::Backoff>,
    name: &str,
) -> Result<()> {
    let spec_json = format!(
        r#"{{"name":"{name}","image":"oci:/bench:latest","resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
    );
    c.submit_job(pb::SubmitJobRequest {
        spec_json,
        request_id: String::new(),
    })
    .await
    .map_err(client::status)?;
    Ok(())
}
