//! The agent's link to the scheduler: register, heartbeat, watch.
//!
//! The agent knows a list of scheduler peers and uses one at a time,
//! starting at a random one (so that agents spread over the peers) and
//! moving to the next when a call fails. The watch stream delivers the
//! complete desired set, so after any reconnect the agent simply converges to
//! the newest set it has seen; nothing is replayed.
//!
//! A peer that vanishes without a TCP reset (a frozen host, a pulled
//! cable) must cost the node nothing, so nothing here waits long: a
//! heartbeat has a deadline of [`HEARTBEAT_DEADLINE`], far under the node
//! timeout, a new session heartbeats before anything else, and HTTP/2 pings
//! drop a silent connection within two seconds. An agent's failover takes
//! about a heartbeat interval plus the deadline plus an election; the node
//! timeout must leave room for it (the default 4 s does, with 1 s beats).
//! Only heartbeats a leader acknowledged move the fencing clock (see
//! `drover_proto::fencing`); a watch stream, which any peer serves, does
//! not.

use super::error::LinkError;
use drover_proto::pb::{self, node_service_client::NodeServiceClient};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tonic::transport::{Channel, Endpoint};

/// How long a heartbeat may take before the peer is given up on.
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_millis(500);

/// How long other calls (registration and reports are Raft writes) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The scheduler peers and which one is in use.
#[derive(Clone)]
pub struct Links {
    addrs: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    /// The channel to the peer in use, by position in `addrs`.
    cached: Arc<Mutex<Option<(usize, Channel)>>>,
    /// Whether this agent process registered once (later sessions only
    /// register again when the scheduler does not know the node).
    registered: Arc<AtomicBool>,
    /// TLS with this node's certificate, checking the schedulers' against the CA.
    tls: drover_proto::pki::tls::ClientTls,
}

impl Links {
    pub fn new(addrs: Vec<String>, tls: drover_proto::pki::tls::ClientTls) -> Links {
        Links {
            tls,
            addrs: Arc::new(addrs),
            current: Arc::new(AtomicUsize::new(rand::random::<u16>() as usize)),
            cached: Arc::new(Mutex::new(None)),
            registered: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A client for the peer in use (its channel is kept and reused).
    pub async fn client(&self) -> Result<NodeServiceClient<Channel>, tonic::transport::Error> {
        let at = self.current.load(Ordering::Relaxed) % self.addrs.len();
        if let Some((i, ch)) = self.cached.lock().expect("links lock").as_ref() {
            if *i == at {
                return Ok(NodeServiceClient::new(ch.clone()).max_decoding_message_size(64 << 20));
            }
        }
        let addr = &self.addrs[at];
        let url = if addr.starts_with("http") {
            addr.clone()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(url)?
            .connect_timeout(Duration::from_secs(1))
            .timeout(CALL_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let channel = self.tls.connect(&endpoint).await?;
        *self.cached.lock().expect("links lock") = Some((at, channel.clone()));
        Ok(NodeServiceClient::new(channel).max_decoding_message_size(64 << 20))
    }

    /// How many peers there are.
    pub fn peers(&self) -> usize {
        self.addrs.len()
    }

    /// Moves on to the next peer after a failure.
    pub fn next(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the agent tells the scheduler about its node.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub address: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub volumes: Vec<pb::HostVolume>,
    pub disk_bytes: u64,
    /// Its `--label` flags and the facts about its machine.
    pub labels: std::collections::BTreeMap<String, String>,
    pub facts: std::collections::BTreeMap<String, String>,
}

impl Identity {
    /// What heartbeats carry so the scheduler can tell whether it holds
    /// these labels and facts.
    fn attributes_digest(&self) -> String {
        drover_proto::spec::constraint::attributes_digest(&self.labels, &self.facts)
    }
}

async fn register(
    client: &mut NodeServiceClient<Channel>,
    me: &Identity,
    shared: &super::Shared,
) -> Result<(), tonic::Status> {
    let r = client
        .register(pb::RegisterRequest {
            name: me.name.clone(),
            address: me.address.clone(),
            cpu_millis: me.cpu_millis,
            memory_bytes: me.memory_bytes,
            volumes: me.volumes.clone(),
            disk_bytes: me.disk_bytes,
            labels: me.labels.clone(),
            facts: me.facts.clone(),
        })
        .await?
        .into_inner();
    if !r.subnet.is_empty() && shared.network.get().is_none() {
        // Logged and remembered inside: the node stays registered, and
        // containers that need the network are refused with the reason.
        let _ = shared.setup_network(&r.subnet);
    }
    Ok(())
}

/// Sends one heartbeat with its deadline; on an acknowledgement moves the
/// fencing clock and returns whether the scheduler knows the node.
async fn beat(
    client: &mut NodeServiceClient<Channel>,
    me: &Identity,
    shared: &super::Shared,
) -> Result<bool, LinkError> {
    let sent = std::time::Instant::now();
    let (ca_bundle_id, cert_issuer) = shared.trust_report();
    let mut req = tonic::Request::new(pb::HeartbeatRequest {
        name: me.name.clone(),
        network_error: shared.network_error(),
        ca_bundle_id: ca_bundle_id.clone(),
        cert_issuer: cert_issuer.clone(),
        attributes_digest: me.attributes_digest(),
    });
    req.set_timeout(HEARTBEAT_DEADLINE);
    let r = tokio::time::timeout(HEARTBEAT_DEADLINE, client.heartbeat(req))
        .await
        .map_err(|_| LinkError::HeartbeatDeadline)??
        .into_inner();
    shared.acknowledged(sent, r.node_timeout_ms);
    // The cluster trusts other CAs now, or signs with another (a CA
    // rotation): renew at once, which brings both.
    if !r.ca_bundle_id.is_empty() && (r.ca_bundle_id != ca_bundle_id || r.signing_ca != cert_issuer)
    {
        shared.renew_now.notify_one();
    }
    Ok(r.known)
}

/// Keeps the node registered, heartbeating and watching until `stop`.
pub async fn run(
    links: Links,
    me: Identity,
    heartbeat: Duration,
    desired: watch::Sender<Option<pb::DesiredAllocations>>,
    shared: Arc<super::Shared>,
    mut stop: broadcast::Receiver<()>,
) {
    let mut retry = Retry::default();
    loop {
        let session = session(&links, &me, heartbeat, &desired, &shared);
        let began = std::time::Instant::now();
        tokio::select! {
            _ = stop.recv() => return,
            r = session => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "lost the scheduler; retrying");
                }
            }
        }
        // A leader acknowledged a heartbeat sent during the session.
        let acked = shared.since_acknowledged() <= began.elapsed();
        links.next();
        let pause = retry.after_session(
            acked || began.elapsed() > Duration::from_secs(5),
            links.peers(),
            shared.node_timeout(),
        );
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// How long to wait before the next session. A failover must fit in the
/// node timeout (the agent fences itself after it), so the other peers are
/// tried at once, one after the other; only a whole round of failures backs
/// off, never past a quarter of the node timeout. A session in which a
/// leader acknowledged the node was a working link: after it (a leader
/// change, a peer lost) the peers are tried at once again, however short it
/// was. Before, short working sessions between failures let the backoff
/// grow to 2 s, and on slow VMs an agent slept through its fencing window.
#[derive(Debug)]
struct Retry {
    backoff: Duration,
    failed_in_a_row: usize,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            backoff: Duration::from_millis(200),
            failed_in_a_row: 0,
        }
    }
}

impl Retry {
    fn after_session(&mut self, worked: bool, peers: usize, node_timeout: Duration) -> Duration {
        if worked {
            *self = Retry::default();
        }
        self.failed_in_a_row += 1;
        if !self.failed_in_a_row.is_multiple_of(peers.max(1)) {
            return Duration::from_millis(50);
        }
        let cap = (node_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(2));
        let pause = self.backoff.min(cap);
        self.backoff = (self.backoff * 2).min(cap);
        pause
    }
}

/// One connected period: register, then heartbeat and watch until either fails.
async fn session(
    links: &Links,
    me: &Identity,
    heartbeat: Duration,
    desired: &watch::Sender<Option<pb::DesiredAllocations>>,
    shared: &super::Shared,
) -> Result<(), LinkError> {
    let mut client = links.client().await?;
    // A heartbeat first: after a failover it is all a leader needs to hear,
    // and it moves the fencing clock before anything slower is tried.
    let known = beat(&mut client, me, shared).await?;
    if !known || !links.registered.load(Ordering::Relaxed) {
        register(&mut client, me, shared).await?;
        links.registered.store(true, Ordering::Relaxed);
        tracing::info!(node = %me.name, "registered with the scheduler");
    }
    let mut stream = client
        .watch(pb::WatchRequest {
            name: me.name.clone(),
            deltas: true,
        })
        .await?
        .into_inner();
    let mut beat_client = client.clone();
    let beats = async {
        loop {
            tokio::time::sleep(heartbeat).await;
            if !beat(&mut beat_client, me, shared).await? {
                register(&mut beat_client, me, shared).await?;
            }
        }
    };
    let watching = async {
        // The whole set this stream has sent so far: each delta applies to it.
        let mut whole: Option<pb::DesiredAllocations> = None;
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    let set = match (message.delta, whole.as_mut()) {
                        (false, _) => whole.insert(message).clone(),
                        (true, Some(w)) => {
                            drover_proto::desired::merge(w, message);
                            w.clone()
                        }
                        (true, None) => return Err(LinkError::DeltaFirst),
                    };
                    let newer = desired
                        .borrow()
                        .as_ref()
                        .is_none_or(|old| set.index >= old.index);
                    if newer {
                        let _ = desired.send(Some(set));
                    }
                }
                Ok(None) => return Err::<(), LinkError>(LinkError::WatchEnded),
                Err(e) => return Err(e.into()),
            }
        }
    };
    tokio::select! {
        r = beats => r,
        r = watching => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOUR: Duration = Duration::from_secs(4);

    #[test]
    fn the_other_peers_are_tried_at_once_and_a_failed_round_backs_off() {
        let mut r = Retry::default();
        let pauses: Vec<u128> = (0..9)
            .map(|_| r.after_session(false, 3, FOUR).as_millis())
            .collect();
        assert_eq!(pauses, [50, 50, 200, 50, 50, 400, 50, 50, 800]);
    }

    #[test]
    fn the_backoff_stays_within_a_quarter_of_the_node_timeout() {
        let mut r = Retry::default();
        let most = (0..60)
            .map(|_| r.after_session(false, 3, FOUR))
            .max()
            .unwrap();
        assert_eq!(most, Duration::from_secs(1));
        let mut r = Retry::default();
        let most = (0..60)
            .map(|_| r.after_session(false, 1, Duration::from_secs(60)))
            .max()
            .unwrap();
        assert_eq!(most, Duration::from_secs(2), "and never past 2 s");
    }

    #[test]
    fn a_session_a_leader_acknowledged_starts_over_however_short() {
        let mut r = Retry::default();
        for _ in 0..9 {
            r.after_session(false, 3, FOUR);
        }
        // Short but acknowledged: the next peer at once, then a fresh round.
        assert_eq!(r.after_session(true, 3, FOUR), Duration::from_millis(50));
        assert_eq!(r.after_session(false, 3, FOUR), Duration::from_millis(50));
        assert_eq!(r.after_session(false, 3, FOUR), Duration::from_millis(200));
    }
}
