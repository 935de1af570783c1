//! The cgroup manager against the machine's real hierarchy (`/sys/fs/cgroup`).

use std::path::Path;

use drover_agent::cgroups::{self, Limits};

#[test]
fn real_cgroup_limits_membership_and_removal() {
    let root = Path::new("/sys/fs/cgroup");
    let is_root = nix::unistd::geteuid().is_root();
    if !is_root || !root.exists() {
        let why = "skipping: needs root and a cgroup hierarchy at /sys/fs/cgroup";
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and {why}"
        );
        eprintln!("{why}");
        return;
    }
    let cg = cgroups::manager_for(root);
    let id = "it-cgroup-real";
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
    let root = [
        Path::new("/sys/fs/cgroup"),
        Path::new("/sys/fs/cgroup/unified"),
    ]
    .into_iter()
    .find(|r| cgroups::detect_version(r) == cgroups::Version::V2);
    let is_root = nix::unistd::geteuid().is_root();
    let Some(root) = root.filter(|_| is_root) else {
        let why = "skipping: needs root and a mounted cgroup2 hierarchy";
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and {why}"
        );
        eprintln!("{why}");
        return;
    };
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
