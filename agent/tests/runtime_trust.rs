//! Can the runtime be trusted like runc? The same probe runs inside a Drover
//! container and inside `runc run` of the very same bundle and must report
//! the same isolation; then a container tries to break out and must fail.
//!
//! Deliberate differences between Drover and runc, normalised away below:
//! - runc adds a `/dev/core -> /proc/kcore` symlink (pointing at a masked
//!   file) when the kernel has /proc/kcore; Drover does not create it.
//!
//! Everything else the probe prints (capability sets, NoNewPrivs, seccomp
//! mode, pid 1, hostname, credentials, rlimits, `/dev`, masked and read-only
//! paths, mounts with their options, cgroup membership) and the cgroup limits
//! read from the host (memory, cpu, pids, device rules) must be equal.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drover_agent::bundle::{Bundle, CapabilityChanges, ContainerRequest, IdRange, Seccomp};
use drover_agent::cgroups;
use drover_agent::image::{Image, ImageConfig};
use drover_agent::runtime::{ExecRequest, ExitStatus, MonitorConfig, Runtime};

use common::BUSYBOX;

/// The system call probe (`syscall_probe.c`), built static once per run.
fn syscall_probe() -> Option<&'static Path> {
    static PROBE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            let out =
                std::env::temp_dir().join(format!("drover-syscall-probe-{}", std::process::id()));
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/syscall_probe.c");
            let built = std::process::Command::new("cc")
                .args(["-static", "-O2", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .is_ok_and(|s| s.success());
            built.then_some(out)
        })
        .as_deref()
}

fn requirements(runc: bool) -> Vec<(&'static str, bool)> {
    let mut needs = vec![
        common::root(),
        common::busybox(),
        (
            "a C compiler with a static libc (cc -static, for the syscall probe)",
            syscall_probe().is_some(),
        ),
        (
            "cgroup v1 (memory, pids, devices)",
            Path::new("/sys/fs/cgroup/devices").exists(),
        ),
    ];
    if runc {
        needs.push((
            "runc",
            Path::new("/usr/sbin/runc").exists() || Path::new("/usr/bin/runc").exists(),
        ));
    }
    needs
}

const APPLETS: [&str; 25] = [
    "sh", "cat", "grep", "echo", "mount", "insmod", "unshare", "head", "tr", "sleep", "hostname",
    "id", "ls", "wc", "mknod", "touch", "awk", "sort", "pwd", "dd", "nsenter", "chroot", "stat",
    "readlink", "sed",
];

fn busybox_image(dir: &Path) -> Image {
    let layer = dir.join("layer");
    for d in ["bin", "tmp", "mnt"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, layer.join("bin/busybox")).unwrap();
    if let Some(probe) = syscall_probe() {
        std::fs::copy(probe, layer.join("bin/syscall-probe")).unwrap();
    }
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).unwrap();
    }
    Image {
        layers: vec![layer],
        config: ImageConfig {
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        digest: "sha256:test".into(),
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    bundle: Bundle,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.bundle.cleanup();
    }
}

fn fixture(id: &str, script: &str, tweak: impl FnOnce(&mut ContainerRequest)) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    // Traversable, as the agent's state dir is: a container in a user
    // namespace must reach its rootfs (its bundle dir stays 0710).
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let image = busybox_image(tmp.path());
    let mut req = ContainerRequest {
        id: id.into(),
        hostname: "probe".into(),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        memory_bytes: Some(48 << 20),
        cpu_millis: Some(500),
        pids: Some(32),
        ..Default::default()
    };
    tweak(&mut req);
    let bundle = Bundle::create(&tmp.path().join("bundle"), &image, &req).unwrap();
    Fixture { tmp, bundle }
}

/// Starts the fixture's bundle, its output going to `log`.
fn start(runtime: &Runtime, f: &Fixture, id: &str, log: &Path) -> drover_agent::runtime::Container {
    runtime
        .start(f.bundle.dir(), id, std::fs::File::create(log).unwrap())
        .unwrap()
}

/// Waits until `log` holds a line "END"; returns its content up to there.
fn wait_for_end(log: &Path) -> String {
    // Generous: the machine may be busy with other builds and tests.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(i) = text.find("\nEND\n") {
            return text[..i + 1].to_string();
        }
        assert!(Instant::now() < deadline, "probe did not finish: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The container's limits as the host sees them.
fn host_limits(id: &str) -> Vec<String> {
    let cg = Path::new("/sys/fs/cgroup");
    [
        "memory/drover/{}/memory.limit_in_bytes",
        "memory/drover/{}/memory.memsw.limit_in_bytes",
        "cpu/drover/{}/cpu.cfs_quota_us",
        "cpu/drover/{}/cpu.cfs_period_us",
        "pids/drover/{}/pids.max",
        "devices/drover/{}/devices.list",
    ]
    .iter()
    .map(|p| {
        let path = cg.join(p.replace("{}", id));
        let value = match std::fs::read_to_string(&path) {
            Ok(v) => v,
            // A kernel without swap accounting has no memsw files.
            Err(_) if p.contains("memsw") => "no swap accounting".into(),
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let mut lines: Vec<&str> = value.lines().collect();
        lines.sort();
        format!("{p}: {}", lines.join(", "))
    })
    .collect()
}

const PROBE: &str = r#"
exec 2>&1
for f in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp; do grep "^$f:" /proc/self/status; done
echo "pid=$$ ppid=$PPID hostname=$(hostname)"
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) cwd=$(pwd)"
echo "nofile=$(ulimit -n) nproc=$(ulimit -u)"
echo "dev=$(ls /dev | grep -v '^core$' | tr '\n' ' ')"
echo "kcore=$(cat /proc/kcore | wc -c) keys=$(cat /proc/keys | wc -c) firmware=$(ls /sys/firmware | wc -l)"
(echo h > /proc/sysrq-trigger) 2>/dev/null && echo sysrq=writable || echo sysrq=denied
echo "timer_list=$(cat /proc/timer_list | wc -c)"
(echo x > /proc/sys/kernel/hostname) 2>/dev/null && echo procsys=writable || echo procsys=denied
sort /proc/self/cgroup
awk '{ split($0, s, " - "); n = split(s[1], l, " "); split(s[2], r, " "); print l[5], l[6], r[1], r[2], r[3] }' /proc/self/mountinfo | sort
syscall-probe
echo END
sleep 60
"#;

/// Runs the probe in a Drover container; returns (report, host limits).
fn probe_drover(f: &Fixture, id: &str) -> (String, Vec<String>) {
    let log = f.tmp.path().join("drover.log");
    let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let c = start(&runtime, f, id, &log);
    let report = wait_for_end(&log);
    let limits = host_limits(id);
    c.stop_blocking(Duration::from_millis(100)).unwrap();
    (report, limits)
}

/// Runs the probe with `runc run` of the same bundle.
fn probe_runc(f: &Fixture, id: &str) -> (String, Vec<String>) {
    let log = f.tmp.path().join("runc.log");
    let mut child = std::process::Command::new("runc")
        .args(["run", "--bundle"])
        .arg(f.bundle.dir())
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("\nEND\n")
    {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("runc exited early ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "runc probe did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = wait_for_end(&log);
    let limits = host_limits(id);
    let _ = std::process::Command::new("runc")
        .args(["kill", id, "KILL"])
        .status();
    let _ = child.wait();
    let _ = std::process::Command::new("runc")
        .args(["delete", "-f", id])
        .status();
    (report, limits)
}

#[test]
fn drover_and_runc_isolate_the_same_bundle_the_same_way() {
    if !common::can_run(&requirements(true)) {
        return;
    }
    let id = "it-parity";
    let f = fixture(id, PROBE, |_| {});
    let (drover, drover_limits) = probe_drover(&f, id);
    let (runc, runc_limits) = probe_runc(&f, id);

    // The report is what we expect, not merely equal.
    for want in [
        "CapBnd:\t00000000a80425fb",
        "CapEff:\t00000000a80425fb",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "pid=1 ppid=0 hostname=probe",
        "uid=0 gid=0",
        "kcore=0 keys=0 firmware=0",
        "timer_list=0",
        "sysrq=denied",
        "procsys=denied",
        "/proc/sys ro,",
        // Docker's default seccomp profile, as libseccomp builds it for runc.
        "getpid=ok",
        "inet=ok",
        "vsock=errno:1",
        "alg=errno:1",
        "personality=errno:1",
        "clone3=errno:38",
        "io_uring=errno:1",
        "userfaultfd=errno:1",
        "keyctl=errno:1",
        "mkdir=ok",
        "x32=killed:31",
        "i386=killed:31",
    ] {
        assert!(drover.contains(want), "{want:?} not in:\n{drover}");
    }
    let dev = drover.lines().find(|l| l.starts_with("dev=")).unwrap();
    assert_eq!(
        dev,
        "dev=fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero "
    );
    assert_eq!(drover_limits, runc_limits);
    assert!(drover_limits[0].ends_with(&format!("{}", 48u64 << 20)));
    // Memory+swap equals memory: swapping cannot dodge the limit.
    assert!(
        drover_limits[1].ends_with(&format!("{}", 48u64 << 20))
            || drover_limits[1].ends_with("no swap accounting"),
        "{drover_limits:?}"
    );
    assert!(
        !drover_limits[5].contains("a *:* rwm") && drover_limits[5].contains("c 1:3 rwm"),
        "{drover_limits:?}"
    );
    assert_same_report(&drover, &runc);
}

/// Line by line, so a difference is easy to read.
fn assert_same_report(drover: &str, runc: &str) {
    let (d, r): (Vec<&str>, Vec<&str>) = (drover.lines().collect(), runc.lines().collect());
    for (i, (a, b)) in d.iter().zip(&r).enumerate() {
        assert_eq!(a, b, "line {i} differs\ndrover:\n{drover}\nrunc:\n{runc}");
    }
    assert_eq!(d.len(), r.len(), "drover:\n{drover}\nrunc:\n{runc}");
}

#[test]
fn a_jobs_seccomp_choice_applies_as_under_runc() {
    if !common::can_run(&requirements(true)) {
        return;
    }
    // A deny list in Docker's format, as a job would bring it.
    let profile: drover_proto::spec::SeccompProfile = serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
             "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["keyctl"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "includes": {"caps": ["CAP_SYS_ADMIN"]}}
        ]
    }))
    .unwrap();
    let cases: [(&str, Seccomp, &[&str]); 2] = [
        (
            "it-unconfined",
            Seccomp::Unconfined,
            &[
                "Seccomp:\t0",
                "personality=ok",
                "clone3=errno:22",
                "mkdir=ok",
            ],
        ),
        (
            "it-custom",
            Seccomp::Profile(Box::new(profile)),
            &[
                "Seccomp:\t2",
                "mkdir=errno:13",
                "inet=errno:97",
                "keyctl=killed:31",
                // The rule needs CAP_SYS_ADMIN, which the container lacks.
                "personality=ok",
                "getpid=ok",
                "x32=killed:31",
            ],
        ),
    ];
    for (id, choice, want) in cases {
        let f = fixture(id, PROBE, |r| r.seccomp = choice);
        let (drover, _) = probe_drover(&f, id);
        let (runc, _) = probe_runc(&f, id);
        for w in want {
            assert!(drover.contains(w), "{id}: {w:?} not in:\n{drover}");
        }
        assert_same_report(&drover, &runc);
    }
}

/// The limits `LIMIT_ATTEMPTS` runs into: 16 pids, 32 MiB.
fn limited(r: &mut ContainerRequest) {
    r.pids = Some(16);
    r.memory_bytes = Some(32 << 20);
    r.cpu_millis = None;
}

/// Break-out attempts, then (`with_limits`) a memory hog and a fork bomb.
fn escapes(with_limits: bool) -> String {
    let mut script = String::from(ESCAPES);
    if with_limits {
        script.push_str(LIMIT_ATTEMPTS);
    }
    script.push_str("echo END\nexec sleep 60\n");
    script
}

const ESCAPES: &str = r#"
exec 2>&1
mount -t tmpfs none /mnt; echo "mount=$?"
head -c 64 /dev/zero > /tmp/evil.ko; insmod /tmp/evil.ko; echo "insmod=$?"
unshare -m true; echo "unshare-mnt=$?"
unshare -U true; echo "unshare-user=$?"
nsenter -t 1 -n true; echo "setns=$?"
echo "kcore=$(cat /proc/kcore | wc -c)"
echo h > /proc/sysrq-trigger; echo "sysrq=$?"
mknod /tmp/loop0 b 7 0; echo "mknod=$?"
dd if=/tmp/loop0 of=/dev/null bs=512 count=1; echo "open-disk=$?"
echo x > /proc/sys/kernel/hostname; echo "procsys=$?"
echo "fds=$(ls /proc/self/fd | tr '\n' ' ')"
"#;

const LIMIT_ATTEMPTS: &str = r#"
# One read into a 100 MB buffer: the charge fails inside that one call,
# so the OOM killer comes at once (a shell growing a string a chunk at a
# time keeps refaulting its own text, and on a busy host reclaim can
# crawl for minutes before it gives up).
sh -c 'dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null && echo survived'; echo "hog=$?"
# A failed fork ends a busybox shell, so the bomb runs in a subshell; pid 1
# then replaces itself without forking.
(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done); echo "bomb=$?"
"#;

#[test]
fn escape_attempts_fail() {
    if !common::can_run(&requirements(false)) {
        return;
    }
    let id = "it-escape";
    let f = fixture(id, &escapes(true), limited);
    // A descriptor the test process leaks on purpose (no O_CLOEXEC).
    let secret = f.tmp.path().join("secret");
    std::fs::write(&secret, "agent secret").unwrap();
    let path = std::ffi::CString::new(secret.to_str().unwrap()).unwrap();
    // SAFETY: open with a valid NUL-terminated path; the fd is closed below.
    let leaked = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(leaked > 2);

    let log = f.tmp.path().join("log");
    let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let c = start(&runtime, &f, id, &log);
    let out = wait_for_end(&log);
    let pids_peak =
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids/drover/{id}/pids.current")).unwrap();
    let oom = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/drover/{id}/memory.oom_control"
    ))
    .unwrap();
    c.stop_blocking(Duration::from_millis(100)).unwrap();
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(leaked) };

    assert_break_outs_failed(&out);
    let value = |key: &str| report_value(&out, key);
    // pids limit: forks beyond 16 processes fail.
    assert!(out.contains("can't fork"), "{out}");
    assert!(
        pids_peak.trim().parse::<u32>().unwrap() <= 16,
        "{pids_peak}"
    );
    // memory limit: the hog is OOM-killed (SIGKILL), pid 1 survives.
    assert_eq!(value("hog"), "137", "{out}");
    assert!(!out.contains("survived"), "{out}");
    assert!(
        oom.contains("oom_kill 1") || oom.contains("oom_kill 2"),
        "{oom}"
    );
    let _ = std::io::stdout().flush();
}

/// The `key=value` line of `out`.
fn report_value(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in:\n{out}"))
        .to_string()
}

/// What `ESCAPES` must report: every attempt refused by the kernel.
fn assert_break_outs_failed(out: &str) {
    assert_break_outs_failed_as(out, false)
}

/// As `assert_break_outs_failed`; in a user namespace (`userns`) even
/// creating a device node fails.
fn assert_break_outs_failed_as(out: &str, userns: bool) {
    let value = |key: &str| report_value(out, key);
    for attempt in [
        "mount",
        "insmod",
        "unshare-mnt",
        "unshare-user",
        "setns",
        "sysrq",
    ] {
        assert_ne!(value(attempt), "0", "{attempt} succeeded:\n{out}");
    }
    // Refused by the kernel (capabilities, seccomp), not by a missing tool.
    assert!(
        out.contains("unshare(0x10000000): Operation not permitted"),
        "{out}"
    );
    assert!(out.contains("insmod: can't insert"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(value("kcore"), "0");
    assert_ne!(value("open-disk"), "0", "{out}");
    if userns {
        assert_ne!(value("mknod"), "0", "{out}");
    } else {
        // Creating a device node is allowed (CAP_MKNOD), opening it is not:
        // the device cgroup (v1) or program (v2) refuses it.
        assert_eq!(value("mknod"), "0", "{out}");
        assert!(
            out.contains("can't open '/tmp/loop0': Operation not permitted"),
            "{out}"
        );
    }
    // Only stdio (and ls's own directory fd) are open: nothing leaked in.
    assert_eq!(value("fds"), "0 1 2 3 ", "{out}");
}

/// The same break-outs and limits from a container in a user namespace.
#[test]
fn escape_attempts_fail_in_a_user_namespace() {
    if !common::can_run(&requirements(false)) {
        return;
    }
    let id = "it-escape-userns";
    let f = fixture(id, &escapes(true), |r| {
        limited(r);
        r.user_namespace = Some(TEST_IDS);
    });
    let log = f.tmp.path().join("log");
    let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let c = start(&runtime, &f, id, &log);
    let out = wait_for_end(&log);
    c.stop_blocking(Duration::from_millis(100)).unwrap();
    assert_break_outs_failed_as(&out, true);
    assert!(out.contains("can't fork"), "{out}");
    assert_eq!(report_value(&out, "hog"), "137", "{out}");
}

/// The same break-outs on cgroup v2, where device access is an eBPF
/// program. On a v2 host this is `/sys/fs/cgroup`; on this hybrid
/// development machine the v2 tree (`/sys/fs/cgroup/unified`) has no
/// controllers, so memory and pids limits are checked on v1 above and only
/// the break-outs here.
#[test]
fn escape_attempts_fail_on_cgroup_v2() {
    let v2 = common::cgroup_v2_root();
    let mut needs = requirements(false);
    needs.retain(|(what, _)| !what.starts_with("cgroup v1"));
    needs.push(("a mounted cgroup2 hierarchy", v2.is_some()));
    if !common::can_run(&needs) {
        return;
    }
    let root = v2.unwrap();
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let limits = ["memory", "pids"]
        .iter()
        .all(|c| controllers.split_whitespace().any(|have| have == *c));
    if !limits {
        eprintln!(
            "cgroup v2 at {} has no memory and pids controllers: limits are checked on v1 only",
            root.display()
        );
    }
    let id = "it-escape-v2";
    let f = fixture(id, &escapes(limits), |r| {
        r.pids = limits.then_some(16);
        r.memory_bytes = limits.then_some(32 << 20);
        r.cpu_millis = None;
    });
    let log = f.tmp.path().join("log");
    let runtime = Runtime::new(Box::new(cgroups::CgroupV2::new(root)))
        .with_defaults(drover_agent::runtime::ResourceDefaults::with_pids(0));
    let c = start(&runtime, &f, id, &log);
    let out = wait_for_end(&log);
    c.stop_blocking(Duration::from_millis(100)).unwrap();
    assert_break_outs_failed(&out);
    if limits {
        assert!(out.contains("can't fork"), "{out}");
        assert_eq!(report_value(&out, "hog"), "137", "{out}");
    }
}

/// Host ids of the test's user namespace: above any real user, as the
/// agent's own ranges are.
const TEST_IDS: IdRange = IdRange {
    start: (1 << 30) + 65536 * 4000,
    size: 65536,
};

#[test]
fn a_user_namespace_maps_root_to_an_unprivileged_range() {
    if !common::can_run(&requirements(false)) {
        return;
    }
    let id = "it-userns";
    let script = r#"
exec 2>&1
echo "uid_map=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')"
echo "gid_map=$(cat /proc/self/gid_map | tr -s ' ' | sed 's/^ //')"
echo "id=$(id -u):$(id -g)"
echo "owner=$(stat -c %u:%g /bin/busybox)"
mkdir /made && echo made=ok
echo data > /bin/written && echo write-image-dir=ok
head -c 0 /dev/null && echo devnull=ok
echo x > /dev/null && echo devnull-write=ok
mknod /tmp/null2 c 1 3; echo "mknod=$?"
mount -t tmpfs none /mnt; echo "mount=$?"
echo "kcore=$(cat /proc/kcore | wc -c)"
echo "hostname=$(hostname)"
grep -E '^(CapEff|Seccomp):' /proc/self/status
echo END
exec sleep 60
"#;
    let f = fixture(id, script, |r| r.user_namespace = Some(TEST_IDS));
    let log = f.tmp.path().join("log");
    let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let c = start(&runtime, &f, id, &log);
    let out = wait_for_end(&log);
    // The host's view of the container's init: an unprivileged id.
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let upper = f.bundle.dir().join("upper");
    let made = std::fs::metadata(upper.join("made"));
    let layer_file = std::fs::metadata(f.tmp.path().join("layer/bin/busybox")).unwrap();
    c.stop_blocking(Duration::from_millis(100)).unwrap();

    let start = TEST_IDS.start;
    for want in [
        format!("uid_map=0 {start} 65536"),
        format!("gid_map=0 {start} 65536"),
        "id=0:0".to_string(),
        // Layer files, root's in the cache, are root's inside too.
        "owner=0:0".to_string(),
        "made=ok".to_string(),
        "write-image-dir=ok".to_string(),
        "devnull=ok".to_string(),
        "devnull-write=ok".to_string(),
        "kcore=0".to_string(),
        "hostname=probe".to_string(),
        "CapEff:\t00000000a80425fb".to_string(),
        "Seccomp:\t2".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} not in:\n{out}");
    }
    // A user namespace may not make device nodes, nor mount.
    assert_ne!(report_value(&out, "mknod"), "0", "{out}");
    assert_ne!(report_value(&out, "mount"), "0", "{out}");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == start.to_string()),
        "{uid_line}"
    );
    // What it wrote is the mapped root's on the host; the shared layer
    // keeps its owner and its content.
    use std::os::unix::fs::MetadataExt;
    let made = made.unwrap();
    assert_eq!((made.uid(), made.gid()), (start, start));
    assert_eq!((layer_file.uid(), layer_file.gid()), (0, 0));
    assert!(!f.tmp.path().join("layer/bin/written").exists());
    assert!(upper.join("bin/written").exists());
}

#[test]
fn spec_user_read_only_root_and_capability_changes_apply() {
    if !common::can_run(&requirements(false)) {
        return;
    }
    let id = "it-hardened";
    let script = "id -u; id -g; grep -E '^Cap(Bnd|Prm)' /proc/self/status; \
                  touch /x 2>&1; touch /dev/shm/x && echo shm-ok";
    let f = fixture(id, script, |r| {
        r.user = Some("1000:1000".into());
        r.read_only_rootfs = true;
        r.capabilities = CapabilityChanges {
            add: vec!["SYS_PTRACE".into()],
            drop: vec!["ALL".into()],
        };
    });
    let log: PathBuf = f.tmp.path().join("log");
    let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let c = start(&runtime, &f, id, &log);
    let status = c.wait_blocking().unwrap();
    c.stop_blocking(Duration::from_millis(100)).unwrap();
    let out = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1000", "1000"], "{out}");
    // Only CAP_SYS_PTRACE (bit 19) in bounding; a non-root user holds none.
    assert_eq!(lines[2], "CapPrm:\t0000000000000000", "{out}");
    assert_eq!(lines[3], "CapBnd:\t0000000000080000", "{out}");
    assert!(out.contains("touch: /x: Read-only file system"), "{out}");
    assert!(out.contains("shm-ok"), "{out}");
}

/// CVE-2024-21626: until it execs, the container's first process holds a
/// copy of every fd of the runtime (close-on-exec or not), so a
/// `process.cwd` of `/proc/self/fd/N` would make a host directory the
/// container's working directory, and `..` would walk the host.
#[test]
fn a_cwd_through_an_inherited_fd_is_refused() {
    if !common::can_run(&requirements(false)) {
        return;
    }
    let id = "it-fd-cwd";
    // A host directory the runtime happens to hold open (close-on-exec, as
    // all of the agent's fds are).
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("secret"), "host secret\n").unwrap();
    let dir = std::fs::File::open(host.path()).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let cwd = format!("/proc/self/fd/{fd}");
    let f = fixture(id, "pwd; cat secret; ls ..", |r| {
        r.workdir = Some(cwd.clone());
    });
    let log = f.tmp.path().join("log");
    let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let started = runtime.start(f.bundle.dir(), id, std::fs::File::create(&log).unwrap());
    let err = match started {
        Ok(c) => {
            let _ = c.wait_blocking();
            let _ = c.stop_blocking(Duration::ZERO);
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("the container started with cwd {cwd}; it printed:\n{out}");
        }
        Err(e) => e.to_string(),
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.is_empty(), "{out}");
    // Either the fd is gone by the time the cwd is resolved, or the cwd
    // resolves outside the root: both name the cwd.
    assert!(
        err == format!(
            "container {id}: chdir to cwd {cwd}: No such file or directory (os error 2)"
        ) || err
            == format!("container {id}: process.cwd {cwd}: resolves outside the container's root"),
        "{err}"
    );
    drop(dir);
    assert!(
        !Path::new("/sys/fs/cgroup/pids/drover").join(id).exists(),
        "the failed start left its cgroup behind"
    );
}

const AGENT: &str = env!("CARGO_BIN_EXE_drover-agent");

/// What a write to a file would change.
fn fingerprint(path: &Path) -> (u64, i64, i64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// The attack on the runtime binary: the container's program is
/// `/proc/self/exe`, so the runtime's own process execs the runtime's binary
/// inside the container (here as `drover-agent monitor`, which then blocks
/// opening a FIFO of the image, so it stays there). Another process of the
/// container then opens that binary through `/proc/1/exe` and tries to
/// write it. Returns what the attacker saw.
fn attack_runtime_binary(
    id: &str,
    start: impl FnOnce(&Bundle, &Path) -> Box<dyn FnOnce()>,
) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox_image(tmp.path());
    // The shared libraries drover-agent needs, where it looks for them:
    // the runtime's binary must be able to run in the container for the
    // attack to get anywhere (a real image would ship a libc).
    let ldd = std::process::Command::new("ldd")
        .arg(AGENT)
        .output()
        .unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = image.layers[0].join(&lib[1..]);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
    nix::unistd::mkfifo(
        &image.layers[0].join("tmp/hold"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    let req = ContainerRequest {
        id: id.into(),
        hostname: "evil".into(),
        command: Some(
            [
                "/proc/self/exe",
                "monitor",
                "--bundle",
                "/none",
                "--log",
                "/tmp/hold",
                "x",
            ]
            .map(String::from)
            .to_vec(),
        ),
        memory_bytes: Some(64 << 20),
        pids: Some(32),
        ..Default::default()
    };
    let bundle = Bundle::create(&tmp.path().join("bundle"), &image, &req).unwrap();
    let before = fingerprint(Path::new(AGENT));
    let stop = start(&bundle, tmp.path());

    let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let procs = || runtime.cgroups().procs(id);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The container's pid 1 (the only process of its cgroup).
    let init = loop {
        if let [pid] = procs()[..] {
            if std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .starts_with(b"/proc/self/exe\0monitor")
            {
                break pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the container did not start: {:?}",
            procs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let script = r#"
exec 2>&1
echo "init=$(tr '\0' ' ' < /proc/1/cmdline)"
echo "exe=$(stat -L -c %d:%i /proc/1/exe)"
(echo pwned >> /proc/1/exe); echo "append=$?"
exec 3< /proc/1/exe; echo "open-read=$?"
(echo pwned 1<> /proc/self/fd/3); echo "reopen-write=$?"
(: > /proc/1/exe); echo "truncate=$?"
echo END
exec cat /tmp/hold
"#;
    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    let mut p = runtime.exec(bundle.dir(), id, init, &req).unwrap();
    drop(p.stdin.take());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut p.stdout, &mut out).unwrap();
    let _ = p.wait_blocking();
    stop();
    let _ = bundle.cleanup();
    assert_eq!(
        fingerprint(Path::new(AGENT)),
        before,
        "the host's drover-agent was written to:\n{out}"
    );
    out
}

fn assert_attack_failed(out: &str) {
    use std::os::unix::fs::MetadataExt;
    let value = |key: &str| -> &str {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{key} missing in:\n{out}"))
    };
    assert!(value("init").starts_with("/proc/self/exe monitor"), "{out}");
    // What the container reaches is not the host's binary...
    let host = std::fs::metadata(AGENT).unwrap();
    assert_ne!(
        value("exe"),
        format!("{}:{}", host.dev(), host.ino()),
        "the container reached the host's drover-agent:\n{out}"
    );
    // ...and it cannot change what it reaches either.
    assert_eq!(value("open-read"), "0", "{out}");
    for attempt in ["append", "reopen-write", "truncate"] {
        assert_ne!(value(attempt), "0", "{attempt} succeeded:\n{out}");
    }
}

/// CVE-2019-5736 against a container started under a monitor, as the agent
/// starts them: the container's init is a clone of the monitor.
#[test]
fn a_container_cannot_reach_the_runtime_binary_under_a_monitor() {
    if !common::can_run(&requirements(false)) {
        return;
    }
    let id = "it-exe-monitor";
    let out = attack_runtime_binary(id, |bundle, dir| {
        let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
        let monitor = MonitorConfig {
            exe: AGENT.into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            log_max_bytes: 0,
            defaults: Default::default(),
        };
        let c = runtime
            .start_monitored(&monitor, bundle.dir(), id, &dir.join("log"), None, None)
            .unwrap();
        // The monitor itself runs from the sealed copy too.
        let monitor_exe = std::fs::read_link(format!("/proc/{}/exe", c.monitor_pid().unwrap()));
        assert!(
            monitor_exe
                .as_ref()
                .is_ok_and(|p| p.to_string_lossy().starts_with("/memfd:drover-agent")),
            "{monitor_exe:?}"
        );
        // ...and is still known by its name.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", c.monitor_pid().unwrap()));
        assert_eq!(comm.unwrap_or_default(), "drover-agent\n");
        Box::new(move || {
            c.stop_blocking(Duration::from_millis(100)).unwrap();
        })
    });
    assert_attack_failed(&out);
}

/// The same against `drover-agent runtime run`, where the runtime process
/// clones the container itself (as the agent does for exec'd commands, and
/// for every container when it runs without monitors).
#[test]
fn a_container_cannot_reach_the_runtime_binary_of_runtime_run() {
    if !common::can_run(&requirements(false)) {
        return;
    }
    let id = "it-exe-run";
    let out = attack_runtime_binary(id, |bundle, _| {
        let mut child = std::process::Command::new(AGENT)
            .args(["runtime", "run", "--bundle"])
            .arg(bundle.dir())
            .arg(id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Box::new(move || {
            let _ = child.wait();
        })
    });
    assert_attack_failed(&out);
}

/// A container started from a terminal (`drover-agent runtime run`, `drover
/// dev`) must not get that terminal: its `/dev/tty` would open it, to read
/// the operator's keys or type into their shell with TIOCSTI.
#[test]
fn a_container_cannot_reach_the_terminal_it_was_started_from() {
    if !common::can_run(&requirements(false)) {
        return;
    }
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let id = "it-ctty";
    let f = fixture(
        id,
        "echo typed-by-the-container > /dev/tty; echo tty=$?",
        |_| {},
    );
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into our locals; no name, termios or
    // winsize is passed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: openpty just returned these fds; nothing else owns them.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let tty = slave.as_raw_fd();
    let mut cmd = std::process::Command::new(AGENT);
    cmd.args(["runtime", "run", "--bundle"])
        .arg(f.bundle.dir())
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls (setsid,
    // ioctl) on an fd inherited from the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 || libc::ioctl(tty, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    drop(slave);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // What reached the terminal (non-blocking: EIO or EAGAIN once drained).
    let fl = nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(
            nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK,
        ),
    )
    .unwrap();
    let mut terminal = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::fs::File::from(master), &mut terminal);
    let terminal = String::from_utf8_lossy(&terminal);
    assert!(
        !terminal.contains("typed-by-the-container"),
        "the container wrote to the terminal it was started from: {terminal:?}"
    );
    assert!(
        stdout.contains("tty=") && !stdout.contains("tty=0"),
        "{stdout}"
    );
}
