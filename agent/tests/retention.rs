//! Retention of what ended allocations leave on disk, against real files
//! and the real cgroup hierarchy: logs and bundles marked ended are removed
//! once older than the retention period, while everything in use (a bundle
//! whose cgroup still holds a process, a running allocation's quiet log, an
//! adopted container's log) stays.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use drover_agent::cgroups::{self, Limits};
use drover_agent::daemon::retention;

const CG: &str = "/sys/fs/cgroup";

fn set_mtime(path: &Path, age: Duration) {
    std::fs::File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[test]
fn retention_removes_only_what_ended_allocations_left() {
    if !common::root_and_busybox() {
        return;
    }
    const HOUR: Duration = Duration::from_secs(3600);
    let state = tempfile::tempdir().unwrap();
    let s = state.path();
    for d in ["logs", "bundles"] {
        std::fs::create_dir(s.join(d)).unwrap();
    }
    let cg = cgroups::manager_for(CG);
    // it-ret-ended: ended two hours ago, log only.
    // it-ret-young: ended ten minutes ago.
    // it-ret-quiet: running (has its bundle), silent for two hours.
    // it-ret-busy: a bundle marked ended whose container still runs (real cgroup).
    // it-ret-dead: a bundle marked ended two hours ago, its cgroup empty.
    // it-ret-gone: a mark whose bundle is gone.
    // it-ret-adopted: an adopted container's log, two hours old.
    for (name, age) in [
        ("it-ret-ended.log", 2 * HOUR),
        ("it-ret-ended.log.1", 3 * HOUR),
        ("it-ret-young.log", HOUR / 6),
        ("it-ret-quiet.log", 2 * HOUR),
        ("it-ret-adopted.log", 2 * HOUR),
    ] {
        let p = s.join("logs").join(name);
        std::fs::write(&p, "output\n").unwrap();
        set_mtime(&p, age);
    }
    for id in ["it-ret-quiet", "it-ret-busy", "it-ret-dead"] {
        let dir = s.join("bundles").join(id);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        set_mtime(&dir, 2 * HOUR);
    }
    for id in ["it-ret-busy", "it-ret-dead", "it-ret-gone"] {
        let mark = retention::ended_mark(&s.join("bundles"), id);
        std::fs::write(&mark, "").unwrap();
        set_mtime(&mark, 2 * HOUR);
    }
    let limits = Limits::default();
    cg.create("it-ret-busy", &limits).unwrap();
    cg.create("it-ret-dead", &limits).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    cg.add_process("it-ret-busy", sleeper.id() as i32).unwrap();

    let adopted: HashSet<String> = ["it-ret-adopted".to_string()].into();
    let (mut removed, errors) = retention::sweep(s, cg.as_ref(), &adopted, SystemTime::now(), HOUR);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    cg.remove("it-ret-busy").unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    removed.sort();
    let rel: Vec<String> = removed
        .iter()
        .map(|p| p.strip_prefix(s).unwrap().display().to_string())
        .collect();
    assert_eq!(
        rel,
        [
            "bundles/it-ret-dead",
            "bundles/it-ret-gone.ended",
            "logs/it-ret-ended.log",
            "logs/it-ret-ended.log.1"
        ]
    );
    for kept in [
        "logs/it-ret-young.log",
        "logs/it-ret-quiet.log",
        "logs/it-ret-adopted.log",
        "bundles/it-ret-quiet",
        "bundles/it-ret-busy",
        "bundles/it-ret-busy.ended",
    ] {
        assert!(s.join(kept).exists(), "{kept} was removed");
    }
    // The dead bundle's cgroup and mark went with it.
    assert!(!Path::new(CG).join("pids/drover/it-ret-dead").exists());
    assert!(!s.join("bundles/it-ret-dead.ended").exists());
}
