//! `drover-bench leader-faults`: the leader of three scheduler peers is
//! hit by a fault real clusters see, and the first write acknowledged
//! through another peer is timed. The peers run in network namespaces of a
//! `examples/cluster/cluster.sh` cluster (the script users run), so a
//! fault can be what hosts do, not only what a SIGKILL on loopback does:
//!
//! - `kill`: SIGKILL (the kernel resets its connections);
//! - `silence`: its host drops every packet, no resets (a dead host);
//! - `pause`: SIGSTOP (a frozen process; its kernel still answers TCP);
//! - `isolate`: cut off from the other peers only.

use anyhow::{bail, Result};
use drover_e2e::netcluster::NetCluster;
use std::time::{Duration, Instant};

use crate::stats::Samples;

pub const KINDS: [&str; 4] = ["kill", "silence", "pause", "isolate"];

/// `trials` of each fault in `kinds`, on one cluster of three peers.
pub async fn report(kinds: &[String], trials: usize) -> Result<Vec<(String, Samples)>> {
    for k in kinds {
        if !KINDS.contains(&k.as_str()) {
            bail!("unknown fault {k:?} (known: {})", KINDS.join(", "));
        }
    }
    let mut c = NetCluster::up("flbench", 11, 3, 0, &[]);
    let mut rows = Vec::new();
    for kind in kinds {
        let undo = if kind == "kill" { "restart" } else { "heal" };
        let mut took = Vec::new();
        for t in 0..trials {
            let leader = c.leader();
            let others: Vec<String> = (1..=3)
                .filter(|i| *i != leader)
                .map(|i| c.peer_addr(i))
                .collect();
            let spec = drover_proto::spec::from_yaml(&format!(
                "name: bench-{kind}-{t}\nimage: oci:/nowhere:latest\nreplicas: 0\n"
            ))?
            .to_json();
            let tls = drover_e2e::client_tls(&c.addr());
            let start = if kind == "kill" {
                // Here, not through `cluster.sh kill`: it returns only once
                // the process is reaped, long after it died.
                let pid = c.pid(&format!("s{leader}"));
                let start = Instant::now();
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )?;
                start
            } else {
                // The fault takes effect as the script ends.
                c.must(&[kind, &format!("s{leader}")]);
                Instant::now()
            };
            first_write(&tls, &others, &spec, &format!("bench-{kind}-{t}")).await?;
            let d = start.elapsed();
            println!(
                "  {kind} trial {}: leader s{leader}, first write after {:.3}s",
                t + 1,
                d.as_secs_f64()
            );
            took.push(d);
            if kind == "kill" {
                c.must(&["kill", &format!("s{leader}")]);
            }
            c.must(&[undo, &format!("s{leader}")]);
            // Let the peer rejoin before the next trial.
            let start = Instant::now();
            loop {
                let back = c.members().and_then(|m| {
                    let all = m["members"].as_array()?.clone();
                    Some(all.len() == 3 && all.iter().all(|r| r["role"] != "unreachable"))
                });
                if back == Some(true) {
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("s{leader} did not rejoin within 30s of {undo}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        rows.push((
            kind.clone(),
            Samples {
                name: "leader fault",
                durations: took,
            },
        ));
    }
    Ok(rows)
}

/// Submits `spec` through each of `addrs` in turn (500 ms per try) until
/// one acknowledges it.
async fn first_write(
    tls: &drover_proto::pki::tls::ClientTls,
    addrs: &[String],
    spec: &str,
    request_id: &str,
) -> Result<()> {
    let start = Instant::now();
    for n in 0.. {
        let addr = &addrs[n % addrs.len()];
        let ok = async {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .ok()?
                .connect_timeout(Duration::from_millis(300));
            let ch = tls.connect(&endpoint).await.ok()?;
            let mut cl = drover_e2e::api(ch, addr);
            let req = drover_proto::pb::SubmitJobRequest {
                spec_json: spec.to_string(),
                request_id: request_id.to_string(),
            };
            tokio::time::timeout(Duration::from_millis(500), cl.submit_job(req))
                .await
                .ok()?
                .ok()
        };
        if ok.await.is_some() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("no write within 30s");
        }
    }
    unreachable!("the loop returns or fails")
}

/// `drover-bench leader-faults`: prints the table.
pub async fn command(kinds: &[String], trials: usize) -> Result<i32> {
    let rows: Vec<Vec<String>> = report(kinds, trials)
        .await?
        .iter()
        .map(|(k, s)| {
            vec![
                k.clone(),
                s.durations.len().to_string(),
                crate::stats::secs(s.median()),
                crate::stats::secs(s.min()),
                crate::stats::secs(s.max()),
            ]
        })
        .collect();
    println!();
    print!(
        "{}",
        drover_ctl::output::table(&["FAULT", "TRIALS", "MEDIAN_S", "MIN_S", "MAX_S"], &rows)
    );
    Ok(0)
}
