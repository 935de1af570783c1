//! One module per command group; `run` dispatches.

mod acl;
mod alloc;
mod bench;
mod bench_ha;
mod cluster;
mod config;
mod dev;
mod exec;
mod job;
mod logs;
mod node;
mod rollout;

use crate::cli::{BenchCmd, Cli, Command};
use anyhow::Result;

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    if let Command::Config(c) = cli.command {
        return config::run(c, cli.addr, &cli.credentials);
    }
    let addr = cli
        .addr
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_ADDR.to_string());
    match cli.command {
        Command::Job(c) => job::run(&addr, c).await,
        Command::Alloc(c) => alloc::run(&addr, c).await,
        Command::Node(c) => node::run(&addr, c).await,
        Command::Logs(a) => logs::run(&addr, a).await,
        Command::Exec(a) => exec::run(&addr, a).await,
        Command::Dev(a) => dev::run(a).await,
        Command::Cluster(c) => cluster::run(&addr, c).await,
        Command::Acl(c) => acl::run(&addr, c).await,
        Command::Config(_) => unreachable!("handled above"),
        Command::Bench(BenchCmd::JobRun {
            replicas,
            trials,
            image,
        }) => bench::job_run(&addr, &replicas, trials, &image).await,
        Command::Bench(BenchCmd::Rollout {
            replicas,
            trials,
            image,
        }) => bench::rollout(&addr, replicas, trials, &image).await,
        Command::Bench(BenchCmd::Load {
            url,
            rate,
            duration,
            json,
            svg,
        }) => bench::load_cmd(&url, rate, &duration, json, svg).await,
        Command::Bench(BenchCmd::Mesh {
            mesh,
            direct,
            seconds,
            concurrency,
        }) => bench::mesh(&mesh, &direct, seconds, concurrency).await,
        Command::Bench(BenchCmd::NodeLoss {
            trials,
            replicas,
            image,
        }) => bench::node_loss(trials, replicas, &image).await,
        Command::Bench(BenchCmd::Failover {
            trials,
            election_timeout,
        }) => bench_ha::failover(trials, &election_timeout).await,
        Command::Bench(BenchCmd::Commit {
            proposers,
            seconds,
            security,
        }) => bench_ha::commit(&proposers, seconds, &security).await,
        Command::Bench(BenchCmd::Handshake { connections }) => {
            bench_ha::handshake(connections).await
        }
    }
}
