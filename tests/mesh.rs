//! Container networking and the routing mesh, end to end: real agents, real
//! bridges and veths, real demo-web replicas, real load through the mesh.

use drover_e2e::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn web(images: &std::path::Path, tag: &str, port: u16, env: &str) -> String {
    format!(
        "name: web\nreplicas: 4\nimage: oci:{}/demo-web:{tag}\nenv: {{PORT: \"8080\"{env}}}\n\
         resources: {{cpu: 0.05, memory: 32Mi}}\nstop_grace_period: 3s\n\
         ports: [{{name: http, container: 8080}}]\nexpose: {{port: {port}, target: http}}\n\
         health: {{http: {{path: /healthz, port: 8080}}, interval: 500ms, timeout: 400ms, failure_threshold: 2}}\n\
         update: {{max_surge: 1, max_unavailable: 0, min_healthy_time: 1s, healthy_deadline: 15s, progress_deadline: 1m}}\n",
        images.display()
    )
}

/// One GET; the body (`demo-web v1 on web-2`), or why it failed.
fn get(addr: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if !out.starts_with("HTTP/1.1 200") {
        return Err(out.lines().next().unwrap_or("empty").to_string());
    }
    Ok(out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}

fn running(c: &Cluster) -> Vec<Value> {
    c.json(&["alloc", "ls", "--job", "web"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["desired"] == "run" && a["state"] == "running" && a["health"] == "healthy")
        .cloned()
        .collect()
}

#[test]
fn the_mesh_reaches_every_healthy_replica_and_drops_an_unhealthy_one() {
    if !require_root("the_mesh_reaches_every_healthy_replica_and_drops_an_unhealthy_one") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-mesh");
    let port = free_port();
    let spec = c.spec("web", &web(&images, "v1", port, ""));
    let out = c.drover(&["job", "run", spec.to_str().unwrap()]);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    let replicas = wait_for("4 healthy replicas", Duration::from_secs(30), || {
        let r = running(&c);
        (r.len() == 4).then_some(r)
    });
    // Each replica has its own address on the node's bridge, and answers there.
    for a in &replicas {
        let ip = a["ip"]
            .as_str()
            .expect("a private-network replica has an address");
        assert!(ip.starts_with("10."), "{ip}");
        let body = get(&format!("{ip}:8080")).unwrap();
        assert_eq!(
            body,
            format!("demo-web v1 on {}", a["name"].as_str().unwrap())
        );
    }
    // The published port on the node balances across all of them.
    let mesh = format!("127.0.0.1:{port}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(get(&mesh).unwrap());
    }
    assert_eq!(seen.len(), 4, "not every replica got traffic: {seen:?}");

    // Freeze one replica: its check fails (2 × 500 ms) and within a second
    // more it gets no new connections.
    let victim = &replicas[0];
    let pid = victim["pid"].as_u64().unwrap().to_string();
    let name = victim["name"].as_str().unwrap().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    std::thread::sleep(Duration::from_millis(2 * 500 + 400 + 1000));
    for i in 0..30 {
        let body =
            get(&mesh).unwrap_or_else(|e| panic!("request {i} through the mesh failed: {e}"));
        assert!(
            !body.ends_with(&name),
            "the unhealthy replica {name} still got traffic"
        );
    }
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
}

#[test]
fn rollouts_under_load_drop_no_request_and_stopping_cleans_the_network() {
    if !require_root("rollouts_under_load_drop_no_request_and_stopping_cleans_the_network") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-zero");
    let port = free_port();
    let v1 = c.spec("v1", &web(&images, "v1", port, ""));
    assert!(c.drover(&["job", "run", v1.to_str().unwrap()]).ok());
    wait_for("4 healthy replicas", Duration::from_secs(30), || {
        (running(&c).len() == 4).then_some(())
    });
    let timeline = c.dir.path().join("timeline.json");
    let mut load = Proc::spawn(
        "drover bench load",
        Command::new(bin_dir().join("drover"))
            .args([
                "bench",
                "load",
                "--url",
                &format!("http://127.0.0.1:{port}/"),
                "--rate",
                "250",
                "--duration",
                "2m",
                "--json",
            ])
            .arg(&timeline),
        c.dir.path().join("load.log"),
    );
    let load_began = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let v2 = c.spec("v2", &web(&images, "v2", port, ""));
    let out = c.drover(&["job", "run", v2.to_str().unwrap()]);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    let v3 = c.spec("v3", &web(&images, "v2", port, ", FAIL_HEALTH: \"1\""));
    let out = c.drover(&["job", "run", v3.to_str().unwrap()]);
    assert!(!out.ok(), "v3 fails and rolls back");
    assert!(
        out.stderr.contains("rolled back to version 2"),
        "{}",
        out.stderr
    );
    // A second of load after the rollback, and ten at least in all (the
    // rollouts may take less).
    std::thread::sleep(Duration::from_secs(1));
    let least = Duration::from_secs(11);
    std::thread::sleep(least.saturating_sub(load_began.elapsed()));
    load.signal("INT");
    let status = load
        .wait(Duration::from_secs(15))
        .expect("load generator ends");
    let seconds: Value =
        serde_json::from_str(&std::fs::read_to_string(&timeline).unwrap()).unwrap();
    let seconds = seconds.as_array().unwrap();
    let ok: u64 = seconds.iter().map(|s| s["ok"].as_u64().unwrap()).sum();
    let failed: u64 = seconds.iter().map(|s| s["failed"].as_u64().unwrap()).sum();
    assert!(seconds.len() >= 10, "the load ran {} s", seconds.len());
    assert!(
        ok as f64 / seconds.len() as f64 >= 200.0 * 0.9,
        "load below 200 req/s: {ok} in {} s",
        seconds.len()
    );
    assert_eq!(
        failed,
        0,
        "requests failed during the rollouts:\n{}",
        load.output()
    );
    assert!(status.success());
    let v2_seen = seconds.iter().any(|s| s["versions"].get("v2").is_some());
    assert!(v2_seen, "v2 never answered");

    // Stopping leaves no veth, no address, no listener of the job behind.
    let allocs = c.json(&["alloc", "ls", "--job", "web"]);
    let ips: Vec<String> = allocs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["ip"].as_str().map(String::from))
        .collect();
    assert!(c.drover(&["job", "stop", "web"]).ok());
    let links = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for a in allocs.as_array().unwrap() {
        let id = a["id"].as_str().unwrap();
        assert!(!cgroup_exists(id));
    }
    let ipam = std::fs::read_dir(c.agent_state_dir().join("ipam"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .map(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(ipam, 0, "addresses still allocated: {ips:?}");
    assert!(!links.contains("dvh") || !ips.is_empty(), "{links}");
    wait_for(
        "the published port to close",
        Duration::from_secs(5),
        || {
            TcpStream::connect(format!("127.0.0.1:{port}"))
                .is_err()
                .then_some(())
        },
    );
}

#[test]
fn containers_on_two_nodes_reach_each_other_by_address() {
    if !require_root("containers_on_two_nodes_reach_each_other_by_address") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-net-a");
    let mut cmd = Command::new(bin_dir().join("drover-agent"));
    cmd.args([
        "run",
        "--name",
        "e2e-net-b",
        "--scheduler",
        &c.addr,
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--state-dir",
    ])
    .arg(c.dir.path().join("agent-b"))
    .env("DROVER_JOIN_TOKEN", drover_e2e::join_token(&c.addr));
    let _b = Proc::spawn("drover-agent", &mut cmd, c.dir.path().join("agent-b.log"));
    wait_for("node b", Duration::from_secs(20), || {
        c.json(&["node", "ls"])
            .as_array()?
            .iter()
            .any(|n| n["name"] == "e2e-net-b" && n["status"] == "ready")
            .then_some(())
    });
    let port = free_port();
    let spec = c.spec(
        "web",
        &web(&images, "v1", port, "").replace("replicas: 4", "replicas: 2"),
    );
    assert!(c.drover(&["job", "run", spec.to_str().unwrap()]).ok());
    let r = wait_for("2 healthy replicas", Duration::from_secs(30), || {
        let r = running(&c);
        (r.len() == 2).then_some(r)
    });
    let nodes: std::collections::BTreeSet<&str> =
        r.iter().map(|a| a["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "spread over both nodes");
    let subnets: std::collections::BTreeSet<String> = r
        .iter()
        .map(|a| {
            a["ip"]
                .as_str()
                .unwrap()
                .rsplit_once('.')
                .unwrap()
                .0
                .to_string()
        })
        .collect();
    assert_eq!(subnets.len(), 2, "each node has its own subnet");
    // From inside replica 0's network namespace, replica 1 answers at its address.
    let pid = r[0]["pid"].as_u64().unwrap().to_string();
    let other = format!("http://{}:8080/", r[1]["ip"].as_str().unwrap());
    let out = Command::new("nsenter")
        .args(["-t", &pid, "-n", "--", "busybox", "wget", "-qO-", &other])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        body.trim(),
        format!("demo-web v1 on {}", r[1]["name"].as_str().unwrap()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Across network namespaces (each node its own, on the cluster script's
/// bridge): containers reach each other by address through the routes via
/// node addresses, and any node's published port reaches replicas on the others.
#[test]
fn across_node_namespaces_containers_and_the_mesh_reach_every_replica() {
    if !require_root("across_node_namespaces_containers_and_the_mesh_reach_every_replica") {
        return;
    }
    use drover_e2e::netcluster::NetCluster;
    let images = images();
    let c = NetCluster::up("xnode", 9, 1, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("web.yaml");
    std::fs::write(
        &spec,
        web(&images, "v1", 18080, "").replace("replicas: 4", "replicas: 2"),
    )
    .unwrap();
    let out = c.drover(&["job", "run", "--timeout", "60s", spec.to_str().unwrap()]);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    let r = wait_for(
        "2 healthy replicas on two nodes",
        Duration::from_secs(30),
        || {
            let v: Value = serde_json::from_str(
                &c.drover(&["alloc", "ls", "--job", "web", "-o", "json"])
                    .stdout,
            )
            .ok()?;
            let r: Vec<Value> = v
                .as_array()?
                .iter()
                .filter(|a| a["desired"] == "run" && a["health"] == "healthy")
                .cloned()
                .collect();
            let nodes: std::collections::BTreeSet<&str> =
                r.iter().filter_map(|a| a["node"].as_str()).collect();
            (r.len() == 2 && nodes.len() == 2).then_some(r)
        },
    );
    // Container on node A → container on node B, by address.
    for (from, to) in [(&r[0], &r[1]), (&r[1], &r[0])] {
        let pid = from["pid"].as_u64().unwrap().to_string();
        let url = format!("http://{}:8080/", to["ip"].as_str().unwrap());
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "--", "busybox", "wget", "-qO-", &url])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("demo-web v1 on {}", to["name"].as_str().unwrap()),
            "{} -> {}: {}",
            from["name"],
            to["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each node's published port reaches both replicas, one of them on the other node.
    let nodes: Value =
        serde_json::from_str(&c.drover(&["node", "ls", "-o", "json"]).stdout).unwrap();
    for n in nodes.as_array().unwrap() {
        let ip = n["address"]
            .as_str()
            .unwrap()
            .rsplit_once(':')
            .unwrap()
            .0
            .to_string();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..12 {
            seen.insert(get(&format!("{ip}:18080")).unwrap_or_else(|e| panic!("{ip}:18080: {e}")));
        }
        assert_eq!(
            seen.len(),
            2,
            "node {ip}'s mesh did not reach both replicas: {seen:?}"
        );
    }
}

/// An nftables table in the host namespace, deleted when dropped.
struct NftTable(String);

impl NftTable {
    /// Deletes the tables a run of this test killed before its `Drop` left
    /// behind: one would reject the next run's replica before its time.
    fn remove_leftovers() {
        let out = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line.strip_prefix("table inet drover_e2e_reach_") {
                let _ = Command::new("nft")
                    .args([
                        "delete",
                        "table",
                        "inet",
                        &format!("drover_e2e_reach_{name}"),
                    ])
                    .status();
            }
        }
    }

    /// Rejects TCP from this namespace to `ip:port` with a reset (the
    /// replica's own namespace is untouched).
    fn reject(name: &str, ip: &str, port: u16) -> NftTable {
        let rules = format!(
            "table inet {name} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    \
             ip daddr {ip} tcp dport {port} reject with tcp reset\n  }}\n}}\n"
        );
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        nft.stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(nft.wait().unwrap().success(), "nft -f: {rules}");
        NftTable(name.into())
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .status();
    }
}

#[test]
fn a_published_replica_the_node_cannot_reach_is_unhealthy_though_its_own_check_passes() {
    if !require_root(
        "a_published_replica_the_node_cannot_reach_is_unhealthy_though_its_own_check_passes",
    ) {
        return;
    }
    let images = images();
    NftTable::remove_leftovers();
    let c = Cluster::start("e2e-reach");
    let port = free_port();
    let spec = c.spec(
        "web",
        &web(&images, "v1", port, "").replace("replicas: 4", "replicas: 1"),
    );
    let out = c.drover(&["job", "run", spec.to_str().unwrap()]);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    let a = wait_for("a healthy replica", Duration::from_secs(30), || {
        running(&c).into_iter().next()
    });
    let (id, ip) = (a["id"].as_str().unwrap(), a["ip"].as_str().unwrap());
    let pid = a["pid"].as_u64().unwrap().to_string();

    // The node can no longer reach it; inside its namespace it still serves.
    let rule = NftTable::reject(&format!("drover_e2e_reach_{port}"), ip, 8080);
    let inside = Command::new("nsenter")
        .args(["-t", &pid, "-n", "--", "busybox", "wget", "-qO-"])
        .arg("http://127.0.0.1:8080/healthz")
        .output()
        .unwrap();
    assert!(
        inside.status.success(),
        "its own check would fail too: {}",
        String::from_utf8_lossy(&inside.stderr)
    );
    let reason = wait_for(
        "the replica to be unhealthy for being unreachable",
        Duration::from_secs(20),
        || {
            let all = c.json(&["alloc", "ls", "--job", "web"]);
            let a = all.as_array()?.iter().find(|a| a["id"] == id)?.clone();
            let reason = a["reason"].as_str()?.to_string();
            reason.starts_with("unhealthy").then_some(reason)
        },
    );
    assert!(
        reason.starts_with(&format!(
            "unhealthy: not reachable from the node at {ip}:8080: connection refused"
        )),
        "{reason}"
    );
    assert!(
        get(&format!("127.0.0.1:{port}")).is_err(),
        "the mesh has no replica it can reach"
    );

    // Reachable again: healthy again, and served through the mesh.
    drop(rule);
    wait_for("a healthy replica again", Duration::from_secs(30), || {
        (running(&c).len() == 1).then_some(())
    });
    let body = wait_for("the mesh to serve", Duration::from_secs(10), || {
        get(&format!("127.0.0.1:{port}")).ok()
    });
    assert!(body.starts_with("demo-web v1 on web-"), "{body}");
}

#[test]
fn a_published_replica_without_a_check_is_unhealthy_once_the_node_cannot_reach_it() {
    if !require_root(
        "a_published_replica_without_a_check_is_unhealthy_once_the_node_cannot_reach_it",
    ) {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-reach-nocheck");
    let port = free_port();
    let yaml: String = web(&images, "v1", port, "")
        .replace("replicas: 4", "replicas: 1")
        .lines()
        .filter(|l| !l.starts_with("health:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let spec = c.spec("web", &yaml);
    let out = c.drover(&["job", "run", spec.to_str().unwrap()]);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    let a = wait_for("a running replica", Duration::from_secs(30), || {
        let all = c.json(&["alloc", "ls", "--job", "web"]);
        all.as_array()?
            .iter()
            .find(|a| a["state"] == "running" && a["ip"].as_str().is_some_and(|s| !s.is_empty()))
            .cloned()
    });
    let (id, ip) = (a["id"].as_str().unwrap(), a["ip"].as_str().unwrap());
    wait_for("the mesh to serve", Duration::from_secs(10), || {
        get(&format!("127.0.0.1:{port}")).ok()
    });
    // Long enough for the agent to have reached it once (every 5s).
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        c.json(&["alloc", "ls", "--job", "web"])[0]["health"],
        "",
        "no check, no verdict while it is reachable"
    );

    let _rule = NftTable::reject(&format!("drover_e2e_reach_{port}"), ip, 8080);
    let reason = wait_for(
        "the replica to be unhealthy for being unreachable",
        Duration::from_secs(40),
        || {
            let all = c.json(&["alloc", "ls", "--job", "web"]);
            let a = all.as_array()?.iter().find(|a| a["id"] == id)?.clone();
            let reason = a["reason"].as_str()?.to_string();
            reason.starts_with("unhealthy").then_some(reason)
        },
    );
    assert!(
        reason.starts_with(&format!(
            "unhealthy: not reachable from the node at {ip}:8080: connection refused"
        )),
        "{reason}"
    );
}

/// A private-network replica's network is in place before its command's
/// first instruction: a command that reads its routing table at once (as
/// one that connects out at once would use it) finds `eth0` and the default
/// route via the node's bridge, not only loopback.
#[test]
fn a_private_replica_has_its_network_before_its_command_runs() {
    if !require_root("a_private_replica_has_its_network_before_its_command_runs") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-net-early");
    let spec = c.spec(
        "early",
        &format!(
            "name: early\nimage: oci:{}/toolbox:latest\n\
             command: [/bin/sh, -c, 'cat /proc/net/route; echo routes-read; exec sleep 3600']\n\
             resources: {{cpu: 10m, memory: 16Mi}}\nstop_grace_period: 1s\n",
            images.display()
        ),
    );
    assert!(c.drover(&["job", "run", spec.to_str().unwrap()]).ok());
    let logs = wait_for(
        "the routes the command read",
        Duration::from_secs(20),
        || {
            let out = c.drover(&["logs", "early"]);
            out.stdout.contains("routes-read").then_some(out.stdout)
        },
    );
    // /proc/net/route: Iface, Destination, Gateway (hex, host order), ...
    let default = logs
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["eth0", "00000000"]));
    assert!(
        default.is_some(),
        "no default route via eth0 when the command started:\n{logs}"
    );
}

/// One DNS query for `name`'s A records to `server` (UDP port 53): the
/// addresses answered, or the rcode when it is not NOERROR.
fn dns_a(server: &str, name: &str) -> Result<Vec<String>, u8> {
    use drover_agent::daemon::dns::wire;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&wire::query(0x4242, name, wire::TYPE_A, None), (server, 53))
        .unwrap();
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).expect("the node's DNS server answers");
    let (id, rcode, addrs) = wire::read_addresses(&buf[..n]).expect("a whole answer");
    assert_eq!(id, 0x4242);
    if rcode != 0 {
        return Err(rcode);
    }
    let mut out: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    out.sort();
    Ok(out)
}

#[test]
fn containers_find_serving_replicas_by_name_and_an_unhealthy_one_leaves_the_answers() {
    if !require_root(
        "containers_find_serving_replicas_by_name_and_an_unhealthy_one_leaves_the_answers",
    ) {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-dns");
    let mut web_spec = web(&images, "v1", free_port(), "");
    web_spec = web_spec.replace("replicas: 4", "replicas: 3");
    let web_spec = c.spec("web", &web_spec);
    assert!(c.drover(&["job", "run", web_spec.to_str().unwrap()]).ok());
    let client = c.spec(
        "client",
        &format!(
            "name: client\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sleep, '3600']\n\
             resources: {{cpu: 10m, memory: 16Mi}}\nstop_grace_period: 1s\n",
            images.display()
        ),
    );
    assert!(c.drover(&["job", "run", client.to_str().unwrap()]).ok());
    let replicas = wait_for("3 healthy replicas", Duration::from_secs(30), || {
        let r = running(&c);
        (r.len() == 3).then_some(r)
    });
    let mut ips: Vec<String> = replicas
        .iter()
        .map(|a| a["ip"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    let client = wait_for("the client running", Duration::from_secs(20), || {
        let all = c.json(&["alloc", "ls", "--job", "client"]);
        all.as_array()?
            .iter()
            .find(|a| a["state"] == "running" && a["ip"].as_str().is_some_and(|ip| !ip.is_empty()))
            .cloned()
    });
    let client_id = client["id"].as_str().unwrap().to_string();
    let client_ip = client["ip"].as_str().unwrap().to_string();
    let exec = |script: &str| {
        let out = c.drover(&["exec", &client_id, "--", "/bin/sh", "-c", script]);
        assert!(out.ok(), "{script}: {}{}", out.stdout, out.stderr);
        out.stdout
    };

    // Inside a container: the bare job name resolves through the search
    // list to every serving replica; a replica by its name; the named port
    // as SRV; the container's own name from its hosts file.
    let resolv = exec("cat /etc/resolv.conf");
    let gateway = client_ip.rsplit_once('.').unwrap().0.to_string() + ".1";
    assert!(
        resolv.contains(&format!("nameserver {gateway}")),
        "{resolv}"
    );
    assert!(resolv.contains("search service.drover"), "{resolv}");
    let out = exec("nslookup web");
    for ip in &ips {
        assert!(out.contains(ip), "nslookup web has no {ip}:\n{out}");
    }
    let one = &replicas[0];
    let out = exec(&format!(
        "nslookup {}.web.service.drover",
        one["name"].as_str().unwrap()
    ));
    assert!(out.contains(one["ip"].as_str().unwrap()), "{out}");
    let out = exec("nslookup -type=srv _http._tcp.web.service.drover");
    assert!(
        out.contains("8080") && out.contains(".web.service.drover"),
        "{out}"
    );
    let out = exec("nslookup nosuch.service.drover || true");
    assert!(out.contains("NXDOMAIN"), "{out}");
    let hosts = exec("cat /etc/hosts");
    assert!(hosts.contains(&format!("{client_ip}\tclient-0")), "{hosts}");
    // Over the wire: the same answers the host sees at the bridge address.
    assert_eq!(dns_a(&gateway, "web.service.drover"), Ok(ips.clone()));

    // Freeze one replica: its check fails twice (2 × 500 ms, each up to
    // 400 ms) and it must leave the answers within one interval + 1 s more.
    let victim = &replicas[1];
    let victim_ip = victim["ip"].as_str().unwrap().to_string();
    let pid = victim["pid"].as_u64().unwrap().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let frozen = std::time::Instant::now();
    let left = wait_for(
        "the frozen replica to leave",
        Duration::from_secs(10),
        || {
            let now = dns_a(&gateway, "web").ok()?;
            (!now.contains(&victim_ip)).then(|| (frozen.elapsed(), now))
        },
    );
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let bound = Duration::from_millis(2 * 500 + 400 + 500 + 1000);
    eprintln!(
        "the frozen replica left DNS answers {:?} after SIGSTOP (bound {bound:?})",
        left.0
    );
    assert!(left.0 <= bound, "left after {:?}, over {bound:?}", left.0);
    assert_eq!(left.1.len(), 2, "{:?}", left.1);
    assert!(c.drover(&["job", "stop", "client"]).ok());
    assert!(c.drover(&["job", "stop", "web"]).ok());
}
