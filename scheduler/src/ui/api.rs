//! The read-only JSON API under the web UI: the cluster's peers, jobs,
//! nodes and allocations as this peer has applied them, in the documents
//! `drover ... -o json` prints.

use super::{Scope, Ui};
use crate::server::convert;
use crate::state::State;
use axum::extract::{Path, State as With};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_proto::json;
use serde_json::{json, Value};

/// A JSON answer.
pub(super) fn answer(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub(super) fn not_found(what: String) -> Response {
    answer(StatusCode::NOT_FOUND, &json!({ "error": what }))
}

fn read<T>(ui: &Ui, f: impl FnOnce(&State) -> T) -> T {
    let state = ui.peer.state.read().unwrap_or_else(|p| p.into_inner());
    f(&state)
}

/// The peers, who leads, and how far this peer has applied.
pub(super) async fn cluster(With(ui): With<Ui>, scope: Scope) -> Response {
    let m = ui.peer.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let peers: Vec<Value> = membership
        .nodes()
        .map(|(id, n)| {
            // Only the leader knows how far the others have come.
            let behind = m.replication.as_ref().and_then(|r| {
                r.get(id)
                    .map(|matched| last.saturating_sub(matched.map_or(0, |l| l.index)))
            });
            json!({
                "id": id,
                "address": n.addr,
                "voter": voters.contains(id),
                "leader": m.current_leader == Some(*id),
                "behind": behind,
            })
        })
        .collect();
    let (jobs, nodes, running, version) = read(&ui, |s| {
        let running = s
            .allocations
            .values()
            .filter(|a| a.state == crate::state::AllocState::Running && scope.sees(&a.job))
            .count();
        let jobs = s.jobs.keys().filter(|j| scope.sees(j)).count();
        (jobs, s.nodes.len(), running, s.cluster_version())
    });
    answer(
        StatusCode::OK,
        &json!({
            "served_by": ui.peer.id,
            "leader": m.current_leader,
            "term": m.current_term,
            "applied_index": m.last_applied.map_or(0, |l| l.index),
            "peers": peers,
            "jobs": jobs,
            "nodes": nodes,
            "running_allocations": running,
            "cluster_version": version,
        }),
    )
}

/// Every job (the caller may see), as `drover job ls -o json` lists it,
/// with its rollout.
pub(super) async fn jobs(With(ui): With<Ui>, scope: Scope) -> Response {
    let jobs: Vec<Value> = read(&ui, |s| {
        s.jobs
            .values()
            .filter(|j| scope.sees(&j.name))
            .map(|j| {
                let mut v = json::job_summary(&convert::job_summary(s, j));
                v["rollout"] = j
                    .rollout
                    .as_ref()
                    .map_or(Value::Null, |r| json::rollout(&convert::rollout(s, j, r)));
                v
            })
            .collect()
    });
    answer(StatusCode::OK, &json!({ "jobs": jobs }))
}

/// One job as `drover job status -o json` shows it: versions, rollout,
/// allocations.
pub(super) async fn job(With(ui): With<Ui>, Path(name): Path<String>, scope: Scope) -> Response {
    let found = read(&ui, |s| {
        s.jobs
            .get(&name)
            .filter(|j| scope.sees(&j.name))
            .map(|j| convert::job(s, j))
    });
    match found {
        Some(j) => answer(StatusCode::OK, &json::job(&j)),
        None => not_found(format!("no job {name:?}")),
    }
}

/// The most replicas of a job whose usage one call asks for.
const USAGE_AT_MOST: usize = 100;

/// What each running replica of a job uses now (cpu in thousandths of a
/// core over a quarter second, memory against its limit), asked of their
/// agents at once; a replica whose agent does not answer is left out.
pub(super) async fn job_usage(
    With(ui): With<Ui>,
    Path(name): Path<String>,
    scope: Scope,
) -> Response {
    let running = read(&ui, |s| {
        s.jobs.get(&name).filter(|j| scope.sees(&j.name))?;
        Some(running_where(s, |a| a.job == name))
    });
    match running {
        Some(running) => usage_of(&ui, running).await,
        None => not_found(format!("no job {name:?}")),
    }
}

/// What each running replica on a node (of the jobs the caller may see)
/// uses now, as [`job_usage`].
pub(super) async fn node_usage(
    With(ui): With<Ui>,
    Path(name): Path<String>,
    scope: Scope,
) -> Response {
    let running = read(&ui, |s| {
        s.nodes.get(&name)?;
        Some(running_where(s, |a| a.node == name && scope.sees(&a.job)))
    });
    match running {
        Some(running) => usage_of(&ui, running).await,
        None => not_found(format!("no node {name:?}")),
    }
}

/// The running allocations `pick` picks (at most [`USAGE_AT_MOST`]): id,
/// node, the node's agent.
fn running_where(
    s: &State,
    pick: impl Fn(&crate::state::Allocation) -> bool,
) -> Vec<(String, String, String)> {
    s.allocations
        .values()
        .filter(|a| a.state == crate::state::AllocState::Running && pick(a))
        .filter_map(|a| {
            let address = s.nodes.get(&a.node)?.address.clone();
            Some((a.id.clone(), a.node.clone(), address))
        })
        .take(USAGE_AT_MOST)
        .collect()
}

async fn usage_of(ui: &Ui, running: Vec<(String, String, String)>) -> Response {
    let asks = running.iter().map(|(id, node, address)| async move {
        let u = super::agents::usage(ui, id, node, address).await?;
        Some((
            id.clone(),
            json!({
                "cpu_millis": u.cpu_millis,
                "memory_bytes": u.memory_bytes,
                "memory_limit_bytes": u.memory_limit_bytes,
                "oom_kills": u.oom_kills,
            }),
        ))
    });
    let usage: serde_json::Map<String, Value> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    answer(StatusCode::OK, &json!({ "usage": usage }))
}

pub(super) async fn nodes(With(ui): With<Ui>) -> Response {
    let nodes: Vec<Value> = read(&ui, |s| {
        let usage = s.usage();
        s.nodes
            .values()
            .map(|n| json::node(&convert::node(&usage, n)))
            .collect()
    });
    answer(StatusCode::OK, &json!({ "nodes": nodes }))
}

/// A node and the allocations on it that have not ended (of the jobs the
/// caller may see).
pub(super) async fn node(With(ui): With<Ui>, Path(name): Path<String>, scope: Scope) -> Response {
    let found = read(&ui, |s| {
        let n = s.nodes.get(&name)?;
        let mut v = json::node(&convert::node(&s.usage(), n));
        v["allocation_list"] = s
            .allocations
            .values()
            .filter(|a| a.node == name && !a.state.is_terminal() && scope.sees(&a.job))
            .map(|a| json::allocation(&convert::allocation(s, a)))
            .collect();
        Some(v)
    });
    match found {
        Some(v) => answer(StatusCode::OK, &v),
        None => not_found(format!("no node {name:?}")),
    }
}

pub(super) async fn allocation(
    With(ui): With<Ui>,
    Path(id): Path<String>,
    scope: Scope,
) -> Response {
    match read(&ui, |s| {
        s.find_allocation(&id).and_then(|a| {
            scope
                .sees(&a.job)
                .then(|| json::allocation(&convert::allocation(s, a)))
                .ok_or_else(|| format!("no allocation with id {id:?}"))
        })
    }) {
        Ok(v) => answer(StatusCode::OK, &v),
        Err(why) => not_found(why),
    }
}
