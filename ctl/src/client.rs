//! Connecting to the scheduler (the first replica of `--addr` that answers)
//! and to agents (for logs).

use anyhow::{anyhow, Context, Result};
use drover_proto::pb::{
    agent_api_client::AgentApiClient, cluster_client::ClusterClient, drover_client::DroverClient,
};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

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
pub async fn connect_any(addrs: &str) -> Result<Channel> {
    let mut last = None;
    for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match channel(addr).await {
            Ok(ch) => return Ok(ch),
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
