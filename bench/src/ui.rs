//! `drover-bench ui`: how heavy and how quick the web UI's first page is
//! on a cluster with many jobs.
//!
//! A scheduler (with `--http-listen`) and one agent as processes, N jobs of
//! one sleeping replica each (on the node's network), then Debian's
//! headless Chromium loading `/ui/` --loads times from a blank page. For
//! each load: the time from navigation to the overview showing every job
//! (the page marks when its first data is on screen), and the bytes that
//! came over the wire for it (the page, its script and style, and the JSON
//! it read; the event stream it then follows is not counted: it never
//! ends). No peer beside it: Nomad's UI is not packaged for Debian.

use anyhow::{bail, Result};
use drover_ctl::output::table;
use drover_e2e::browser::Browser;
use std::time::{Duration, Instant};

use crate::stats::Samples;

pub async fn command(jobs: u32, loads: usize, image: &str) -> Result<i32> {
    if drover_e2e::browser::chromium().is_none() {
        bail!("chromium is not installed (apt install chromium)");
    }
    let image = crate::cluster::resolve(image)?;
    let dir = crate::ha::scratch("ui")?;
    let http = format!("127.0.0.1:{}", drover_e2e::free_port());
    let (_scheduler, addr) = crate::node_loss::scheduler_with(&dir, &["--http-listen", &http])?;
    let mut c = crate::node_loss::connect(&dir, &addr).await?;
    let agent = crate::node_loss::agent_with(
        &drover_e2e::bin_dir(),
        &dir,
        "bench-ui",
        &addr,
        &["--cpu", &(jobs / 100 + 1).to_string()],
    )?;
    crate::node_loss::wait_nodes_ready(&mut c, &["bench-ui"]).await?;
    let names: Vec<String> = (0..jobs).map(|i| format!("bench-ui-{i:03}")).collect();
    for name in &names {
        let spec = drover_proto::spec::from_json(&format!(
            r#"{{"name":"{name}","replicas":1,"image":"{image}","command":["/bin/sleep","100000"],
                "network":"host","resources":{{"cpu":"10m","memory":"8Mi"}},"stop_grace_period":"1s"}}"#
        ))?;
        crate::cluster::submit(&mut c, &spec).await?;
    }
    for name in &names {
        crate::cluster::wait_running(&mut c, name, 1, Duration::from_secs(600)).await?;
    }
    println!("  {jobs} jobs running");

    let mut b = Browser::start(1400, 1000);
    let url = format!("http://{http}/ui/");
    let mut times = Samples {
        name: "first page",
        durations: Vec::new(),
    };
    let mut bytes = Vec::new();
    let rows = format!("document.querySelectorAll('#jobs tr[data-job]').length >= {jobs}");
    for _ in 0..loads {
        b.goto("about:blank");
        b.wait_for(
            "a blank page",
            Duration::from_secs(10),
            "location.href === 'about:blank'",
        );
        let began = Instant::now();
        b.goto(&url);
        b.wait_for("every job listed", Duration::from_secs(30), &rows);
        let loaded = b.wait_for(
            "the page's first data",
            Duration::from_secs(30),
            "Number(document.body.dataset.loadedMs)",
        );
        let ms = loaded.as_f64().unwrap_or(0.0);
        if ms <= 0.0 {
            bail!(
                "the page did not say when it loaded (waited {:?})",
                began.elapsed()
            );
        }
        times.durations.push(Duration::from_secs_f64(ms / 1000.0));
        let sum = b
            .eval(
                "[...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]\
                 .filter(e => !e.name.includes('/v1/events')).reduce((n, e) => n + e.transferSize, 0)",
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        bytes.push(sum.as_f64().unwrap_or(0.0) as u64);
    }
    drop(b);
    for name in &names {
        crate::cluster::stop_purge(&mut c, name).await?;
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    bytes.sort_unstable();
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    println!();
    print!(
        "{}",
        table(
            &[
                "JOBS",
                "LOADS",
                "P50_MS",
                "MAX_MS",
                "BYTES_P50",
                "BYTES_MAX"
            ],
            &[vec![
                jobs.to_string(),
                loads.to_string(),
                ms(times.median()),
                ms(times.max()),
                bytes[bytes.len() / 2].to_string(),
                bytes.last().copied().unwrap_or(0).to_string(),
            ]]
        )
    );
    println!("(headless Chromium on this host: navigation start to the overview showing every job with its status; bytes over the wire for the page, its script and style and the JSON it read; goal: < 1000 ms and < 200 KB with 100 jobs)");
    Ok(0)
}
