//! `drover node ls`.

use crate::cli::NodeCmd;
use crate::client::{self, status};
use crate::output::{self, bytes, cpu, table, time};
use anyhow::Result;
use drover_proto::pb;
use serde_json::Value;

pub async fn run(addr: &str, cmd: NodeCmd) -> Result<i32> {
    let NodeCmd::Ls { read } = cmd;
    let mut c = client::connect(addr).await?;
    let r = c
        .list_nodes(pb::ListNodesRequest {
            read: Some(pb::ReadOptions { stale: read.stale }),
        })
        .await
        .map_err(status)?
        .into_inner();
    let v = Value::Array(r.nodes.iter().map(output::node).collect());
    output::print(read.output, &v, || {
        let rows: Vec<Vec<String>> = r
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.status.clone(),
                    n.address.clone(),
                    format!("{}/{}", cpu(n.cpu_allocated_millis), cpu(n.cpu_millis)),
                    format!(
                        "{}/{}",
                        bytes(n.memory_allocated_bytes),
                        bytes(n.memory_bytes)
                    ),
                    n.allocations.to_string(),
                    time(n.registered_at_ms),
                ]
            })
            .collect();
        table(
            &[
                "NAME",
                "STATUS",
                "ADDRESS",
                "CPU",
                "MEMORY",
                "ALLOCS",
                "REGISTERED",
            ],
            &rows,
        ) + &output::stale_note(&r.read)
    });
    Ok(0)
}
