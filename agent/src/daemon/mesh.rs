//! The routing mesh: every node accepts connections on each published port
//! and balances them across the job's healthy, non-draining replicas,
//! wherever in the cluster they run (Docker Swarm's routing mesh is the
//! model).
//!
//! The scheduler sends the endpoints of every service with each desired set,
//! so an endpoint change reaches every agent as soon as it is committed. A
//! replica the scheduler decides to stop leaves the set at that moment; the
//! agent running it waits a moment before signalling it (see `allocation`),
//! so no node sends it new connections while it finishes the open ones.
//! Connections are balanced round-robin at connect time; a replica that
//! refuses the connection is skipped and the next one tried.

use drover_proto::pb;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// The published ports this node serves.
pub struct Mesh {
    bind: IpAddr,
    services: HashMap<u16, Listener>,
    stats: super::metrics::AgentStats,
}

struct Listener {
    endpoints: watch::Sender<Vec<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Mesh {
    pub fn new(bind: IpAddr, stats: super::metrics::AgentStats) -> Mesh {
        Mesh {
            bind,
            services: HashMap::new(),
            stats,
        }
    }

    /// Serves exactly `services`: opens new ports, closes dropped ones, and
    /// swaps endpoint sets in place (open connections are left alone).
    pub async fn sync(&mut self, services: &[pb::Service]) {
        let wanted: HashMap<u16, (Vec<SocketAddr>, &str)> = services
            .iter()
            .map(|s| {
                (
                    s.port as u16,
                    (
                        s.endpoints.iter().filter_map(|e| e.parse().ok()).collect(),
                        s.job.as_str(),
                    ),
                )
            })
            .collect();
        self.services.retain(|port, l| {
            let keep = wanted.contains_key(port);
            if !keep {
                l.task.abort();
                tracing::info!(port, "routing mesh: port closed");
            }
            keep
        });
        for (port, (endpoints, job)) in wanted {
            if let Some(l) = self.services.get(&port) {
                l.endpoints.send_if_modified(|e| {
                    let changed = *e != endpoints;
                    *e = endpoints.clone();
                    changed
                });
                continue;
            }
            let addr = SocketAddr::new(self.bind, port);
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, "routing mesh: serving");
                    let (tx, rx) = watch::channel(endpoints);
                    let task =
                        tokio::spawn(serve(listener, rx, job.to_string(), self.stats.clone()));
                    self.services.insert(
                        port,
                        Listener {
                            endpoints: tx,
                            task,
                        },
                    );
                }
                Err(e) => tracing::warn!(%addr, error = %e, "routing mesh: cannot listen"),
            }
        }
    }

    /// Closes every port.
    pub fn close(&mut self) {
        for (_, l) in self.services.drain() {
            l.task.abort();
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.close();
    }
}

async fn serve(
    listener: TcpListener,
    endpoints: watch::Receiver<Vec<SocketAddr>>,
    job: String,
    stats: super::metrics::AgentStats,
) {
    let job: Arc<str> = job.into();
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let endpoints = endpoints.clone();
        let next = next.clone();
        let (job, stats) = (job.clone(), stats.clone());
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            if let Some(mut upstream) = connect(&endpoints, &next).await {
                let mut client = client;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                stats.mesh_connection(&job, Some(began.elapsed()));
            } else {
                // No replica took it: dropping the client closes the connection.
                stats.mesh_connection(&job, None);
            }
        });
    }
}

/// Connects to the next endpoint round-robin, trying the others if it fails.
/// Each attempt reads the current set: a retry never goes to a replica that
/// left the set meanwhile.
async fn connect(
    endpoints: &watch::Receiver<Vec<SocketAddr>>,
    next: &AtomicUsize,
) -> Option<TcpStream> {
    let tries = endpoints.borrow().len();
    let start = next.fetch_add(1, Ordering::Relaxed);
    for i in 0..tries {
        let addr = {
            let list = endpoints.borrow();
            if list.is_empty() {
                return None;
            }
            list[(start + i) % list.len()]
        };
        if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            let _ = s.set_nodelay(true);
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(tag: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = s.write_all(tag.as_bytes()).await;
                });
            }
        });
        addr
    }

    async fn ask(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn balances_skips_dead_endpoints_and_follows_changes() {
        let a = echo_server("a").await;
        let b = echo_server("b").await;
        let dead: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut mesh = Mesh::new("127.0.0.1".parse().unwrap(), Default::default());
        let svc = |eps: Vec<SocketAddr>| pb::Service {
            job: "web".into(),
            port: port as u32,
            endpoints: eps.iter().map(|e| e.to_string()).collect(),
        };
        mesh.sync(&[svc(vec![a, dead, b])]).await;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            let r = ask(port).await;
            assert!(
                r == "a" || r == "b",
                "got {r:?}: a dead endpoint was not skipped"
            );
            seen.insert(r);
        }
        assert_eq!(seen.len(), 2, "both replicas get traffic");
        mesh.sync(&[svc(vec![b])]).await;
        for _ in 0..3 {
            assert_eq!(ask(port).await, "b");
        }
        mesh.sync(&[]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "a dropped service still listens"
        );
    }
}
