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

use anyhow::{bail, Context, Result};
use drover_ctl::client::{self, status};
use drover_ctl::output::table;
use drover_proto::pb;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One run of `clients` concurrent clients for `secs`.
struct Run {
    clients: usize,
    writes: u64,
    failed: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

pub async fn writes(clients: &[usize], secs: f64, etcd: bool) -> Result<i32> {
    // Every client here presents the one admin certificate, which the
    // per-credential rate limit would hold to 500 requests a second: off.
    let (peers, _) = crate::ha::three_peers("writes", "150ms", &["--rate-limit", "0"]).await?;
    let addrs = peers.addrs();
    let mut runs = Vec::new();
    for &n in clients {
        let run = load(&addrs, n, secs).await?;
        println!(
            "  {n} client(s): {:.0} writes/s",
            run.writes as f64 / run.secs
        );
        runs.push(run);
    }
    drop(peers);
    let rows: Vec<Vec<String>> = runs
        .iter_mut()
        .map(|r| {
            r.latencies.sort();
            let p = |q: f64| {
                let i = ((r.latencies.len() as f64 * q) as usize).min(r.latencies.len() - 1);
                format!("{:.1}", r.latencies[i].as_secs_f64() * 1000.0)
            };
            vec![
                "drover (3 peers, mutual TLS)".to_string(),
                r.clients.to_string(),
                format!("{:.0}", r.writes as f64 / r.secs),
                p(0.5),
                p(0.99),
                r.failed.to_string(),
            ]
        })
        .collect();
    let mut rows = rows;
    if etcd {
        match etcd_check_perf().await {
            Ok(rate) => rows.push(vec![
                "etcd (3 members, plaintext): etcdctl check perf --load l".into(),
                "500".into(),
                rate.to_string(),
                "-".into(),
                "-".into(),
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

/// A process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three etcd members on loopback and `etcdctl check perf --load l` against
/// them: the writes per second etcd's own tool reached.
async fn etcd_check_perf() -> Result<u64> {
    let dir = crate::ha::scratch("etcd")?;
    let port = |_| drover_e2e::free_port();
    let (client, peer): (Vec<u16>, Vec<u16>) =
        ((0..3).map(port).collect(), (0..3).map(port).collect());
    let cluster: Vec<String> = (0..3)
        .map(|i| format!("e{i}=http://127.0.0.1:{}", peer[i]))
        .collect();
    let mut members = Vec::new();
    for i in 0..3 {
        let log = std::fs::File::create(dir.join(format!("e{i}.log")))?;
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("e{i}")))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", client[i]),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", client[i]),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", peer[i]),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", peer[i]),
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-state",
                "new",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start etcd (Debian: apt install etcd-server etcd-client)")?;
        members.push(Killed(child));
    }
    let endpoints: Vec<String> = client
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let endpoints = endpoints.join(",");
    let healthy = Instant::now();
    loop {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints, "endpoint", "health"])
            .output()
            .context("cannot run etcdctl")?;
        if out.status.success() {
            break;
        }
        if healthy.elapsed() > Duration::from_secs(30) {
            bail!("etcd did not become healthy within 30s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("  etcdctl check perf --load l (one minute)...");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoints, "check", "perf", "--load", "l"])
        .output()
        .context("cannot run etcdctl")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    drop(members);
    let _ = std::fs::remove_dir_all(&dir);
    throughput(&text).with_context(|| format!("no throughput in etcdctl's answer: {text}"))
}

/// The writes per second in `etcdctl check perf`'s report: "PASS:
/// Throughput is N writes/s", or "FAIL: Throughput too low: N writes/s"
/// when it fell short of the load's target.
fn throughput(report: &str) -> Option<u64> {
    ["Throughput is ", "Throughput too low: "]
        .iter()
        .find_map(|lead| {
            let at = report.find(lead)? + lead.len();
            report[at..].split_whitespace().next()?.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_throughput_is_read_from_a_pass_or_a_fail() {
        assert_eq!(
            throughput(
                "60 / 60 ...\nPASS: Throughput is 7998 writes/s\nPASS: Slowest request took 0.1s\n"
            ),
            Some(7998)
        );
        assert_eq!(
            throughput("FAIL: Throughput too low: 3615 writes/s\n"),
            Some(3615)
        );
        assert_eq!(throughput("context deadline exceeded"), None);
    }
}
