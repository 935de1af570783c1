//! `drover node ls|status|label|cordon|uncordon|drain|rm`.

use crate::cli::NodeCmd;
use crate::client::{self, status};
use crate::output::{self, bytes, cpu, table, time};
use anyhow::Result;
use drover_proto::pb;
use serde_json::Value;

pub async fn run(addr: &str, cmd: NodeCmd) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    let read = match cmd {
        NodeCmd::Ls { read } => read,
        NodeCmd::Status { name, read } => return show(&mut c, &name, read).await,
        NodeCmd::Cordon { name } => return schedulable(&mut c, &name, false, false, true).await,
        NodeCmd::Uncordon { name } => return schedulable(&mut c, &name, true, false, true).await,
        NodeCmd::Drain { name, detach } => {
            return schedulable(&mut c, &name, false, true, detach).await
        }
        NodeCmd::Label { name, labels } => return label(&mut c, &name, &labels).await,
        NodeCmd::Rm { name } => {
            let r = c
                .remove_node(pb::RemoveNodeRequest { name: name.clone() })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "{name}: removed ({} replica(s) placed elsewhere)",
                r.replaced
            );
            return Ok(0);
        }
    };
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
                let status = match (n.draining, n.schedulable) {
                    (true, _) => format!("{},draining", n.status),
                    (false, false) => format!("{},cordoned", n.status),
                    _ => n.status.clone(),
                };
                vec![
                    n.name.clone(),
                    status,
                    n.address.clone(),
                    format!("{}/{}", cpu(n.cpu_allocated_millis), cpu(n.cpu_millis)),
                    format!(
                        "{}/{}",
                        bytes(n.memory_allocated_bytes),
                        bytes(n.memory_bytes)
                    ),
                    n.allocations.to_string(),
                    network(n),
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
                "NETWORK",
                "REGISTERED",
            ],
            &rows,
        ) + &output::stale_note(&r.read)
            + &network_notes(&r.nodes)
    });
    Ok(0)
}

/// `drover node status NAME`.
async fn show(
    c: &mut pb::drover_client::DroverClient<crate::client::Backoff>,
    name: &str,
    read: crate::cli::ReadArgs,
) -> Result<i32> {
    let r = c
        .list_nodes(pb::ListNodesRequest {
            read: Some(pb::ReadOptions { stale: read.stale }),
        })
        .await
        .map_err(status)?
        .into_inner();
    let Some(n) = r.nodes.iter().find(|n| n.name == name) else {
        anyhow::bail!("no node named {name:?} (see `drover node ls`)");
    };
    output::print(read.output, &output::node(n), || {
        let schedulable = match (n.draining, n.schedulable) {
            (true, _) => "no (draining)",
            (false, false) => "no (cordoned)",
            _ => "yes",
        };
        let network = match network(n).as_str() {
            "unavailable" => format!(
                "unavailable: {} (no private-network replicas are placed here)",
                n.network_error
            ),
            other => other.to_string(),
        };
        format!(
            "name:        {}\nstatus:      {}\nschedulable: {schedulable}\naddress:     {}\n\
             cpu:         {}/{}\nmemory:      {}/{}\nallocations: {}\nsubnet:      {}\n\
             disk:        {}\nvolumes:     {}\nnetwork:     {network}\nlabels:      {}\n\
             facts:       {}\nregistered:  {}\n",
            n.name,
            n.status,
            n.address,
            cpu(n.cpu_allocated_millis),
            cpu(n.cpu_millis),
            bytes(n.memory_allocated_bytes),
            bytes(n.memory_bytes),
            n.allocations,
            if n.subnet.is_empty() { "-" } else { &n.subnet },
            match n.disk_bytes {
                0 => "-".to_string(),
                d => format!("{}/{} reserved", bytes(n.disk_allocated_bytes), bytes(d)),
            },
            volumes(n),
            pairs(&n.labels),
            pairs(
                &n.facts
                    .iter()
                    .map(|(k, v)| (format!("node.{k}"), v.clone()))
                    .collect()
            ),
            time(n.registered_at_ms),
        ) + &output::stale_note(&r.read)
    });
    Ok(0)
}

/// `drover node label NAME KEY=VALUE... KEY-...`.
async fn label(
    c: &mut pb::drover_client::DroverClient<crate::client::Backoff>,
    name: &str,
    args: &[String],
) -> Result<i32> {
    let mut req = pb::SetNodeLabelsRequest {
        name: name.into(),
        ..Default::default()
    };
    for arg in args {
        match drover_proto::spec::constraint::parse_label(arg) {
            Ok((k, Some(v))) => {
                req.set.insert(k, v);
            }
            Ok((k, None)) => req.remove.push(k),
            Err(e) => anyhow::bail!("{e}"),
        }
    }
    let r = c.set_node_labels(req).await.map_err(status)?.into_inner();
    println!("{name}: labels {}", pairs(&r.labels));
    Ok(0)
}

/// `zone=eu-1a, disk=ssd`, or `-`.
fn pairs(m: &std::collections::BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The host volumes a node offers: `data, logs (read-only)`, or `-`.
fn volumes(n: &pb::Node) -> String {
    if n.volumes.is_empty() {
        return "-".into();
    }
    n.volumes
        .iter()
        .map(|v| match v.read_only {
            true => format!("{} (read-only)", v.name),
            false => v.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The NETWORK column: the node's container network, `ok` or `unavailable`
/// (why is printed under the table).
fn network(n: &pb::Node) -> String {
    match (n.network_error.is_empty(), n.subnet.is_empty()) {
        (false, _) => "unavailable".into(),
        (true, true) => "-".into(),
        (true, false) => "ok".into(),
    }
}

/// Why each node's container network is unavailable, one line per node.
fn network_notes(nodes: &[pb::Node]) -> String {
    nodes
        .iter()
        .filter(|n| !n.network_error.is_empty())
        .map(|n| {
            format!(
                "{}: container network unavailable (no private-network replicas are placed there): {}\n",
                n.name, n.network_error
            )
        })
        .collect()
}

async fn schedulable(
    c: &mut pb::drover_client::DroverClient<crate::client::Backoff>,
    name: &str,
    schedulable: bool,
    drain: bool,
    detach: bool,
) -> Result<i32> {
    let r = c
        .set_node_schedulable(pb::SetNodeSchedulableRequest {
            name: name.into(),
            schedulable,
            drain,
        })
        .await
        .map_err(status)?
        .into_inner();
    let what = match (schedulable, drain) {
        (true, _) => "uncordoned: new allocations may be placed here",
        (false, false) => "cordoned: no new allocations will be placed here",
        (false, true) => "draining",
    };
    println!("{name}: {what} ({} allocation(s) on it)", r.allocations);
    if !drain || detach {
        return Ok(0);
    }
    let start = std::time::Instant::now();
    let mut last = r.allocations;
    loop {
        let nodes = c
            .list_nodes(pb::ListNodesRequest { read: None })
            .await
            .map_err(status)?
            .into_inner()
            .nodes;
        let Some(n) = nodes.iter().find(|n| n.name == name) else {
            anyhow::bail!("node {name} disappeared");
        };
        if n.allocations != last {
            println!("{name}: {} allocation(s) left", n.allocations);
            last = n.allocations;
        }
        if n.allocations == 0 {
            println!(
                "{name}: drained in {:.1}s; it is empty",
                start.elapsed().as_secs_f64()
            );
            return Ok(0);
        }
        if !n.draining {
            anyhow::bail!(
                "{name}: the drain was cancelled ({} allocation(s) left)",
                n.allocations
            );
        }
        if start.elapsed() > std::time::Duration::from_secs(600) {
            anyhow::bail!(
                "{name}: {} allocation(s) left after 10m (see `drover job status` for what blocks them)",
                n.allocations
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
