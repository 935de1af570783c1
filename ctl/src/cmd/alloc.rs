//! `drover alloc ls|status`.

use crate::cli::AllocCmd;
use crate::client::{self, status};
use crate::output::{self, short, table, time};
use anyhow::Result;
use drover_proto::pb;
use serde_json::Value;

pub async fn run(addr: &str, cmd: AllocCmd) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    match cmd {
        AllocCmd::Ls { job, all, read } => {
            let r = c
                .list_allocations(pb::ListAllocationsRequest {
                    job: job.unwrap_or_default(),
                    read: Some(pb::ReadOptions { stale: read.stale }),
                    all,
                })
                .await
                .map_err(status)?
                .into_inner();
            let v = Value::Array(r.allocations.iter().map(output::allocation).collect());
            output::print(read.output, &v, || {
                let rows: Vec<Vec<String>> = r
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
                            time(a.updated_at_ms),
                            output::reason(a),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "NAME", "NODE", "VERSION", "DESIRED", "STATE", "UPDATED", "REASON",
                    ],
                    &rows,
                ) + &output::stale_note(&r.read)
            });
        }
        AllocCmd::Status { id, read } => {
            let a = c
                .get_allocation(pb::GetAllocationRequest {
                    id,
                    read: Some(pb::ReadOptions { stale: read.stale }),
                })
                .await
                .map_err(status)?
                .into_inner();
            let usage = usage(&mut c, &a).await;
            let mut v = output::allocation(&a);
            if let (Some(u), Some(m)) = (&usage, v.as_object_mut()) {
                m.insert(
                    "usage".into(),
                    serde_json::json!({
                        "cpu_millis": u.cpu_millis,
                        "cpu_total_ns": u.cpu_total_ns,
                        "memory_bytes": u.memory_bytes,
                        "memory_limit_bytes": u.memory_limit_bytes,
                        "oom_kills": u.oom_kills,
                    }),
                );
            }
            output::print(read.output, &v, || {
                let mut s = String::new();
                let mut kv = |k: &str, v: String| s.push_str(&format!("{k:<17} {v}\n"));
                kv("id:", a.id.clone());
                kv("name:", a.name.clone());
                kv(
                    "job:",
                    format!("{} (version {}, replica {})", a.job, a.version, a.replica),
                );
                kv("node:", a.node.clone());
                kv("desired:", a.desired.clone());
                kv("state:", a.state.clone());
                if a.pid != 0 {
                    kv("pid:", a.pid.to_string());
                }
                if let Some(c) = a.exit_code {
                    kv("exit code:", c.to_string());
                }
                if let Some(u) = &usage {
                    kv(
                        "cpu:",
                        format!("{}m (of a core, over {}ms)", u.cpu_millis, u.window_ms),
                    );
                    let limit = if u.memory_limit_bytes > 0 {
                        format!(" of {}", mib(u.memory_limit_bytes))
                    } else {
                        String::new()
                    };
                    kv("memory:", format!("{}{limit}", mib(u.memory_bytes)));
                    if u.oom_kills > 0 {
                        kv("oom kills:", u.oom_kills.to_string());
                    }
                }
                if !a.desired_reason.is_empty() {
                    kv("stopped because:", a.desired_reason.clone());
                }
                if !a.reason.is_empty() || a.restarting_at_ms != 0 {
                    kv("reason:", output::node_reason(&a));
                }
                kv("restarts:", a.restarts.to_string());
                kv("created:", time(a.created_at_ms));
                kv("updated:", time(a.updated_at_ms));
                s
            });
        }
    }
    Ok(0)
}

/// Live usage from the allocation's agent, if it runs and the agent answers.
pub(super) async fn usage(
    c: &mut pb::drover_client::DroverClient<client::Backoff>,
    a: &pb::Allocation,
) -> Option<pb::Usage> {
    if a.typed_phase() != pb::AllocationPhase::Running || a.node_address.is_empty() {
        return None;
    }
    let ask = async {
        let (mut agent, ticket) = client::agent(c, &a.id, "usage").await.ok()?;
        agent
            .usage(ticket.request(pb::UsageRequest {
                alloc_id: a.id.clone(),
            }))
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), ask)
        .await
        .ok()
        .flatten()
}

fn mib(bytes: u64) -> String {
    format!("{:.1}Mi", bytes as f64 / (1u64 << 20) as f64)
}
