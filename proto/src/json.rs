//! Wire types as JSON documents: what `drover ... -o json` prints and what
//! the scheduler's read-only HTTP API (`/v1/...`, behind the web UI)
//! answers, built in one place so both show the same fields with the same
//! names.

use crate::pb;
use serde_json::{json, Map, Value};

pub fn allocation(a: &pb::Allocation) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(a.id));
    m.insert("name".into(), json!(a.name));
    m.insert("job".into(), json!(a.job));
    m.insert("version".into(), json!(a.version));
    m.insert("replica".into(), json!(a.replica));
    m.insert("node".into(), json!(a.node));
    m.insert("desired".into(), json!(a.desired));
    m.insert("state".into(), json!(a.state));
    if a.pid != 0 {
        m.insert("pid".into(), json!(a.pid));
    }
    if let Some(c) = a.exit_code {
        m.insert("exit_code".into(), json!(c));
    }
    m.insert("reason".into(), json!(a.reason));
    if a.restarting_at_ms != 0 {
        m.insert("restarting_at_ms".into(), json!(a.restarting_at_ms));
    }
    if a.killed_at_grace {
        m.insert("killed_at_grace".into(), json!(true));
    }
    if !a.health_detail.is_empty() {
        m.insert("health_detail".into(), json!(a.health_detail));
    }
    if !a.desired_reason.is_empty() {
        m.insert("desired_reason".into(), json!(a.desired_reason));
    }
    m.insert("restarts".into(), json!(a.restarts));
    m.insert("health".into(), json!(a.health));
    if !a.ip.is_empty() {
        m.insert("ip".into(), json!(a.ip));
    }
    if a.canary {
        m.insert("canary".into(), json!(true));
    }
    m.insert("created_at_ms".into(), json!(a.created_at_ms));
    m.insert("updated_at_ms".into(), json!(a.updated_at_ms));
    Value::Object(m)
}

pub fn job(j: &pb::JobStatus) -> Value {
    let spec: Value = serde_json::from_str(&j.spec_json).unwrap_or(Value::Null);
    json!({
        "name": j.name,
        "version": j.version,
        "desired": j.desired,
        "running": j.running,
        "status": j.status,
        "type": j.r#type,
        "batch": j.batch.as_ref().map(batch),
        "pending_reason": j.pending_reason,
        "submitted_at_ms": j.submitted_at_ms,
        "spec": spec,
        "versions": j.versions.iter().map(|v| json!({
            "version": v.version, "submitted_at_ms": v.submitted_at_ms, "image": v.image,
            "changes": v.changes, "outcome": v.outcome,
        })).collect::<Vec<_>>(),
        "stable_version": j.stable_version,
        "rollout": j.rollout.as_ref().map(rollout),
        "allocations": j.allocations.iter().map(allocation).collect::<Vec<_>>(),
        "read": read(&j.read),
    })
}

/// A job's current (or last) rollout.
pub fn rollout(r: &pb::Rollout) -> Value {
    json!({
        "version": r.version, "kind": r.kind, "state": r.state, "promoted": r.promoted,
        "started_at_ms": r.started_at_ms, "finished_at_ms": r.finished_at_ms, "reason": r.reason,
        "updated": r.updated, "healthy": r.healthy, "old": r.old, "desired": r.desired,
    })
}

pub fn job_summary(j: &pb::JobSummary) -> Value {
    json!({
        "name": j.name, "version": j.version, "desired": j.desired, "running": j.running,
        "status": j.status, "image": j.image, "submitted_at_ms": j.submitted_at_ms,
        "type": j.r#type, "batch": j.batch.as_ref().map(batch),
    })
}

/// A batch job's progress (`null` for other jobs).
fn batch(b: &pb::BatchProgress) -> Value {
    json!({
        "completions": b.completions, "parallelism": b.parallelism, "retries": b.retries,
        "succeeded": b.succeeded, "failed": b.failed, "running": b.running,
        "outcome": b.outcome, "reason": b.reason, "ended_at_ms": b.ended_at_ms,
        "schedule": b.schedule, "next_run_ms": b.next_run_ms, "runs": b.runs, "skipped": b.skipped,
    })
}

pub fn node(n: &pb::Node) -> Value {
    json!({
        "name": n.name, "address": n.address, "status": n.status, "schedulable": n.schedulable,
        "cpu_millis": n.cpu_millis, "memory_bytes": n.memory_bytes,
        "cpu_allocated_millis": n.cpu_allocated_millis, "memory_allocated_bytes": n.memory_allocated_bytes,
        "allocations": n.allocations, "registered_at_ms": n.registered_at_ms,
        "draining": n.draining, "subnet": n.subnet, "network_error": n.network_error,
        "volumes": n.volumes.iter().map(|v| json!({"name": v.name, "read_only": v.read_only})).collect::<Vec<_>>(),
        "disk_bytes": n.disk_bytes, "disk_allocated_bytes": n.disk_allocated_bytes,
        "labels": n.labels, "facts": n.facts,
    })
}

pub fn read(r: &Option<pb::ReadInfo>) -> Value {
    match r {
        Some(r) => {
            json!({"applied_index": r.applied_index, "stale": r.stale, "served_by": r.served_by,
                   "leader_index": r.leader_index, "leader_contact_ms": r.leader_contact_ms,
                   "behind": r.behind})
        }
        None => Value::Null,
    }
}

/// An event as `drover events -o json` prints it and the HTTP API's
/// `/v1/events` streams it.
pub fn event(e: &pb::Event) -> Value {
    json!({
        "index": e.index,
        "seq": e.seq,
        "time": time(e.at_ms),
        "at_ms": e.at_ms,
        "topic": word(e.topic().as_str_name(), "EVENT_TOPIC_"),
        "type": word(e.r#type().as_str_name(), "EVENT_TYPE_"),
        "job": e.job,
        "version": e.version,
        "alloc": e.alloc,
        "node": e.node,
        "message": e.message,
    })
}

/// `EVENT_TYPE_ALLOC_STARTED` as `alloc-started`.
pub fn word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix)
        .to_lowercase()
        .replace('_', "-")
}

/// `at_ms` as an RFC 3339 UTC time with milliseconds.
pub fn time(at_ms: i64) -> String {
    // `YYYY-MM-DDTHH:MM:SS.mmm` of the nanosecond form, then its `Z`.
    let mut t = time_ns(at_ms.saturating_mul(1_000_000));
    t.truncate(23);
    t + "Z"
}

/// An RFC 3339 time (`2026-12-02T10:00:00Z`, any offset) in ms since the
/// epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// An RFC 3339 time in ns since the epoch.
pub fn parse_time_ns(text: &str) -> Option<i64> {
    let t = text.parse::<jiff::Timestamp>().ok()?;
    i64::try_from(t.as_nanosecond()).ok()
}

/// `at_ns` as an RFC 3339 UTC time with nanoseconds (as log files and
/// `drover logs -t` write it).
pub fn time_ns(at_ns: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(at_ns as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}
