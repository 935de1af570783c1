//! Monitors, with the real `drover-agent` binary: a container started under
//! a monitor keeps running and logging when the runtime handle that started
//! it is gone, a fresh runtime re-adopts it with the same pid and sees its
//! exit code, its log rotates by size and still reads whole, and an OOM kill
//! is visible in the cgroup after the exit.

use std::path::Path;
use std::time::{Duration, Instant};

use drover_agent::bundle::{Bundle, ContainerRequest};
use drover_agent::cgroups;
use drover_agent::runtime::{log, ExitStatus, MonitorConfig, Runtime};

mod common;

fn bundle(dir: &Path, id: &str, script: &str, memory: u64) -> Bundle {
    let image = common::busybox_image(dir, &["sh", "echo", "sleep", "seq", "head", "tr", "true"]);
    let req = ContainerRequest {
        id: id.into(),
        hostname: id.into(),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        memory_bytes: Some(memory),
        ..Default::default()
    };
    Bundle::create(&dir.join("bundle"), &image, &req).unwrap()
}

fn monitor(log_max_bytes: u64) -> MonitorConfig {
    MonitorConfig {
        exe: env!("CARGO_BIN_EXE_drover-agent").into(),
        cgroup_root: "/sys/fs/cgroup".into(),
        log_max_bytes,
        defaults: Default::default(),
    }
}

fn runtime() -> Runtime {
    Runtime::new(cgroups::manager_for("/sys/fs/cgroup"))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_monitored_container_outlives_its_runtime_and_is_readopted() {
    if !common::root_and_busybox() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let id = "it-mon-adopt";
    let b = bundle(
        tmp.path(),
        id,
        "echo up; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo bye; exit 5",
        32 << 20,
    );
    let log_path = tmp.path().join("c.log");
    let first = runtime()
        .start_monitored(&monitor(0), b.dir(), id, &log_path, None, None)
        .unwrap();
    let pid = first.pid();
    let monitor_pid = first.monitor_pid().unwrap();
    // The handle goes away without stopping anything (as when the agent
    // process exits); `forget` skips the kill-on-drop.
    std::mem::forget(first);
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    let adopted = runtime().adopt(b.dir(), id).expect("adoptable");
    assert_eq!(adopted.pid(), pid);
    assert_eq!(adopted.monitor_pid(), Some(monitor_pid));
    assert_eq!(adopted.try_wait().unwrap(), None);
    std::fs::write(b.rootfs().join("tmp/go"), "").unwrap();
    assert_eq!(adopted.wait_blocking().unwrap(), ExitStatus::Exited(5));
    assert_eq!(text(&std::fs::read(&log_path).unwrap()), "up\nbye\n");
    // Ended while nobody watched: a later adoption still gets the status.
    let again = runtime().adopt(b.dir(), id).expect("status on disk");
    assert_eq!(again.try_wait().unwrap(), Some(ExitStatus::Exited(5)));
    again.stop_blocking(Duration::ZERO).unwrap();
    drop((adopted, again));
    b.cleanup().unwrap();
}

#[test]
fn logs_rotate_by_size_and_an_oom_kill_is_counted() {
    if !common::root_and_busybox() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let id = "it-mon-log";
    let script = "seq 1 3000; x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo never";
    let b = bundle(tmp.path(), id, script, 16 << 20);
    let log_path = tmp.path().join("c.log");
    let rt = runtime();
    let c = rt
        .start_monitored(&monitor(4096), b.dir(), id, &log_path, None, None)
        .unwrap();
    assert_eq!(c.wait_blocking().unwrap(), ExitStatus::Signaled(9));
    assert!(rt.cgroups().oom_kills(id) >= 1);
    c.stop_blocking(Duration::ZERO).unwrap();
    // Two generations of about 4 KiB each (records are whole lines: a few
    // bytes more at most), ending with the last line.
    let current = std::fs::metadata(&log_path).unwrap().len();
    let old = std::fs::metadata(log::rotated(&log_path)).unwrap().len();
    assert!(current <= 4096 + 64 && old <= 4096 + 64, "{current} {old}");
    let all = text(&log::read_all(&log_path).unwrap());
    assert!(all.ends_with("2999\n3000\n"), "{all}");
    let first: u32 = all
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {:?}", &all[..40]));
    assert!(first > 1, "the oldest lines were rotated away");
    let lines: Vec<u32> = all.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        lines.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no repeat"
    );
    wait_until("the cgroup to go", || {
        !Path::new(&format!("/sys/fs/cgroup/memory/drover/{id}")).exists()
    });
    b.cleanup().unwrap();
}

/// The text of a log's records (each line as the container wrote it).
fn text(raw: &[u8]) -> String {
    raw.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(&log::parse(l).data).into_owned())
        .collect()
}
