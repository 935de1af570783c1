//! Health checks: is an allocation's process doing its job?
//!
//! The spec's `health` block names one probe: `http` (GET a path, expect a
//! status), `tcp` (a connection is accepted) or `exec` (a command in the
//! container exits 0). Probes run every `interval`, each bounded by
//! `timeout`; `failure_threshold` failures in a row make the allocation
//! unhealthy, one success makes it healthy again. A container with a private
//! network is probed from inside its network namespace: the probe runs on a
//! fresh OS thread that joins the namespace (`setns` affects only the calling
//! thread, and a pooled thread must never carry a container's namespace back).
//!
//! An exec probe is a program from the image: it runs through the runtime's
//! own exec path, as confined as the container (see
//! `runtime::Runtime::exec_bounded`), killed at `timeout`, and at most
//! [`EXEC_OUTPUT_MAX`] bytes of its output are kept for the reason.
//!
//! A replica that publishes a port is served through the routing mesh,
//! which connects from the node's network namespace (the agent's own) to the
//! replica's address. Passing its check inside its own namespace says
//! nothing about that path (a lost route, a firewall rule, a bridge taken
//! over), so such a replica is also [`reach`]ed from the agent each
//! interval, once its own check passes; a failure counts towards
//! `failure_threshold` like the check's own. A published replica without a
//! check is reached the same way (every 5 s): once it has answered, three
//! failures in a row make it unhealthy.

use crate::runtime::Runtime;
use drover_proto::spec::{Health, Network};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// The outcome of one probe: Ok, or why it failed.
pub type Probe = Result<(), String>;

/// How much of an exec probe's output a failure reason carries.
pub const EXEC_OUTPUT_MAX: usize = 4096;

/// The container a probe looks at.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host pid of its init process.
    pub pid: i32,
    /// Its id and bundle, for exec probes.
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: Runtime,
}

/// Runs one probe of `check` against `target`.
pub async fn probe(check: &Health, target: &Target, network: Network) -> Probe {
    let timeout = check.timeout.std();
    let pid = target.pid;
    if let Some(exec) = &check.exec {
        return exec_probe(&exec.command, target, timeout).await;
    }
    let check = check.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("drover-probe".into())
        .spawn(move || {
            let r = (|| {
                if network == Network::Private {
                    enter_netns(pid)?;
                }
                if let Some(h) = &check.http {
                    http_probe(h.port as u16, &h.path, h.status, timeout)
                } else if let Some(t) = &check.tcp {
                    connect(t.port as u16, timeout).map(|_| ())
                } else {
                    Err("no probe configured".into())
                }
            })();
            let _ = tx.send(r);
        })
        .map_err(|e| format!("cannot start a probe thread: {e}"))?;
    rx.await.unwrap_or_else(|_| Err("probe thread died".into()))
}

/// Connects to `addr` from the agent's own network namespace: the path the
/// routing mesh takes to a published replica.
pub async fn reach(addr: SocketAddr, timeout: Duration) -> Probe {
    let why = |detail: String| format!("not reachable from the node at {addr}: {detail}");
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(why(io_words(&e))),
        Err(_) => Err(why(format!(
            "no answer within {}",
            drover_proto::quantity::Duration(timeout.as_millis() as u64)
        ))),
    }
}

/// A socket error as words (`connection refused`), without the errno.
fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::HostUnreachable => "host unreachable".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        ErrorKind::TimedOut => "timed out".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

fn enter_netns(pid: i32) -> Probe {
    let path = format!("/proc/{pid}/ns/net");
    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {path}: {e}"))
}

fn connect(port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect to port {port}: {e}"))
}

fn http_probe(port: u16, path: &str, expect: u32, timeout: Duration) -> Probe {
    let mut s = connect(port, timeout)?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    // One write: a server may answer (and close) after the first segment.
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: drover-health\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if head[..n].contains(&b'\n') {
                    break;
                }
            }
            Err(e) => return Err(format!("GET {path}: {e}")),
        }
    }
    let status =
        parse_status(&head[..n]).ok_or_else(|| format!("GET {path}: not an HTTP response"))?;
    if status == expect {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}, expected {expect}"))
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Runs `command` in the container through the runtime's exec path; exit
/// status 0 passes.
async fn exec_probe(command: &[String], target: &Target, timeout: Duration) -> Probe {
    let name = command.first().cloned().unwrap_or_default();
    let (t, argv) = (target.clone(), command.to_vec());
    let run = tokio::task::spawn_blocking(move || {
        t.runtime
            .exec_bounded(&t.bundle, &t.id, t.pid, argv, timeout, EXEC_OUTPUT_MAX)
    })
    .await
    .map_err(|e| format!("exec {name:?}: {e}"))?
    .map_err(|e| format!("exec {name:?}: {e}"))?;
    match run.status {
        None => Err(format!("exec {name:?} timed out after {timeout:?}")),
        Some(s) if s.success() => Ok(()),
        Some(s) => {
            let text = String::from_utf8_lossy(&run.output);
            let text = text.trim();
            Err(format!(
                "exec {name:?} exited with {}{}{}",
                s.code(),
                if text.is_empty() { "" } else { ": " },
                text
            ) + if run.truncated { " …" } else { "" })
        }
    }
}

/// Counts consecutive failures into a verdict.
#[derive(Debug, Default)]
pub struct Verdict {
    failures: u32,
    pub healthy: Option<bool>,
}

impl Verdict {
    /// Records a probe; returns true when the verdict changed.
    pub fn record(&mut self, probe: &Probe, threshold: u32) -> bool {
        let before = self.healthy;
        match probe {
            Ok(()) => {
                self.failures = 0;
                self.healthy = Some(true);
            }
            Err(_) => {
                self.failures += 1;
                if self.failures >= threshold {
                    self.healthy = Some(false);
                }
            }
        }
        before != self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn verdict_needs_threshold_failures() {
        let mut v = Verdict::default();
        assert!(v.record(&Ok(()), 3));
        assert_eq!(v.healthy, Some(true));
        assert!(!v.record(&Err("x".into()), 3));
        assert!(!v.record(&Err("x".into()), 3));
        assert!(v.record(&Err("x".into()), 3));
        assert_eq!(v.healthy, Some(false));
        assert!(v.record(&Ok(()), 3));
    }

    #[tokio::test]
    async fn reach_says_where_from_and_why_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        assert_eq!(reach(open, Duration::from_secs(1)).await, Ok(()));
        drop(listener);
        assert_eq!(
            reach(open, Duration::from_secs(1)).await,
            Err(format!(
                "not reachable from the node at {open}: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn http_and_tcp_probes_on_the_host_network() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (i, s) in listener.incoming().enumerate() {
                let mut s = s.unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 512];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let status = if i == 0 { "200 OK" } else { "503 Nope" };
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let check = |yaml: &str| -> Health {
            let spec = drover_proto::spec::from_yaml(&format!(
                "name: x\nimage: oci:/x\nhealth: {{{yaml}, interval: 1s, timeout: 1s}}\n"
            ))
            .unwrap();
            spec.health.unwrap()
        };
        let target = Target {
            pid: 0,
            id: "none".into(),
            bundle: PathBuf::from("/nonexistent"),
            runtime: Runtime::new(crate::cgroups::manager_for("/nonexistent")),
        };
        let http = check(&format!("http: {{path: /healthz, port: {port}}}"));
        assert_eq!(probe(&http, &target, Network::Host).await, Ok(()));
        let second = probe(&http, &target, Network::Host).await.unwrap_err();
        assert_eq!(second, "GET /healthz answered 503, expected 200");
        let tcp = check(&format!("tcp: {{port: {port}}}"));
        assert_eq!(probe(&tcp, &target, Network::Host).await, Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tcp = check(&format!("tcp: {{port: {closed}}}"));
        assert!(probe(&tcp, &target, Network::Host)
            .await
            .unwrap_err()
            .starts_with(&format!("connect to port {closed}")));
    }
}
