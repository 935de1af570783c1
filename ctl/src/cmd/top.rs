//! `drover top`: what each running allocation uses now (cpu, memory, OOM
//! kills), asked of the agents running them, and the sums per node beside
//! what each node offers; printed again every interval until Ctrl-C.

use crate::cli::{Format, TopArgs};
use crate::client::{self, status};
use crate::output::{print, table};
use anyhow::Result;
use drover_proto::pb;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// How many agents are asked at once.
const AT_ONCE: usize = 16;

pub async fn run(addr: &str, a: TopArgs) -> Result<i32> {
    let interval = drover_proto::quantity::Duration::parse(&a.interval)
        .map_err(|e| anyhow::anyhow!("--interval: {e}"))?
        .std();
    let clear = std::io::stdout().is_terminal() && a.output == Format::Table && !a.once;
    let mut c = client::connect(addr).await?;
    loop {
        let allocs: Vec<pb::Allocation> = c
            .list_allocations(pb::ListAllocationsRequest {
                job: a.job.clone().unwrap_or_default(),
                read: Some(pb::ReadOptions { stale: true }),
                all: false,
            })
            .await
            .map_err(status)?
            .into_inner()
            .allocations
            .into_iter()
            .filter(|x| x.typed_phase() == pb::AllocationPhase::Running)
            .collect();
        let nodes = c
            .list_nodes(pb::ListNodesRequest {
                read: Some(pb::ReadOptions { stale: true }),
            })
            .await
            .map_err(status)?
            .into_inner()
            .nodes;
        let usages = usage_of(&c, &allocs).await;
        if clear {
            print!("\x1b[H\x1b[2J");
        }
        show(a.output, &allocs, &usages, &nodes);
        if a.once {
            return Ok(0);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Each allocation's usage, `None` where its agent did not answer.
async fn usage_of(
    c: &pb::drover_client::DroverClient<client::Backoff>,
    allocs: &[pb::Allocation],
) -> Vec<Option<pb::Usage>> {
    use futures::StreamExt;
    futures::stream::iter(allocs.iter().cloned())
        .map(|alloc| {
            let mut c = c.clone();
            async move { super::alloc::usage(&mut c, &alloc).await }
        })
        .buffered(AT_ONCE)
        .collect()
        .await
}

fn mib(bytes: u64) -> String {
    format!("{:.1}Mi", bytes as f64 / (1u64 << 20) as f64)
}

fn show(
    format: Format,
    allocs: &[pb::Allocation],
    usages: &[Option<pb::Usage>],
    nodes: &[pb::Node],
) {
    // Per node: (allocations, cpu millis, memory bytes) in use.
    let mut per_node: BTreeMap<&str, (u32, u64, u64)> = BTreeMap::new();
    for (a, u) in allocs.iter().zip(usages) {
        let e = per_node.entry(a.node.as_str()).or_default();
        e.0 += 1;
        if let Some(u) = u {
            e.1 += u.cpu_millis;
            e.2 += u.memory_bytes;
        }
    }
    let v = json!({
        "allocations": allocs.iter().zip(usages).map(|(a, u)| json!({
            "id": a.id, "name": a.name, "job": a.job, "node": a.node,
            "cpu_millis": u.as_ref().map(|u| u.cpu_millis),
            "memory_bytes": u.as_ref().map(|u| u.memory_bytes),
            "memory_limit_bytes": u.as_ref().map(|u| u.memory_limit_bytes),
            "oom_kills": u.as_ref().map(|u| u.oom_kills),
        })).collect::<Vec<_>>(),
        "nodes": nodes.iter().map(|n| {
            let (count, cpu, memory) = per_node.get(n.name.as_str()).copied().unwrap_or_default();
            json!({
                "name": n.name, "allocations": count,
                "cpu_millis": cpu, "cpu_offered_millis": n.cpu_millis,
                "memory_bytes": memory, "memory_offered_bytes": n.memory_bytes,
            })
        }).collect::<Vec<_>>(),
    });
    print(format, &v, || {
        let mut rows: Vec<Vec<String>> = allocs
            .iter()
            .zip(usages)
            .map(|(a, u)| {
                let (cpu, memory, oom) = match u {
                    Some(u) => {
                        let limit = match u.memory_limit_bytes {
                            0 => String::new(),
                            l => format!(" / {}", mib(l)),
                        };
                        (
                            format!("{}m", u.cpu_millis),
                            format!("{}{limit}", mib(u.memory_bytes)),
                            u.oom_kills.to_string(),
                        )
                    }
                    None => ("?".into(), "?".into(), "?".into()),
                };
                vec![
                    a.id.chars().take(8).collect(),
                    a.name.clone(),
                    a.node.clone(),
                    cpu,
                    memory,
                    oom,
                ]
            })
            .collect();
        // The busiest first.
        rows.sort_by_key(|r| {
            std::cmp::Reverse(r[3].trim_end_matches('m').parse::<u64>().unwrap_or(0))
        });
        let node_rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                let (count, cpu, memory) =
                    per_node.get(n.name.as_str()).copied().unwrap_or_default();
                vec![
                    n.name.clone(),
                    count.to_string(),
                    format!("{cpu}m / {}m", n.cpu_millis),
                    format!("{} / {}", mib(memory), mib(n.memory_bytes)),
                ]
            })
            .collect();
        table(&["NODE", "RUNNING", "CPU", "MEMORY"], &node_rows)
            + "\n"
            + &table(&["ID", "NAME", "NODE", "CPU", "MEMORY", "OOM_KILLS"], &rows)
            + "(cpu over the last 250 ms; ? : its agent did not answer)\n"
    });
}
