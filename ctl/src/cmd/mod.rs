//! One module per command group; `run` dispatches.

mod acl;
mod alloc;
mod cluster;
mod config;
#[cfg(feature = "dev")]
mod dev;
pub mod doctor;
mod events;
mod exec;
pub mod job;
mod logs;
mod node;
mod operator;
mod rollout;
mod secret;

use crate::cli::{Cli, Command};
use anyhow::Result;

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    if let Command::Config(c) = cli.command {
        return config::run(c, cli.addr, &cli.credentials);
    }
    if let Command::Doctor(a) = cli.command {
        return doctor::run(a);
    }
    if let Command::Completion { shell } = cli.command {
        crate::cli::completion(shell, &mut std::io::stdout());
        return Ok(0);
    }
    if let Command::Operator(crate::cli::OperatorCmd::Snapshot(
        crate::cli::SnapshotCmd::Inspect { file, output },
    )) = &cli.command
    {
        return operator::inspect(file, *output);
    }
    let addr = cli
        .addr
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_ADDR.to_string());
    match cli.command {
        Command::Job(c) => job::run(&addr, c).await,
        Command::Alloc(c) => alloc::run(&addr, c).await,
        Command::Node(c) => node::run(&addr, c).await,
        Command::Secret(c) => secret::run(&addr, "secret", c).await,
        Command::Configmap(c) => secret::run(&addr, "config", c).await,
        Command::Logs(a) => logs::run(&addr, a).await,
        Command::Events(a) => events::run(&addr, a).await,
        Command::Exec(a) => exec::run(&addr, a).await,
        #[cfg(feature = "dev")]
        Command::Dev(a) => dev::run(a).await,
        Command::Cluster(c) => cluster::run(&addr, c).await,
        Command::Acl(c) => acl::run(&addr, c).await,
        Command::Operator(c) => operator::run(&addr, c).await,
        Command::Config(_) | Command::Doctor(_) | Command::Completion { .. } => {
            unreachable!("handled above")
        }
        Command::Bench { args } => bench(&addr, cli.context.as_deref(), &cli.credentials, &args),
    }
}

/// `drover bench ...`: `drover-bench ...`, from beside this binary or the
/// PATH, given the cluster, context and credentials this command was given.
fn bench(
    addr: &str,
    context: Option<&str>,
    credentials: &crate::cli::CredentialArgs,
    args: &[String],
) -> Result<i32> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("drover-bench")))
        .filter(|p| p.exists());
    let program = beside.unwrap_or_else(|| "drover-bench".into());
    let mut cmd = std::process::Command::new(&program);
    cmd.args(args).env("DROVER_ADDR", addr);
    if let Some(c) = context {
        cmd.env("DROVER_CONTEXT", c);
    }
    let paths = [
        ("DROVER_PKI_DIR", &credentials.pki_dir),
        ("DROVER_CACERT", &credentials.ca_cert),
        ("DROVER_CLIENT_CERT", &credentials.cert),
        ("DROVER_CLIENT_KEY", &credentials.key),
    ];
    for (var, path) in paths {
        if let Some(p) = path {
            cmd.env(var, p);
        }
    }
    if let Some(t) = &credentials.token {
        cmd.env("DROVER_TOKEN", t);
    }
    if credentials.insecure_plaintext {
        cmd.env("DROVER_INSECURE_PLAINTEXT", "true");
    }
    // Exec'd, not waited for: the same process, so signals (Ctrl-C, the
    // SIGINT that ends `bench load`) reach the benchmark itself.
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    anyhow::bail!(
        "cannot run {}: {e} (build it with `cargo build --release -p drover-bench`)",
        program.display()
    )
}
