//! etcd beside Drover: three members on loopback (plaintext, etcd's
//! defaults), for the writes benchmark (etcd's own load tool, `etcdctl check
//! perf`) and the failover benchmark (the leader killed, the first write
//! that succeeds through another member). Debian: `etcd-server`,
//! `etcd-client`.

use anyhow::{bail, Context, Result};
use drover_e2e::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stats::Samples;

/// Three etcd members on loopback; stopped and removed when dropped.
pub struct Etcd {
    dir: PathBuf,
    client: Vec<u16>,
    peer: Vec<u16>,
    members: Vec<Option<Child>>,
}

/// `etcd --version`'s first line, if etcd is installed.
pub fn version() -> Option<String> {
    crate::figures::first_line("etcd", &["--version"])
}

impl Etcd {
    /// Starts three members and waits until they are a healthy cluster.
    pub async fn start() -> Result<Etcd> {
        let n = 3;
        let mut e = Etcd {
            dir: crate::ha::scratch("etcd")?,
            client: (0..n).map(|_| free_port()).collect(),
            peer: (0..n).map(|_| free_port()).collect(),
            members: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            e.spawn(i, "new")?;
        }
        e.wait_healthy().await?;
        Ok(e)
    }

    fn spawn(&mut self, i: usize, state: &str) -> Result<()> {
        let cluster: Vec<String> = (0..self.peer.len())
            .map(|j| format!("e{j}=http://127.0.0.1:{}", self.peer[j]))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("e{i}.log")))?;
        let client = format!("http://127.0.0.1:{}", self.client[i]);
        let peer = format!("http://127.0.0.1:{}", self.peer[i]);
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("e{i}")))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", state])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start etcd (Debian: apt install etcd-server etcd-client)")?;
        self.members[i] = Some(child);
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoints(&self) -> String {
        let all: Vec<String> = self
            .client
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        all.join(",")
    }

    async fn wait_healthy(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.endpoints(), "endpoint", "health"])
                .output()
                .context("cannot run etcdctl")?;
            if out.status.success() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("etcd did not become healthy within 30s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `etcdctl check perf --load l` against the three members (a minute):
    /// the writes per second etcd's own tool reached.
    pub fn check_perf(&self) -> Result<u64> {
        println!("  etcdctl check perf --load l (one minute)...");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "check", "perf"])
            .args(["--load", "l"])
            .output()
            .context("cannot run etcdctl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        throughput(&text).with_context(|| format!("no throughput in etcdctl's answer: {text}"))
    }

    /// Which member leads, as every member that answers says (through
    /// etcd's JSON gateway, `/v3/maintenance/status`).
    async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for &port in &self.client {
            let status = post(port, "/v3/maintenance/status", "{}").await.ok()?;
            let v: serde_json::Value = serde_json::from_str(&status).ok()?;
            ids.push(v["header"]["member_id"].as_str()?.to_string());
            let l = v["leader"].as_str()?.to_string();
            if leader.get_or_insert_with(|| l.clone()) != &l {
                return None;
            }
        }
        let leader = leader?;
        ids.iter().position(|id| *id == leader)
    }

    /// `trials` times: SIGKILL the leader, then put a key through the other
    /// members until one acknowledges it; the member is restarted before the
    /// next. A member may hold a put for seconds (it was forwarded to the
    /// dead leader), so a new put starts every 20 ms, on the members in
    /// turn, without giving up the earlier ones (each waits up to 5 s): the
    /// figure is when etcd first acknowledged a write, to within 20 ms, not
    /// how long one client's timeout was.
    pub async fn failover(&mut self, trials: usize) -> Result<Samples> {
        let mut times = Vec::new();
        for t in 0..trials {
            let start = Instant::now();
            let leader = loop {
                if let Some(l) = self.leader().await {
                    break l;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("etcd: no agreed leader within 30s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let others: Vec<u16> = (0..self.client.len())
                .filter(|i| *i != leader)
                .map(|i| self.client[i])
                .collect();
            // Base64 of "bench" and of the trial's value.
            let body = format!(
                r#"{{"key":"YmVuY2g=","value":"{}"}}"#,
                base64(format!("trial-{t}").as_bytes())
            );
            self.kill(leader);
            let start = Instant::now();
            let mut puts = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut n = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let (port, body) = (others[n % others.len()], body.clone());
                        n += 1;
                        puts.spawn(async move {
                            let put = post(port, "/v3/kv/put", &body);
                            matches!(
                                tokio::time::timeout(Duration::from_secs(5), put).await,
                                Ok(Ok(answer)) if answer.contains("\"header\"")
                            )
                        });
                    }
                    Some(Ok(true)) = puts.join_next(), if !puts.is_empty() => break,
                }
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("etcd: no write within 30s of killing the leader");
                }
            }
            puts.abort_all();
            let took = start.elapsed();
            println!(
                "  etcd trial {}: killed the leader, first write after {:.3}s",
                t + 1,
                took.as_secs_f64()
            );
            times.push(took);
            self.spawn(leader, "existing")?;
            self.wait_healthy().await?;
        }
        Ok(Samples {
            name: "etcd failover",
            durations: times,
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// POSTs `body` to `path` on 127.0.0.1:`port` (one connection, HTTP/1.1);
/// the answer's body, if the status was 200.
async fn post(port: u16, path: &str, body: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        bail!("{}", text.lines().next().unwrap_or("no answer"));
    }
    Ok(text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Standard base64 with padding (etcd's gateway takes keys and values so).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The writes per second in `etcdctl check perf`'s report: "PASS:
/// Throughput is N writes/s", or "FAIL: Throughput too low: N writes/s"
/// when it fell short of the load's target.
fn throughput(report: &str) -> Option<u64> {
    ["Throughput is ", "Throughput too low: "]
        .iter()
        .find_map(|lead| {
            let at = report.find(lead)? + lead.len();
            report[at..].split_whitespace().next()?.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_throughput_is_read_from_a_pass_or_a_fail() {
        assert_eq!(
            throughput(
                "60 / 60 ...\nPASS: Throughput is 7998 writes/s\nPASS: Slowest request took 0.1s\n"
            ),
            Some(7998)
        );
        assert_eq!(
            throughput("FAIL: Throughput too low: 3615 writes/s\n"),
            Some(3615)
        );
        assert_eq!(throughput("context deadline exceeded"), None);
    }

    #[test]
    fn base64_pads_as_the_standard_says() {
        assert_eq!(base64(b"bench"), "YmVuY2g=");
        assert_eq!(base64(b"trial-1"), "dHJpYWwtMQ==");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }
}
