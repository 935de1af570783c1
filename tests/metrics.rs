//! `/metrics` end to end: a scheduler and an agent started with
//! `--http-listen`, a job running behind the routing mesh, and what their
//! scrapes say, checked by Prometheus' own `promtool`.

use drover_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The value of the sample `name{labels}` (exactly as written).
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

fn promtool(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (tests/run.sh installs Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_scheduler_and_an_agent_tell_prometheus_what_they_do() {
    if !require_root("a_scheduler_and_an_agent_tell_prometheus_what_they_do") {
        return;
    }
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_or_fail(
            "a_scheduler_and_an_agent_tell_prometheus_what_they_do",
            "promtool is not installed (tests/run.sh installs Debian's prometheus)",
        );
        return;
    }
    let images = images();
    let (sched_port, agent_port, mesh_port) = (free_port(), free_port(), free_port());
    // On every address: callers not on loopback need a token.
    let sched_http = format!("0.0.0.0:{sched_port}");
    let mut c = Cluster::start_with_scheduler_args("e2e-metrics", &["--http-listen", &sched_http]);
    c.agent = None;
    let agent_http = format!("127.0.0.1:{agent_port}");
    c.start_agent_with(&["--http-listen", &agent_http]);
    let spec = c.spec(
        "web",
        &format!(
            "name: web\nreplicas: 2\nimage: oci:{}/demo-web:v1\nenv: {{PORT: \"8080\"}}\n\
             resources: {{cpu: 0.05, memory: 32Mi}}\nports: [{{name: http, container: 8080}}]\n\
             expose: {{port: {mesh_port}, target: http}}\n\
             health: {{http: {{path: /healthz, port: 8080}}, interval: 500ms, timeout: 400ms}}\n",
            images.display()
        ),
    );
    c.must(&["job", "run", spec.to_str().unwrap()]);
    // Requests through the routing mesh.
    let served = (0..5)
        .filter(|_| {
            TcpStream::connect(("127.0.0.1", mesh_port))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    write!(s, "GET / HTTP/1.0\r\n\r\n")?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    Ok(out.starts_with("HTTP/1"))
                })
                .unwrap_or(false)
        })
        .count();
    assert!(served > 0, "no request went through the mesh");

    let scheduler = format!("127.0.0.1:{sched_port}");
    let (code, text) = http_get(&scheduler, "/metrics", None, None);
    assert_eq!(code, 200, "{text}");
    for (sample, at_least) in [
        ("drover_raft_is_leader", 1.0),
        ("drover_raft_term", 1.0),
        (r#"drover_jobs{state="running"}"#, 1.0),
        (r#"drover_allocations{state="running"}"#, 2.0),
        (r#"drover_events_total{type="alloc-placed"}"#, 2.0),
        (r#"drover_events_total{type="node-registered"}"#, 1.0),
        (
            r#"drover_api_requests_total{method="Drover/SubmitJob",code="ok"}"#,
            1.0,
        ),
        ("drover_raft_fsync_seconds_count", 1.0),
        ("drover_scheduler_pass_seconds_count", 1.0),
    ] {
        let v = value(&text, sample).unwrap_or_else(|| panic!("no {sample} in\n{text}"));
        assert!(v >= at_least, "{sample} is {v}, not at least {at_least}");
    }
    promtool(&text);

    // From another address: served until the cluster has ACLs; then only
    // with a token that may read.
    let ip = global_ip();
    let (code, body) = http_get(&scheduler, "/metrics", Some(ip), None);
    assert_eq!(code, 200, "{body}");
    let b = c.drover(&["acl", "bootstrap"]);
    assert!(b.ok(), "{}", b.stderr);
    let admin = b.stdout.trim().to_string();
    std::fs::write(pki_dir_for(&c.addr).unwrap().join("token"), &admin).unwrap();
    let reader = c.must(&["acl", "token", "create", "--name", "prom", "--role", "read"]);
    let (code, body) = http_get(&scheduler, "/metrics", Some(ip), None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("token"), "{body}");
    let (code, body) = http_get(&scheduler, "/metrics", Some(ip), Some("DRVT-not-a-token"));
    assert_eq!(code, 401, "{body}");
    let (code, body) = http_get(&scheduler, "/metrics", Some(ip), Some(reader.trim()));
    assert_eq!(code, 200, "{body}");
    // On loopback nobody is asked.
    let (code, _) = http_get(&scheduler, "/metrics", None, None);
    assert_eq!(code, 200);

    // The agent: its replicas, their starts, the mesh, and (sampled every
    // few seconds) each replica's usage.
    let text = wait_for("the agent's usage sample", Duration::from_secs(20), || {
        let (code, text) = http_get(&agent_http, "/metrics", None, None);
        (code == 200 && text.contains("drover_agent_allocation_memory_bytes{")).then_some(text)
    });
    for (sample, at_least) in [
        (r#"drover_agent_allocations{state="running"}"#, 2.0),
        ("drover_agent_start_seconds_count", 2.0),
        ("drover_agent_image_pull_seconds_count", 1.0),
        (
            r#"drover_agent_mesh_connections_total{job="web",outcome="forwarded"}"#,
            served as f64,
        ),
    ] {
        let v = value(&text, sample).unwrap_or_else(|| panic!("no {sample} in\n{text}"));
        assert!(v >= at_least, "{sample} is {v}, not at least {at_least}");
    }
    let memory: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("drover_agent_allocation_memory_bytes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(memory.len(), 2, "{text}");
    assert!(memory.iter().all(|m| *m > 0.0), "{text}");
    promtool(&text);
}
