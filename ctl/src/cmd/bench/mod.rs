//! `drover bench job-run`: how long `job run` of N replicas takes until all run.
//!
//! Runs against a live cluster (`drover dev` or any other) through the same
//! API the CLI uses: submit a job of N replicas, poll until all N run, stop
//! and purge it, repeat. A one-replica warm-up first puts the image in the
//! agent's layer cache, so the figures are for a cached image.

mod node_loss;

pub use node_loss::node_loss;

use crate::client::{self, status};
use anyhow::{bail, Result};
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
        crate::output::table(&["REPLICAS", "TRIALS", "MEDIAN_S", "MIN_S", "MAX_S"], &rows)
    );
    Ok(0)
}

fn resolve(image: &str) -> Result<String> {
    let mut spec = drover_proto::spec::from_json(r#"{"name":"x","image":"oci:/x"}"#)?;
    spec.image = image.to_string();
    spec.resolve_paths(&std::env::current_dir()?);
    Ok(spec.image)
}

/// Submits `n` replicas, returns the time until all run, then stops and purges.
async fn one(
    c: &mut pb::drover_client::DroverClient<tonic::transport::Channel>,
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
        request_id: super::job::new_request_id(),
    })
    .await
    .map_err(status)?;
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
        request_id: super::job::new_request_id(),
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
    let submit = |c: &mut pb::drover_client::DroverClient<tonic::transport::Channel>, v: usize| {
        let json = drover_proto::spec::from_json(&spec(v)).map(|s| s.to_json());
        let mut c = c.clone();
        async move {
            let r = c
                .submit_job(pb::SubmitJobRequest {
                    spec_json: json?,
                    request_id: super::job::new_request_id(),
                })
                .await
                .map_err(status)?
                .into_inner();
            Ok::<u64, anyhow::Error>(r.version)
        }
    };
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
        request_id: super::job::new_request_id(),
        purge: true,
    })
    .await
    .map_err(status)?;
    times.sort();
    let median = times[times.len() / 2].as_secs_f64();
    println!();
    print!(
        "{}",
        crate::output::table(
            &[
                "REPLICAS",
                "STEPS",
                "TRIALS",
                "MEDIAN_S",
                "MIN_S",
                "MAX_S",
                "PER_STEP_MS"
            ],
            &[vec![
                replicas.to_string(),
                replicas.to_string(),
                trials.to_string(),
                format!("{median:.3}"),
                format!("{:.3}", times[0].as_secs_f64()),
                format!("{:.3}", times[times.len() - 1].as_secs_f64()),
                format!("{:.0}", median * 1000.0 / replicas.max(1) as f64),
            ]]
        )
    );
    println!("(max_surge 1, max_unavailable 0, min_healthy_time 0s: {replicas} sequential start-then-stop steps)");
    Ok(0)
}

async fn wait_rollout(
    c: &mut pb::drover_client::DroverClient<tonic::transport::Channel>,
    name: &str,
    version: u64,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let j = c
            .get_job(pb::GetJobRequest {
                name: name.into(),
                read: None,
            })
            .await
            .map_err(status)?
            .into_inner();
        if let Some(r) = j.rollout.as_ref().filter(|r| r.version == version) {
            match r.state.as_str() {
                "succeeded" => return Ok(()),
                "failed" => bail!("{name}: rollout failed: {}", r.reason),
                _ => {}
            }
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("{name}: rollout of version {version} not done after 5m");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
