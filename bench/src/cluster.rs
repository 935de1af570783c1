//! `drover-bench job-run`, `rollout`, `load` and `mesh`: against a live
//! cluster.
//!
//! `job-run` is how long `job run` of N replicas takes until all run.
//!
//! Runs against a live cluster (`drover dev` or any other) through the same
//! API the CLI uses: submit a job of N replicas, poll until all N run, stop
//! and purge it, repeat. A one-replica warm-up first puts the image in the
//! agent's layer cache, so the figures are for a cached image.

use anyhow::{bail, Result};
use drover_ctl::client::{self, status};
use drover_ctl::cmd::job::new_request_id;
use drover_proto::pb;
use std::time::{Duration, Instant};

pub async fn job_run(addr: &str, replicas: &[u32], trials: usize, image: &str) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    let image = resolve(image)?;
    println!("warming the image cache ({image})");
    one(&mut c, "bench-warmup", 1, &image).await?;
    let mut rows = Vec::new();
    for &n in replicas {
        let mut times = Vec::new();
        for t in 0..trials {
            let d = one(&mut c, &format!("bench-{n}-{t}"), n, &image).await?;
            println!("  {n} replicas, trial {}: {:.3}s", t + 1, d.as_secs_f64());
            times.push(d);
        }
        times.sort();
        rows.push(vec![
            n.to_string(),
            trials.to_string(),
            format!("{:.3}", times[times.len() / 2].as_secs_f64()),
            format!("{:.3}", times[0].as_secs_f64()),
            format!("{:.3}", times[times.len() - 1].as_secs_f64()),
        ]);
    }
    println!();
    print!(
        "{}",
        drover_ctl::output::table(&["REPLICAS", "TRIALS", "MEDIAN_S", "MIN_S", "MAX_S"], &rows)
    );
    Ok(0)
}

pub(crate) fn resolve(image: &str) -> Result<String> {
    let mut spec = drover_proto::spec::from_json(r#"{"name":"x","image":"oci:/x"}"#)?;
    spec.image = image.to_string();
    spec.resolve_paths(&std::env::current_dir()?);
    Ok(spec.image)
}

/// Submits `n` replicas, returns the time until all run, then stops and purges.
async fn one(
    c: &mut pb::drover_client::DroverClient<drover_ctl::client::Backoff>,
    name: &str,
    n: u32,
    image: &str,
) -> Result<Duration> {
    let spec = format!(
        r#"{{"name":"{name}","replicas":{n},"image":"{image}","command":["/bin/sleep","3600"],
            "resources":{{"cpu":"10m","memory":"16Mi"}},"stop_grace_period":"1s"}}"#
    );
    let spec = drover_proto::spec::from_json(&spec)?;
    let start = Instant::now();
    c.submit_job(pb::SubmitJobRequest {
        spec_json: spec.to_json(),
        request_id: new_request_id(),
    })
    .await
    .map_err(status)?;
    loop {
        let j = job_status(c, name).await?;
        if j.running >= n {
            break;
        }
        if !j.pending_reason.is_empty() {
            bail!("{name}: {}", j.pending_reason);
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("{name}: only {}/{n} running after 5m", j.running);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = start.elapsed();
    c.stop_job(pb::StopJobRequest {
        name: name.into(),
        request_id: new_request_id(),
        purge: true,
    })
    .await
    .map_err(status)?;
    loop {
        match c
            .get_job(pb::GetJobRequest {
                name: name.into(),
                read: None,
            })
            .await
        {
            Err(s) if s.code() == tonic::Code::NotFound => break,
            Err(s) => return Err(status(s)),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Ok(took)
}

/// `drover bench rollout`: how long a rolling update of N replicas takes at
/// Docker Swarm's settings (one at a time, start-first, no health gating),
/// against the lower bound of ceil(N / max_surge) sequential steps.
pub async fn rollout(addr: &str, replicas: u32, trials: usize, image: &str) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    let image = resolve(image)?;
    let name = "bench-rollout";
    let spec = |v: usize| {
        format!(
            r#"{{"name":"{name}","replicas":{replicas},"image":"{image}","command":["/bin/sleep","3600"],
                "env":{{"BENCH_VERSION":"{v}"}},"resources":{{"cpu":"10m","memory":"16Mi"}},"stop_grace_period":"1s",
                "update":{{"max_surge":1,"max_unavailable":0,"min_healthy_time":"0s"}}}}"#
        )
    };
    let submit = |c: &mut pb::drover_client::DroverClient<drover_ctl::client::Backoff>,
                  v: usize| {
        let json = drover_proto::spec::from_json(&spec(v)).map(|s| s.to_json());
        let mut c = c.clone();
        async move {
            let r = c
                .submit_job(pb::SubmitJobRequest {
                    spec_json: json?,
                    request_id: new_request_id(),
                })
                .await
                .map_err(status)?
                .into_inner();
            Ok::<u64, anyhow::Error>(r.version)
        }
    };
    // The lower bound: each of the `replicas` sequential steps starts one
    // replica and waits until it runs, which alone takes what `job run` of
    // one replica does.
    let mut one_start = Vec::new();
    for _ in 0..trials.max(3) {
        one_start.push(one(&mut c, "bench-rollout-step", 1, &image).await?);
    }
    one_start.sort();
    let step = one_start[one_start.len() / 2].as_secs_f64();
    let v = submit(&mut c, 0).await?;
    wait_rollout(&mut c, name, v).await?;
    let mut times = Vec::new();
    for t in 1..=trials {
        let start = Instant::now();
        let v = submit(&mut c, t).await?;
        wait_rollout(&mut c, name, v).await?;
        let d = start.elapsed();
        println!(
            "  rollout {t}: {replicas} replicas in {:.3}s",
            d.as_secs_f64()
        );
        times.push(d);
    }
    c.stop_job(pb::StopJobRequest {
        name: name.into(),
        request_id: new_request_id(),
        purge: true,
    })
    .await
    .map_err(status)?;
    times.sort();
    let median = times[times.len() / 2].as_secs_f64();
    println!();
    print!(
        "{}",
        drover_ctl::output::table(
            &[
                "REPLICAS",
                "STEPS",
                "TRIALS",
                "MEDIAN_S",
                "MIN_S",
                "MAX_S",
                "PER_STEP_MS",
                "LOWER_BOUND_S"
            ],
            &[vec![
                replicas.to_string(),
                replicas.to_string(),
                trials.to_string(),
                format!("{median:.3}"),
                format!("{:.3}", times[0].as_secs_f64()),
                format!("{:.3}", times[times.len() - 1].as_secs_f64()),
                format!("{:.0}", median * 1000.0 / replicas.max(1) as f64),
                format!("{:.3}", step * replicas as f64),
            ]]
        )
    );
    println!(
        "(max_surge 1, max_unavailable 0, min_healthy_time 0s: {replicas} sequential start-then-stop steps; \
         the lower bound is {replicas} x one replica's start to running, {:.0} ms, measured here)",
        step * 1000.0
    );
    Ok(0)
}

async fn wait_rollout(
    c: &mut pb::drover_client::DroverClient<drover_ctl::client::Backoff>,
    name: &str,
    version: u64,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let j = job_status(c, name).await?;
        if let Some(r) = j.rollout.as_ref().filter(|r| r.version == version) {
            match r.typed_phase() {
                pb::RolloutPhase::Succeeded => return Ok(()),
                pb::RolloutPhase::Failed => bail!("{name}: rollout failed: {}", r.reason),
                _ => {}
            }
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("{name}: rollout of version {version} not done after 5m");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `drover bench load`: fixed-rate load until the duration ends or Ctrl-C.
pub async fn load_cmd(
    url: &str,
    rate: u32,
    duration: &str,
    json: Option<std::path::PathBuf>,
    svg: Option<std::path::PathBuf>,
) -> Result<i32> {
    let (target, path) = crate::load::split_url(url)?;
    let duration = drover_proto::quantity::Duration::parse(duration)
        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?
        .std();
    let o = crate::load::Options {
        target,
        path,
        rate,
        duration,
        json,
        svg,
        title: format!("{url} at {rate} req/s"),
    };
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let timeline = crate::load::run(&o, stop).await;
    let (_, failed) = crate::load::report(&o, &timeline)?;
    Ok(if failed == 0 { 0 } else { 1 })
}

/// `drover bench mesh`: the same load straight to one replica and through the
/// routing mesh, closed loop, one after the other; a table of both.
pub async fn mesh(mesh: &str, direct: &str, seconds: u64, concurrency: usize) -> Result<i32> {
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for (name, url) in [("direct", direct), ("mesh", mesh)] {
        let (target, path) = crate::load::split_url(url)?;
        let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (t, p, d, f) = (target.clone(), path.clone(), done.clone(), failed.clone());
            set.spawn(async move {
                while start.elapsed() < Duration::from_secs(seconds) {
                    let s = Instant::now();
                    match load_request(&t, &p).await {
                        true => d.lock().expect("lock").push(s.elapsed().as_micros() as u64),
                        false => {
                            f.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
        let mut lat = done.lock().expect("lock").clone();
        lat.sort_unstable();
        let rps = lat.len() as f64 / start.elapsed().as_secs_f64();
        let p99 = crate::load::percentile(&lat, 0.99) as f64 / 1000.0;
        results.push((rps, p99));
        rows.push(vec![
            name.to_string(),
            format!("{rps:.0}"),
            format!("{:.2}", crate::load::percentile(&lat, 0.5) as f64 / 1000.0),
            format!("{p99:.2}"),
            failed
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        ]);
    }
    print!(
        "{}",
        drover_ctl::output::table(&["PATH", "REQ_PER_S", "P50_MS", "P99_MS", "FAILED"], &rows)
    );
    let (d, m) = (results[0], results[1]);
    println!(
        "mesh/direct: throughput {:.0}%, p99 +{:.0}%",
        m.0 / d.0 * 100.0,
        (m.1 / d.1 - 1.0) * 100.0
    );
    Ok(0)
}

async fn load_request(target: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(target).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

/// The job's status, as `drover job status` reads it.
async fn job_status(
    c: &mut pb::drover_client::DroverClient<drover_ctl::client::Backoff>,
    name: &str,
) -> Result<pb::JobStatus> {
    Ok(c.get_job(pb::GetJobRequest {
        name: name.into(),
        read: None,
    })
    .await
    .map_err(status)?
    .into_inner())
}
