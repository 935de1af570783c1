//! `Exec` on the agent API: a command in a running allocation, its stdio
//! streamed over gRPC.
//!
//! The allocation's init pid comes from its monitor's state file, or (when
//! the agent runs containers as its own children, as `drover dev` does) is
//! the process of its cgroup that is pid 1 of its own pid namespace; it must
//! still be in the cgroup. `runtime::exec` does the joining. Three plain
//! threads move bytes between the process's pipes (or pty) and the stream:
//! stdout, stderr, and stdin; a fourth waits for the exit and sends the exit
//! code once both outputs are drained, so the code is always the last
//! message. A client that goes away closes the command's stdin.

use super::Shared;
use crate::runtime::monitor::{State, STATE_FILE};
use crate::runtime::ExecRequest;
use drover_proto::pb::{self, exec_input::Input, exec_output::Output};
use std::io::{Read, Write};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

pub type ExecStream = ReceiverStream<Result<pb::ExecOutput, Status>>;

fn invalid(m: impl Into<String>) -> Status {
    Status::invalid_argument(m.into())
}

/// Whether `pid` is pid 1 of a pid namespace below ours (`NSpid: <pid> 1`).
fn is_namespace_init(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let ids: Vec<String> = s
                .lines()
                .find(|l| l.starts_with("NSpid:"))?
                .split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect();
            Some(ids.len() > 1 && ids.last().map(String::as_str) == Some("1"))
        })
        .unwrap_or(false)
}

/// Runs the exec `input` starts, once `admit` accepted its allocation id.
pub async fn exec(
    shared: Arc<Shared>,
    mut input: Streaming<pb::ExecInput>,
    admit: impl FnOnce(&str) -> Result<(), Status>,
) -> Result<ExecStream, Status> {
    let first = input
        .message()
        .await?
        .ok_or_else(|| invalid("empty exec request"))?;
    let Some(Input::Start(start)) = first.input else {
        return Err(invalid("the first exec message must be start"));
    };
    let id = start.alloc_id.clone();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid("alloc_id: must be an allocation id"));
    }
    admit(&id)?;
    if start.command.is_empty() || start.command[0].is_empty() {
        return Err(invalid("command: must name a program"));
    }
    let not_running =
        || Status::failed_precondition(format!("allocation {id} is not running on this node"));
    let bundle = shared.bundle_dir(&id);
    let cgroups = shared.runtime.cgroups();
    let procs = cgroups.procs(&id);
    let pid = match State::load(&bundle.join(STATE_FILE)) {
        Ok(state) if state.exit.is_none() => Some(state.container_pid),
        Ok(_) => None,
        Err(_) => procs.iter().copied().find(|p| is_namespace_init(*p)),
    }
    .filter(|p| procs.contains(p))
    .ok_or_else(not_running)?;
    let req = ExecRequest {
        argv: start.command,
        env: start.env,
        tty: start
            .tty
            .map(|t| (t.rows.clamp(1, 1000) as u16, t.cols.clamp(1, 1000) as u16)),
    };
    let tty = req.tty.is_some();
    let runtime = shared.runtime.clone();
    let mut process = tokio::task::spawn_blocking(move || runtime.exec(&bundle, &id, pid, &req))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::failed_precondition(e.to_string()))?;

    let (tx, rx) = mpsc::channel(32);
    let pump = |mut from: std::fs::File, wrap: fn(Vec<u8>) -> Output| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            // EOF, or EIO from a pty master once the terminal's last user is gone.
            while let Ok(n @ 1..) = from.read(&mut buf) {
                let msg = pb::ExecOutput {
                    output: Some(wrap(buf[..n].to_vec())),
                };
                if tx.blocking_send(Ok(msg)).is_err() {
                    break;
                }
            }
        })
    };
    let stdout = pump(process.stdout.try_clone()?, Output::Stdout);
    let stderr = process
        .stderr
        .as_ref()
        .map(|e| e.try_clone().map(|f| pump(f, Output::Stderr)))
        .transpose()?;

    // stdin: from the stream into the process, on a thread of its own.
    let (in_tx, in_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    // The only handle on stdin: dropping it is the command's end of input.
    let mut stdin = process.stdin.take();
    std::thread::spawn(move || {
        while let Ok(data) = in_rx.recv() {
            let Some(f) = stdin.as_mut() else { break };
            if f.write_all(&data).is_err() {
                break;
            }
        }
        drop(stdin.take());
    });
    let process = Arc::new(process);
    let resizer = process.clone();
    tokio::spawn(async move {
        while let Ok(Some(msg)) = input.message().await {
            match msg.input {
                Some(Input::Stdin(data)) => {
                    let sent = in_tx.send(data);
                    if sent.is_err() {
                        break;
                    }
                }
                Some(Input::CloseStdin(true)) if !tty => break,
                Some(Input::Resize(t)) => resizer.resize(t.rows as u16, t.cols as u16),
                _ => {}
            }
        }
        // Dropping the sender ends the stdin thread, which closes stdin.
    });

    std::thread::spawn(move || {
        let status = process.wait_blocking();
        let _ = stdout.join();
        if let Some(e) = stderr {
            let _ = e.join();
        }
        let msg = match status {
            Ok(s) => Ok(pb::ExecOutput {
                output: Some(Output::ExitCode(s.code())),
            }),
            Err(e) => Err(Status::internal(e.to_string())),
        };
        let _ = tx.blocking_send(msg);
    });
    Ok(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::is_namespace_init;

    #[test]
    fn only_the_init_of_a_nested_pid_namespace_counts() {
        // This test runs in the host's pid namespace (or at least not as
        // pid 1 of a nested one), like every agent thread.
        assert!(!is_namespace_init(std::process::id() as i32));
        assert!(!is_namespace_init(i32::MAX));
    }
}
