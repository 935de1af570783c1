//! The cgroup manager against the machine's real hierarchy (`/sys/fs/cgroup`).

use std::path::Path;

mod common;

use drover_agent::cgroups::{self, Limits};

/// The real hierarchy, if this test can use it (root, and one mounted).
fn hierarchy() -> Option<&'static Path> {
    let root = Path::new("/sys/fs/cgroup");
    common::can_run(&[
        common::root(),
        ("a cgroup hierarchy at /sys/fs/cgroup", root.exists()),
    ])
    .then_some(root)
}

#[test]
fn limits_are_written_and_a_larger_one_replaces_them() {
    let Some(root) = hierarchy() else { return };
    let cg = cgroups::manager_for(root);
    let id = "it-cgroup-limits";
    let limits = Limits {
        memory_bytes: Some(48 << 20),
        cpu_millis: Some(300),
        pids: Some(20),
    };
    cg.create(id, &limits).unwrap();
    assert_eq!(cg.memory_limit(id), Some(48 << 20));
    let version = cgroups::detect_version(root);
    let cpu_ok = match version {
        cgroups::Version::V1 => {
            std::fs::read_to_string(root.join("cpu/drover").join(id).join("cpu.cfs_quota_us"))
                .unwrap()
                .trim()
                == "30000"
        }
        cgroups::Version::V2 => {
            std::fs::read_to_string(root.join("drover").join(id).join("cpu.max"))
                .unwrap()
                .trim()
                == "30000 100000"
        }
    };
    assert!(cpu_ok, "cpu quota not applied ({version:?})");
    // Memory+swap is held to the memory limit, where swap is accounted.
    let (swap_file, want) = match version {
        cgroups::Version::V1 => (
            root.join("memory/drover")
                .join(id)
                .join("memory.memsw.limit_in_bytes"),
            (48u64 << 20).to_string(),
        ),
        cgroups::Version::V2 => (
            root.join("drover").join(id).join("memory.swap.max"),
            "0".to_string(),
        ),
    };
    match std::fs::read_to_string(&swap_file) {
        Ok(v) => assert_eq!(v.trim(), want, "{}", swap_file.display()),
        Err(e) => eprintln!("no swap accounting here ({}: {e})", swap_file.display()),
    }
    // A second create with a larger limit still succeeds (memsw is lifted
    // before the memory limit grows past it).
    let larger = Limits {
        memory_bytes: Some(96 << 20),
        ..limits
    };
    cg.create(id, &larger).unwrap();
    assert_eq!(cg.memory_limit(id), Some(96 << 20));
    if let Ok(v) = std::fs::read_to_string(&swap_file) {
        if version == cgroups::Version::V1 {
            assert_eq!(v.trim(), (96u64 << 20).to_string());
        }
    }

    cg.remove(id).unwrap();
}

#[test]
fn remove_kills_what_is_left_in_the_cgroup_and_removes_it() {
    let Some(root) = hierarchy() else { return };
    let cg = cgroups::manager_for(root);
    let id = "it-cgroup-members";
    cg.create(id, &Limits::default()).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    cg.add_process(id, child.id() as i32).unwrap();
    assert_eq!(cg.procs(id), vec![child.id() as i32]);
    assert!(cg.memory_usage(id).is_some());

    // remove kills what is left, waits for the cgroup to empty, and rmdirs it.
    let remover = std::thread::spawn({
        let cg = cgroups::manager_for(root);
        move || cg.remove(id)
    });
    let status = child.wait().unwrap();
    remover.join().unwrap().unwrap();
    assert!(!status.success());
    for dir in cg.paths(id) {
        assert!(!dir.exists(), "{} remains", dir.display());
    }
    cg.remove(id).unwrap();
}

/// The v2 manager against a real unified hierarchy. On this hybrid host that
/// is `/sys/fs/cgroup/unified` (no controllers, so membership and cgroup.kill
/// only); on a v2 host it is `/sys/fs/cgroup` itself.
#[test]
fn real_cgroup_v2_membership_and_kill() {
    let v2 = common::cgroup_v2_root();
    if !common::can_run(&[
        common::root(),
        ("a mounted cgroup2 hierarchy", v2.is_some()),
    ]) {
        return;
    }
    let root = v2.unwrap();
    let cg = cgroups::CgroupV2::new(root);
    let id = "it-cgroup-v2";
    use cgroups::CgroupManager;
    cg.create(id, &Limits::default()).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    cg.add_process(id, child.id() as i32).unwrap();
    assert_eq!(cg.procs(id), vec![child.id() as i32]);
    let remover = std::thread::spawn(move || cgroups::CgroupV2::new(root).remove(id));
    let status = child.wait().unwrap();
    remover.join().unwrap().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(!root.join("drover").join(id).exists());
}

/// On cgroup v2 the device rules are an eBPF program on the container's
/// cgroup: a process in it may open /dev/null, may create any node (as with
/// runc), but may not open a disk (loop0) or /dev/kmsg through a node it made.
#[test]
fn real_cgroup_v2_device_program_denies_what_the_rules_deny() {
    let v2 = common::cgroup_v2_root();
    if !common::can_run(&[
        common::root(),
        common::busybox(),
        ("a mounted cgroup2 hierarchy", v2.is_some()),
    ]) {
        return;
    }
    let root = v2.unwrap();
    use cgroups::CgroupManager;
    let rules: Vec<(bool, String)> = drover_agent::bundle::security::device_rules()
        .iter()
        .map(|r| (r.allow(), r.to_string()))
        .collect();
    let script = r#"
read go
d=$(mktemp -d)
head -c 0 /dev/null && echo null=ok || echo null=denied
mknod $d/disk b 7 0 && echo mknod=ok || echo mknod=denied
head -c 0 $d/disk 2>/dev/null && echo disk=ok || echo disk=denied
mknod $d/kmsg c 1 11 && head -c 0 $d/kmsg 2>/dev/null && echo kmsg=ok || echo kmsg=denied
rm -rf $d
"#;
    let run = |id: &str, with_rules: bool| -> String {
        let cg = cgroups::CgroupV2::new(root);
        cg.create(id, &Limits::default()).unwrap();
        if with_rules {
            cg.set_devices(id, &rules).unwrap();
        }
        let mut child = std::process::Command::new("/usr/bin/busybox")
            .args(["sh", "-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        cg.add_process(id, child.id() as i32).unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = child.wait_with_output().unwrap();
        cg.remove(id).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The same script without the program: the probe itself works.
    let open = run("it-cgroup-v2-nodev", false);
    assert!(
        open.contains("disk=ok") && open.contains("kmsg=ok"),
        "{open}"
    );
    let denied = run("it-cgroup-v2-dev", true);
    for want in ["null=ok", "mknod=ok", "disk=denied", "kmsg=denied"] {
        assert!(denied.contains(want), "{want} not in:\n{denied}");
    }
}
