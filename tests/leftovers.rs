//! What agents leave on the host, end to end: real agents killed with
//! SIGKILL, real bridges, veths, mounts and cgroups. A stale bridge holding
//! the node subnet's gateway is reclaimed by the next agent; a foreign
//! interface holding it makes the node's container network unavailable,
//! and the scheduler says so (`node ls`, the job's pending reason) and
//! places private-network replicas elsewhere; `drover-agent cleanup` lists
//! and removes orphans.
//!
//! Each test uses its own container range (`test_cidr`), so nothing here
//! touches addresses the host or the other tests use.

use drover_e2e::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `10.X.0.1`: the gateway of the first /24 of `10.X.0.0/16`.
/// The tests take turns: an agent starting in one reclaims the links of
/// dead agents, and `cleanup` removes every orphan, so a test running beside
/// another would take away what that one is looking at.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn first_gateway(cidr: &str) -> String {
    format!("{}.0.1", cidr.rsplit_once(".0.0/").unwrap().0)
}

fn ip_json(args: &[&str]) -> Vec<Value> {
    let out = Command::new("ip").arg("-j").args(args).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The interfaces holding `addr`.
fn holders(addr: &str) -> Vec<String> {
    ip_json(&["-4", "addr", "show"])
        .iter()
        .filter(|l| {
            l["addr_info"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["local"] == addr))
        })
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The alias (`drover:<state-dir>` for Drover's links) of link `name`.
fn alias(name: &str) -> Option<String> {
    ip_json(&["link", "show", "dev", name])
        .first()
        .and_then(|l| l["ifalias"].as_str().map(String::from))
}

fn link_exists(name: &str) -> bool {
    !ip_json(&["link", "show", "dev", name]).is_empty()
}

fn marker(state_dir: &Path) -> String {
    format!(
        "drover:{}",
        std::fs::canonicalize(state_dir).unwrap().display()
    )
}

/// The bridge of `c`'s agent, once it holds `gateway`.
fn bridge_of(c: &Cluster, gateway: &str) -> String {
    let m = marker(&c.agent_state_dir());
    wait_for(
        &format!("a bridge marked {m} holding {gateway}"),
        Duration::from_secs(20),
        || {
            holders(gateway)
                .into_iter()
                .find(|h| alias(h).as_deref() == Some(m.as_str()))
        },
    )
}

fn kill_agent(c: &mut Cluster) {
    let mut agent = c.agent.take().unwrap();
    agent.signal("KILL");
    agent.wait(Duration::from_secs(5)).expect("agent killed");
}

fn sleeper(images: &Path) -> String {
    format!(
        "name: sleeper\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sleep, \"3600\"]\n\
         resources: {{cpu: 0.05, memory: 16Mi}}\nstop_grace_period: 1s\n\
         restart: {{backoff: {{initial: 500ms, max: 2s}}}}\n",
        images.display()
    )
}

fn allocs(c: &Cluster) -> Vec<Value> {
    c.json(&["alloc", "ls"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// One HTTP GET from the host; the body, or why it failed.
fn get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Runs `drover-agent cleanup --state-dir DIR` when dropped.
struct CleanupOnDrop(std::path::PathBuf);

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        let _ = cleanup(&["--state-dir", self.0.to_str().unwrap_or_default()]);
    }
}

fn cleanup(args: &[&str]) -> Run {
    let out = Command::new(bin_dir().join("drover-agent"))
        .arg("cleanup")
        .args(args)
        .output()
        .unwrap();
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_bridge_a_killed_agent_left_on_the_subnet_is_reclaimed_by_the_next_agent() {
    if !require_root("a_bridge_a_killed_agent_left_on_the_subnet_is_reclaimed_by_the_next_agent") {
        return;
    }
    let _turn = one_at_a_time();
    let images = images();
    let cidr = test_cidr(free_port());
    let gateway = first_gateway(&cidr);
    let mut old = Cluster::start_with_cidr("e2e-stale-old", &cidr);
    let stale = bridge_of(&old, &gateway);
    kill_agent(&mut old);
    assert!(link_exists(&stale), "SIGKILL leaves the bridge {stale}");

    // A second cluster on the same range: its node gets the same /24.
    let new = Cluster::start_with_cidr("e2e-stale-new", &cidr);
    let bridge = bridge_of(&new, &gateway);
    assert_ne!(bridge, stale);
    assert!(
        !link_exists(&stale),
        "the stale bridge {stale} is reclaimed"
    );
    assert_eq!(holders(&gateway), vec![bridge.clone()]);

    // And what a user sees: a container on the new node answers at its address.
    let spec = new.spec(
        "web",
        &format!(
            "name: web\nimage: oci:{}/demo-web:v1\nenv: {{PORT: \"8080\"}}\n\
             resources: {{cpu: 0.05, memory: 32Mi}}\nstop_grace_period: 1s\n",
            images.display()
        ),
    );
    assert!(new.drover(&["job", "run", spec.to_str().unwrap()]).ok());
    let ip = wait_for("the replica's address", Duration::from_secs(30), || {
        allocs(&new)
            .iter()
            .find(|a| a["state"] == "running" && a["ip"].as_str().is_some_and(|s| !s.is_empty()))
            .map(|a| a["ip"].as_str().unwrap().to_string())
    });
    let body = wait_for("the replica to answer", Duration::from_secs(15), || {
        get(&format!("{ip}:8080"))
            .map_err(|e| eprintln!("GET {ip}: {e}"))
            .ok()
    });
    assert!(body.starts_with("demo-web v1"), "{body}");
}

/// A link this test made, deleted when dropped.
struct ForeignLink(String);

impl Drop for ForeignLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// Makes a bridge named `name` holding `gateway`; deleted when dropped.
fn foreign_bridge(name: &str, gateway: &str) -> ForeignLink {
    let ip = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success());
    ip(&["link", "add", name, "type", "bridge"]);
    let link = ForeignLink(name.to_string());
    ip(&["addr", "add", &format!("{gateway}/24"), "dev", name]);
    link
}

/// What `drover node ls -o json` says of node `name`'s container network,
/// once it says something other than `not`.
fn network_error_of(c: &Cluster, name: &str, not: &str) -> String {
    wait_for(
        &format!("node ls to show node {name}'s network as other than {not:?}"),
        Duration::from_secs(30),
        || {
            let nodes = c.json(&["node", "ls"]);
            let n = nodes
                .as_array()?
                .iter()
                .find(|n| n["name"] == name)?
                .clone();
            let e = n["network_error"].as_str()?.to_string();
            (e != not).then_some(e)
        },
    )
}

/// Starts one more agent for `c`, named `name`, and waits for it to be ready.
fn extra_agent(c: &Cluster, name: &str) -> Proc {
    let mut cmd = Command::new(bin_dir().join("drover-agent"));
    cmd.args(["run", "--name", name, "--scheduler", &c.addr])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--heartbeat", "500ms", "--state-dir"])
        .arg(c.dir.path().join(format!("agent-{name}")))
        .env("DROVER_JOIN_TOKEN", drover_e2e::join_token(&c.addr));
    let log = c.dir.path().join(format!("agent-{name}.log"));
    let p = Proc::spawn("drover-agent", &mut cmd, log);
    wait_for(
        &format!("node {name} ready"),
        Duration::from_secs(20),
        || {
            c.json(&["node", "ls"])
                .as_array()?
                .iter()
                .any(|n| n["name"] == name && n["status"] == "ready")
                .then_some(())
        },
    );
    p
}

#[test]
fn a_foreign_interface_holding_the_gateway_keeps_replicas_off_the_node_with_its_name() {
    if !require_root(
        "a_foreign_interface_holding_the_gateway_keeps_replicas_off_the_node_with_its_name",
    ) {
        return;
    }
    let _turn = one_at_a_time();
    let images = images();
    let cidr = test_cidr(free_port());
    let gateway = first_gateway(&cidr);
    let name = format!("e2efrgn{}", free_port());
    let foreign = foreign_bridge(&name, &gateway);
    let why = format!(
        "gateway {gateway} of subnet {} is already on interface {name}, not made by drover",
        cidr.replace(".0.0/16", ".0.0/24")
    );

    let c = Cluster::start_with_cidr("e2e-foreign", &cidr);
    // The scheduler knows, and says so where an operator looks.
    let error = network_error_of(&c, "e2e-foreign", "");
    assert_eq!(error, why);
    let table = c.drover(&["node", "ls"]);
    assert!(table.ok(), "{}", table.stderr);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("e2e-foreign "))
        .unwrap_or_else(|| panic!("no row for the node:\n{}", table.stdout));
    assert!(row.contains("unavailable"), "{}", table.stdout);
    assert!(
        table.stdout.contains(&format!(
            "e2e-foreign: container network unavailable (no private-network replicas are placed there): {why}"
        )),
        "{}",
        table.stdout
    );
    let status = c.drover(&["node", "status", "e2e-foreign"]);
    assert!(status.ok(), "{}", status.stderr);
    assert!(
        status.stdout.contains(&format!(
            "network:     unavailable: {why} (no private-network replicas are placed here)"
        )),
        "{}",
        status.stdout
    );
    assert!(
        c.agent.as_ref().unwrap().output().contains(&name),
        "the agent's log names the interface"
    );

    // Its only node cannot take the replica: the job is pending, saying why.
    let spec = c.spec("sleeper", &sleeper(&images));
    let out = c.drover(&["job", "run", "--detach", spec.to_str().unwrap()]);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    let pending = wait_for("the job to be pending", Duration::from_secs(20), || {
        let j = c.json(&["job", "status", "sleeper"]);
        j["pending_reason"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(String::from)
    });
    assert_eq!(
        pending,
        format!(
            "1 replica not placed: no node has a working container network: 1 node checked; \
             node e2e-foreign: container network unavailable: {why}"
        )
    );
    assert!(allocs(&c).is_empty(), "nothing placed: {:?}", allocs(&c));
    assert_eq!(
        holders(&gateway),
        vec![name.clone()],
        "the agent took nothing"
    );

    // Once the interface is gone, the agent sets its network up by itself,
    // the scheduler hears it, and the replica runs on the node's own bridge.
    drop(foreign);
    assert_eq!(network_error_of(&c, "e2e-foreign", &why), "");
    wait_for("the replica to run", Duration::from_secs(60), || {
        allocs(&c)
            .iter()
            .any(|a| a["state"] == "running" && a["ip"].as_str().is_some_and(|s| !s.is_empty()))
            .then_some(())
    });
    let bridge = bridge_of(&c, &gateway);
    assert!(bridge.starts_with("drv"), "{bridge}");
    let j = c.json(&["job", "status", "sleeper"]);
    assert_eq!(j["pending_reason"], "", "{j}");
    let table = c.drover(&["node", "ls"]).stdout;
    assert!(!table.contains("unavailable"), "{table}");
    let status = c.drover(&["node", "status", "e2e-foreign"]).stdout;
    assert!(status.contains("network:     ok\n"), "{status}");

    // A foreign interface taking the gateway while the network runs is
    // noticed too; the replica already running keeps running.
    let _again = foreign_bridge(&name, &gateway);
    let error = network_error_of(&c, "e2e-foreign", "");
    assert!(
        error.contains(&format!(
            "is already on interface {name}, not made by drover"
        )),
        "{error}"
    );
    let running = allocs(&c)
        .iter()
        .filter(|a| a["state"] == "running")
        .count();
    assert_eq!(running, 1, "{:?}", allocs(&c));
}

#[test]
fn replicas_go_to_the_node_whose_network_works_and_host_network_ones_anywhere() {
    if !require_root("replicas_go_to_the_node_whose_network_works_and_host_network_ones_anywhere") {
        return;
    }
    let _turn = one_at_a_time();
    let images = images();
    let cidr = test_cidr(free_port());
    // The first node registered gets the range's first /24.
    let gateway = first_gateway(&cidr);
    let name = format!("e2efrgn{}", free_port());
    let _foreign = foreign_bridge(&name, &gateway);
    let c = Cluster::start_with_cidr("e2e-broken", &cidr);
    let _good = extra_agent(&c, "e2e-good");
    let error = network_error_of(&c, "e2e-broken", "");
    assert!(
        error.contains(&format!("is already on interface {name}")),
        "{error}"
    );
    let nodes = c.json(&["node", "ls"]);
    let good = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "e2e-good")
        .unwrap();
    assert_eq!(good["network_error"], "", "{nodes}");

    let private = c.spec(
        "sleepers",
        &sleeper(&images)
            .replace("name: sleeper", "name: sleepers")
            .replace("image:", "replicas: 3\nimage:"),
    );
    assert!(c.drover(&["job", "run", private.to_str().unwrap()]).ok());
    let host = c.spec(
        "hostnet",
        &sleeper(&images)
            .replace("name: sleeper", "name: hostnet")
            .replace("image:", "replicas: 2\nnetwork: host\nimage:"),
    );
    assert!(c.drover(&["job", "run", host.to_str().unwrap()]).ok());
    let running = wait_for("5 replicas running", Duration::from_secs(60), || {
        let r: Vec<Value> = allocs(&c)
            .into_iter()
            .filter(|a| a["state"] == "running")
            .collect();
        (r.len() == 5).then_some(r)
    });
    let on = |job: &str| -> std::collections::BTreeSet<String> {
        running
            .iter()
            .filter(|a| a["job"] == job)
            .map(|a| a["node"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(on("sleepers"), ["e2e-good".to_string()].into());
    assert_eq!(
        on("hostnet"),
        ["e2e-broken".to_string(), "e2e-good".to_string()].into(),
        "host-network replicas spread over both nodes"
    );
    let j = c.json(&["job", "status", "sleepers"]);
    assert_eq!(j["pending_reason"], "", "{j}");
}

#[test]
fn cleanup_lists_an_orphaned_container_and_removes_it_with_its_network() {
    if !require_root("cleanup_lists_an_orphaned_container_and_removes_it_with_its_network") {
        return;
    }
    let _turn = one_at_a_time();
    let images = images();
    let cidr = test_cidr(free_port());
    let gateway = first_gateway(&cidr);
    let mut c = Cluster::start_with_cidr("e2e-orphan", &cidr);
    let state = c.agent_state_dir();
    let state_arg = state.to_str().unwrap().to_string();
    let spec = c.spec("sleeper", &sleeper(&images));
    assert!(c.drover(&["job", "run", spec.to_str().unwrap()]).ok());
    let (id, pid) = wait_for("the replica to run", Duration::from_secs(30), || {
        allocs(&c)
            .iter()
            .find(|a| a["state"] == "running" && a["ip"].as_str().is_some_and(|s| !s.is_empty()))
            .map(|a| {
                (
                    a["id"].as_str().unwrap().to_string(),
                    a["pid"].as_u64().unwrap() as u32,
                )
            })
    });
    let bridge = bridge_of(&c, &gateway);

    // A running agent's state dir is never touched.
    let out = cleanup(&["--state-dir", &state_arg]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(
        out.stdout.contains("a running agent holds it"),
        "{}",
        out.stdout
    );
    assert!(pid_alive(pid));

    kill_agent(&mut c);
    assert!(pid_alive(pid), "the container outlives its agent");

    let out = cleanup(&["--dry-run", "--state-dir", &state_arg]);
    assert!(out.ok(), "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{}", out.stdout));
    assert!(line.contains("running"), "{line}");
    assert!(out.stdout.contains(&bridge), "{}", out.stdout);
    // Found without being told where to look too (from its mount, monitor, marker).
    let found = cleanup(&["--dry-run"]);
    assert!(found.stdout.contains(&id), "{}", found.stdout);
    assert!(pid_alive(pid), "a dry run removes nothing");

    let out = cleanup(&["--state-dir", &state_arg]);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    wait_for("the orphan to die", Duration::from_secs(5), || {
        (!pid_alive(pid)).then_some(())
    });
    assert!(!cgroup_exists(&id), "cgroup of {id} remains");
    assert!(
        !mounted(&format!("bundles/{id}/rootfs")),
        "rootfs of {id} remains mounted"
    );
    assert!(!link_exists(&bridge), "bridge {bridge} remains");
    assert!(holders(&gateway).is_empty());
    let out = cleanup(&["--dry-run", "--state-dir", &state_arg]);
    assert!(out.stdout.contains("nothing left behind"), "{}", out.stdout);
}

#[test]
fn the_containers_of_a_crashed_drover_dev_are_orphans_dev_cleanup_removes_with_its_state() {
    if !require_root(
        "the_containers_of_a_crashed_drover_dev_are_orphans_dev_cleanup_removes_with_its_state",
    ) {
        return;
    }
    let _turn = one_at_a_time();
    let images = images();
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let cidr = test_cidr(free_port());
    let mut cmd = Command::new(bin_dir().join("drover"));
    cmd.args(["dev", "--listen", &api, "--cluster-cidr", &cidr])
        .args(["--agent-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    drover_e2e::register_pki(&api, &dir.path().join("state/pki"));
    let mut dev = Proc::spawn("drover dev", &mut cmd, dir.path().join("dev.log"));
    let spec = dir.path().join("sleeper.yaml");
    std::fs::write(&spec, sleeper(&images)).unwrap();
    // Whatever happens below, nothing of it outlives the test.
    let _guard = CleanupOnDrop(dir.path().join("state/agent"));
    wait_for(
        "drover dev to have a ready node",
        Duration::from_secs(20),
        || {
            run_drover(&api, &["node", "ls"])
                .stdout
                .contains("ready")
                .then_some(())
        },
    );
    let out = run_drover(&api, &["job", "run", "--detach", spec.to_str().unwrap()]);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    let (id, pid) = wait_for(
        "drover dev to run the replica",
        Duration::from_secs(30),
        || {
            let out = run_drover(&api, &["alloc", "ls", "-o", "json"]);
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            let a = v
                .as_array()?
                .iter()
                .find(|a| a["state"] == "running")?
                .clone();
            Some((a["id"].as_str()?.to_string(), a["pid"].as_u64()? as u32))
        },
    );
    dev.signal("KILL");
    dev.wait(Duration::from_secs(5)).expect("drover dev killed");
    assert!(
        pid_alive(pid),
        "a crashed drover dev leaves its container running"
    );

    let out = cleanup(&["--dry-run"]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not found without --state-dir:\n{}", out.stdout));
    assert!(line.contains("running"), "{line}");
    // `drover dev --cleanup` removes all of it, the state dir too.
    let state_dir = dir.path().join("state");
    let out = Command::new(bin_dir().join("drover"))
        .args(["dev", "--cleanup", "--state-dir"])
        .arg(&state_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    wait_for("the orphan to die", Duration::from_secs(5), || {
        (!pid_alive(pid)).then_some(())
    });
    assert!(!cgroup_exists(&id), "cgroup of {id} remains");
    assert!(!mounted(&format!("bundles/{id}/rootfs")));
    assert!(
        holders(&first_gateway(&cidr)).is_empty(),
        "its bridge is gone"
    );
    assert!(!state_dir.exists(), "the state dir is gone: {stdout}");
    let out = cleanup(&["--dry-run"]);
    assert!(!out.stdout.contains(&id), "{}", out.stdout);
}
