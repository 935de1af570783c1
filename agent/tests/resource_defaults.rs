//! Defaults that keep one container from taking the node down, against the
//! real cgroup files: a pids limit where the spec sets none (a fork bomb
//! stops there), and memory+swap held to the memory limit.

use std::path::Path;
use std::time::Duration;

use drover_agent::bundle::{Bundle, ContainerRequest};
use drover_agent::cgroups;
use drover_agent::runtime::{ResourceDefaults, Runtime, DEFAULT_PIDS_LIMIT};

mod common;
const CG: &str = "/sys/fs/cgroup";

fn bundle(dir: &Path, id: &str, script: &str) -> Bundle {
    let image = common::busybox_image(dir, &["sh", "sleep", "cat", "echo"]);
    let req = ContainerRequest {
        id: id.into(),
        hostname: id.into(),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        memory_bytes: Some(32 << 20),
        pids: None,
        ..Default::default()
    };
    Bundle::create(&dir.join("bundle"), &image, &req).unwrap()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

/// Starts `script` with `defaults`, lets it run to the end; returns its
/// output and the cgroup's (pids.max, memory.limit_in_bytes, memsw limit)
/// as read while it ran.
fn run(id: &str, script: &str, defaults: ResourceDefaults) -> (String, [String; 3]) {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), id, script);
    let log = tmp.path().join("log");
    let runtime = Runtime::new(cgroups::manager_for(CG)).with_defaults(defaults);
    let c = runtime
        .start(b.dir(), id, std::fs::File::create(&log).unwrap())
        .unwrap();
    let files = [
        format!("{CG}/pids/drover/{id}/pids.max"),
        format!("{CG}/memory/drover/{id}/memory.limit_in_bytes"),
        format!("{CG}/memory/drover/{id}/memory.memsw.limit_in_bytes"),
    ];
    let seen = files.map(|f| {
        if f.contains("memsw") && !Path::new(&f).exists() {
            return "no swap accounting".to_string();
        }
        read(&f)
    });
    c.wait_blocking().unwrap();
    c.stop_blocking(Duration::ZERO).unwrap();
    b.cleanup().unwrap();
    (std::fs::read_to_string(&log).unwrap(), seen)
}

#[test]
fn a_container_without_limits_gets_the_defaults() {
    if !common::root_and_busybox() {
        return;
    }
    let (_, seen) = run("it-default-pids", "true", ResourceDefaults::default());
    assert_eq!(seen[0], DEFAULT_PIDS_LIMIT.to_string());
    assert_eq!(seen[1], (32u64 << 20).to_string());
    if seen[2] != "no swap accounting" {
        assert_eq!(seen[2], seen[1], "memory+swap must equal memory");
    }
    // The agent's flag: 0 is no limit.
    let (_, seen) = run("it-default-nopids", "true", ResourceDefaults::with_pids(0));
    assert_eq!(seen[0], "max");
}

#[test]
fn a_fork_bomb_stops_at_the_default_pids_limit() {
    if !common::root_and_busybox() {
        return;
    }
    // A failed fork ends a busybox shell, so the bomb runs in a subshell.
    let bomb = "(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done); echo bomb=$?";
    let (out, seen) = run("it-default-bomb", bomb, ResourceDefaults::with_pids(12));
    assert_eq!(seen[0], "12");
    assert!(out.contains("can't fork"), "{out}");
    assert!(!out.contains("bomb=0"), "{out}");
}

/// The agent's default reaches containers started under monitors (separate
/// processes, told by flag).
#[test]
fn monitors_apply_the_agents_default() {
    if !common::root_and_busybox() {
        return;
    }
    let id = "it-default-monitor";
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), id, "sleep 30");
    let defaults = ResourceDefaults::with_pids(77);
    let monitor = drover_agent::runtime::MonitorConfig {
        exe: env!("CARGO_BIN_EXE_drover-agent").into(),
        cgroup_root: CG.into(),
        log_max_bytes: 0,
        defaults,
    };
    let runtime = Runtime::new(cgroups::manager_for(CG)).with_defaults(defaults);
    let c = runtime
        .start_monitored(&monitor, b.dir(), id, &tmp.path().join("log"), None, None)
        .unwrap();
    let pids_max = read(&format!("{CG}/pids/drover/{id}/pids.max"));
    c.stop_blocking(Duration::ZERO).unwrap();
    b.cleanup().unwrap();
    assert_eq!(pids_max, "77");
}
