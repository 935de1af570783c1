//! `drover`: the Drover command line, and `drover dev`.

mod backoff;
mod cli;
mod client;
mod cmd;
mod output;

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = cli::Cli::parse();
    client::set_credentials(&cli.credentials);
    // `drover dev` clones containers (and exec'd commands) from this
    // process: it must run from a sealed in-memory copy of this binary,
    // never from the file on the host (CVE-2019-5736).
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
            1
        }
    };
    std::process::exit(code);
}
