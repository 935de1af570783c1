//! The node's DNS server: service discovery by name.
//!
//! Every private-network container's `/etc/resolv.conf` names this server,
//! which listens on the node's bridge address (UDP and TCP port 53) and
//! answers from the table the scheduler sends with each desired set (the
//! same healthy, non-draining replicas the routing mesh balances across):
//!
//! | name | answer |
//! |---|---|
//! | `JOB`, `JOB.service.drover` | an A (or AAAA) record per replica |
//! | `REPLICA.JOB.service.drover`, `REPLICA.JOB.drover` | that replica's address |
//! | `_PORT._tcp.JOB.service.drover` (or `_udp`) | an SRV record per replica for the named port, the addresses beside |
//!
//! Answers are authoritative with a TTL of 0, so a replica that stops
//! serving leaves every answer as soon as the table changes. Other names
//! in `drover` get NXDOMAIN; every other name is forwarded to the node's
//! own resolvers (its `/etc/resolv.conf`), except from replicas whose job
//! says `egress: none`: DNS is not a way out.
//!
//! Queries are taken only from the node's container subnet: the server is
//! no open resolver for other machines.

pub mod wire;

use drover_proto::pb;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use wire::{Answer, Malformed, Query, Record};

/// The cluster's zone.
pub const ZONE: &str = "drover";
/// The search domain that makes a bare job name resolve.
pub const SEARCH: &str = "service.drover";
/// Answers' time to live: none, so no client keeps a replica that left.
const TTL: u32 = 0;
/// How long one upstream resolver gets to answer a forwarded query.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries in flight at once; more are dropped (the client retries).
const MAX_FORWARDS: usize = 256;
/// TCP connections at once, and how long one may sit idle.
const MAX_TCP: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often the node's resolv.conf is looked at again.
const UPSTREAM_RECHECK: Duration = Duration::from_secs(2);

/// The names the scheduler last sent.
#[derive(Default)]
struct Table {
    jobs: HashMap<String, JobNames>,
    /// Replica name: (job, address).
    replicas: HashMap<String, (String, IpAddr)>,
}

#[derive(Default)]
struct JobNames {
    replicas: Vec<(String, IpAddr)>,
    ports: Vec<(String, u16)>,
}

impl Table {
    fn new(names: &[pb::ServiceName]) -> Table {
        let mut t = Table::default();
        for n in names {
            let replicas: Vec<(String, IpAddr)> = n
                .replicas
                .iter()
                .filter_map(|r| Some((r.name.clone(), r.ip.parse().ok()?)))
                .collect();
            for (name, ip) in &replicas {
                t.replicas.insert(name.clone(), (n.job.clone(), *ip));
            }
            let ports = n
                .ports
                .iter()
                .filter_map(|p| Some((p.name.to_ascii_lowercase(), u16::try_from(p.port).ok()?)))
                .collect();
            t.jobs.insert(n.job.clone(), JobNames { replicas, ports });
        }
        t
    }
}

/// What a query gets.
#[derive(Debug, PartialEq)]
enum Reply {
    /// An authoritative answer from the table.
    Local {
        rcode: u8,
        answers: Vec<Record>,
        additional: Vec<Record>,
    },
    /// Not the cluster's name: ask the node's resolvers.
    Forward,
}

impl Reply {
    fn nxdomain() -> Reply {
        Reply::Local {
            rcode: wire::RCODE_NXDOMAIN,
            answers: vec![],
            additional: vec![],
        }
    }

    fn records(answers: Vec<Record>, additional: Vec<Record>) -> Reply {
        Reply::Local {
            rcode: 0,
            answers,
            additional,
        }
    }
}

/// Answers `q` from `t`; `turn` rotates the order of a job's replicas so
/// clients that take the first address spread over them.
fn resolve(t: &Table, q: &Query, turn: usize) -> Reply {
    let Some(name) = q.name.as_deref() else {
        return Reply::Forward;
    };
    let labels: Vec<&str> = name.split('.').collect();
    let wants = |ip: &IpAddr| match q.qtype {
        wire::TYPE_A => ip.is_ipv4(),
        wire::TYPE_AAAA => ip.is_ipv6(),
        wire::TYPE_ANY => true,
        _ => false,
    };
    let job_answer = |job: &JobNames| {
        let n = job.replicas.len().max(1);
        let answers = (0..job.replicas.len())
            .map(|i| job.replicas[(turn + i) % n].1)
            .filter(|ip| wants(ip))
            .map(Record::Address)
            .collect();
        Reply::records(answers, vec![])
    };
    match labels.as_slice() {
        [ZONE] => Reply::nxdomain(),
        [job] => match t.jobs.get(*job) {
            Some(j) => job_answer(j),
            None => Reply::Forward,
        },
        [.., last] if *last != ZONE => Reply::Forward,
        [job, "service", ZONE] => t.jobs.get(*job).map_or_else(Reply::nxdomain, job_answer),
        [replica, job, "service", ZONE] | [replica, job, ZONE] => match t.replicas.get(*replica) {
            Some((j, ip)) if j == job => {
                let answers = wants(ip).then_some(Record::Address(*ip));
                Reply::records(answers.into_iter().collect(), vec![])
            }
            _ => Reply::nxdomain(),
        },
        [port, proto, job, "service", ZONE] if matches!(*proto, "_tcp" | "_udp") => {
            let Some(j) = t.jobs.get(*job) else {
                return Reply::nxdomain();
            };
            let Some(&(_, number)) = port
                .strip_prefix('_')
                .and_then(|p| j.ports.iter().find(|(n, _)| n == p))
            else {
                return Reply::nxdomain();
            };
            if !matches!(q.qtype, wire::TYPE_SRV | wire::TYPE_ANY) {
                return Reply::records(vec![], vec![]);
            }
            let n = j.replicas.len().max(1);
            let mut answers = Vec::new();
            let mut additional = Vec::new();
            for i in 0..j.replicas.len() {
                let (replica, ip) = &j.replicas[(turn + i) % n];
                let target = format!("{replica}.{job}.{SEARCH}");
                answers.push(Record::Srv {
                    port: number,
                    target: target.clone(),
                });
                additional.push(Record::AddressOf(target, *ip));
            }
            Reply::records(answers, additional)
        }
        _ => Reply::nxdomain(),
    }
}

/// The node's resolvers, from its resolv.conf, read again when it changes.
struct Upstreams {
    path: PathBuf,
    /// Never forwarded to: the server's own address.
    own: IpAddr,
    cached: Mutex<(Option<SystemTime>, Instant, Vec<SocketAddr>)>,
}

impl Upstreams {
    fn current(&self) -> Vec<SocketAddr> {
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if c.1.elapsed() >= UPSTREAM_RECHECK || c.0.is_none() {
            c.1 = Instant::now();
            let modified = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if modified != c.0 || modified.is_none() {
                c.0 = modified;
                let text = std::fs::read_to_string(&self.path).unwrap_or_default();
                c.2 = nameservers(&text)
                    .into_iter()
                    .filter(|ip| *ip != self.own)
                    .map(|ip| SocketAddr::new(ip, 53))
                    .collect();
            }
        }
        c.2.clone()
    }
}

/// The `nameserver` addresses of a resolv.conf.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.split('%').next()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The `search` domains of a resolv.conf.
pub fn search_domains(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            l.strip_prefix("search")
                .or_else(|| l.strip_prefix("domain"))
        })
        .filter(|rest| rest.starts_with([' ', '\t']))
        .flat_map(|rest| rest.split_whitespace().map(str::to_string))
        .collect()
}

/// The resolv.conf of a container served by the DNS server at `server`:
/// bare job names resolve through the search list; the node's own search
/// domains follow.
pub fn resolv_conf(server: Ipv4Addr, host_resolv_conf: &str) -> String {
    let mut search = vec![SEARCH.to_string()];
    for d in search_domains(host_resolv_conf) {
        if !search.contains(&d) && search.len() < 6 {
            search.push(d);
        }
    }
    format!(
        "# Written by drover-agent: the node's DNS server answers the cluster's names\n\
         # ({SEARCH}) and forwards the rest to the node's resolvers.\n\
         nameserver {server}\nsearch {}\noptions ndots:1 timeout:2 attempts:2\n",
        search.join(" ")
    )
}

/// What the server reads, shared by its tasks.
struct Inner {
    table: RwLock<Arc<Table>>,
    /// Container addresses whose job says `egress: none`.
    no_egress: Mutex<HashSet<IpAddr>>,
    turn: AtomicUsize,
}

impl Inner {
    /// The answer to `packet` from `from`, or `None` when it goes unanswered.
    async fn handle(
        &self,
        packet: &[u8],
        from: IpAddr,
        tcp: bool,
        up: &Upstreams,
    ) -> Option<Vec<u8>> {
        let q = match wire::parse(packet) {
            Ok(q) => q,
            Err(Malformed::Question) => return wire::id_of(packet).map(wire::format_error),
            Err(Malformed::NoHeader | Malformed::NotQuery) => return None,
        };
        let limit = if tcp {
            u16::MAX as usize
        } else {
            q.udp_limit()
        };
        let local = |rcode, answers: &[Record], additional: &[Record]| {
            Answer {
                query: &q,
                rcode,
                authoritative: true,
                answers,
                additional,
                ttl: TTL,
            }
            .encode(limit)
        };
        if q.opcode() != 0 {
            return Some(local(wire::RCODE_NOTIMP, &[], &[]));
        }
        if q.qclass != wire::CLASS_IN {
            return Some(local(wire::RCODE_REFUSED, &[], &[]));
        }
        let reply = {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
            resolve(&table, &q, self.turn.fetch_add(1, Ordering::Relaxed))
        };
        match reply {
            Reply::Local {
                rcode,
                answers,
                additional,
            } => Some(local(rcode, &answers, &additional)),
            Reply::Forward => {
                let refused = self
                    .no_egress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&from);
                if refused {
                    return Some(local(wire::RCODE_REFUSED, &[], &[]));
                }
                let servers = up.current();
                let answer = if tcp {
                    forward_tcp(packet, &servers).await
                } else {
                    forward_udp(packet, &servers).await
                };
                Some(answer.unwrap_or_else(|| local(wire::RCODE_SERVFAIL, &[], &[])))
            }
        }
    }
}

async fn forward_udp(packet: &[u8], servers: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in servers {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.connect(server).await.is_err() || sock.send(packet).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        let got = tokio::time::timeout(FORWARD_TIMEOUT, async {
            loop {
                let n = sock.recv(&mut buf).await?;
                // Only the answer to this query (its id), nothing spoofed.
                if n >= 12 && buf[..2] == packet[..2] {
                    return Ok::<usize, std::io::Error>(n);
                }
            }
        })
        .await;
        if let Ok(Ok(n)) = got {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

async fn forward_tcp(packet: &[u8], servers: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in servers {
        let exchange = async {
            let mut s = TcpStream::connect(server).await?;
            s.write_all(&(packet.len() as u16).to_be_bytes()).await?;
            s.write_all(packet).await?;
            read_message(&mut s).await
        };
        if let Ok(Ok(Some(answer))) = tokio::time::timeout(FORWARD_TIMEOUT, exchange).await {
            return Some(answer);
        }
    }
    None
}

/// One length-prefixed DNS message from a TCP stream; `None` at its end.
async fn read_message(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// The node's DNS server: its table, and its listeners once it serves.
pub struct Dns {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns::new()
    }
}

impl Dns {
    pub fn new() -> Dns {
        Dns {
            inner: Arc::new(Inner {
                table: RwLock::new(Arc::new(Table::default())),
                no_egress: Mutex::new(HashSet::new()),
                turn: AtomicUsize::new(0),
            }),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Answers from `names` from now on.
    pub fn update(&self, names: &[pb::ServiceName]) {
        let table = Arc::new(Table::new(names));
        *self.inner.table.write().unwrap_or_else(|e| e.into_inner()) = table;
    }

    /// Whether the container at `ip` may have names outside the cluster
    /// resolved (its job's `egress`); `None` forgets the address.
    pub fn set_egress(&self, ip: IpAddr, egress: Option<bool>) {
        let mut set = self
            .inner
            .no_egress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match egress {
            Some(false) => set.insert(ip),
            _ => set.remove(&ip),
        };
    }

    /// Serves on `addr` (UDP and TCP port 53 on the bridge address) to
    /// clients in `subnet`, forwarding other names to the resolvers in
    /// `resolv_conf`. Binds before it returns, so a bind error is the
    /// caller's; needs a Tokio runtime.
    pub fn serve(
        &self,
        addr: SocketAddr,
        subnet: (Ipv4Addr, u8),
        resolv_conf: PathBuf,
    ) -> std::io::Result<()> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let udp = std::net::UdpSocket::bind(addr)?;
        udp.set_nonblocking(true)?;
        let tcp = std::net::TcpListener::bind(addr)?;
        tcp.set_nonblocking(true)?;
        let up = Arc::new(Upstreams {
            path: resolv_conf,
            own: addr.ip(),
            cached: Mutex::new((None, Instant::now(), Vec::new())),
        });
        let allowed = move |ip: IpAddr| match ip {
            IpAddr::V4(v4) => crate::network::inventory::within((v4, 32), subnet),
            IpAddr::V6(_) => false,
        };
        let _guard = runtime.enter();
        let udp = Arc::new(UdpSocket::from_std(udp)?);
        let tcp = TcpListener::from_std(tcp)?;
        let inner = self.inner.clone();
        let u = up.clone();
        let serve_udp = runtime.spawn(async move {
            let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                if !allowed(from.ip()) {
                    continue;
                }
                let packet = buf[..n].to_vec();
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    continue;
                };
                let (inner, u, udp) = (inner.clone(), u.clone(), udp.clone());
                tokio::spawn(async move {
                    if let Some(answer) = inner.handle(&packet, from.ip(), false, &u).await {
                        let _ = udp.send_to(&answer, from).await;
                    }
                    drop(permit);
                });
            }
        });
        let inner = self.inner.clone();
        let serve_tcp = runtime.spawn(async move {
            let conns = Arc::new(Semaphore::new(MAX_TCP));
            loop {
                let Ok((mut s, from)) = tcp.accept().await else {
                    continue;
                };
                if !allowed(from.ip()) {
                    continue;
                }
                let Ok(permit) = conns.clone().try_acquire_owned() else {
                    continue;
                };
                let (inner, up) = (inner.clone(), up.clone());
                tokio::spawn(async move {
                    while let Ok(Ok(Some(packet))) =
                        tokio::time::timeout(TCP_IDLE, read_message(&mut s)).await
                    {
                        let Some(answer) = inner.handle(&packet, from.ip(), true, &up).await else {
                            break;
                        };
                        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&answer);
                        if s.write_all(&framed).await.is_err() {
                            break;
                        }
                    }
                    drop(permit);
                });
            }
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(serve_udp);
        tasks.push(serve_tcp);
        tracing::info!(%addr, "DNS: serving the cluster's names");
        Ok(())
    }

    /// Whether it serves.
    pub fn serving(&self) -> bool {
        !self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Stops serving.
    pub fn close(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{decode, query, TYPE_A, TYPE_AAAA, TYPE_SRV};
    use super::*;

    fn table() -> Table {
        Table::new(&[
            pb::ServiceName {
                job: "web".into(),
                replicas: vec![
                    pb::NamedReplica {
                        name: "web-1".into(),
                        ip: "10.1.0.2".into(),
                    },
                    pb::NamedReplica {
                        name: "web-2".into(),
                        ip: "10.1.1.3".into(),
                    },
                ],
                ports: vec![pb::NamedPort {
                    name: "http".into(),
                    port: 8080,
                }],
            },
            pb::ServiceName {
                job: "idle".into(),
                replicas: vec![],
                ports: vec![],
            },
        ])
    }

    fn ask(name: &str, qtype: u16) -> Reply {
        resolve(
            &table(),
            &wire::parse(&query(1, name, qtype, None)).unwrap(),
            0,
        )
    }

    fn addresses(r: &Reply) -> Vec<String> {
        let Reply::Local { answers, rcode, .. } = r else {
            panic!("forwarded: {r:?}");
        };
        assert_eq!(*rcode, 0, "{r:?}");
        let mut out: Vec<String> = answers
            .iter()
            .map(|a| match a {
                Record::Address(ip) => ip.to_string(),
                other => panic!("not an address: {other:?}"),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_job_name_answers_its_serving_replicas() {
        let both = vec!["10.1.0.2", "10.1.1.3"];
        assert_eq!(addresses(&ask("web", TYPE_A)), both);
        assert_eq!(addresses(&ask("WEB.service.drover", TYPE_A)), both);
        assert_eq!(
            addresses(&ask("web-2.web.service.drover", TYPE_A)),
            vec!["10.1.1.3"]
        );
        assert_eq!(
            addresses(&ask("web-1.web.drover", TYPE_A)),
            vec!["10.1.0.2"]
        );
        // A job with no replica serving: the name exists, no address.
        assert!(addresses(&ask("idle.service.drover", TYPE_A)).is_empty());
        // No IPv6 addresses: an empty answer, not an error.
        assert!(addresses(&ask("web", TYPE_AAAA)).is_empty());
    }

    #[test]
    fn the_order_rotates_between_queries() {
        let q = wire::parse(&query(1, "web", TYPE_A, None)).unwrap();
        let first = |turn| match resolve(&table(), &q, turn) {
            Reply::Local { answers, .. } => answers[0].clone(),
            r => panic!("{r:?}"),
        };
        assert_ne!(first(0), first(1));
    }

    #[test]
    fn srv_names_the_port_and_each_replica() {
        let Reply::Local {
            rcode,
            answers,
            additional,
        } = ask("_http._tcp.web.service.drover", TYPE_SRV)
        else {
            panic!("forwarded");
        };
        assert_eq!(rcode, 0);
        assert_eq!(answers.len(), 2);
        assert!(answers.contains(&Record::Srv {
            port: 8080,
            target: "web-1.web.service.drover".into()
        }));
        assert!(additional.contains(&Record::AddressOf(
            "web-2.web.service.drover".into(),
            "10.1.1.3".parse().unwrap()
        )));
        assert_eq!(
            ask("_grpc._tcp.web.service.drover", TYPE_SRV),
            Reply::nxdomain()
        );
    }

    #[test]
    fn unknown_cluster_names_are_nxdomain_and_the_rest_forwarded() {
        assert_eq!(ask("nope.service.drover", TYPE_A), Reply::nxdomain());
        assert_eq!(ask("web-1.idle.drover", TYPE_A), Reply::nxdomain());
        assert_eq!(ask("web-9.web.service.drover", TYPE_A), Reply::nxdomain());
        assert_eq!(ask("drover", TYPE_A), Reply::nxdomain());
        assert_eq!(ask("example.com", TYPE_A), Reply::Forward);
        assert_eq!(ask("nope", TYPE_A), Reply::Forward);
        assert_eq!(
            ask("web.service.drover.example.com", TYPE_A),
            Reply::Forward
        );
    }

    #[test]
    fn resolv_conf_names_the_server_and_keeps_the_nodes_search_domains() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch corp.example lan\noptions edns0\n";
        assert_eq!(
            nameservers(host),
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        let r = resolv_conf(Ipv4Addr::new(10, 1, 0, 1), host);
        assert!(r.contains("nameserver 10.1.0.1\n"), "{r}");
        assert!(
            r.contains("search service.drover corp.example lan\n"),
            "{r}"
        );
        assert!(!r.contains("127.0.0.53"), "{r}");
    }

    /// The server over real sockets: a query from the subnet is answered,
    /// a changed table is answered at once, a query for another name goes
    /// to the node's resolver, and `egress: none` is refused it.
    #[tokio::test]
    async fn serves_over_udp_and_tcp_and_forwards_other_names() {
        // A stand-in for the node's resolver: answers every query with its id.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
                let q = wire::parse(&buf[..n]).unwrap();
                let a = Answer {
                    query: &q,
                    rcode: 0,
                    authoritative: false,
                    answers: &[Record::Address("192.0.2.7".parse().unwrap())],
                    additional: &[],
                    ttl: 60,
                };
                upstream.send_to(&a.encode(512), from).await.unwrap();
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("resolv.conf");
        // The stand-in listens on a port other than 53: a test-only form.
        std::fs::write(&conf, format!("nameserver {}\n", upstream_addr.ip())).unwrap();
        let dns = Dns::new();
        dns.update(&[pb::ServiceName {
            job: "web".into(),
            replicas: vec![pb::NamedReplica {
                name: "web-1".into(),
                ip: "10.1.0.2".into(),
            }],
            ports: vec![],
        }]);
        let port = std::net::UdpSocket::bind("127.0.0.2:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 2], port).into();
        dns.serve(addr, (Ipv4Addr::new(127, 0, 0, 0), 8), conf)
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp = |name: &'static str| {
            let client = &client;
            async move {
                client
                    .send_to(&query(5, name, TYPE_A, None), addr)
                    .await
                    .unwrap();
                let mut buf = [0u8; 1500];
                let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                    .await
                    .expect("an answer")
                    .unwrap();
                decode(&buf[..n])
            }
        };
        let d = udp("web").await;
        assert_eq!(d.answers, vec![(TYPE_A, vec![10, 1, 0, 2])]);
        assert!(d.authoritative);
        dns.update(&[]);
        assert_eq!(udp("web.service.drover").await.rcode, wire::RCODE_NXDOMAIN);

        // Forwarded: the port in resolv.conf is always 53, so point the
        // upstream list at the stand-in directly.
        {
            let up = Upstreams {
                path: dir.path().join("none"),
                own: addr.ip(),
                cached: Mutex::new((None, Instant::now(), vec![upstream_addr])),
            };
            let q = query(6, "example.com", TYPE_A, None);
            let from: IpAddr = "127.0.0.9".parse().unwrap();
            // Cached list, still fresh: not read again from the missing file.
            up.cached.lock().unwrap().0 = Some(SystemTime::now());
            let a = decode(&dns.inner.handle(&q, from, false, &up).await.unwrap());
            assert_eq!(a.answers, vec![(TYPE_A, vec![192, 0, 2, 7])]);
            assert!(!a.authoritative);
            dns.set_egress(from, Some(false));
            let a = decode(&dns.inner.handle(&q, from, false, &up).await.unwrap());
            assert_eq!(a.rcode, wire::RCODE_REFUSED);
            dns.set_egress(from, None);
        }

        // TCP, the same table.
        dns.update(&[pb::ServiceName {
            job: "web".into(),
            replicas: vec![pb::NamedReplica {
                name: "web-1".into(),
                ip: "10.1.0.2".into(),
            }],
            ports: vec![],
        }]);
        let mut s = TcpStream::connect(addr).await.unwrap();
        let q = query(8, "web-1.web.drover", TYPE_A, None);
        s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        s.write_all(&q).await.unwrap();
        let answer = read_message(&mut s).await.unwrap().unwrap();
        assert_eq!(decode(&answer).answers, vec![(TYPE_A, vec![10, 1, 0, 2])]);

        // Garbage gets a FORMERR or nothing, and the server keeps serving.
        client.send_to(&[0xAB; 3], addr).await.unwrap();
        let mut junk = [0xABu8; 20];
        junk[2] = 0x01; // a query
        junk[5] = 5; // with five questions
        client.send_to(&junk, addr).await.unwrap();
        let mut buf = [0u8; 512];
        let n = client.recv(&mut buf).await.unwrap();
        assert_eq!((n, buf[3] & 0xF), (12, wire::RCODE_FORMERR));
        assert_eq!(udp("web").await.answers.len(), 1);
        dns.close();
    }
}
