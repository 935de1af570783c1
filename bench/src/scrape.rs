//! `drover-bench metrics`: what a Prometheus scrape of an agent costs with
//! many allocations on it.
//!
//! A scheduler and one agent as processes, the agent with `--http-listen`;
//! a job of N replicas of a sleeping container (on the node's network: a
//! thousand network namespaces and veth pairs would only measure how long
//! they take to make); then `--scrapes` GETs of
//! the agent's `/metrics` over HTTP, timed from this process. The agent
//! reads its cgroups on a timer of its own, not per scrape: the table also
//! says how long its last reading of all N took.

use anyhow::{bail, Result};
use drover_ctl::output::table;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::stats::Samples;

fn scrape(addr: &str) -> Result<(Duration, String)> {
    let began = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let took = began.elapsed();
    let Some((head, body)) = out.split_once("\r\n\r\n") else {
        bail!("no HTTP answer: {out:.200}");
    };
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("{head}");
    }
    Ok((took, body.to_string()))
}

pub async fn command(n: u32, scrapes: usize, image: &str) -> Result<i32> {
    let image = crate::cluster::resolve(image)?;
    let dir = crate::ha::scratch("metrics")?;
    let (_scheduler, addr) = crate::node_loss::scheduler(&dir)?;
    let mut c = crate::node_loss::connect(&dir, &addr).await?;
    let http = format!("127.0.0.1:{}", drover_e2e::free_port());
    let agent = crate::node_loss::agent_with(
        &drover_e2e::bin_dir(),
        &dir,
        "bench-metrics",
        &addr,
        // Enough cpu offered for N replicas of 10 millicores each: the
        // node's own two would hold 200.
        &["--http-listen", &http, "--cpu", &(n / 100 + 1).to_string()],
    )?;
    crate::node_loss::wait_nodes_ready(&mut c, &["bench-metrics"]).await?;
    let spec = drover_proto::spec::from_json(&format!(
        r#"{{"name":"bench-metrics","replicas":{n},"image":"{image}","command":["/bin/sleep","100000"],
            "network":"host","resources":{{"cpu":"10m","memory":"8Mi"}},"stop_grace_period":"1s"}}"#
    ))?;
    crate::cluster::submit(&mut c, &spec).await?;
    let start = Instant::now();
    crate::cluster::wait_running(&mut c, "bench-metrics", n, Duration::from_secs(600)).await?;
    println!(
        "  {n} replicas running after {:.0}s",
        start.elapsed().as_secs_f64()
    );
    // Until a usage sample holds every replica.
    let waiting = Instant::now();
    let (sample_s, bytes) = loop {
        let (_, body) = scrape(&http)?;
        let sampled = body
            .lines()
            .filter(|l| l.starts_with("drover_agent_allocation_memory_bytes{"))
            .count();
        if sampled >= n as usize {
            let secs = body
                .lines()
                .find_map(|l| {
                    l.strip_prefix("drover_agent_usage_sample_seconds ")?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0);
            break (secs, body.len());
        }
        if waiting.elapsed() > Duration::from_secs(60) {
            bail!("the agent's usage sample holds {sampled} of {n} replicas after 60s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut times = Samples {
        name: "scrape",
        durations: Vec::new(),
    };
    for _ in 0..scrapes {
        times.durations.push(scrape(&http)?.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::cluster::stop_purge(&mut c, "bench-metrics").await?;
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    println!();
    print!(
        "{}",
        table(
            &[
                "ALLOCATIONS",
                "SCRAPES",
                "P50_MS",
                "P99_MS",
                "MAX_MS",
                "BYTES",
                "USAGE_SAMPLE_MS"
            ],
            &[vec![
                n.to_string(),
                scrapes.to_string(),
                ms(times.median()),
                ms(times.percentile(99)),
                ms(times.max()),
                bytes.to_string(),
                format!("{:.1}", sample_s * 1000.0),
            ]]
        )
    );
    println!("(a GET of the agent's /metrics over HTTP from this process; the agent reads every allocation's cgroup usage every 5 s on its own, USAGE_SAMPLE_MS for all of them)");
    Ok(0)
}
