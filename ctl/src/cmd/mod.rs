//! One module per command group; `run` dispatches.

mod alloc;
mod bench;
mod dev;
mod exec;
mod job;
mod logs;
mod node;

use crate::cli::{BenchCmd, Cli, Command};
use anyhow::Result;

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Job(c) => job::run(&cli.addr, c).await,
        Command::Alloc(c) => alloc::run(&cli.addr, c).await,
        Command::Node(c) => node::run(&cli.addr, c).await,
        Command::Logs(a) => logs::run(&cli.addr, a).await,
        Command::Exec(a) => exec::run(&cli.addr, a).await,
        Command::Dev(a) => dev::run(a).await,
        Command::Bench(BenchCmd::JobRun {
            replicas,
            trials,
            image,
        }) => bench::job_run(&cli.addr, &replicas, trials, &image).await,
    }
}
