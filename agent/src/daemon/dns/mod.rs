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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
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
/// Forwarded queries in flight at once, and from one client; more are
/// dropped (the client asks again). Answers from the table never wait.
const MAX_FORWARDS: usize = 256;
const MAX_FORWARDS_PER_CLIENT: usize = 16;
/// TCP connections at once, and from one client; how long one may sit
/// idle, and how long writing one answer may take.
const MAX_TCP: usize = 64;
const MAX_TCP_PER_CLIENT: usize = 4;
const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_WRITE: Duration = Duration::from_secs(2);
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
            // A replica of a job with a 62- or 63-character name has a name
            // too long for a DNS label: it answers for its job only.
            for (name, ip) in replicas.iter().filter(|(n, _)| n.len() <= 63) {
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
            .map(|i| job.replicas[turn.wrapping_add(i) % n].1)
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
                let (replica, ip) = &j.replicas[turn.wrapping_add(i) % n];
                if replica.len() > 63 {
                    continue;
                }
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
    /// Whether a table came from the scheduler yet: until then the
    /// cluster's names are not known, and not denied either (SERVFAIL).
    ready: AtomicBool,
    /// Container addresses whose job says `egress: none`.
    no_egress: Mutex<HashSet<IpAddr>>,
    turn: AtomicUsize,
    /// Forwarded queries in flight, by client (see [`MAX_FORWARDS_PER_CLIENT`]).
    forwarding: Arc<Counts>,
    /// TCP connections open, by client.
    connections: Arc<Counts>,
}

/// What becomes of a query.
enum Step {
    Answer(Vec<u8>),
    /// Not the cluster's: ask the node's resolvers, or answer this on failure.
    Forward {
        servfail: Vec<u8>,
    },
    Drop,
}

impl Inner {
    /// What becomes of `packet` from `from`, decided at once from the table.
    fn step(&self, packet: &[u8], from: IpAddr, tcp: bool) -> Step {
        let q = match wire::parse(packet) {
            Ok(q) => q,
            Err(Malformed::Question) => {
                return wire::id_of(packet)
                    .map_or(Step::Drop, |id| Step::Answer(wire::format_error(id)))
            }
            Err(Malformed::NoHeader | Malformed::NotQuery) => return Step::Drop,
        };
        let limit = if tcp {
            u16::MAX as usize
        } else {
            q.udp_limit()
        };
        let answer = |rcode, authoritative, answers: &[Record], additional: &[Record]| {
            Answer {
                query: &q,
                rcode,
                authoritative,
                answers,
                additional,
                ttl: TTL,
            }
            .encode(limit)
        };
        if q.opcode() != 0 {
            return Step::Answer(answer(wire::RCODE_NOTIMP, false, &[], &[]));
        }
        if q.qclass != wire::CLASS_IN {
            return Step::Answer(answer(wire::RCODE_REFUSED, false, &[], &[]));
        }
        if !self.ready.load(Ordering::Acquire) && might_be_ours(&q) {
            return Step::Answer(answer(wire::RCODE_SERVFAIL, false, &[], &[]));
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
            } => Step::Answer(answer(rcode, true, &answers, &additional)),
            Reply::Forward => {
                let refused = self
                    .no_egress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&from);
                if refused {
                    return Step::Answer(answer(wire::RCODE_REFUSED, false, &[], &[]));
                }
                Step::Forward {
                    servfail: answer(wire::RCODE_SERVFAIL, false, &[], &[]),
                }
            }
        }
    }
}

/// Whether `q` asks for a name the table would answer (a single label, or
/// one in the cluster's zone).
fn might_be_ours(q: &Query) -> bool {
    match q.name.as_deref() {
        Some(n) => {
            !n.contains('.')
                || n.strip_suffix(ZONE)
                    .is_some_and(|h| h.is_empty() || h.ends_with('.'))
        }
        None => false,
    }
}

/// How many of something each client holds, each up to a cap.
#[derive(Default)]
struct Counts(Mutex<HashMap<IpAddr, usize>>);

impl Counts {
    /// One more for `ip`, unless it holds `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Held> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Held(self.clone(), ip))
    }
}

/// One of a client's, given back when dropped.
struct Held(Arc<Counts>, IpAddr);

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
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

/// Resolves when `stop` says so (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The node's DNS server: its table, and its listeners once it serves.
pub struct Dns {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Tells every task of the server, and each query's, to end.
    stop: watch::Sender<bool>,
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
                ready: AtomicBool::new(false),
                no_egress: Mutex::new(HashSet::new()),
                turn: AtomicUsize::new(0),
                forwarding: Default::default(),
                connections: Default::default(),
            }),
            tasks: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
        }
    }

    /// Answers from `names` from now on.
    pub fn update(&self, names: &[pb::ServiceName]) {
        let table = Arc::new(Table::new(names));
        *self.inner.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        self.inner.ready.store(true, Ordering::Release);
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
        let _ = self.stop.send(false);
        let (inner, u, stop) = (self.inner.clone(), up.clone(), self.stop.subscribe());
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
                let servfail = match inner.step(&buf[..n], from.ip(), false) {
                    Step::Answer(a) => {
                        let _ = udp.send_to(&a, from).await;
                        continue;
                    }
                    Step::Drop => continue,
                    Step::Forward { servfail } => servfail,
                };
                // A client waiting on slow resolvers holds its own share only.
                let Some(held) = inner.forwarding.take(from.ip(), MAX_FORWARDS_PER_CLIENT) else {
                    continue;
                };
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    continue;
                };
                let packet = buf[..n].to_vec();
                let (u, udp, stop) = (u.clone(), udp.clone(), stop.clone());
                tokio::spawn(async move {
                    let servers = u.current();
                    tokio::select! {
                        answer = forward_udp(&packet, &servers) => {
                            let _ = udp.send_to(&answer.unwrap_or(servfail), from).await;
                        }
                        _ = stopped(stop) => {}
                    }
                    drop((permit, held));
                });
            }
        });
        let (inner, stop) = (self.inner.clone(), self.stop.subscribe());
        let serve_tcp = runtime.spawn(async move {
            let conns = Arc::new(Semaphore::new(MAX_TCP));
            loop {
                let (s, from) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of fds, say: not a reason to spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if !allowed(from.ip()) {
                    continue;
                }
                let Some(held) = inner.connections.take(from.ip(), MAX_TCP_PER_CLIENT) else {
                    continue;
                };
                let Ok(permit) = conns.clone().try_acquire_owned() else {
                    continue;
                };
                let (inner, up, stop) = (inner.clone(), up.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve_connection(s, from.ip(), &inner, &up) => {}
                        _ = stopped(stop) => {}
                    }
                    drop((permit, held));
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

    /// Stops serving: the listeners, and every query and connection in flight.
    pub fn close(&self) {
        let _ = self.stop.send(true);
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

/// One client's TCP connection: queries until it goes quiet for
/// [`TCP_IDLE`], each answer written within [`TCP_WRITE`].
async fn serve_connection(mut s: TcpStream, from: IpAddr, inner: &Inner, up: &Upstreams) {
    while let Ok(Ok(Some(packet))) = tokio::time::timeout(TCP_IDLE, read_message(&mut s)).await {
        let answer = match inner.step(&packet, from, true) {
            Step::Answer(a) => a,
            Step::Drop => break,
            Step::Forward { servfail } => forward_tcp(&packet, &up.current())
                .await
                .unwrap_or(servfail),
        };
        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&answer);
        if !matches!(
            tokio::time::timeout(TCP_WRITE, s.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            break;
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
    fn before_the_first_table_the_clusters_names_are_not_denied() {
        let dns = Dns::new();
        let from: IpAddr = "10.1.0.9".parse().unwrap();
        let step = |name| dns.inner.step(&query(1, name, TYPE_A, None), from, false);
        for name in ["web", "web.service.drover"] {
            let Step::Answer(a) = step(name) else {
                panic!("{name}: not answered");
            };
            let a = decode(&a);
            assert_eq!((a.rcode, a.authoritative), (wire::RCODE_SERVFAIL, false));
        }
        assert!(matches!(step("example.com"), Step::Forward { .. }));
        dns.update(&[]);
        let Step::Answer(a) = step("web.service.drover") else {
            panic!("not answered");
        };
        assert_eq!(decode(&a).rcode, wire::RCODE_NXDOMAIN);
    }

    #[test]
    fn a_clients_share_is_capped_and_given_back() {
        let counts = Arc::new(Counts::default());
        let ip: IpAddr = "10.1.0.9".parse().unwrap();
        let held: Vec<Held> = (0..3).map_while(|_| counts.take(ip, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(counts.take(ip, 3).is_none());
        assert!(counts.take("10.1.0.8".parse().unwrap(), 3).is_some());
        drop(held);
        assert!(counts.take(ip, 3).is_some());
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

    /// Job web with one replica, web-1 at 10.1.0.2.
    fn web_1() -> Vec<pb::ServiceName> {
        vec![pb::ServiceName {
            job: "web".into(),
            replicas: vec![pb::NamedReplica {
                name: "web-1".into(),
                ip: "10.1.0.2".into(),
            }],
            ports: vec![],
        }]
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
        dns.update(&web_1());
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

        // Forwarded: the port in resolv.conf is always 53, so the stand-in
        // is asked directly.
        {
            let q = query(6, "example.com", TYPE_A, None);
            let from: IpAddr = "127.0.0.9".parse().unwrap();
            assert!(matches!(
                dns.inner.step(&q, from, false),
                Step::Forward { .. }
            ));
            let a = decode(&forward_udp(&q, &[upstream_addr]).await.unwrap());
            assert_eq!(a.answers, vec![(TYPE_A, vec![192, 0, 2, 7])]);
            assert!(!a.authoritative);
            dns.set_egress(from, Some(false));
            let Step::Answer(a) = dns.inner.step(&q, from, false) else {
                panic!("forwarded for a replica with egress: none");
            };
            assert_eq!(decode(&a).rcode, wire::RCODE_REFUSED);
            dns.set_egress(from, None);
        }

        // TCP, the same table.
        dns.update(&web_1());
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
