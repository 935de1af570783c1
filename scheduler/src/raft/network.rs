//! Raft RPCs between scheduler peers, over gRPC.
//!
//! openraft needs three calls between peers: append entries (which is
//! also the heartbeat), request a vote, and install a snapshot chunk. Drover
//! carries them over the `RaftService` gRPC service. Each payload is opaque
//! JSON: the request is openraft's own request type, the answer is
//! `Result<response, RaftError>` exactly as the remote `Raft` returned it, so
//! the remote's refusals (a higher vote, a fatal error) arrive intact.
//!
//! The client side caches one lazily-connecting tonic channel per peer and
//! reports failures the way openraft's replication loop expects: a peer that
//! cannot be reached is `Unreachable` (openraft then backs off before
//! retrying), a deadline that passed is `Timeout`, anything else on the wire
//! is a `NetworkError`. The server side, [`RaftServer`], decodes a payload and
//! hands it to the local `Raft`.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_proto::pb::raft_service_client::RaftServiceClient;
use drover_proto::pb::raft_service_server::{RaftService, RaftServiceServer};
use drover_proto::pb::RaftPayload;
use drover_proto::pki::tls::ClientTls;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::types::{Node, NodeId, Raft, TypeConfig};

/// The largest Raft message accepted or sent: an append batch or a snapshot
/// chunk. tonic's default of 4 MiB is too small for a large batch.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// How many bytes of entries the leader reads for one append (always at
/// least one entry; see `LogStore::limited_get_log_entries`). Encoding,
/// sending, decoding and persisting a MiB of JSON takes some 20 ms here in
/// a release build; openraft gives an append the heartbeat interval (50
/// ms). Smaller would cost throughput: openraft sends one append at a time
/// to a follower, and under load an append carries several batches.
pub(crate) const APPEND_BUDGET: usize = 1 << 20;

/// An append larger than this, of more than one entry, is not sent: the
/// log reader's sizes are those entries had stored, and this catches one
/// that grew on the wire (see [`fewer_entries`]).
pub(crate) const MAX_APPEND_BYTES: usize = 4 * APPEND_BUDGET;

/// The largest command proposed as one log entry (and so the largest
/// append): larger ones are refused where they are proposed.
pub(crate) const MAX_COMMAND_BYTES: usize = 1 << 20;

/// How long to wait for a TCP connection to a peer before calling it
/// unreachable; short, because a dead peer must not hold up elections.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// What can go wrong sending or serving a Raft RPC.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer {target} has an invalid address {addr:?}: {source}")]
    BadAddress {
        target: NodeId,
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("{rpc} request does not encode: {source}")]
    Encode {
        rpc: RPCTypes,
        source: serde_json::Error,
    },
    #[error("{rpc} payload does not decode: {source}")]
    Decode {
        rpc: RPCTypes,
        source: serde_json::Error,
    },
    #[error("{rpc} to peer {target} at {addr}: {status}")]
    Status {
        rpc: RPCTypes,
        target: NodeId,
        addr: String,
        status: Status,
    },
}

/// Channels to peers, keyed by node id, shared by every connection the
/// factory hands out so a reconnecting replication stream reuses its channel.
type Channels = Arc<Mutex<HashMap<NodeId, (String, Channel)>>>;

/// Makes [`Connection`]s to peers; given to `Raft::new`.
#[derive(Clone, Debug)]
pub struct Network {
    id: NodeId,
    channels: Channels,
    tls: ClientTls,
    /// How long appends take to be answered.
    append_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Network {
    /// A network for the peer `id`, dialling peers with `tls`.
    pub fn new(id: NodeId, tls: ClientTls) -> Self {
        Self {
            id,
            channels: Arc::default(),
            tls,
            append_seconds: prometheus_client::metrics::histogram::Histogram::new(
                super::stats::latency_buckets(),
            ),
        }
    }

    /// Times every append answered into `h`.
    pub fn observed(mut self, h: prometheus_client::metrics::histogram::Histogram) -> Self {
        self.append_seconds = h;
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        Connection {
            id: self.id,
            target,
            node: node.clone(),
            channels: self.channels.clone(),
            tls: self.tls.clone(),
            pacing: Pacing::default(),
            append_seconds: self.append_seconds.clone(),
        }
    }
}

/// RPCs from this peer to one peer.
pub struct Connection {
    id: NodeId,
    target: NodeId,
    node: Node,
    channels: Channels,
    tls: ClientTls,
    pacing: Pacing,
    append_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Connection {
    /// The cached channel to the peer, created (without connecting) if there
    /// is none yet or the peer's address changed.
    fn client(&self) -> Result<RaftServiceClient<Channel>, TransportError> {
        let addr = &self.node.addr;
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(&self.target) {
            Some((a, ch)) if a == addr => ch.clone(),
            _ => {
                let uri = if addr.contains("://") {
                    addr.clone()
                } else {
                    format!("http://{addr}")
                };
                let ch = Endpoint::from_shared(uri)
                    .map_err(|source| TransportError::BadAddress {
                        target: self.target,
                        addr: addr.clone(),
                        source,
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(crate::KEEPALIVE)
                    .keep_alive_timeout(crate::KEEPALIVE)
                    .keep_alive_while_idle(true);
                let ch = self.tls.connect_lazy(&ch);
                channels.insert(self.target, (addr.clone(), ch.clone()));
                ch
            }
        };
        Ok(RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    /// Send one RPC and decode the remote `Raft`'s answer.
    async fn call<Req, Resp, E>(
        &self,
        rpc: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        self.send(rpc, encode(rpc, req)?, option).await
    }

    /// Send one encoded RPC and decode the remote `Raft`'s answer.
    async fn send<Resp, E>(
        &self,
        rpc: RPCTypes,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, E>>
    where
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let mut client = self.client().map_err(|e| Unreachable::new(&e))?;
        let ttl = option.hard_ttl();
        let mut request = Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        let call = async {
            match rpc {
                RPCTypes::AppendEntries => client.append(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.snapshot(request).await,
            }
        };
        // The grpc-timeout header only asks the server to give up; a peer
        // behind a dropped link never answers, so the deadline is also
        // enforced here.
        let result = tokio::time::timeout(ttl, call)
            .await
            .map_err(|_| self.timeout(rpc, ttl))?;
        let payload = result
            .map_err(|status| self.status_error(rpc, ttl, status))?
            .into_inner();
        let answer: Result<Resp, E> = serde_json::from_slice(&payload.data)
            .map_err(|source| NetworkError::new(&TransportError::Decode { rpc, source }))?;
        answer.map_err(|e| RemoteError::new_with_node(self.target, self.node.clone(), e).into())
    }

    fn timeout<E: StdError>(&self, rpc: RPCTypes, ttl: Duration) -> RPCError<NodeId, Node, E> {
        Timeout {
            action: rpc,
            id: self.id,
            target: self.target,
            timeout: ttl,
        }
        .into()
    }

    fn status_error<E: StdError>(
        &self,
        rpc: RPCTypes,
        ttl: Duration,
        status: Status,
    ) -> RPCError<NodeId, Node, E> {
        let code = status.code();
        let err = TransportError::Status {
            rpc,
            target: self.target,
            addr: self.node.addr.clone(),
            status,
        };
        match code {
            // tonic reports a refused or broken connection as Unavailable.
            Code::Unavailable => Unreachable::new(&err).into(),
            Code::DeadlineExceeded => self.timeout(rpc, ttl),
            _ => NetworkError::new(&err).into(),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let rpc_type = RPCTypes::AppendEntries;
        let data = encode(rpc_type, &rpc)?;
        let bytes = data.len();
        if let Some(fewer) = self.pacing.before(rpc.entries.len(), bytes) {
            tracing::debug!(
                target = self.target,
                entries = rpc.entries.len(),
                bytes,
                limit = self.pacing.limit,
                fewer,
                "append too large for one heartbeat interval; asking for fewer entries"
            );
            return Err(PayloadTooLarge::new_entries_hint(fewer).into());
        }
        let started = std::time::Instant::now();
        let answer = self.send(rpc_type, data, &option).await;
        match &answer {
            Err(RPCError::Timeout(_)) => self.pacing.missed(),
            _ => {
                self.append_seconds.observe(started.elapsed().as_secs_f64());
                self.pacing.answered(started.elapsed(), option.hard_ttl())
            }
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, &rpc, &option).await
    }
}

fn encode<Req: Serialize>(rpc: RPCTypes, req: &Req) -> Result<Vec<u8>, NetworkError> {
    serde_json::to_vec(req)
        .map_err(|source| NetworkError::new(&TransportError::Encode { rpc, source }))
}

/// When an append of `entries` encodes to `bytes`, more than `limit`: how
/// many entries to send at a time instead. `None` when it may go as it is;
/// one entry always may (none is larger than [`MAX_COMMAND_BYTES`]).
fn fewer_entries(entries: usize, bytes: usize, limit: usize) -> Option<u64> {
    if entries <= 1 || bytes <= limit {
        return None;
    }
    let fit = entries.saturating_mul(limit) / bytes;
    Some(u64::try_from(fit.clamp(1, entries - 1)).unwrap_or(1))
}

/// How many bytes one append to a peer may carry. openraft gives an append
/// the heartbeat interval and, when it misses it, sends the same entries
/// again (and more): on a slow peer or link an append too large for the
/// deadline would be sent forever and the peer would never catch up. So an
/// append that misses halves the limit (down to one entry, which always
/// goes), and one answered in under a quarter of the deadline doubles it
/// again, up to [`MAX_APPEND_BYTES`].
#[derive(Debug)]
struct Pacing {
    limit: usize,
    /// The size of the append on its way; still set when the next one
    /// starts, it was abandoned at openraft's deadline.
    sending: Option<usize>,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            limit: MAX_APPEND_BYTES,
            sending: None,
        }
    }
}

impl Pacing {
    /// The smallest limit; a single entry larger than it still goes alone.
    const FLOOR: usize = 32 << 10;

    /// Before sending an append of `entries` that encoded to `bytes`: how
    /// many entries to send instead, if fewer.
    fn before(&mut self, entries: usize, bytes: usize) -> Option<u64> {
        if self.sending.is_some() {
            self.missed();
        }
        let fewer = fewer_entries(entries, bytes, self.limit);
        if fewer.is_none() {
            self.sending = Some(bytes);
        }
        fewer
    }

    /// The append on its way missed its deadline.
    fn missed(&mut self) {
        if let Some(bytes) = self.sending.take() {
            self.limit = self.limit.min((bytes / 2).max(Self::FLOOR));
        }
    }

    /// The append on its way was answered (or failed otherwise) after `took`.
    fn answered(&mut self, took: Duration, deadline: Duration) {
        if let Some(bytes) = self.sending.take() {
            if took < deadline / 4 && bytes.saturating_mul(2) >= self.limit {
                self.limit = self.limit.saturating_mul(2).min(MAX_APPEND_BYTES);
            }
        }
    }
}

/// What a follower last heard from its leader: the leader's commit index and
/// when. A stale read reports it, so the reader knows how old the answer may be.
#[derive(Debug, Default)]
pub struct LeaderContact {
    last: Mutex<Option<(u64, std::time::Instant)>>,
}

impl LeaderContact {
    fn heard(&self, leader_commit: u64) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((leader_commit, std::time::Instant::now()));
    }

    /// The leader's commit index at the last accepted append, and how long ago.
    pub fn last(&self) -> Option<(u64, Duration)> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(i, at)| (i, at.elapsed()))
    }
}

/// The gRPC face of a local `Raft`: serve it with [`RaftServer::into_service`].
#[derive(Clone)]
pub struct RaftServer {
    raft: Raft,
    contact: Arc<LeaderContact>,
}

impl RaftServer {
    pub fn new(raft: Raft) -> Self {
        Self {
            raft,
            contact: Arc::default(),
        }
    }

    /// What this peer last heard from a leader through this server.
    pub fn contact(&self) -> Arc<LeaderContact> {
        self.contact.clone()
    }

    /// The tonic service, with message limits matching the client's.
    pub fn into_service(self) -> RaftServiceServer<Self> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }
}

fn decode_request<T: DeserializeOwned>(
    rpc: RPCTypes,
    req: Request<RaftPayload>,
) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().data).map_err(|source| {
        Status::invalid_argument(TransportError::Decode { rpc, source }.to_string())
    })
}

fn encode_answer<T: Serialize>(rpc: RPCTypes, answer: &T) -> Result<Response<RaftPayload>, Status> {
    let data = serde_json::to_vec(answer)
        .map_err(|source| Status::internal(TransportError::Encode { rpc, source }.to_string()))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = RPCTypes::AppendEntries;
        let req: AppendEntriesRequest<TypeConfig> = decode_request(rpc, request)?;
        let leader_commit = req.leader_commit.map_or(0, |l| l.index);
        let answer = self.raft.append_entries(req).await;
        if let Ok(AppendEntriesResponse::Success) = answer {
            self.contact.heard(leader_commit);
        }
        encode_answer(rpc, &answer)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = RPCTypes::Vote;
        let req: VoteRequest<NodeId> = decode_request(rpc, request)?;
        encode_answer(rpc, &self.raft.vote(req).await)
    }

    async fn snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = RPCTypes::InstallSnapshot;
        let req: InstallSnapshotRequest<TypeConfig> = decode_request(rpc, request)?;
        encode_answer(rpc, &self.raft.install_snapshot(req).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_too_large_for_the_deadline_asks_for_fewer_entries() {
        let max = MAX_APPEND_BYTES;
        assert_eq!(fewer_entries(300, max, max), None);
        assert_eq!(fewer_entries(1, 40 * max, max), None, "one always goes");
        assert_eq!(fewer_entries(300, 3 * max, max), Some(100));
        assert_eq!(fewer_entries(2, 40 * max, max), Some(1));
        assert_eq!(fewer_entries(10, max + 1, max), Some(9), "always fewer");
    }

    #[test]
    fn appends_that_miss_the_deadline_are_split_until_they_make_it() {
        let deadline = Duration::from_millis(50);
        let mut p = Pacing::default();
        // Two 200KiB entries keep missing the deadline: the first miss is
        // seen when the same append is tried again.
        assert_eq!(p.before(2, 400 << 10), None);
        assert_eq!(p.before(2, 400 << 10), Some(1), "sent one at a time");
        assert_eq!(p.limit, 200 << 10);
        // One entry goes however large; answered slowly, the limit stays.
        assert_eq!(p.before(1, 200 << 10), None);
        p.answered(Duration::from_millis(30), deadline);
        assert_eq!(p.limit, 200 << 10);
        assert_eq!(p.before(2, 400 << 10), Some(1));
        // A miss reported as a timeout halves it too, never below the floor.
        assert_eq!(p.before(1, 40 << 10), None);
        p.missed();
        assert_eq!(p.limit, Pacing::FLOOR);
        // Quick answers to appends near the limit double it again, up to the most.
        for _ in 0..20 {
            assert_eq!(p.before(1, p.limit), None);
            p.answered(Duration::from_millis(5), deadline);
        }
        assert_eq!(p.limit, MAX_APPEND_BYTES);
        // Small quick appends say nothing about large ones.
        p.limit = 64 << 10;
        assert_eq!(p.before(3, 300), None);
        p.answered(Duration::from_millis(1), deadline);
        assert_eq!(p.limit, 64 << 10);
    }
}
