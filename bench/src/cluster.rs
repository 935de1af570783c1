//! `drover-bench job-run`, `rollout`, `load` and `mesh`: against a live
//! cluster.
//!
//! `job-run` is how long `job run` of N replicas takes until all run.
//!
//! Runs against a live cluster (`drover dev` or any other) through the same
//! API the CLI uses: submit a job of N replicas, poll until all N run, stop
//! and purge it, repeat. A one-replica warm-up first puts the image in the
//! agent's layer cache, so the figures are for a cached image.

use crate::stats::{secs, Samples};
use anyhow::{bail, Result};
use drover_ctl::client::{self, status};
use drover_ctl::cmd::job::new_request_id;
use drover_proto::pb;
use drover_proto::spec::JobSpec;
use std::time::{Duration, Instant};

/// The CLI's client, as every benchmark here uses it.
pub(crate) type Client = pb::drover_client::DroverClient<drover_ctl::client::Backoff>;

pub async fn job_run(addr: &str, replicas: &[u32], trials: usize, image: &str) -> Result<i32> {
    let rows: Vec<Vec<String>> = job_run_report(addr, replicas, trials, image)
        .await?
        .iter()
        .map(|(n, t)| {
            vec![
                n.to_string(),
                t.durations.len().to_string(),
                secs(t.median()),
                secs(t.min()),
                secs(t.max()),
            ]
        })
        .collect();
    println!();
    print!(
        "{}",
        drover_ctl::output::table(&["REPLICAS", "TRIALS", "MEDIAN_S", "MIN_S", "MAX_S"], &rows)
    );
    Ok(0)
}

/// `trials` runs of each replica count: the time from `job run` until all run.
pub async fn job_run_report(
    addr: &str,
    replicas: &[u32],
    trials: usize,
    image: &str,
) -> Result<Vec<(u32, Samples)>> {
    let mut c = client::connect(addr).await?;
    let image = resolve(image)?;
    println!("warming the image cache ({image})");
    one(&mut c, "bench-warmup", 1, &image).await?;
    let mut rows = Vec::new();
    for &n in replicas {
        let mut times = Vec::new();
        for t in 0..trials {
            let (d, _) = one(&mut c, &format!("bench-{n}-{t}"), n, &image).await?;
            println!("  {n} replicas, trial {}: {:.3}s", t + 1, d.as_secs_f64());
            times.push(d);
        }
        rows.push((
            n,
            Samples {
                name: "job run",
                durations: times,
            },
        ));
    }
    Ok(rows)
}

pub(crate) fn resolve(image: &str) -> Result<String> {
    let mut spec = drover_proto::spec::from_json(r#"{"name":"x","image":"oci:/x"}"#)?;
    spec.image = image.to_string();
    spec.resolve_paths(&std::env::current_dir()?);
    Ok(spec.image)
}

/// Submits `n` replicas, returns the time until all run, then stops and purges.
/// Submits `n` replicas; returns the time until all run and, after that,
/// the time from stopping (and purging) the job until it is gone.
async fn one(c: &mut Client, name: &str, n: u32, image: &str) -> Result<(Duration, Duration)> {
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
    let stopping = Instant::now();
    c.stop_job(pb::StopJobRequest {
        name: name.into(),
        request_id: new_request_id(),
        purge: true,
    })
    .await
    .map_err(status)?;
    // Stopped once every replica has ended (the purge may take longer).
    let mut stopped = None;
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
            Ok(j) => {
                let j = j.into_inner();
                if stopped.is_none() && j.allocations.iter().all(|a| a.typed_phase().is_ended()) {
                    stopped = Some(stopping.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(10)).await
            }
        }
    }
    Ok((took, stopped.unwrap_or_else(|| stopping.elapsed())))
}

/// A rolling update's strategy: how many replicas above the count may
/// run (`max_surge`) and how many below it may be (`max_unavailable`).
#[derive(Clone, Copy, Debug)]
pub struct Strategy {
    pub max_surge: u32,
    pub max_unavailable: u32,
}

impl Strategy {
    /// Docker Swarm's defaults: one at a time, the new one started first.
    pub const SWARM: Strategy = Strategy {
        max_surge: 1,
        max_unavailable: 0,
    };
}

/// What a run of `drover bench rollout` measured.
pub struct RolloutReport {
    pub replicas: u32,
    pub strategy: Strategy,
    /// Each rollout, from submitting the new version until it succeeded.
    pub times: Samples,
    /// One replica's start to running (the fastest of five or more).
    pub step: Duration,
    /// One replica's stop until it is gone (the fastest of five or more).
    pub stop: Duration,
}

impl RolloutReport {
    /// How many waves the strategy needs: each replaces up to
    /// `max_surge + max_unavailable` replicas at once.
    pub fn waves(&self) -> u32 {
        let per = (self.strategy.max_surge + self.strategy.max_unavailable).max(1);
        self.replicas.div_ceil(per)
    }

    /// The strategy's lower bound. With a surge, a wave's new replicas start
    /// while the old ones stop: a wave takes one start. Without one, the
    /// old replicas must be gone first: a wave takes a stop and a start.
    pub fn lower_bound(&self) -> Duration {
        let wave = if self.strategy.max_surge > 0 {
            self.step
        } else {
            self.step + self.stop
        };
        wave * self.waves()
    }
}

/// `drover bench rollout`: how long a rolling update of N replicas takes at
/// Docker Swarm's settings (one at a time, start-first, no health gating),
/// against the lower bound of ceil(N / max_surge) sequential steps.
pub async fn rollout(
    addr: &str,
    replicas: u32,
    trials: usize,
    image: &str,
    strategy: Strategy,
) -> Result<i32> {
    let r = rollout_report(addr, replicas, trials, image, strategy).await?;
    let median = r.times.median().as_secs_f64();
    println!();
    print!(
        "{}",
        drover_ctl::output::table(
            &[
                "REPLICAS",
                "SURGE",
                "UNAVAILABLE",
                "WAVES",
                "TRIALS",
                "MEDIAN_S",
                "MIN_S",
                "MAX_S",
                "PER_STEP_MS",
                "LOWER_BOUND_S"
            ],
            &[vec![
                replicas.to_string(),
                strategy.max_surge.to_string(),
                strategy.max_unavailable.to_string(),
                r.waves().to_string(),
                trials.to_string(),
                format!("{median:.3}"),
                secs(r.times.min()),
                secs(r.times.max()),
                format!("{:.0}", median * 1000.0 / r.waves().max(1) as f64),
                secs(r.lower_bound()),
            ]]
        )
    );
    println!(
        "(no health gating; the lower bound is {} waves x {}, measured here: one replica's fastest start \
         to running {:.0} ms, its fastest stop {:.0} ms)",
        r.waves(),
        if strategy.max_surge > 0 {
            "one start (the old stop meanwhile)"
        } else {
            "(one stop, then one start)"
        },
        r.step.as_secs_f64() * 1000.0,
        r.stop.as_secs_f64() * 1000.0
    );
    Ok(0)
}

/// `trials` rolling updates of a job of `replicas`, and one replica's start.
pub async fn rollout_report(
    addr: &str,
    replicas: u32,
    trials: usize,
    image: &str,
    strategy: Strategy,
) -> Result<RolloutReport> {
    let mut c = client::connect(addr).await?;
    let image = resolve(image)?;
    let name = "bench-rollout";
    let spec = |v: usize| {
        format!(
            r#"{{"name":"{name}","replicas":{replicas},"image":"{image}","command":["/bin/sleep","3600"],
                "env":{{"BENCH_VERSION":"{v}"}},"resources":{{"cpu":"10m","memory":"16Mi"}},"stop_grace_period":"1s",
                "update":{{"max_surge":{},"max_unavailable":{},"min_healthy_time":"0s"}}}}"#,
            strategy.max_surge, strategy.max_unavailable
        )
    };
    // The lower bound: each of the `replicas` sequential steps starts one
    // replica and waits until it runs, which alone takes what `job run` of
    // one replica does at its fastest.
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..trials.max(5) {
        let (start, stop) = one(&mut c, "bench-rollout-step", 1, &image).await?;
        starts.push(start);
        stops.push(stop);
    }
    let fastest = |durations| {
        Samples {
            name: "one replica",
            durations,
        }
        .min()
    };
    let (step, stop) = (fastest(starts), fastest(stops));
    let v = submit(&mut c, &drover_proto::spec::from_json(&spec(0))?).await?;
    wait_rollout(&mut c, name, v).await?;
    let mut times = Vec::new();
    for t in 1..=trials {
        let start = Instant::now();
        let v = submit(&mut c, &drover_proto::spec::from_json(&spec(t))?).await?;
        wait_rollout(&mut c, name, v).await?;
        let d = start.elapsed();
        println!(
            "  rollout {t}: {replicas} replicas in {:.3}s",
            d.as_secs_f64()
        );
        times.push(d);
    }
    stop_purge(&mut c, name).await?;
    Ok(RolloutReport {
        replicas,
        strategy,
        stop,
        times: Samples {
            name: "rollout",
            durations: times,
        },
        step,
    })
}

/// Submits a spec, as `drover job run` does; returns its version.
pub(crate) async fn submit(c: &mut Client, spec: &JobSpec) -> Result<u64> {
    Ok(c.submit_job(pb::SubmitJobRequest {
        spec_json: spec.to_json(),
        request_id: new_request_id(),
    })
    .await
    .map_err(status)?
    .into_inner()
    .version)
}

/// Waits until `n` replicas of job `name` run; fails after `timeout`.
pub(crate) async fn wait_running(
    c: &mut Client,
    name: &str,
    n: u32,
    timeout: std::time::Duration,
) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        let j = c
            .get_job(pb::GetJobRequest {
                name: name.into(),
                read: None,
            })
            .await
            .map_err(status)?
            .into_inner();
        if j.running >= n {
            return Ok(());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("{name}: {}/{n} running after {timeout:?}", j.running);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Stops a job and purges it.
pub(crate) async fn stop_purge(c: &mut Client, name: &str) -> Result<()> {
    c.stop_job(pb::StopJobRequest {
        name: name.into(),
        request_id: new_request_id(),
        purge: true,
    })
    .await
    .map_err(status)?;
    Ok(())
}

async fn wait_rollout(c: &mut Client, name: &str, version: u64) -> Result<()> {
    match wait_phase(c, name, version).await? {
        pb::RolloutPhase::Succeeded => Ok(()),
        _ => bail!("{name}: the rollout of version {version} failed"),
    }
}

/// Waits until the rollout of `version` has succeeded or failed; which.
/// A version that failed and was rolled back (a newer version is then
/// current) counts as failed.
async fn wait_phase(c: &mut Client, name: &str, version: u64) -> Result<pb::RolloutPhase> {
    let start = Instant::now();
    loop {
        let j = job_status(c, name).await?;
        if j.versions
            .iter()
            .any(|v| v.version == version && v.outcome_kind() == pb::VersionOutcome::Failed)
        {
            return Ok(pb::RolloutPhase::Failed);
        }
        if j.version > version {
            bail!(
                "{name}: version {} became current while version {version} rolled out",
                j.version
            );
        }
        if let Some(r) = j.rollout.as_ref().filter(|r| r.version == version) {
            if let p @ (pb::RolloutPhase::Succeeded | pb::RolloutPhase::Failed) = r.typed_phase() {
                return Ok(p);
            }
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("{name}: rollout of version {version} not done after 5m");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the demo's traffic saw through its rollouts.
pub struct TrafficReport {
    pub ok: u64,
    pub failed: u64,
    /// The rollout to v2 succeeded and the broken v3 failed (and was rolled back).
    pub as_expected: bool,
}

/// The rolling-update demo, measured: `web` v1 (examples/jobs/web.yaml)
/// published through the mesh, `rate` requests a second through it, a
/// health-gated rollout to v2, then a broken v3 that fails its health
/// checks and is rolled back; every request counted.
pub async fn traffic_report(
    addr: &str,
    jobs: &std::path::Path,
    rate: u32,
) -> Result<TrafficReport> {
    let mut c = client::connect(addr).await?;
    // The specs' `oci:` paths are relative to the repository root, as for
    // the CLI run from there.
    let cwd = std::env::current_dir()?;
    let spec = |file: &str| -> Result<JobSpec> {
        let text = std::fs::read_to_string(jobs.join(file))?;
        Ok(drover_proto::spec::from_yaml_in(&text, Some(&cwd))?)
    };
    let v1 = spec("web.yaml")?;
    let (name, replicas) = (v1.name.clone(), v1.replicas);
    let v = submit(&mut c, &v1).await?;
    wait_rollout(&mut c, &name, v).await?;
    let start = Instant::now();
    loop {
        if job_status(&mut c, &name).await?.running >= replicas {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{name}: v1 not running after 60s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let port = v1
        .expose
        .as_ref()
        .map(|e| e.port)
        .ok_or_else(|| anyhow::anyhow!("web.yaml exposes no port"))?;
    let o = crate::load::Options {
        target: format!("127.0.0.1:{port}"),
        path: "/".into(),
        rate,
        duration: Duration::from_secs(600),
        json: None,
        svg: None,
        title: String::new(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn(async move {
        crate::load::run(&o, async {
            let _ = stopped.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v2 = submit(&mut c, &spec("web-v2.yaml")?).await?;
    let rolled = wait_phase(&mut c, &name, v2).await? == pb::RolloutPhase::Succeeded;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v3 = submit(&mut c, &spec("web-v2-broken.yaml")?).await?;
    let refused = wait_phase(&mut c, &name, v3).await? == pb::RolloutPhase::Failed;
    // The rollback makes the last stable version (v2) current again, with
    // a rollout of its own: wait until that is done.
    let back = job_status(&mut c, &name).await?.version;
    let rolled_back =
        back == v2 && wait_phase(&mut c, &name, back).await? == pb::RolloutPhase::Succeeded;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(());
    let timeline = load.await?;
    stop_purge(&mut c, &name).await?;
    Ok(TrafficReport {
        ok: timeline.iter().map(|s| s.ok).sum(),
        failed: timeline.iter().map(|s| s.failed).sum(),
        as_expected: rolled && refused && rolled_back,
    })
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

/// One side of the mesh benchmark: closed-loop load on one URL.
pub struct PathLoad {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed: u64,
}

/// `drover bench mesh`: the same load straight to one replica and through the
/// routing mesh, closed loop, one after the other; a table of both.
pub async fn mesh(mesh: &str, direct: &str, seconds: u64, concurrency: usize) -> Result<i32> {
    let (d, m) = mesh_report(mesh, direct, seconds, concurrency).await?;
    let row = |name: &str, p: &PathLoad| {
        vec![
            name.to_string(),
            format!("{:.0}", p.requests_per_s),
            format!("{:.2}", p.p50_ms),
            format!("{:.2}", p.p99_ms),
            p.failed.to_string(),
        ]
    };
    print!(
        "{}",
        drover_ctl::output::table(
            &["PATH", "REQ_PER_S", "P50_MS", "P99_MS", "FAILED"],
            &[row("direct", &d), row("mesh", &m)]
        )
    );
    println!(
        "mesh/direct: throughput {:.0}%, p99 +{:.0}%",
        m.requests_per_s / d.requests_per_s * 100.0,
        (m.p99_ms / d.p99_ms - 1.0) * 100.0
    );
    Ok(0)
}

/// Closed-loop load of `concurrency` connections straight to `direct`, then
/// through `mesh`, `seconds` each: (direct, mesh).
pub async fn mesh_report(
    mesh: &str,
    direct: &str,
    seconds: u64,
    concurrency: usize,
) -> Result<(PathLoad, PathLoad)> {
    let mut results = Vec::new();
    for url in [direct, mesh] {
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
        results.push(PathLoad {
            requests_per_s: lat.len() as f64 / start.elapsed().as_secs_f64(),
            p50_ms: crate::load::percentile(&lat, 0.5) as f64 / 1000.0,
            p99_ms: crate::load::percentile(&lat, 0.99) as f64 / 1000.0,
            failed: failed.load(std::sync::atomic::Ordering::Relaxed),
        });
    }
    let m = results.pop().expect("two runs");
    let d = results.pop().expect("two runs");
    Ok((d, m))
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
async fn job_status(c: &mut Client, name: &str) -> Result<pb::JobStatus> {
    Ok(c.get_job(pb::GetJobRequest {
        name: name.into(),
        read: None,
    })
    .await
    .map_err(status)?
    .into_inner())
}
