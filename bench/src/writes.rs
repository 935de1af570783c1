//! `drover-bench writes`: durable writes per second as clients see them,
//! beside etcd's own load tool in the same run.
//!
//! Unlike `commit` (proposers inside the leader, no gRPC, no client API),
//! this is what a user gets: three `drover-scheduler` peers as processes on
//! loopback, over mutual TLS, and N clients in this process, each on its own
//! gRPC connection (spread over the peers; followers forward to the leader,
//! as they do for the CLI), each submitting a new version of a job and
//! waiting for its acknowledgement (committed on a majority, fsynced) before
//! the next. Then, where etcd is installed, three etcd members on loopback
//! (plaintext) and `etcdctl check perf` against them: etcd's own load tool,
//! which runs for a minute and reports the writes per second it reached.

use anyhow::{bail, Result};
use drover_ctl::client::{self, status};
use drover_ctl::output::table;
use drover_proto::pb;
use std::time::{Duration, Instant};

/// How many clients `etcdctl check perf --load l` runs (etcd's
/// `checkPerfCfgMap`): Drover's run with as many is the one to compare.
pub const ETCD_CLIENTS: usize = 500;

/// One run of `clients` concurrent clients for `secs`.
pub struct Run {
    pub clients: usize,
    pub writes: u64,
    pub failed: u64,
    pub secs: f64,
    pub latencies: Vec<Duration>,
}

impl Run {
    pub fn per_s(&self) -> f64 {
        self.writes as f64 / self.secs
    }

    /// The latency at quantile `q` (0..=1), in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1));
        l.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

/// What `drover bench writes` measured: Drover's runs, and etcd's figure
/// from the same run (None where etcd was skipped or failed, with why).
pub struct WritesReport {
    pub runs: Vec<Run>,
    pub etcd: Result<u64>,
}

pub async fn writes(clients: &[usize], secs: f64, etcd: bool) -> Result<i32> {
    let r = writes_report(clients, secs, etcd).await?;
    let mut rows: Vec<Vec<String>> = r
        .runs
        .iter()
        .map(|r| {
            vec![
                "drover (3 peers, mutual TLS)".to_string(),
                r.clients.to_string(),
                format!("{:.0}", r.per_s()),
                format!("{:.1}", r.ms(0.5)),
                format!("{:.1}", r.ms(0.99)),
                r.failed.to_string(),
            ]
        })
        .collect();
    match r.etcd {
        Ok(rate) => rows.push(vec![
            "etcd (3 members, plaintext): etcdctl check perf --load l".into(),
            ETCD_CLIENTS.to_string(),
            rate.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]),
        Err(e) if etcd => eprintln!("etcd: {e:#}"),
        Err(_) => {}
    }
    println!();
    print!(
        "{}",
        table(
            &[
                "SYSTEM",
                "CLIENTS",
                "WRITES_PER_S",
                "P50_MS",
                "P99_MS",
                "FAILED"
            ],
            &rows
        )
    );
    println!("(each write a new job version, acknowledged once committed on a majority and fsynced; clients over gRPC from a separate process)");
    Ok(0)
}

/// Drover's runs, then (with `etcd`) etcd's load tool beside it.
pub async fn writes_report(clients: &[usize], secs: f64, etcd: bool) -> Result<WritesReport> {
    // Every client here presents the one admin certificate, which the
    // per-credential rate limit would hold to 500 requests a second: off.
    let (peers, _) = crate::ha::three_peers("writes", "150ms", &["--rate-limit", "0"]).await?;
    let addrs = peers.addrs();
    let mut runs = Vec::new();
    for &n in clients {
        let run = load(&addrs, n, secs).await?;
        println!("  {n} client(s): {:.0} writes/s", run.per_s());
        runs.push(run);
    }
    drop(peers);
    let etcd = if etcd {
        match crate::etcd::Etcd::start().await {
            Ok(e) => e.check_perf(),
            Err(e) => Err(e),
        }
    } else {
        Err(anyhow::anyhow!("not asked for (--no-etcd)"))
    };
    Ok(WritesReport { runs, etcd })
}

/// `n` clients submitting for `secs`.
async fn load(addrs: &str, n: usize, secs: f64) -> Result<Run> {
    let list: Vec<String> = addrs.split(',').map(str::to_string).collect();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        // Spread over the peers: client i starts at peer i.
        let mut mine = list.clone();
        mine.rotate_left(i % list.len());
        let mine = mine.join(",");
        tasks.push(tokio::spawn(async move {
            let mut c = client::connect(&mine).await?;
            let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
            let mut k = 0u64;
            while Instant::now() < deadline {
                k += 1;
                let spec_json = format!(
                    r#"{{"name":"w-{i}","image":"oci:/bench:latest","env":{{"V":"{k}"}},"resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
                );
                let t = Instant::now();
                let r = c
                    .submit_job(pb::SubmitJobRequest {
                        spec_json,
                        request_id: format!("bench-writes-{}-{i}-{k}", std::process::id()),
                    })
                    .await
                    .map_err(status);
                match r {
                    Ok(_) => {
                        ok += 1;
                        lat.push(t.elapsed());
                    }
                    Err(_) => failed += 1,
                }
            }
            Ok::<_, anyhow::Error>((ok, failed, lat))
        }));
    }
    let mut run = Run {
        clients: n,
        writes: 0,
        failed: 0,
        secs: 0.0,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (ok, failed, lat) = t.await??;
        run.writes += ok;
        run.failed += failed;
        run.latencies.extend(lat);
    }
    run.secs = began.elapsed().as_secs_f64();
    if run.latencies.is_empty() {
        bail!("no write succeeded with {n} clients");
    }
    Ok(run)
}
