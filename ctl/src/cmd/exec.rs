//! `drover exec ALLOC -- CMD…`: a command inside a running allocation, its
//! stdin, stdout and stderr streamed through the allocation's agent; a
//! terminal when ours is one; the command's exit code becomes ours.

use crate::cli::ExecArgs;
use crate::client::{self, status};
use crate::terminal;
use anyhow::{bail, Result};
use drover_proto::pb::{self, exec_input::Input, exec_output::Output};
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub async fn run(addr: &str, a: ExecArgs) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    let alloc = c
        .get_allocation(pb::GetAllocationRequest {
            id: a.alloc.clone(),
            read: None,
        })
        .await
        .map_err(status)?
        .into_inner();
    if alloc.typed_phase() != pb::AllocationPhase::Running || alloc.node_address.is_empty() {
        bail!("allocation {} is {}, not running", alloc.name, alloc.state);
    }
    let tty =
        a.tty || (!a.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal());
    let size = terminal::size(std::io::stdin().as_fd()).unwrap_or((24, 80));
    let (mut agent, ticket) = client::agent(&mut c, &alloc.id, "exec").await?;
    let (tx, rx) = mpsc::channel(16);
    let input = |i: Input| pb::ExecInput { input: Some(i) };
    tx.send(input(Input::Start(pb::ExecStart {
        alloc_id: alloc.id.clone(),
        command: a.command.clone(),
        env: a.env.clone(),
        tty: tty.then_some(pb::TerminalSize {
            rows: size.0 as u32,
            cols: size.1 as u32,
        }),
    })))
    .await?;
    let mut output = agent
        .exec(ticket.request(ReceiverStream::new(rx)))
        .await
        .map_err(status)?
        .into_inner();

    let _raw = if tty {
        Some(terminal::RawMode::enter(std::io::stdin())?)
    } else {
        None
    };
    // stdin on a plain thread: a blocking read may outlive the command.
    let stdin_tx = tx.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdin_tx
                        .blocking_send(input(Input::Stdin(buf[..n].to_vec())))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = stdin_tx.blocking_send(input(Input::CloseStdin(true)));
    });
    if tty {
        let resize_tx = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut winch) = signal(SignalKind::window_change()) else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = terminal::size(std::io::stdin().as_fd()) {
                    let size = pb::TerminalSize {
                        rows: rows as u32,
                        cols: cols as u32,
                    };
                    if resize_tx.send(input(Input::Resize(size))).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut code = None;
    while let Some(msg) = output.message().await.map_err(status)? {
        match msg.output {
            Some(Output::Stdout(d)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&d)?;
                out.flush()?;
            }
            Some(Output::Stderr(d)) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&d)?;
                err.flush()?;
            }
            Some(Output::ExitCode(c)) => code = Some(c),
            None => {}
        }
    }
    match code {
        Some(c) => Ok(c),
        None => bail!("the agent ended the exec without an exit code"),
    }
}
