//! Connecting to the scheduler (the first replica of `--addr` that answers)
//! and to agents (for logs).

use anyhow::{anyhow, Context, Result};
use drover_proto::pb::{
    agent_api_client::AgentApiClient, cluster_client::ClusterClient, drover_client::DroverClient,
};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long a replica may take to answer before the next one is tried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(url(addr))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true)
        .connect()
        .await
}

/// A client of the scheduler's API. Any replica will do: followers pass
/// writes and linearizable reads on to the leader.
pub async fn connect(addrs: &str) -> Result<DroverClient<Channel>> {
    let ch = connect_any(addrs).await?;
    Ok(DroverClient::new(ch).max_decoding_message_size(64 << 20))
}

/// A client of the scheduler replicas' cluster API (`drover cluster`).
pub async fn cluster(addrs: &str) -> Result<ClusterClient<Channel>> {
    Ok(ClusterClient::new(connect_any(addrs).await?))
}

/// A channel to the first replica of the comma-separated `addrs` that answers.
///
/// "Answers" means a call, not a TCP handshake: the kernel of a frozen host
/// (or of a stopped process) still completes handshakes, and a CLI that
/// picked such a replica would hang. With one address there is nothing to
/// choose, so no probe is made.
pub async fn connect_any(addrs: &str) -> Result<Channel> {
    let list: Vec<&str> = addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let mut last = None;
    for addr in &list {
        match channel(addr).await {
            Ok(ch) if list.len() == 1 => return Ok(ch),
            Ok(ch) => {
                let mut probe = tonic::Request::new(drover_proto::pb::LocalStatusRequest {});
                probe.set_timeout(PROBE_TIMEOUT);
                let answer = tokio::time::timeout(
                    PROBE_TIMEOUT,
                    ClusterClient::new(ch.clone()).local_status(probe),
                )
                .await;
                match answer {
                    Ok(Ok(_)) => return Ok(ch),
                    Ok(Err(s)) => last = Some(anyhow!("{addr}: {}", s.message())),
                    Err(_) => last = Some(anyhow!("{addr}: no answer within 1s")),
                }
            }
            Err(e) => last = Some(anyhow!("{addr}: {}", chain(&e))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no scheduler address given"))).context(
        "cannot reach a Drover scheduler (is `drover dev` running? set --addr or DROVER_ADDR)",
    )
}

/// An error with its causes: tonic's "transport error" alone says little.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// A client of one agent's API.
pub async fn agent(addr: &str) -> Result<AgentApiClient<Channel>> {
    let ch = channel(addr)
        .await
        .with_context(|| format!("cannot reach the agent at {addr}"))?;
    Ok(AgentApiClient::new(ch))
}

/// A gRPC status as a user-facing error: its message, not its debug form.
pub fn status(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument => anyhow!("invalid: {}", s.message()),
        tonic::Code::Unavailable if s.message().is_empty() => {
            anyhow!("the scheduler is unavailable")
        }
        _ => anyhow!("{}", s.message()),
    }
}
