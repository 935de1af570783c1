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
mod top;

use crate::cli::{Cli, Command, ReadArgs};
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
    let mut cli = cli;
    if let Some(read) = read_args(&mut cli.command).filter(|r| r.watch) {
        read.watch = false;
        let output = read.output;
        return watch(&addr, cli.command, output).await;
    }
    dispatch(&addr, cli).await
}

/// `--watch`: the command, printed again after every change the event
/// stream tells of (a burst of changes once), and at least every 10 s.
async fn watch(addr: &str, command: Command, output: crate::cli::Format) -> Result<i32> {
    use drover_proto::pb;
    use std::io::{IsTerminal, Write};
    use std::time::Duration;
    let clear = std::io::stdout().is_terminal() && output == crate::cli::Format::Table;
    let mut c = crate::client::connect(addr).await?;
    let follow = pb::EventsRequest {
        follow: true,
        ..Default::default()
    };
    let mut events = None;
    loop {
        if events.is_none() {
            // Without events (an older scheduler), every 10 s.
            events = c.events(follow.clone()).await.ok().map(|r| r.into_inner());
        }
        if clear {
            print!("\x1b[H\x1b[2J");
        }
        let once = Cli {
            addr: Some(addr.to_string()),
            context: None,
            credentials: Default::default(),
            command: command.clone(),
        };
        if let Err(e) = Box::pin(dispatch(addr, once)).await {
            eprintln!("error: {e:#}");
        }
        let _ = std::io::stdout().flush();
        let tick = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(tick);
        let Some(stream) = events.as_mut() else {
            tick.await;
            continue;
        };
        tokio::select! {
            m = stream.message() => {
                if !matches!(m, Ok(Some(_))) {
                    events = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                // What else the same change set off, in one print.
                let settle = tokio::time::sleep(Duration::from_millis(200));
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        m = stream.message() => if !matches!(m, Ok(Some(_))) { events = None; break },
                        _ = &mut settle => break,
                    }
                }
            }
            _ = &mut tick => {}
        }
    }
}

/// The command's read options, for the commands that read.
fn read_args(c: &mut Command) -> Option<&mut ReadArgs> {
    use crate::cli::{AllocCmd, ClusterCmd, JobCmd, NodeCmd, SecretCmd};
    match c {
        Command::Job(JobCmd::Ls { read, .. })
        | Command::Job(JobCmd::Status { read, .. })
        | Command::Job(JobCmd::History { read, .. })
        | Command::Alloc(AllocCmd::Ls { read, .. })
        | Command::Alloc(AllocCmd::Status { read, .. })
        | Command::Node(NodeCmd::Ls { read, .. })
        | Command::Node(NodeCmd::Status { read, .. })
        | Command::Secret(SecretCmd::Ls { read, .. })
        | Command::Configmap(SecretCmd::Ls { read, .. })
        | Command::Cluster(ClusterCmd::Members { read, .. }) => Some(read),
        _ => None,
    }
}

/// The command itself, once.
async fn dispatch(addr: &str, cli: Cli) -> Result<i32> {
    let addr = addr.to_string();
    match cli.command {
        Command::Job(c) => job::run(&addr, c).await,
        Command::Alloc(c) => alloc::run(&addr, c).await,
        Command::Node(c) => node::run(&addr, c).await,
        Command::Secret(c) => secret::run(&addr, "secret", c).await,
        Command::Configmap(c) => secret::run(&addr, "config", c).await,
        Command::Logs(a) => logs::run(&addr, a).await,
        Command::Events(a) => events::run(&addr, a).await,
        Command::Top(a) => top::run(&addr, a).await,
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
