//! What the UI follows as server-sent events: the cluster's events (as
//! `drover events -f` streams them) and an allocation's logs, read from
//! its agent.

use super::api::{answer, not_found};
use super::{Scope, Ui};
use crate::events::{Filter, Gone, Start};
use crate::state::events::Topic;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State as With};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use drover_proto::pb;
use prost::Message;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// A comment now and then keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How many events a page asks for at most to start with.
const MOST_RECENT: usize = 1000;

/// A server-sent event.
fn sse(kind: &str, id: Option<&str>, data: &serde_json::Value) -> String {
    let id = id.map(|i| format!("id: {i}\n")).unwrap_or_default();
    format!("event: {kind}\n{id}data: {data}\n\n")
}

fn streaming(rx: mpsc::Receiver<String>) -> Response {
    let body = Body::from_stream(tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Ok::<_, Infallible>,
    ));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_default()
}

fn bad_request(why: String) -> Response {
    answer(StatusCode::BAD_REQUEST, &json!({ "error": why }))
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct EventsQuery {
    /// Only this job's events.
    job: Option<String>,
    /// Only these topics, comma-separated.
    topic: Option<String>,
    /// Resume after this event (`INDEX.SEQ`); the `Last-Event-ID` header
    /// says the same and wins.
    after: Option<String>,
    /// Start at this cursor (`INDEX.SEQ`, as a `gone` event's `resume`).
    from: Option<String>,
    /// Start with (at most) the last N events kept.
    recent: Option<usize>,
}

/// `INDEX.SEQ` as a cursor.
fn cursor(s: &str) -> Option<(u64, u32)> {
    let (i, q) = s.trim().split_once('.')?;
    Some((i.parse().ok()?, q.parse().ok()?))
}

/// `/v1/events`: followed until the client goes or the peer stops. Each
/// event's id is its `INDEX.SEQ`, so a reconnecting client resumes after
/// the last one it saw; a start older than this peer keeps, or a client too
/// slow to keep up, ends with an `gone` event saying where to resume.
pub(super) async fn events(
    With(ui): With<Ui>,
    Query(q): Query<EventsQuery>,
    Scope(scope): Scope,
    headers: HeaderMap,
) -> Response {
    // A token fenced to some jobs sees only their events.
    let mut topics = Vec::new();
    for t in q.topic.iter().flat_map(|t| t.split(',')).map(str::trim) {
        match Topic::parse(t) {
            Some(t) => topics.push(t),
            None if t.is_empty() => {}
            None => {
                return bad_request(format!(
                    "topic: {t:?} is not a topic (job, rollout, alloc, node, cluster)"
                ))
            }
        }
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(q.after.as_deref());
    let start = match (after, q.from.as_deref()) {
        (Some(a), _) => match cursor(a) {
            Some((index, seq)) => Start::At(index, seq + 1),
            None => return bad_request(format!("after: {a:?} is not INDEX.SEQ")),
        },
        (None, Some(f)) => match cursor(f) {
            Some((index, seq)) => Start::At(index, seq),
            None => return bad_request(format!("from: {f:?} is not INDEX.SEQ")),
        },
        (None, None) => match q.recent {
            Some(n) => Start::Last(n.min(MOST_RECENT)),
            None => Start::Next,
        },
    };
    let filter = Filter {
        topics,
        job: q.job.filter(|j| !j.is_empty()),
        job_prefix: Some(scope).filter(|p| !p.is_empty()),
    };
    let mut sub = match ui.events.subscribe(start, filter) {
        Ok(s) => s,
        Err(e) => return answer(StatusCode::GONE, &json!({ "error": e.to_string() })),
    };
    let (tx, rx) = mpsc::channel::<String>(8);
    let mut stop = ui.stop.subscribe();
    tokio::spawn(async move {
        loop {
            let out = match sub.poll() {
                Err(e) => {
                    let resume = match &e {
                        Gone::TooSlow { resume, .. } => Some(format!("{}.{}", resume.0, resume.1)),
                        Gone::NotKept { .. } => None,
                    };
                    let gone = json!({ "error": e.to_string(), "resume": resume });
                    let _ = tx.send(sse("gone", None, &gone)).await;
                    return;
                }
                Ok(Some(batch)) => {
                    let Ok(b) = pb::EventBatch::decode(batch.bytes.as_slice()) else {
                        return;
                    };
                    let mut out = String::new();
                    for e in &b.events {
                        let id = format!("{}.{}", e.index, e.seq);
                        out.push_str(&sse("event", Some(&id), &drover_proto::json::event(e)));
                    }
                    if out.is_empty() {
                        // Nothing it wants yet: where it is, as the id of
                        // the last event looked at (a reconnect goes on
                        // from there, not from the last event it wanted).
                        out = match b.next_seq.checked_sub(1) {
                            Some(seq) => {
                                let id = format!("{}.{seq}", b.next_index);
                                sse("cursor", Some(&id), &json!({}))
                            }
                            None => format!(": at {}.{}\n\n", b.next_index, b.next_seq),
                        };
                    }
                    out
                }
                Ok(None) => {
                    tokio::select! {
                        more = sub.changed() => if !more { return },
                        _ = tokio::time::sleep(KEEPALIVE) => {
                            if tx.send(": keepalive\n\n".into()).await.is_err() {
                                return;
                            }
                        }
                        _ = tx.closed() => return,
                        _ = stop.recv() => return,
                    }
                    continue;
                }
            };
            tokio::select! {
                sent = tx.send(out) => if sent.is_err() { return },
                _ = stop.recv() => return,
            }
        }
    });
    streaming(rx)
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct LogsQuery {
    /// Only the last N lines first (default 200; negative: all).
    tail: Option<i64>,
    /// Go on with what it writes next (default true).
    follow: Option<bool>,
}

/// `/v1/allocation/{id}/logs`: the allocation's output as `log` events
/// (`{"lines": [{"stream": "stdout", "at_ms": ..., "text": ...}]}`), read
/// from its agent; `end` when it ends, `error` when the agent cannot be
/// read.
pub(super) async fn logs(
    With(ui): With<Ui>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    use crate::state::acl::Permission;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(crate::server::access::bearer);
    let found = {
        let s = ui.peer.state.read().unwrap_or_else(|p| p.into_inner());
        s.find_allocation(&id).map(|a| {
            let address = s.nodes.get(&a.node).map(|n| n.address.clone());
            // Loopback is let in without a token, as everywhere here.
            let allowed = if drover_proto::http::local_caller(&headers, from) {
                Ok(())
            } else {
                s.acl
                    .authorize(
                        token,
                        crate::clock::now_ms(),
                        Permission::Logs,
                        Some(&a.job),
                        &format!("read the output of job {:?}", a.job),
                    )
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            (a.id.clone(), a.node.clone(), address, allowed)
        })
    };
    let (alloc, node, address, allowed) = match found {
        Ok(f) => f,
        Err(why) => return not_found(why),
    };
    if let Err(why) = allowed {
        return answer(StatusCode::FORBIDDEN, &json!({ "error": why }));
    }
    let Some(address) = address.filter(|a| !a.is_empty()) else {
        return not_found(format!("allocation {alloc} is not on a known node"));
    };
    let stream = match agent_logs(&ui, &alloc, &node, &address, q).await {
        Ok(s) => s,
        Err(why) => return answer(StatusCode::BAD_GATEWAY, &json!({ "error": why })),
    };
    let (tx, rx) = mpsc::channel::<String>(8);
    let mut stop = ui.stop.subscribe();
    tokio::spawn(async move {
        let mut stream = stream;
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(": keepalive\n\n".into()).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tx.closed() => return,
                _ = stop.recv() => return,
            };
            let out = match next {
                Ok(Some(chunk)) => {
                    // From an agent that keeps no records: plain text.
                    let plain = (!chunk.data.is_empty()).then(|| pb::LogRecord {
                        stream: pb::LogStream::Stdout as i32,
                        at_ns: 0,
                        data: chunk.data.clone(),
                    });
                    let lines: Vec<serde_json::Value> = chunk
                        .records
                        .iter()
                        .chain(plain.as_ref())
                        .map(|r| {
                            let stream = match r.stream() {
                                pb::LogStream::Stderr => "stderr",
                                _ => "stdout",
                            };
                            json!({
                                "stream": stream,
                                "at_ms": r.at_ns / 1_000_000,
                                "text": String::from_utf8_lossy(&r.data),
                            })
                        })
                        .collect();
                    sse("log", None, &json!({ "lines": lines }))
                }
                Ok(None) => {
                    let _ = tx.send(sse("end", None, &json!({}))).await;
                    return;
                }
                Err(s) => {
                    let why = json!({ "error": s.message() });
                    let _ = tx.send(sse("error", None, &why)).await;
                    return;
                }
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    streaming(rx)
}

/// Opens the agent's log stream for one allocation.
async fn agent_logs(
    ui: &Ui,
    alloc: &str,
    node: &str,
    address: &str,
    q: LogsQuery,
) -> Result<tonic::Streaming<pb::LogChunk>, String> {
    use drover_proto::pki::ticket::Action;
    let (mut agent, ticket) = super::agents::dial(ui, Action::Logs, alloc, node, address).await?;
    let req = ticket.request(pb::LogsRequest {
        alloc_id: alloc.to_string(),
        follow: q.follow.unwrap_or(true),
        tail: q.tail.unwrap_or(200),
        since_ms: 0,
        records: true,
    });
    agent
        .logs(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_as_index_dot_seq() {
        assert_eq!(cursor("12.3"), Some((12, 3)));
        assert_eq!(cursor("12"), None);
        assert_eq!(cursor("x.1"), None);
    }
}
