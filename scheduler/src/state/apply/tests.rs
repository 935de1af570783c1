use super::*;
use drover_proto::spec::from_yaml;
use proptest::prelude::*;

fn spec(yaml: &str) -> Box<JobSpec> {
    Box::new(from_yaml(yaml).unwrap())
}

fn submit(s: &mut State, request_id: &str, yaml: &str) -> CommandResult {
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::SubmitJob {
            request_id: request_id.into(),
            spec: spec(yaml),
            at_ms: i as i64,
        },
    )
}

fn node(s: &mut State, name: &str) {
    register(s, name, &[], &[]);
}

fn place(
    s: &mut State,
    id: &str,
    job: &str,
    version: u64,
    replica: u32,
    node: &str,
) -> CommandResult {
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::PlaceAllocations {
            allocations: vec![NewAllocation {
                id: id.into(),
                job: job.into(),
                version,
                replica,
                node: node.into(),
                generation: 0,
                canary: false,
            }],
            at_ms: 10,
        },
    )
}

const WEB: &str = "name: web\nreplicas: 2\nimage: oci:/x:v1\n";

#[test]
fn submit_creates_versions_and_unchanged_is_noop() {
    let mut s = State::default();
    let r = submit(&mut s, "a", WEB);
    assert!(r.ok && r.changed && r.version == 1);
    let r = submit(&mut s, "b", WEB);
    assert!(r.ok && !r.changed && r.version == 1, "{r:?}");
    let r = submit(&mut s, "c", "name: web\nreplicas: 2\nimage: oci:/x:v2\n");
    assert!(r.changed && r.version == 2);
    assert_eq!(s.jobs["web"].versions.len(), 2);
    assert_eq!(s.jobs["web"].current, 2);
}

#[test]
fn a_job_keeps_its_last_ten_versions_and_any_still_running() {
    let mut s = State::default();
    node(&mut s, "n1");
    submit(&mut s, "v1", WEB);
    // Version 1 runs on n1: it stays however many versions follow.
    assert!(place(&mut s, "a1", "web", 1, 0, "n1").ok);
    for v in 2..=30 {
        let yaml = format!("name: web\nreplicas: 2\nimage: oci:/x:v{v}\n");
        let r = submit(&mut s, &format!("v{v}"), &yaml);
        assert_eq!(r.version, v, "{r:?}");
    }
    let kept: Vec<u64> = s.jobs["web"].versions.iter().map(|v| v.version).collect();
    assert_eq!(kept, [1, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]);
    // Numbers are never reused after pruning.
    let r = submit(&mut s, "v31", "name: web\nreplicas: 2\nimage: oci:/x:v31\n");
    assert_eq!(r.version, 31);
    assert!(s.jobs["web"].version(21).is_none());

    // A spec may keep fewer (or more): `update.keep_versions`.
    for v in 1..=6 {
        let yaml = format!("name: few\nimage: oci:/x:v{v}\nupdate: {{keep_versions: 3}}\n");
        submit(&mut s, &format!("few{v}"), &yaml);
    }
    let kept: Vec<u64> = s.jobs["few"].versions.iter().map(|v| v.version).collect();
    assert_eq!(kept, [4, 5, 6]);
}

/// The request table is written to snapshots as a map and two lists (the
/// format it had as std collections), and a retry after a restore still
/// applies once.
#[test]
fn remembered_requests_round_trip_through_a_snapshot() {
    let mut s = State::default();
    submit(&mut s, "once", WEB);
    let json = serde_json::to_value(&s).unwrap();
    assert!(json["requests"]["once"].is_object(), "{json}");
    assert_eq!(json["request_order"], serde_json::json!(["once"]));
    assert!(json["request_at_ms"].is_array());
    let mut back: State = serde_json::from_value(json).unwrap();
    let again = submit(&mut back, "once", "name: web\nimage: oci:/x:v9\n");
    assert_eq!(again.version, 1, "{again:?}");
    assert_eq!(back.jobs["web"].versions.len(), 1);
}

#[test]
fn retried_request_applies_once() {
    let mut s = State::default();
    let first = submit(&mut s, "same", WEB);
    // The same request id with another spec is a retry of the first: no new version.
    let again = submit(&mut s, "same", "name: web\nimage: oci:/x:v9\n");
    assert_eq!(first, again);
    assert_eq!(s.jobs["web"].versions.len(), 1);
}

#[test]
fn request_ids_are_remembered_for_ten_minutes() {
    let mut s = State::default();
    let at = |s: &mut State, id: &str, at_ms: i64| {
        let i = s.last_index + 1;
        s.apply(
            i,
            &Command::ScaleJob {
                request_id: id.into(),
                name: "web".into(),
                replicas: 3,
                at_ms,
            },
        )
    };
    submit(&mut s, "", WEB);
    let first = at(&mut s, "r-0", 0);
    // 12,000 other requests over nine minutes: more than a count-based
    // memory of 10,000 would keep.
    for i in 1..=12_000 {
        at(&mut s, &format!("r-{i}"), i * 45);
    }
    assert!(
        s.requests.contains_key("r-0"),
        "forgotten within the window"
    );
    assert_eq!(at(&mut s, "r-0", 540_001), first);
    // Past ten minutes it is gone.
    at(&mut s, "r-late", 600_001);
    assert!(!s.requests.contains_key("r-0"));
    assert_eq!(s.requests.len(), s.request_order.len());
    assert_eq!(s.request_order.len(), s.request_at_ms.len());
}

#[test]
fn invalid_spec_is_refused_at_apply() {
    let mut s = State::default();
    let mut bad = *spec(WEB);
    bad.name = "Not_Valid".into();
    let r = s.apply(
        1,
        &Command::SubmitJob {
            request_id: String::new(),
            spec: Box::new(bad),
            at_ms: 0,
        },
    );
    assert!(!r.ok);
    assert!(r.error.unwrap().starts_with("name:"));
    assert!(s.jobs.is_empty());
}

#[test]
fn placement_is_rechecked_at_apply() {
    let mut s = State::default();
    node(&mut s, "n1");
    submit(&mut s, "", WEB);
    assert_eq!(place(&mut s, "a1", "web", 1, 0, "n1").count, 1);
    // Same slot twice, a stale version, an unknown node, a stopped job.
    assert_eq!(place(&mut s, "a2", "web", 1, 0, "n1").count, 0);
    assert_eq!(place(&mut s, "a4", "web", 7, 1, "n1").count, 0);
    assert_eq!(place(&mut s, "a5", "web", 1, 1, "nope").count, 0);
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::StopJob {
            request_id: String::new(),
            name: "web".into(),
            purge: false,
            at_ms: 0,
        },
    );
    assert_eq!(place(&mut s, "a6", "web", 1, 1, "n1").count, 0);
    assert_eq!(s.allocations.len(), 1);
    let a = &s.allocations["a1"];
    assert_eq!(a.name, "web-0");
    assert_eq!(a.memory_bytes, 64 << 20);
}

fn labelled(s: &mut State, name: &str, labels: &[(&str, &str)]) -> CommandResult {
    register(s, name, labels, &[("arch", "amd64")])
}

/// Registers (again) node `name` with 2 cpu, 1Gi, and these labels and facts.
fn register(
    s: &mut State,
    name: &str,
    labels: &[(&str, &str)],
    facts: &[(&str, &str)],
) -> CommandResult {
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::RegisterNode {
            name: name.into(),
            address: "127.0.0.1:7401".into(),
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            at_ms: 0,
            cluster_cidr: String::new(),
            volumes: Default::default(),
            disk_bytes: 0,
            labels: map(labels),
            facts: map(facts),
        },
    )
}

fn set_labels(s: &mut State, name: &str, labels: &[(&str, Option<&str>)]) -> CommandResult {
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::SetNodeLabels {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            at_ms: 0,
        },
    )
}

#[test]
fn operator_labels_win_over_the_agents_and_outlive_its_restarts() {
    let mut s = State::default();
    labelled(&mut s, "n1", &[("zone", "a"), ("disk", "hdd")]);
    assert!(set_labels(&mut s, "n1", &[("disk", Some("ssd")), ("zone", None)]).changed);
    let want: std::collections::BTreeMap<String, String> =
        [("disk".to_string(), "ssd".to_string())].into();
    assert_eq!(s.nodes["n1"].labels_in_force(), want);
    // The agent restarts with its flags: the operator's changes stay.
    labelled(
        &mut s,
        "n1",
        &[("zone", "a"), ("disk", "hdd"), ("rack", "r1")],
    );
    let attrs = s.nodes["n1"].attributes();
    assert_eq!(attrs.get("disk").map(String::as_str), Some("ssd"));
    assert_eq!(attrs.get("zone"), None);
    assert_eq!(attrs.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(attrs.get("node.arch").map(String::as_str), Some("amd64"));
    assert_eq!(attrs.get("node.name").map(String::as_str), Some("n1"));
    // The same again changes nothing; a reserved key or an unknown node is refused.
    assert!(!set_labels(&mut s, "n1", &[("disk", Some("ssd"))]).changed);
    let r = set_labels(&mut s, "n1", &[("node.arch", Some("arm64"))]);
    assert!(r.refusal.is_some(), "{r:?}");
    assert!(set_labels(&mut s, "nope", &[("a", Some("b"))])
        .refusal
        .is_some());
}

#[test]
fn constraints_and_max_per_node_are_rechecked_at_apply() {
    let mut s = State::default();
    labelled(&mut s, "n1", &[("zone", "a")]);
    labelled(&mut s, "n2", &[("zone", "b")]);
    submit(
        &mut s,
        "",
        "name: web\nreplicas: 3\nimage: oci:/x:v1\nmax_per_node: 1\n\
         constraints: [{attr: zone, op: in, values: [a]}]\n",
    );
    assert_eq!(place(&mut s, "x1", "web", 1, 0, "n2").count, 0, "zone b");
    assert_eq!(place(&mut s, "x2", "web", 1, 0, "n1").count, 1);
    assert_eq!(
        place(&mut s, "x3", "web", 1, 1, "n1").count,
        0,
        "max 1 per node"
    );
    // Relabelled after the plan: refused there, accepted on the new match.
    set_labels(&mut s, "n2", &[("zone", Some("a"))]);
    assert_eq!(place(&mut s, "x4", "web", 1, 1, "n2").count, 1);
}

#[test]
fn placement_rules_need_cluster_version_4() {
    use crate::state::version::{gate, PLACEMENT_RULES};
    let cmd = |yaml: &str| Command::SubmitJob {
        request_id: String::new(),
        spec: spec(yaml),
        at_ms: 0,
    };
    let plain = cmd(WEB);
    let ruled = cmd("name: web\nimage: oci:/x:v1\nmax_per_node: 1\n");
    assert!(gate(&plain, 3).is_ok());
    assert_eq!(gate(&ruled, 3).unwrap_err().needs, PLACEMENT_RULES);
    assert!(gate(&ruled, PLACEMENT_RULES).is_ok());
    let labels = Command::SetNodeLabels {
        name: "n1".into(),
        labels: Default::default(),
        at_ms: 0,
    };
    assert!(gate(&labels, 3).is_err());
    // A spec without rules encodes as before: replicas of the release
    // before (which refuse unknown fields) apply it.
    let json = serde_json::to_string(&plain).unwrap();
    assert!(
        !json.contains("constraints") && !json.contains("max_per_node"),
        "{json}"
    );
}

fn set_network(s: &mut State, name: &str, error: &str) -> CommandResult {
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::SetNodeNetwork {
            name: name.into(),
            error: error.into(),
            at_ms: 20,
        },
    )
}

#[test]
fn a_node_whose_network_is_unavailable_takes_only_host_network_replicas() {
    let mut s = State::default();
    node(&mut s, "n1");
    submit(&mut s, "", WEB);
    submit(
        &mut s,
        "",
        "name: agent\nreplicas: 1\nimage: oci:/x:v1\nnetwork: host\n",
    );
    let why =
        "gateway 10.88.0.1 of subnet 10.88.0.0/24 is already on interface br0, not made by drover";
    let r = set_network(&mut s, "n1", why);
    assert!(r.ok && r.changed);
    assert_eq!(s.nodes["n1"].network_error, why);
    assert!(
        !set_network(&mut s, "n1", why).changed,
        "the same error again"
    );
    // A plan made before the network broke is refused for private networking only.
    assert_eq!(place(&mut s, "a1", "web", 1, 0, "n1").count, 0);
    assert_eq!(place(&mut s, "h1", "agent", 1, 0, "n1").count, 1);
    // Working again: placed.
    assert!(set_network(&mut s, "n1", "").changed);
    assert_eq!(place(&mut s, "a1", "web", 1, 0, "n1").count, 1);
    assert!(!set_network(&mut s, "nope", "x").ok);
}

#[test]
fn nodes_from_before_network_errors_load_as_working() {
    let mut s = State::default();
    node(&mut s, "n1");
    let mut v = serde_json::to_value(&s).unwrap();
    v["nodes"]["n1"]
        .as_object_mut()
        .unwrap()
        .remove("network_error");
    let back: State = serde_json::from_value(v).unwrap();
    assert_eq!(back.nodes["n1"].network_error, "");
    assert_eq!(back, s);
}

#[test]
fn reports_update_observed_state_idempotently() {
    let mut s = State::default();
    node(&mut s, "n1");
    submit(&mut s, "", WEB);
    place(&mut s, "a1", "web", 1, 0, "n1");
    let report = Command::ReportAllocations {
        node: "n1".into(),
        reports: vec![AllocationReport {
            id: "a1".into(),
            state: AllocState::Running,
            pid: 4242,
            exit_code: None,
            reason: String::new(),
            restarts: 0,
            health: HealthState::Unknown,
            ip: String::new(),
            health_detail: String::new(),
            restarting_at_ms: 0,
            killed_at_grace: false,
        }],
        at_ms: 20,
    };
    assert!(s.apply(100, &report).changed);
    assert!(!s.apply(101, &report).changed);
    assert_eq!(s.allocations["a1"].state, AllocState::Running);
    assert_eq!(s.allocations["a1"].pid, 4242);
    // Another node cannot report on it.
    let mut other = report.clone();
    if let Command::ReportAllocations { node, reports, .. } = &mut other {
        *node = "n2".into();
        reports[0].state = AllocState::Failed;
    }
    s.apply(102, &other);
    assert_eq!(s.allocations["a1"].state, AllocState::Running);
}

#[test]
fn stop_job_stops_allocations_and_late_reports_do_not_revive() {
    let mut s = State::default();
    node(&mut s, "n1");
    submit(&mut s, "", WEB);
    place(&mut s, "a1", "web", 1, 0, "n1");
    let r = s.apply(
        50,
        &Command::StopJob {
            request_id: "s".into(),
            name: "web".into(),
            purge: false,
            at_ms: 30,
        },
    );
    assert_eq!(r.count, 1);
    let a = &s.allocations["a1"];
    // No report yet: it may be starting on its node, so it is not ended.
    assert_eq!((a.desired, a.state), (Desired::Stop, AllocState::Pending));
    let stopped = |at_ms| Command::ReportAllocations {
        node: "n1".into(),
        reports: vec![AllocationReport {
            id: "a1".into(),
            state: AllocState::Stopped,
            pid: 0,
            exit_code: None,
            reason: "not running on this node".into(),
            restarts: 0,
            health: HealthState::Unknown,
            ip: String::new(),
            health_detail: String::new(),
            restarting_at_ms: 0,
            killed_at_grace: false,
        }],
        at_ms,
    };
    s.apply(51, &stopped(31));
    assert_eq!(s.allocations["a1"].state, AllocState::Stopped);
    s.apply(
        51,
        &Command::ReportAllocations {
            node: "n1".into(),
            reports: vec![AllocationReport {
                id: "a1".into(),
                state: AllocState::Running,
                pid: 1,
                exit_code: None,
                reason: String::new(),
                restarts: 0,
                health: HealthState::Unknown,
                ip: String::new(),
                health_detail: String::new(),
                restarting_at_ms: 0,
                killed_at_grace: false,
            }],
            at_ms: 31,
        },
    );
    assert_eq!(s.allocations["a1"].state, AllocState::Stopped);
    let r = s.apply(
        52,
        &Command::StopJob {
            request_id: String::new(),
            name: "nope".into(),
            purge: false,
            at_ms: 0,
        },
    );
    assert!(!r.ok);
}

#[test]
fn node_down_marks_allocations_lost() {
    let mut s = State::default();
    node(&mut s, "n1");
    submit(&mut s, "", WEB);
    place(&mut s, "a1", "web", 1, 0, "n1");
    s.apply(
        60,
        &Command::SetNodeStatus {
            name: "n1".into(),
            status: NodeStatus::Down,
            at_ms: 40,
        },
    );
    let a = &s.allocations["a1"];
    assert_eq!((a.desired, a.state), (Desired::Stop, AllocState::Failed));
    assert_eq!(a.desired_reason, "node down: replaced");
    assert!(!s.usage().contains_key("n1"));
}

#[test]
fn node_down_keeps_replicas_that_keep_running() {
    let mut s = State::default();
    node(&mut s, "n1");
    submit(&mut s, "", &format!("{WEB}on_disconnect: keep-running\n"));
    place(&mut s, "a1", "web", 1, 0, "n1");
    let running = s.allocations["a1"].clone();
    s.apply(
        60,
        &Command::SetNodeStatus {
            name: "n1".into(),
            status: NodeStatus::Down,
            at_ms: 40,
        },
    );
    // The agent does not stop it when cut off, so nothing may replace it.
    let a = &s.allocations["a1"];
    assert_eq!((a.desired, a.state), (running.desired, running.state));
    assert_eq!(s.nodes["n1"].status, NodeStatus::Down);
}

#[test]
fn removing_a_down_node_replaces_everything_and_frees_its_subnet() {
    let mut s = State::default();
    let reg = |s: &mut State, name: &str| {
        let i = s.last_index + 1;
        s.apply(
            i,
            &Command::RegisterNode {
                name: name.into(),
                address: "x:1".into(),
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                at_ms: 0,
                cluster_cidr: "10.88.0.0/23".into(),
                volumes: Default::default(),
                disk_bytes: 0,
                labels: Default::default(),
                facts: Default::default(),
            },
        )
    };
    assert_eq!(reg(&mut s, "n1").note, "10.88.0.0/24");
    assert_eq!(reg(&mut s, "n2").note, "10.88.1.0/24");
    // The /23 holds two: a third node is refused with what to do.
    let r = reg(&mut s, "n3");
    assert!(
        !r.ok && r.error.as_deref().unwrap().contains("drover node rm"),
        "{r:?}"
    );
    submit(&mut s, "", &format!("{WEB}on_disconnect: keep-running\n"));
    place(&mut s, "a1", "web", 1, 0, "n1");
    let remove = |s: &mut State| {
        let i = s.last_index + 1;
        s.apply(
            i,
            &Command::RemoveNode {
                name: "n1".into(),
                reason: "gone".into(),
                at_ms: 50,
            },
        )
    };
    let r = remove(&mut s);
    assert!(
        !r.ok && r.error.as_deref().unwrap().contains("is ready"),
        "{r:?}"
    );
    s.apply(
        90,
        &Command::SetNodeStatus {
            name: "n1".into(),
            status: NodeStatus::Down,
            at_ms: 40,
        },
    );
    // Keep-running replicas stay while the node is only down...
    assert_eq!(s.allocations["a1"].desired, Desired::Run);
    // ...and go once it is removed.
    let r = remove(&mut s);
    assert_eq!((r.ok, r.count), (true, 1));
    let a = &s.allocations["a1"];
    assert_eq!((a.desired, a.state), (Desired::Stop, AllocState::Failed));
    assert!(!s.nodes.contains_key("n1"));
    assert_eq!(reg(&mut s, "n3").note, "10.88.0.0/24");
}

#[test]
fn the_cluster_range_is_the_first_one_proposed() {
    let mut s = State::default();
    for (i, (name, cidr)) in [("n1", "10.88.0.0/16"), ("n2", "10.99.0.0/16")]
        .iter()
        .enumerate()
    {
        s.apply(
            i as u64 + 1,
            &Command::RegisterNode {
                name: name.to_string(),
                address: "x:1".into(),
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                at_ms: 0,
                cluster_cidr: cidr.to_string(),
                volumes: Default::default(),
                disk_bytes: 0,
                labels: Default::default(),
                facts: Default::default(),
            },
        );
    }
    assert_eq!(s.cluster_cidr, "10.88.0.0/16");
    assert_eq!(s.nodes["n2"].subnet, "10.88.1.0/24");
}

#[test]
fn find_allocation_by_prefix() {
    let mut s = State::default();
    node(&mut s, "n1");
    submit(&mut s, "", WEB);
    place(&mut s, "abc123", "web", 1, 0, "n1");
    place(&mut s, "abd456", "web", 1, 1, "n1");
    assert_eq!(s.find_allocation("abc").unwrap().id, "abc123");
    assert!(s
        .find_allocation("ab")
        .unwrap_err()
        .contains("2 allocations"));
    assert!(s.find_allocation("zz").is_err());
}

fn arb_command() -> impl Strategy<Value = Command> {
    let job = prop_oneof![Just("web"), Just("db")];
    let node = prop_oneof![Just("n1"), Just("n2")];
    let id = (0u8..8).prop_map(|i| format!("a{i}"));
    prop_oneof![
        (job.clone(), 0u32..4, 1u8..3, 0u32..3).prop_map(|(j, r, v, m)| Command::SubmitJob {
            request_id: String::new(),
            spec: spec(&format!(
                "name: {j}\nreplicas: {r}\nimage: oci:/x:v{v}\nmax_per_node: {m}\n\
                 constraints: [{{attr: zone, op: not_in, values: [z{v}]}}]\n"
            )),
            at_ms: 1,
        }),
        (node.clone(), 1u8..3).prop_map(|(n, z)| Command::SetNodeLabels {
            name: n.into(),
            labels: [("zone".to_string(), Some(format!("z{z}")))].into(),
            at_ms: 3,
        }),
        (job.clone(), any::<bool>()).prop_map(|(j, p)| Command::StopJob {
            request_id: String::new(),
            name: j.into(),
            purge: p,
            at_ms: 2,
        }),
        node.clone().prop_map(|n| Command::RegisterNode {
            name: n.into(),
            address: "x".into(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            at_ms: 3,
            cluster_cidr: String::new(),
            volumes: Default::default(),
            disk_bytes: 0,
            labels: Default::default(),
            facts: Default::default(),
        }),
        (node.clone(), any::<bool>()).prop_map(|(n, up)| Command::SetNodeStatus {
            name: n.into(),
            status: if up {
                NodeStatus::Ready
            } else {
                NodeStatus::Down
            },
            at_ms: 4,
        }),
        (node.clone(), any::<bool>()).prop_map(|(n, broken)| Command::SetNodeNetwork {
            name: n.into(),
            error: if broken {
                "no bridge".into()
            } else {
                String::new()
            },
            at_ms: 4,
        }),
        (id.clone(), job.clone(), 1u64..4, 0u32..4, node.clone()).prop_map(|(id, j, v, r, n)| {
            Command::PlaceAllocations {
                allocations: vec![NewAllocation {
                    id,
                    job: j.into(),
                    version: v,
                    replica: r,
                    node: n.into(),
                    generation: 0,
                    canary: false,
                }],
                at_ms: 5,
            }
        }),
        id.clone().prop_map(|id| Command::StopAllocations {
            ids: vec![id],
            reason: "x".into(),
            at_ms: 6,
        }),
        (id, node.clone(), 0usize..6).prop_map(|(id, n, st)| Command::ReportAllocations {
            node: n.into(),
            reports: vec![AllocationReport {
                id,
                state: [
                    AllocState::Pending,
                    AllocState::Starting,
                    AllocState::Running,
                    AllocState::Stopping,
                    AllocState::Stopped,
                    AllocState::Failed
                ][st],
                pid: 7,
                exit_code: None,
                reason: String::new(),
                restarts: 0,
                health: HealthState::Unknown,
                ip: String::new(),
                health_detail: String::new(),
                restarting_at_ms: 0,
                killed_at_grace: false,
            }],
            at_ms: 7,
        }),
        job.prop_map(|j| Command::PurgeJob {
            name: j.into(),
            at_ms: 5
        }),
        node.prop_map(|n| Command::RemoveNode {
            name: n.into(),
            reason: "gone".into(),
            at_ms: 8,
        }),
    ]
}

proptest! {
    /// Replicas that applied the same log agree; a snapshot round-trips; no replica
    /// slot ever has two allocations the scheduler wants running; nothing runs on a
    /// down node or for a stopped job.
    #[test]
    fn apply_is_deterministic_and_keeps_invariants(cmds in proptest::collection::vec(arb_command(), 0..60)) {
        // `b` records events, `a` does not: recording changes nothing.
        let mut a = State::default();
        let mut b = State::default();
        b.events.start();
        let mut c = State::default();
        c.events.start();
        for (i, cmd) in cmds.iter().enumerate() {
            let ra = a.apply(i as u64 + 1, cmd);
            let rb = b.apply(i as u64 + 1, cmd);
            prop_assert_eq!(&ra, &rb);
            c.apply(i as u64 + 1, cmd);
            // Replicas that apply the same entry say the same.
            let (eb, ec) = (b.events.take(), c.events.take());
            prop_assert_eq!(&eb, &ec);
            prop_assert!(rb.changed || rb.batch.iter().any(|r| r.changed) || eb.is_empty(),
                "an entry that changed nothing said something: {:?}", eb);
            for e in &eb {
                use crate::state::events::Topic;
                match e.kind.topic() {
                    Topic::Alloc => prop_assert!(!e.alloc.is_empty() && !e.job.is_empty() && !e.node.is_empty(), "{:?}", e),
                    Topic::Job | Topic::Rollout => prop_assert!(!e.job.is_empty() && e.version > 0, "{:?}", e),
                    Topic::Node => prop_assert!(!e.node.is_empty(), "{:?}", e),
                    Topic::Cluster => {}
                }
                prop_assert!(!e.message.is_empty());
            }
        }
        prop_assert_eq!(&a, &b);
        let json = serde_json::to_string(&a).unwrap();
        let back: State = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &a);

        let mut slots = std::collections::BTreeSet::new();
        for al in a.allocations.values().filter(|al| al.desired == Desired::Run) {
            prop_assert!(slots.insert((al.job.clone(), al.version, al.replica)));
            prop_assert_eq!(a.nodes[&al.node].status, NodeStatus::Ready);
            prop_assert!(!a.jobs[&al.job].stopped);
        }
    }
}

fn put_secret(s: &mut State, name: &str, create: bool, key_id: &str) -> CommandResult {
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::PutSecret {
            request_id: String::new(),
            kind: SecretKind::Secret,
            name: name.into(),
            data: b"sealed".to_vec(),
            size: 6,
            create,
            key_id: key_id.into(),
            at_ms: i as i64,
        },
    )
}

#[test]
fn secrets_exist_before_jobs_mount_them_and_stay_while_mounted() {
    let mut s = State::default();
    let job = "name: web\nimage: oci:/img:v1\nsecrets: [{name: db}]\n";
    let r = submit(&mut s, "r1", job);
    assert!(!r.ok);
    assert!(r
        .error
        .unwrap()
        .contains("secrets[0].name: no secret \"db\""));
    assert!(put_secret(&mut s, "db", true, "k1").ok);
    // Create refuses an existing name; update a missing one.
    assert!(!put_secret(&mut s, "db", true, "k1").ok);
    assert!(!put_secret(&mut s, "nope", false, "k1").ok);
    // A peer holding another key is refused.
    let r = put_secret(&mut s, "db", false, "k2");
    assert!(r.error.unwrap().contains("not the cluster's (k1)"));
    assert!(submit(&mut s, "r2", job).ok);
    let i = s.last_index + 1;
    let del = s.apply(
        i,
        &Command::DeleteSecret {
            request_id: String::new(),
            kind: SecretKind::Secret,
            name: "db".into(),
            at_ms: 0,
        },
    );
    assert!(del.error.unwrap().contains("mounted by job web"));
    // An update restarts the job that mounts it: a new generation.
    let before = s.jobs["web"].generation;
    let r = put_secret(&mut s, "db", false, "k1");
    assert_eq!((r.version, r.note.as_str()), (2, "web"));
    assert_eq!(s.jobs["web"].generation, before + 1);
    // A rollout held by its user (paused) is left alone, and said so.
    let i = s.last_index + 1;
    let paused = s.apply(
        i,
        &Command::PauseJob {
            request_id: String::new(),
            name: "web".into(),
            paused: true,
            at_ms: 0,
        },
    );
    assert!(paused.ok, "{paused:?}");
    let generation = s.jobs["web"].generation;
    let r = put_secret(&mut s, "db", false, "k1");
    assert_eq!((r.version, r.note.as_str()), (3, "-web"));
    assert_eq!(s.jobs["web"].generation, generation);
    // The sealed bytes are kept as given, hex in the state's JSON.
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains(&hex::encode(b"sealed")));
}

fn report(s: &mut State, node: &str, r: AllocationReport) -> Vec<crate::state::events::Event> {
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::ReportAllocations {
            node: node.into(),
            reports: vec![r],
            at_ms: 50,
        },
    );
    s.events.take()
}

fn running(
    id: &str,
    pid: u32,
    health: HealthState,
    restarts: u32,
    reason: &str,
) -> AllocationReport {
    AllocationReport {
        id: id.into(),
        state: AllocState::Running,
        pid,
        exit_code: None,
        reason: reason.into(),
        restarts,
        health,
        ip: String::new(),
        health_detail: String::new(),
        restarting_at_ms: 0,
        killed_at_grace: false,
    }
}

#[test]
fn a_replicas_life_is_told_as_events() {
    use crate::state::events::Kind;
    let kinds = |events: Vec<crate::state::events::Event>| {
        events.into_iter().map(|e| e.kind).collect::<Vec<_>>()
    };
    let mut s = State::default();
    s.events.start();
    node(&mut s, "n1");
    assert_eq!(kinds(s.events.take()), [Kind::NodeRegistered]);
    submit(&mut s, "", WEB);
    let submitted = s.events.take();
    assert_eq!(
        kinds(submitted.clone()),
        [Kind::JobSubmitted, Kind::RolloutStarted]
    );
    assert_eq!(
        (submitted[0].job.as_str(), submitted[0].version),
        ("web", 1)
    );
    // Submitting it unchanged says nothing.
    submit(&mut s, "", WEB);
    assert!(s.events.take().is_empty());
    place(&mut s, "a1", "web", 1, 0, "n1");
    let placed = s.events.take();
    assert_eq!(kinds(placed.clone()), [Kind::AllocPlaced]);
    assert_eq!(
        (placed[0].alloc.as_str(), placed[0].node.as_str()),
        ("a1", "n1")
    );
    assert_eq!(placed[0].message, "web-0 placed on n1 (version 1)");
    assert_eq!(
        kinds(report(
            &mut s,
            "n1",
            running("a1", 7, HealthState::Unknown, 0, "")
        )),
        [Kind::AllocStarted]
    );
    assert_eq!(
        kinds(report(
            &mut s,
            "n1",
            running("a1", 7, HealthState::Healthy, 0, "")
        )),
        [Kind::AllocHealthy]
    );
    // The same report again says nothing new.
    assert!(report(&mut s, "n1", running("a1", 7, HealthState::Healthy, 0, "")).is_empty());
    // Killed for memory and started again.
    assert_eq!(
        kinds(report(
            &mut s,
            "n1",
            running("a1", 9, HealthState::Unknown, 1, "oom-killed")
        )),
        [Kind::AllocOomKilled, Kind::AllocStarted]
    );
    // Crashed and started again.
    let restarted = report(
        &mut s,
        "n1",
        running("a1", 11, HealthState::Unknown, 2, "exited with code 3"),
    );
    assert_eq!(
        kinds(restarted.clone()),
        [Kind::AllocRestarted, Kind::AllocStarted]
    );
    assert!(
        restarted[0].message.contains("exited with code 3"),
        "{:?}",
        restarted[0]
    );
    // Its node goes down: the node's event, then the replica is lost.
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::SetNodeStatus {
            name: "n1".into(),
            status: NodeStatus::Down,
            at_ms: 60,
        },
    );
    let down = s.events.take();
    assert_eq!(kinds(down.clone()), [Kind::NodeDown, Kind::AllocLost]);
    assert_eq!(down[1].at_ms, 60);
    // A scale, a stop.
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::ScaleJob {
            request_id: String::new(),
            name: "web".into(),
            replicas: 5,
            at_ms: 70,
        },
    );
    assert_eq!(kinds(s.events.take()), [Kind::JobScaled]);
    let i = s.last_index + 1;
    s.apply(
        i,
        &Command::StopJob {
            request_id: String::new(),
            name: "web".into(),
            purge: false,
            at_ms: 80,
        },
    );
    assert_eq!(kinds(s.events.take()), [Kind::JobStopped]);
}
