//! `drover logs`: an allocation's output, read from its node's agent.

use crate::cli::LogsArgs;
use crate::client::{self, status};
use anyhow::{bail, Result};
use drover_proto::pb;
use std::io::Write;

pub async fn run(addr: &str, a: LogsArgs) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    // A job name selects all of the job's current allocations; anything else is an id.
    let allocs: Vec<pb::Allocation> = match c
        .list_allocations(pb::ListAllocationsRequest {
            job: a.target.clone(),
            read: None,
            all: false,
        })
        .await
    {
        Ok(r) => r.into_inner().allocations,
        Err(s) if s.code() == tonic::Code::NotFound => {
            let one = c
                .get_allocation(pb::GetAllocationRequest {
                    id: a.target.clone(),
                    read: None,
                })
                .await
                .map_err(|s| {
                    anyhow::anyhow!("no job or allocation {:?}: {}", a.target, s.message())
                })?;
            vec![one.into_inner()]
        }
        Err(s) => return Err(status(s)),
    };
    if allocs.is_empty() {
        bail!("job {:?} has no allocations", a.target);
    }
    let prefix = allocs.len() > 1;
    let mut tasks = Vec::new();
    for alloc in allocs {
        let follow = a.follow;
        let tail = a.tail.unwrap_or(-1);
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            stream(c, alloc, follow, tail, prefix).await
        }));
    }
    let mut code = 0;
    for t in tasks {
        if let Err(e) = t.await? {
            eprintln!("error: {e:#}");
            code = 1;
        }
    }
    Ok(code)
}

async fn stream(
    mut c: pb::drover_client::DroverClient<client::Backoff>,
    alloc: pb::Allocation,
    follow: bool,
    tail: i64,
    prefix: bool,
) -> Result<()> {
    if alloc.node_address.is_empty() {
        bail!("allocation {} is not on a known node", alloc.name);
    }
    let (mut agent, ticket) = client::agent(&mut c, &alloc.id, "logs").await?;
    let mut s = agent
        .logs(ticket.request(pb::LogsRequest {
            alloc_id: alloc.id.clone(),
            follow,
            tail,
        }))
        .await
        .map_err(status)?
        .into_inner();
    let mut pending = Vec::new();
    while let Some(chunk) = s.message().await.map_err(status)? {
        let mut out = std::io::stdout().lock();
        if !prefix {
            out.write_all(&chunk.data)?;
            out.flush()?;
            continue;
        }
        // Several allocations: prefix whole lines with the allocation's name.
        pending.extend_from_slice(&chunk.data);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            write!(out, "{} | ", alloc.name)?;
            out.write_all(&line)?;
        }
        out.flush()?;
    }
    if !pending.is_empty() {
        println!("{} | {}", alloc.name, String::from_utf8_lossy(&pending));
    }
    Ok(())
}
