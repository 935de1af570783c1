//! `drover`: the Drover command line, and `drover dev`.

use clap::Parser;
use drover_ctl::{cli, client, cmd, config};

fn main() {
    // `drover dev` starts each container under a monitor run from its own
    // sealed copy of this binary, as `drover monitor …` (hidden).
    #[cfg(feature = "dev")]
    if let Some(code) = drover_agent::runtime::monitor::main_if_monitor() {
        std::process::exit(code);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(run())
}

async fn run() {
    let mut cli = cli::Cli::parse();
    // The context (if any) fills in what the command line and environment
    // leave out.
    // `drover doctor` needs no cluster; it must work where nothing else does.
    let is_config = matches!(
        cli.command,
        cli::Command::Config(_) | cli::Command::Doctor(_) | cli::Command::Completion { .. }
    );
    let picked = config::Config::load(&config::path()).and_then(|c| {
        if is_config {
            // `drover config` works on the file; the flags are its input.
            return Ok((
                cli.addr.clone().unwrap_or_default(),
                cli.credentials.clone(),
            ));
        }
        let ctx = c.pick(cli.context.as_deref())?.map(|(_, x)| x.clone());
        Ok(config::apply(
            cli.addr.take(),
            &cli.credentials,
            ctx.as_ref(),
        ))
    });
    let (addr, credentials) = match picked {
        Ok(p) => p,
        Err(e) if is_config => {
            // `drover config` must work to repair a broken file.
            eprintln!("warning: {e:#}");
            (config::DEFAULT_ADDR.to_string(), cli.credentials.clone())
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    cli.addr = Some(addr).filter(|a| !a.is_empty());
    cli.credentials = credentials;
    client::set_credentials(&cli.credentials);
    // `drover dev` clones containers (and exec'd commands) from this
    // process: it must run from a sealed in-memory copy of this binary,
    // never from the file on the host (CVE-2019-5736).
    #[cfg(feature = "dev")]
    if matches!(cli.command, cli::Command::Dev(_)) {
        if let Err(e) = drover_agent::runtime::sealed_exe::reexec_sealed() {
            eprintln!("error: run from a sealed copy of drover: {e}");
            std::process::exit(1);
        }
    }
    let code = match cmd::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            drover_ctl::exit::of(&e)
        }
    };
    std::process::exit(code);
}
