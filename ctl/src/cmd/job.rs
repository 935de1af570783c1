//! `drover job run|ls|status|stop`.

use super::rollout::Action;
use crate::cli::JobCmd;
use crate::client::{self, status};
use crate::output::{self, short, table, time};
use anyhow::{bail, Context, Result};
use drover_proto::pb;
use serde_json::Value;
use std::io::Read;
use std::time::{Duration, Instant};

const FIVE_MIN: Duration = Duration::from_secs(300);

pub async fn run(addr: &str, cmd: JobCmd) -> Result<i32> {
    match cmd {
        JobCmd::Run {
            file,
            detach,
            timeout,
        } => submit(addr, &file, detach, &timeout).await,
        JobCmd::Ls { read } => {
            let mut c = client::connect(addr).await?;
            let r = c
                .list_jobs(pb::ListJobsRequest {
                    read: Some(pb::ReadOptions { stale: read.stale }),
                })
                .await
                .map_err(status)?
                .into_inner();
            let v = Value::Array(r.jobs.iter().map(output::job_summary).collect());
            output::print(read.output, &v, || {
                let rows: Vec<Vec<String>> = r
                    .jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.name.clone(),
                            j.version.to_string(),
                            match &j.batch {
                                // A batch job's progress is its completions.
                                Some(b) => format!("{}/{} done", b.succeeded, b.completions),
                                None => format!("{}/{}", j.running, j.desired),
                            },
                            j.status.clone(),
                            j.image.clone(),
                            time(j.submitted_at_ms),
                        ]
                    })
                    .collect();
                table(
                    &["NAME", "VERSION", "RUNNING", "STATUS", "IMAGE", "SUBMITTED"],
                    &rows,
                ) + &output::stale_note(&r.read)
            });
            Ok(0)
        }
        JobCmd::Status { name, read } => {
            let mut c = client::connect(addr).await?;
            let j = c
                .get_job(pb::GetJobRequest {
                    name,
                    read: Some(pb::ReadOptions { stale: read.stale }),
                })
                .await
                .map_err(status)?
                .into_inner();
            output::print(read.output, &output::job(&j), || status_table(&j));
            Ok(0)
        }
        JobCmd::History { name, read } => super::rollout::history(addr, &name, read).await,
        JobCmd::Scale { name, replicas } => {
            super::rollout::act(addr, &name, Action::Scale(replicas), true, Duration::ZERO).await
        }
        JobCmd::Promote { name, detach } => {
            super::rollout::act(addr, &name, Action::Promote, detach, FIVE_MIN).await
        }
        JobCmd::Pause { name } => {
            super::rollout::act(addr, &name, Action::Pause, true, Duration::ZERO).await
        }
        JobCmd::Resume { name, detach } => {
            super::rollout::act(addr, &name, Action::Resume, detach, FIVE_MIN).await
        }
        JobCmd::Restart { name, detach } => {
            super::rollout::act(addr, &name, Action::Restart, detach, FIVE_MIN).await
        }
        JobCmd::Launch {
            name,
            detach,
            timeout,
        } => {
            let timeout = parse_timeout(&timeout)?;
            let mut c = client::connect(addr).await?;
            let r = c
                .launch_job(pb::JobActionRequest {
                    name: name.clone(),
                    request_id: new_request_id(),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("{name}: {}", r.note);
            if detach {
                return Ok(0);
            }
            wait_batch(&mut c, &name, r.version, timeout).await
        }
        JobCmd::Rollback { name, to, detach } => {
            super::rollout::act(addr, &name, Action::Rollback(to), detach, FIVE_MIN).await
        }
        JobCmd::Stop {
            name,
            purge,
            detach,
        } => {
            let mut c = client::connect(addr).await?;
            let r = c
                .stop_job(pb::StopJobRequest {
                    name: name.clone(),
                    request_id: new_request_id(),
                    purge,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("{name}: stopping {} allocation(s)", r.stopping);
            if detach {
                return Ok(0);
            }
            wait_stopped(&mut c, &name).await?;
            println!("{name}: stopped");
            Ok(0)
        }
    }
}

/// Says so when replicas needed SIGKILL to stop: their command outlasts the
/// stop grace after SIGTERM (a shell as PID 1 ignores it), so every stop and
/// every rollout step waits the grace out.
fn sigkill_warning(allocations: &[pb::Allocation]) -> Option<String> {
    let mut names: Vec<&str> = allocations
        .iter()
        .filter(|a| a.killed_at_grace)
        .map(|a| a.name.as_str())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return None;
    }
    Some(format!(
        "{} needed SIGKILL to stop: the command ignores SIGTERM; set `init: true` \
         (a shell as PID 1 ignores it) or make it exit on TERM",
        names.join(", ")
    ))
}

/// A spec's placement rules in one line, or `None` when it has none.
fn placement_rules(spec_json: &str) -> Option<String> {
    drover_proto::spec::from_json(spec_json)
        .ok()?
        .placement_summary()
}

fn status_table(j: &pb::JobStatus) -> String {
    let mut s = String::new();
    s.push_str(&format!("name:      {}\n", j.name));
    s.push_str(&format!("version:   {}\n", j.version));
    s.push_str(&format!("status:    {}\n", j.status));
    if !j.r#type.is_empty() && j.r#type != "service" {
        s.push_str(&format!("type:      {}\n", j.r#type));
    }
    s.push_str(&format!(
        "replicas:  {} running / {} desired{}\n",
        j.running,
        j.desired,
        if j.r#type == "system" {
            " (one on every eligible node)"
        } else {
            ""
        }
    ));
    if let Some(b) = j.batch.as_ref().filter(|b| !b.schedule.is_empty()) {
        s.push_str(&format!("schedule:  {}\n", b.schedule));
        s.push_str(&format!(
            "runs:      {} started, {} skipped (the previous run still going){}\n",
            b.runs,
            b.skipped,
            if b.next_run_ms > 0 {
                format!("; next at {}", time(b.next_run_ms))
            } else {
                String::new()
            }
        ));
    }
    if let Some(b) = &j.batch {
        s.push_str(&format!("batch:     {}\n", batch_line(b)));
        if !b.outcome.is_empty() {
            s.push_str(&format!(
                "ended:     {} at {}: {}\n",
                b.outcome,
                time(b.ended_at_ms),
                b.reason
            ));
        }
    }
    if let Some(rules) = placement_rules(&j.spec_json) {
        s.push_str(&format!("placement: {rules}\n"));
    }
    if !j.pending_reason.is_empty() {
        s.push_str(&format!("pending:   {}\n", j.pending_reason));
    }
    if let Some(w) = sigkill_warning(&j.allocations) {
        s.push_str(&format!("warning:   {w}\n"));
    }
    s.push_str(&format!("submitted: {}\n", time(j.submitted_at_ms)));
    if let Some(r) = &j.rollout {
        s.push_str(&format!(
            "rollout:   {} of version {}: {} ({}/{} updated, {}/{} healthy, {} old)\n",
            r.kind, r.version, r.state, r.updated, r.desired, r.healthy, r.desired, r.old
        ));
        if !r.reason.is_empty() {
            s.push_str(&format!("           {}\n", r.reason));
        }
    }
    s.push('\n');
    let rows: Vec<Vec<String>> = j
        .allocations
        .iter()
        .map(|a| {
            vec![
                short(&a.id),
                a.name.clone(),
                a.node.clone(),
                a.version.to_string(),
                a.desired.clone(),
                a.state.clone(),
                if a.health.is_empty() {
                    "-".into()
                } else {
                    a.health.clone()
                },
                a.restarts.to_string(),
                time(a.updated_at_ms),
                output::reason(a),
            ]
        })
        .collect();
    s + &table(
        &[
            "ID", "NAME", "NODE", "VERSION", "DESIRED", "STATE", "HEALTH", "RESTARTS", "UPDATED",
            "REASON",
        ],
        &rows,
    ) + &output::stale_note(&j.read)
}

pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn read_spec(file: &std::path::Path) -> Result<String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(s);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// A `--timeout` value.
fn parse_timeout(text: &str) -> Result<Duration> {
    Ok(drover_proto::quantity::Duration::parse(text)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?
        .std())
}

async fn submit(addr: &str, file: &std::path::Path, detach: bool, timeout: &str) -> Result<i32> {
    let timeout = parse_timeout(timeout)?;
    let text = read_spec(file)?;
    let cwd = std::env::current_dir()?;
    let spec =
        drover_proto::spec::from_yaml_in(&text, Some(&cwd)).map_err(|e| spec_error(file, e))?;
    let mut c = client::connect(addr).await?;
    let r = c
        .submit_job(pb::SubmitJobRequest {
            spec_json: spec.to_json(),
            request_id: new_request_id(),
        })
        .await
        .map_err(status)?
        .into_inner();
    println!("{}: {}", r.name, r.note);
    if detach {
        return Ok(0);
    }
    if !r.changed {
        return Ok(0);
    }
    if let Some(schedule) = &spec.schedule {
        // A periodic job runs at its firings, not now.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if let Some(next) = schedule.next_after(now) {
            println!("{}: next run at {}", r.name, time(next));
        }
        return Ok(0);
    }
    if spec.job_type == drover_proto::spec::JobType::Batch {
        return wait_batch(&mut c, &r.name, r.version, timeout).await;
    }
    // Nothing to replace and no check to pass: all replicas running is the end.
    let first = (r.version == 1 || r.note.starts_with("started again")) && spec.health.is_none();
    if r.note.starts_with("scaled") {
        return Ok(0);
    }
    super::rollout::wait(&mut c, &r.name, r.version, timeout, first).await
}

fn spec_error(file: &std::path::Path, e: drover_proto::spec::SpecError) -> anyhow::Error {
    let mut msg = format!("{} is not a valid job spec:", file.display());
    for f in &e.errors {
        msg.push_str(&format!("\n  {f}"));
    }
    anyhow::anyhow!(msg)
}

/// A batch job's progress in words.
fn batch_line(b: &pb::BatchProgress) -> String {
    format!(
        "{}/{} succeeded, {} failed (retries {}), {} running, {} at a time",
        b.succeeded, b.completions, b.failed, b.retries, b.running, b.parallelism
    )
}

/// Follows a batch job's run of `version` to its end: 0 when every
/// completion succeeded, 1 when it failed.
async fn wait_batch(
    c: &mut pb::drover_client::DroverClient<crate::client::Backoff>,
    name: &str,
    version: u64,
    timeout: Duration,
) -> Result<i32> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let j = super::rollout::job_through_elections(c, name, start, timeout).await?;
        if j.version != version {
            println!(
                "{name}: version {} became current meanwhile; stopped waiting",
                j.version
            );
            return Ok(0);
        }
        let Some(b) = j.batch else {
            bail!("{name}: version {version} is not a batch job");
        };
        let mut line = format!("{name}: {}", batch_line(&b));
        if !j.pending_reason.is_empty() {
            line.push_str(&format!(" ({})", j.pending_reason));
        }
        if line != last {
            println!("{line}");
            last = line;
        }
        match b.outcome.as_str() {
            "complete" => {
                println!("{name}: complete: {}", b.reason);
                return Ok(0);
            }
            "failed" => {
                eprintln!("{name}: failed: {}", b.reason);
                return Ok(crate::exit::ROLLOUT_FAILED);
            }
            _ => {}
        }
        if j.status == "stopped" || j.status == "stopping" {
            eprintln!("{name}: stopped before it completed");
            return Ok(1);
        }
        if start.elapsed() > timeout {
            eprintln!(
                "{name}: not complete after {}s (it goes on: `drover job status {name}`)",
                timeout.as_secs()
            );
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_stopped(
    c: &mut pb::drover_client::DroverClient<crate::client::Backoff>,
    name: &str,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let j = match c
            .get_job(pb::GetJobRequest {
                name: name.into(),
                read: None,
            })
            .await
        {
            Ok(j) => j.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
            Err(s) => return Err(status(s)),
        };
        if j.status == "stopped" {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("{name}: still stopping after 10m");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_that_needed_sigkill_are_named_once_with_what_to_do() {
        let alloc = |name: &str, killed: bool| pb::Allocation {
            name: name.into(),
            killed_at_grace: killed,
            ..Default::default()
        };
        assert_eq!(sigkill_warning(&[alloc("web-0", false)]), None);
        let w = sigkill_warning(&[
            alloc("web-1", true),
            alloc("web-0", true),
            alloc("web-1", true),
            alloc("web-2", false),
        ])
        .unwrap();
        assert!(w.starts_with("web-0, web-1 needed SIGKILL to stop"), "{w}");
        assert!(w.contains("init: true"), "{w}");
    }
}
