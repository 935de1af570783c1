//! `drover job scale|history|promote|pause|resume|restart|rollback`, and the
//! live rollout progress `job run` and friends show while they wait.

use crate::cli::ReadArgs;
use crate::client::{self, status};
use crate::output::{self, table, time};
use anyhow::{bail, Result};
use drover_proto::pb;
use pb::drover_client::DroverClient;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What the user asked of a job's rollout.
pub enum Action {
    Scale(u32),
    Promote,
    Pause,
    Resume,
    Restart,
    Rollback(Option<u64>),
}

pub async fn act(
    addr: &str,
    name: &str,
    action: Action,
    detach: bool,
    timeout: Duration,
) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    let rid = super::job::new_request_id();
    let r = match action {
        Action::Scale(replicas) => {
            c.scale_job(pb::ScaleJobRequest {
                name: name.into(),
                replicas,
                request_id: rid,
            })
            .await
        }
        Action::Promote => {
            c.promote_job(pb::JobActionRequest {
                name: name.into(),
                request_id: rid,
            })
            .await
        }
        Action::Pause | Action::Resume => {
            c.pause_job(pb::PauseJobRequest {
                name: name.into(),
                paused: matches!(action, Action::Pause),
                request_id: rid,
            })
            .await
        }
        Action::Restart => {
            c.restart_job(pb::JobActionRequest {
                name: name.into(),
                request_id: rid,
            })
            .await
        }
        Action::Rollback(to) => {
            c.rollback_job(pb::RollbackJobRequest {
                name: name.into(),
                to,
                request_id: rid,
            })
            .await
        }
    };
    let r = r.map_err(status)?.into_inner();
    println!("{name}: {}", r.note);
    let waits = matches!(
        action,
        Action::Promote | Action::Resume | Action::Restart | Action::Rollback(_)
    );
    if detach || !waits {
        return Ok(0);
    }
    wait(&mut c, name, r.version, timeout, false).await
}

/// Follows the rollout of `version` until it ends; the exit code says how.
/// `first`: nothing to replace, so all replicas running is enough.
/// The job's status, asked again through a leader election or a restart
/// (what it is doing goes on meanwhile) until `timeout` from `start`.
pub async fn job_through_elections(
    c: &mut DroverClient<crate::client::Backoff>,
    name: &str,
    start: Instant,
    timeout: Duration,
) -> Result<pb::JobStatus> {
    loop {
        match c
            .get_job(pb::GetJobRequest {
                name: name.into(),
                read: None,
            })
            .await
        {
            Ok(j) => return Ok(j.into_inner()),
            Err(s) if s.code() == tonic::Code::Unavailable && start.elapsed() < timeout => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => return Err(status(s)),
        }
    }
}

pub async fn wait(
    c: &mut DroverClient<crate::client::Backoff>,
    name: &str,
    version: u64,
    timeout: Duration,
    first: bool,
) -> Result<i32> {
    let start = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    let end_line = |tty: bool| {
        if tty {
            println!();
        }
    };
    loop {
        let j = job_through_elections(c, name, start, timeout).await?;
        let (outcome, failed) = j
            .versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| {
                (
                    v.outcome.clone(),
                    v.outcome_kind() == pb::VersionOutcome::Failed,
                )
            })
            .unwrap_or_default();
        if j.version != version {
            end_line(tty && !last.is_empty());
            if failed {
                eprintln!("{name}: version {version} {outcome}");
                Box::pin(wait(c, name, j.version, timeout, false)).await?;
                eprintln!("{name}: rollout of version {version} failed");
                return Ok(crate::exit::ROLLOUT_FAILED);
            }
            println!(
                "{name}: version {} became current meanwhile ({outcome}); stopped waiting",
                j.version
            );
            return Ok(0);
        }
        let r = j.rollout.clone().unwrap_or_default();
        let line = progress(&j, &r, tty);
        if line != last {
            if tty {
                print!("\r\x1b[2K{line}");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
            last = line;
        }
        match r.typed_phase() {
            pb::RolloutPhase::Succeeded => {
                end_line(tty);
                println!(
                    "{name}: {} ({:.2}s)",
                    r.reason,
                    start.elapsed().as_secs_f64()
                );
                return Ok(0);
            }
            pb::RolloutPhase::Failed => {
                end_line(tty);
                eprintln!("{name}: rollout of version {version} failed: {}", r.reason);
                return Ok(crate::exit::ROLLOUT_FAILED);
            }
            pb::RolloutPhase::WaitingPromotion => {
                end_line(tty);
                println!("{name}: {}", r.reason);
                return Ok(0);
            }
            pb::RolloutPhase::Paused => {
                end_line(tty);
                println!("{name}: rollout paused; `drover job resume {name}` continues it");
                return Ok(0);
            }
            _ => {}
        }
        if first && j.running >= j.desired {
            end_line(tty);
            println!(
                "{name}: all {} replica(s) of version {version} running ({:.2}s)",
                j.desired,
                start.elapsed().as_secs_f64()
            );
            return Ok(0);
        }
        // A replica that ended for good will never run: say so and stop waiting.
        // (In an update the rollout itself fails, and may roll back: let it say so.)
        let dead = j.allocations.iter().filter(|_| first).find(|a| {
            a.typed_desired() == pb::Desired::Run
                && a.version == version
                && a.typed_phase().is_ended()
                && a.restarting_at_ms == 0
        });
        if let Some(a) = dead {
            end_line(tty);
            bail!("{name}: replica {} ended: {}", a.name, a.reason);
        }
        if start.elapsed() > timeout {
            end_line(tty);
            bail!("{name}: rollout of version {version} not done after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One progress line: a bar on a terminal, plain words otherwise.
fn progress(j: &pb::JobStatus, r: &pb::Rollout, tty: bool) -> String {
    let n = r.desired.max(1);
    let mut s = String::new();
    if tty {
        let width = 20;
        let done = (r.healthy.min(n) * width / n) as usize;
        s.push_str(&format!(
            "[{}{}] ",
            "#".repeat(done),
            "-".repeat(width as usize - done)
        ));
    }
    s.push_str(&format!(
        "{}: version {} {}: {}/{} updated, {}/{} healthy, {} old remaining, {}/{} running",
        j.name,
        r.version,
        r.kind,
        r.updated,
        r.desired,
        r.healthy,
        r.desired,
        r.old,
        j.running,
        j.desired
    ));
    if !j.pending_reason.is_empty() {
        s.push_str(&format!(" — pending: {}", j.pending_reason));
    }
    if let Some(a) = j.allocations.iter().find(|a| {
        a.typed_desired() == pb::Desired::Run
            && a.version == r.version
            && (a.typed_phase() == pb::AllocationPhase::Failed
                || a.typed_health() == pb::Health::Unhealthy)
    }) {
        s.push_str(&format!(" — {}: {}", a.name, crate::output::node_reason(a)));
    }
    s
}

pub async fn history(addr: &str, name: &str, read: ReadArgs) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    let j = c
        .get_job(pb::GetJobRequest {
            name: name.into(),
            read: Some(pb::ReadOptions { stale: read.stale }),
        })
        .await
        .map_err(status)?
        .into_inner();
    let v = json!(j
        .versions
        .iter()
        .map(|v| json!({
            "version": v.version,
            "current": v.version == j.version,
            "submitted_at_ms": v.submitted_at_ms,
            "image": v.image,
            "changes": v.changes,
            "outcome": v.outcome,
        }))
        .collect::<Vec<_>>());
    output::print(read.output, &v, || {
        let rows: Vec<Vec<String>> = j
            .versions
            .iter()
            .rev()
            .map(|v| {
                let mark = if v.version == j.version { "*" } else { "" };
                let outcome = if v.version == j.version && v.outcome.is_empty() {
                    j.rollout
                        .as_ref()
                        .map(|r| r.state.clone())
                        .unwrap_or_default()
                } else {
                    v.outcome.clone()
                };
                vec![
                    format!("{}{mark}", v.version),
                    time(v.submitted_at_ms),
                    v.changes.join("; "),
                    outcome,
                ]
            })
            .collect();
        table(&["VERSION", "SUBMITTED", "CHANGES", "OUTCOME"], &rows) + "(* current)\n"
    });
    Ok(0)
}
