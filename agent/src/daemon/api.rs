//! This node's own API: allocation logs and resource usage.
//!
//! Each allocation's stdout and stderr go to one file (`logs/<id>.log`),
//! which outlives the container so logs of a stopped allocation can still
//! be read. Under a monitor each line is a record of its stream and time,
//! and the file rotates by size (`runtime::log`): reads start with the
//! rotated generation, and `follow` polls the file for growth and switches
//! to the new file when the old one has been rotated away. A reader gets
//! records (`drover logs`, the web UI: the streams apart, with times, from
//! a time on) or, as older clients ask, the plain text.
//!
//! Exec, logs and usage each need a ticket a scheduler signed for that
//! call (see `drover_proto::pki::ticket`): the schedulers know who may do
//! what; this node only checks their signature.

use super::Shared;
use drover_proto::pb::{self, agent_api_server::AgentApi};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Only clients of the cluster (a certificate of the cluster CA naming a
/// client: `drover logs`, `drover exec`) and scheduler peers (the web UI
/// shows logs; a peer signs tickets anyway, so it gains nothing it could
/// not give itself; `admit` lets a peer read logs and usage only) may call this
/// node's API; nodes and replicas may not.
/// Without TLS there is nobody to check.
fn only_clients(tls: bool) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        if !tls {
            return Ok(req);
        }
        match drover_proto::pki::tls::peer_identity(&req) {
            Some(
                drover_proto::pki::Identity::Client(_) | drover_proto::pki::Identity::Scheduler(_),
            ) => Ok(req),
            Some(other) => Err(Status::permission_denied(format!(
                "{other} may not call a node's API"
            ))),
            None => Err(Status::unauthenticated(
                "a node's API needs a client certificate signed by the cluster CA",
            )),
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    security: drover_proto::pki::tls::Security,
    shared: Arc<Shared>,
    mut stop: broadcast::Receiver<()>,
) {
    let tls = matches!(security, drover_proto::pki::tls::Security::Tls(_));
    let incoming = drover_proto::pki::tls::incoming(listener, &security);
    let tickets = match &security {
        drover_proto::pki::tls::Security::Tls(live) => Some(live.clone()),
        drover_proto::pki::tls::Security::Plaintext => None,
    };
    let svc = pb::agent_api_server::AgentApiServer::with_interceptor(
        Api { shared, tickets },
        only_clients(tls),
    );
    let r = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(2)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(2)))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.recv().await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "agent api failed");
    }
}

struct Api {
    shared: Arc<Shared>,
    /// The node's TLS material, whose CA the schedulers' ticket
    /// certificates must chain to (`None` without TLS: no tickets).
    tickets: Option<drover_proto::pki::tls::LiveTls>,
}

impl Api {
    /// Checks the ticket in `metadata` opens `action` on allocation `alloc`
    /// here, for the client `peer` (the one it was issued to).
    fn admit(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        peer: Option<&drover_proto::pki::Identity>,
        action: drover_proto::pki::ticket::Action,
        alloc: &str,
    ) -> Result<(), Status> {
        use drover_proto::pki::ticket::{self, TicketError};
        let Some(live) = &self.tickets else {
            return Ok(());
        };
        let presented = metadata.get(ticket::METADATA).and_then(|v| v.to_str().ok());
        ticket::verify(
            presented,
            &live.material().ca_pem,
            action,
            alloc,
            &self.shared.node,
            std::time::SystemTime::now(),
        )
        .and_then(|t| match peer {
            Some(drover_proto::pki::Identity::Client(name)) if *name != t.holder => {
                Err(TicketError::Mismatch(format!("client {}", t.holder)))
            }
            // A peer reads logs and usage (the web UI), with a ticket for
            // that peer alone (named by its URI: no client's name looks
            // like one); it never runs commands.
            Some(s @ drover_proto::pki::Identity::Scheduler(_))
                if s.uri() != t.holder || action == drover_proto::pki::ticket::Action::Exec =>
            {
                Err(TicketError::Mismatch(t.holder.clone()))
            }
            _ => Ok(t),
        })
        .map(|t| tracing::debug!(holder = %t.holder, %action, alloc, "ticket accepted"))
        .map_err(|e| {
            tracing::warn!(%action, alloc, why = %e, "call refused: ticket");
            match e {
                TicketError::Missing => Status::unauthenticated(e.to_string()),
                _ => Status::permission_denied(e.to_string()),
            }
        })
    }
}

/// The file now at `path`, if it is not the one `file` has open.
fn replaced(file: &std::fs::File, path: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let old = file.metadata().ok()?;
    let now = std::fs::metadata(path).ok()?;
    if (old.dev(), old.ino()) == (now.dev(), now.ino()) {
        return None;
    }
    std::fs::File::open(path).ok()
}

/// Log file bytes as a reader asked for them: records or plain text,
/// from a time on, in whole lines.
struct Shape {
    records: bool,
    /// Leave out lines before this (0: none).
    since_ns: i64,
    /// An unfinished last line, until the rest of it is read.
    carry: Vec<u8>,
}

/// The most a chunk holds before the next one starts.
const CHUNK_BYTES: usize = 64 * 1024;

impl Shape {
    fn new(records: bool, since_ms: i64) -> Shape {
        Shape {
            records,
            since_ns: since_ms.saturating_mul(1_000_000),
            carry: Vec::new(),
        }
    }

    /// The chunks for `data`, read next from the file: its whole lines
    /// (an unfinished last one waits for the rest).
    fn chunks(&mut self, data: &[u8]) -> Vec<pb::LogChunk> {
        self.carry.extend_from_slice(data);
        let Some(end) = self.carry.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let lines: Vec<u8> = self.carry.drain(..=end).collect();
        self.lines(&lines[..end])
    }

    /// An unfinished last line, as it is.
    fn rest(&mut self) -> Vec<pb::LogChunk> {
        let rest = std::mem::take(&mut self.carry);
        if rest.is_empty() {
            return Vec::new();
        }
        self.lines(&rest)
    }

    fn lines(&self, lines: &[u8]) -> Vec<pb::LogChunk> {
        use crate::runtime::log::{parse, Stream};
        let mut out = Vec::new();
        let mut chunk = pb::LogChunk::default();
        let mut size = 0;
        for line in lines.split(|b| *b == b'\n') {
            let r = parse(line);
            if self.since_ns > 0 && r.at_ns < self.since_ns {
                continue;
            }
            size += r.data.len();
            if self.records {
                let stream = match r.stream {
                    Stream::Stdout => pb::LogStream::Stdout,
                    Stream::Stderr => pb::LogStream::Stderr,
                };
                chunk.records.push(pb::LogRecord {
                    stream: stream as i32,
                    at_ns: r.at_ns,
                    data: r.data.into_owned(),
                });
            } else {
                chunk.data.extend_from_slice(&r.data);
            }
            if size >= CHUNK_BYTES {
                out.push(std::mem::take(&mut chunk));
                size = 0;
            }
        }
        if size > 0 {
            out.push(chunk);
        }
        out
    }
}

/// The byte offset of the first line of `data` written at or after
/// `since_ns` (0: the start).
fn since_offset(data: &[u8], since_ns: i64) -> usize {
    if since_ns <= 0 {
        return 0;
    }
    let mut at = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if crate::runtime::log::parse(body).at_ns >= since_ns {
            return at;
        }
        at += line.len();
    }
    data.len()
}

/// The byte offset where the last `n` lines of `data` start.
fn tail_offset(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Cpu use in thousandths of a core from two cumulative readings.
fn cpu_millis(before_ns: u64, after_ns: u64, window: Duration) -> u64 {
    let window_ns = window.as_nanos().max(1) as u64;
    after_ns.saturating_sub(before_ns) * 1000 / window_ns
}

fn check_alloc_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Status::invalid_argument(
            "alloc_id: must be an allocation id",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl AgentApi for Api {
    type ExecStream = super::exec::ExecStream;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let metadata = req.metadata().clone();
        let peer = drover_proto::pki::tls::peer_identity(&req).cloned();
        let admit = |alloc: &str| {
            self.admit(
                &metadata,
                peer.as_ref(),
                drover_proto::pki::ticket::Action::Exec,
                alloc,
            )
        };
        super::exec::exec(self.shared.clone(), req.into_inner(), admit)
            .await
            .map(Response::new)
    }

    async fn usage(&self, req: Request<pb::UsageRequest>) -> Result<Response<pb::Usage>, Status> {
        let id = req.get_ref().alloc_id.clone();
        check_alloc_id(&id)?;
        self.admit(
            req.metadata(),
            drover_proto::pki::tls::peer_identity(&req),
            drover_proto::pki::ticket::Action::Usage,
            &id,
        )?;
        let cgroups = self.shared.runtime.cgroups();
        let not_running =
            || Status::not_found(format!("allocation {id} is not running on this node"));
        if cgroups.procs(&id).is_empty() {
            return Err(not_running());
        }
        // Two readings of the cumulative counter, a short window apart.
        const WINDOW: Duration = Duration::from_millis(250);
        let before = cgroups.cpu_usage_ns(&id).ok_or_else(not_running)?;
        let start = std::time::Instant::now();
        tokio::time::sleep(WINDOW).await;
        let after = cgroups.cpu_usage_ns(&id).ok_or_else(not_running)?;
        let window = start.elapsed();
        Ok(Response::new(pb::Usage {
            cpu_millis: cpu_millis(before, after, window),
            cpu_total_ns: after,
            memory_bytes: cgroups.memory_usage(&id).unwrap_or(0),
            memory_limit_bytes: cgroups.memory_limit(&id).unwrap_or(0),
            oom_kills: cgroups.oom_kills(&id),
            window_ms: window.as_millis() as u32,
        }))
    }

    type LogsStream = ReceiverStream<Result<pb::LogChunk, Status>>;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        check_alloc_id(&req.get_ref().alloc_id)?;
        self.admit(
            req.metadata(),
            drover_proto::pki::tls::peer_identity(&req),
            drover_proto::pki::ticket::Action::Logs,
            &req.get_ref().alloc_id,
        )?;
        let req = req.into_inner();
        let path = self.shared.log_path(&req.alloc_id);
        let not_found = || {
            Status::not_found(format!(
                "no logs for allocation {} on this node",
                req.alloc_id
            ))
        };
        let mut file = std::fs::File::open(&path).map_err(|_| not_found())?;
        // The rotated generation first, then the file `follow` goes on with.
        let mut data = std::fs::read(crate::runtime::log::rotated(&path)).unwrap_or_default();
        let rotated_len = data.len();
        file.read_to_end(&mut data)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut pos = (data.len() - rotated_len) as u64;
        let mut shape = Shape::new(req.records, req.since_ms);
        let from = since_offset(&data, shape.since_ns);
        let start = from
            + if req.tail >= 0 {
                tail_offset(&data[from..], req.tail as usize)
            } else {
                0
            };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let follow = req.follow;
        tokio::spawn(async move {
            let mut first = shape.chunks(&data[start..]);
            if !follow {
                // An unfinished last line too: nothing more is coming.
                first.extend(shape.rest());
            }
            for chunk in first {
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let mut buf = Vec::new();
                let read = file
                    .seek(SeekFrom::Start(pos))
                    .and_then(|_| file.read_to_end(&mut buf));
                match read {
                    Ok(0) => {
                        // Rotated away (the old file is fully read): continue
                        // with the new one from its start.
                        if let Some(new) = replaced(&file, &path) {
                            file = new;
                            pos = 0;
                        }
                    }
                    Ok(n) => {
                        pos += n as u64;
                        for chunk in shape.chunks(&buf) {
                            if tx.send(Ok(chunk)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::{cpu_millis, tail_offset};
    use std::time::Duration;

    #[test]
    fn a_reader_gets_whole_records_from_a_time_on_or_plain_text() {
        use super::{since_offset, Shape};
        use crate::runtime::log::{encode, Stream};
        use drover_proto::pb;
        let mut file = b"old text\n".to_vec();
        encode(&mut file, Stream::Stdout, 1_000, b"out one", true);
        encode(&mut file, Stream::Stderr, 2_000, b"err one", true);
        encode(&mut file, Stream::Stdout, 3_000, b"prompt> ", false);
        // Records, from a time on, in whole lines: a cut line waits.
        let from = since_offset(&file, 2_000);
        let mut shape = Shape {
            records: true,
            since_ns: 2_000,
            carry: Vec::new(),
        };
        let cut = file.len() - 5;
        let first = shape.chunks(&file[from..cut]);
        let got: Vec<(i32, i64, Vec<u8>)> = first
            .iter()
            .flat_map(|c| c.records.iter())
            .map(|r| (r.stream, r.at_ns, r.data.clone()))
            .collect();
        assert_eq!(
            got,
            vec![(pb::LogStream::Stderr as i32, 2_000, b"err one\n".to_vec())]
        );
        let next = shape.chunks(&file[cut..]);
        assert_eq!(next[0].records[0].data, b"prompt> ");
        // Plain text, as older clients read it: the lines' text only.
        let mut plain = Shape::new(false, 0);
        let all: Vec<u8> = plain
            .chunks(&file)
            .into_iter()
            .flat_map(|c| c.data)
            .collect();
        assert_eq!(all, b"old text\nout one\nerr one\nprompt> ");
    }

    #[test]
    fn cpu_rate_from_two_readings() {
        let w = Duration::from_millis(250);
        assert_eq!(cpu_millis(0, 250_000_000, w), 1000);
        assert_eq!(cpu_millis(1_000, 1_000 + 25_000_000, w), 100);
        assert_eq!(cpu_millis(5, 3, w), 0);
    }

    #[test]
    fn tail_finds_last_lines() {
        let d = b"a\nb\nc\n";
        assert_eq!(&d[tail_offset(d, 1)..], b"c\n");
        assert_eq!(&d[tail_offset(d, 2)..], b"b\nc\n");
        assert_eq!(&d[tail_offset(d, 10)..], b"a\nb\nc\n");
        assert_eq!(&d[tail_offset(d, 0)..], b"");
        let partial = b"a\nb";
        assert_eq!(&partial[tail_offset(partial, 1)..], b"b");
    }
}
