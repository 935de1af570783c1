//! Starts real containers from busybox bundles and checks, from the host,
//! what a user of the runtime relies on: namespaces, PID 1, hostname,
//! cgroup limits, clear exec errors, and nothing left behind after stop.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_agent::bundle::{Bundle, ContainerRequest, Network};
use drover_agent::cgroups;
use drover_agent::image::{Image, ImageConfig};
use drover_agent::runtime::{ExitStatus, Runtime, RuntimeError};

use common::BUSYBOX;

fn requirements() -> Vec<(&'static str, bool)> {
    vec![
        common::root(),
        common::busybox(),
        (
            "overlayfs",
            std::fs::read_to_string("/proc/filesystems")
                .unwrap_or_default()
                .contains("overlay"),
        ),
    ]
}

/// A one-layer "image": busybox plus the applet links the tests use.
fn busybox_image(dir: &Path) -> Image {
    let layer = dir.join("layer");
    std::fs::create_dir_all(layer.join("bin")).unwrap();
    std::fs::create_dir_all(layer.join("tmp")).unwrap();
    std::fs::copy(BUSYBOX, layer.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "true", "sleep", "hostname", "cat", "echo", "ls", "pwd",
    ] {
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
    _tmp: tempfile::TempDir,
    bundle: Bundle,
    log: PathBuf,
    runtime: Runtime,
}

fn fixture(id: &str, command: &[&str], tweak: impl FnOnce(&mut ContainerRequest)) -> Fixture {
    fixture_as(id, None, command, tweak)
}

fn fixture_as(
    id: &str,
    user: Option<&str>,
    command: &[&str],
    tweak: impl FnOnce(&mut ContainerRequest),
) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let mut image = busybox_image(tmp.path());
    image.config.user = user.map(str::to_string);
    let mut req = ContainerRequest {
        id: id.into(),
        hostname: "box".into(),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    tweak(&mut req);
    let bundle = Bundle::create(&tmp.path().join("bundle"), &image, &req).unwrap();
    let log = tmp.path().join("log");
    let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    Fixture {
        _tmp: tmp,
        bundle,
        log,
        runtime,
    }
}

impl Drop for Fixture {
    /// Unmount even when an assertion failed, so a failing test leaks nothing.
    fn drop(&mut self) {
        let _ = self.bundle.cleanup();
    }
}

impl Fixture {
    fn start(&self) -> Result<drover_agent::runtime::Container, RuntimeError> {
        let log = std::fs::File::create(&self.log).unwrap();
        self.runtime.start(self.bundle.dir(), self.bundle.id(), log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

fn mounted(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[tokio::test]
async fn container_is_isolated_limited_and_fully_removed_by_stop() {
    if !common::can_run(&requirements()) {
        return;
    }
    let f = fixture("it-isolated", &["/bin/sleep", "30"], |r| {
        r.memory_bytes = Some(64 << 20)
    });
    let rootfs = f.bundle.rootfs();
    assert!(mounted(&rootfs));
    let c = f.start().unwrap();
    let pid = c.pid().to_string();

    for kind in ["pid", "mnt", "uts", "ipc", "net"] {
        assert_ne!(
            ns(&pid, kind),
            ns("self", kind),
            "{kind} namespace is shared with the host"
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
    assert_eq!(
        std::fs::read(format!("/proc/{pid}/cmdline")).unwrap(),
        b"/bin/sleep\x0030\x00"
    );
    // Only Docker's 14 default capabilities survive, in every set; the
    // process runs with no_new_privs under a seccomp filter.
    for set in ["CapEff", "CapPrm", "CapBnd", "CapInh"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert_eq!(
            line.split_whitespace().last(),
            Some("00000000a80425fb"),
            "{line}"
        );
    }
    for (field, want) in [("NoNewPrivs:", "1"), ("Seccomp:", "2")] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert_eq!(line.split_whitespace().last(), Some(want), "{line}");
    }

    let cg = f.runtime.cgroups();
    assert_eq!(cg.memory_limit("it-isolated"), Some(64 << 20));
    assert!(cg.procs("it-isolated").contains(&c.pid()));
    let self_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        self_cgroup.contains(":memory:/drover/it-isolated"),
        "{self_cgroup}"
    );

    // sleep as PID 1 ignores SIGTERM, so this also exercises the SIGKILL path.
    let exit = c.stop(Duration::from_millis(200)).await.unwrap();
    assert_eq!(exit, ExitStatus::Signaled(libc::SIGKILL));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    for dir in cg.paths("it-isolated") {
        assert!(!dir.exists(), "{} remains", dir.display());
    }
    f.bundle.cleanup().unwrap();
    f.bundle.cleanup().unwrap();
    assert!(!mounted(&rootfs));
    assert!(!f.bundle.dir().exists());
}

#[tokio::test]
async fn hostname_env_cwd_loopback_and_exit_code() {
    if !common::can_run(&requirements()) {
        return;
    }
    let script = "hostname; echo $GREETING; pwd; cat /sys/class/net/lo/flags; ls /dev; \
                  wc -c < /proc/timer_list; ls /sys/firmware | wc -l; touch /proc/sys/kernel/x 2>/dev/null || echo ro-ok; exit 7";
    let f = fixture("it-env", &["sh", "-c", script], |r| {
        r.env = vec![("GREETING".into(), "hello".into())];
        r.workdir = Some("/srv/app".into());
    });
    let c = f.start().unwrap();
    assert_eq!(c.wait().await.unwrap(), ExitStatus::Exited(7));
    c.stop(Duration::from_secs(1)).await.unwrap();
    let log = f.log();
    let lines: Vec<&str> = log.lines().collect();
    // The workdir did not exist in the image: it is created.
    assert_eq!(&lines[..3], ["box", "hello", "/srv/app"], "{log}");
    let flags = u32::from_str_radix(lines[3].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        flags & libc::IFF_UP as u32,
        libc::IFF_UP as u32,
        "loopback is down: {log}"
    );
    for dev in ["null", "zero", "urandom", "pts", "shm", "ptmx"] {
        assert!(lines.contains(&dev), "/dev/{dev} missing: {log}");
    }
    // Masked file and directory, read-only /proc/sys.
    assert_eq!(&lines[lines.len() - 3..], ["0", "0", "ro-ok"], "{log}");
    f.bundle.cleanup().unwrap();
}

#[tokio::test]
async fn host_network_shares_the_net_namespace() {
    if !common::can_run(&requirements()) {
        return;
    }
    let f = fixture("it-hostnet", &["/bin/sleep", "30"], |r| {
        r.network = Network::Host
    });
    let c = f.start().unwrap();
    assert_eq!(ns(&c.pid().to_string(), "net"), ns("self", "net"));
    c.stop(Duration::from_millis(50)).await.unwrap();
    f.bundle.cleanup().unwrap();
}

#[test]
fn missing_binary_is_a_clear_error_and_leaves_nothing() {
    if !common::can_run(&requirements()) {
        return;
    }
    let f = fixture("it-nope", &["/bin/nope"], |_| {});
    let err = f.start().unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Exec { program, .. } if program == "/bin/nope"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(r#"exec "/bin/nope": No such file or directory"#),
        "{msg}"
    );
    for dir in f.runtime.cgroups().paths("it-nope") {
        assert!(!dir.exists(), "{} remains", dir.display());
    }
    f.bundle.cleanup().unwrap();
}

#[test]
fn runc_runs_the_same_bundle() {
    let runc = Path::new("/usr/sbin/runc").exists() || Path::new("/usr/bin/runc").exists();
    let mut needs = requirements();
    needs.push(("runc", runc));
    if !common::can_run(&needs) {
        return;
    }
    let f = fixture("it-runc", &["sh", "-c", "hostname; exit 3"], |r| {
        r.memory_bytes = Some(32 << 20)
    });
    let out = std::process::Command::new("runc")
        .args(["run", "--bundle"])
        .arg(f.bundle.dir())
        .arg("it-runc")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "box");
    f.bundle.cleanup().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_from_a_multithreaded_runtime() {
    if !common::can_run(&requirements()) {
        return;
    }
    let fixtures: Vec<_> = (0..6)
        .map(|i| {
            let id = format!("it-conc-{i}");
            let script = format!("echo {id}");
            fixture(&id, &["sh", "-c", &script], |_| {})
        })
        .collect();
    let fixtures = std::sync::Arc::new(fixtures);
    let tasks: Vec<_> = (0..fixtures.len())
        .map(|i| {
            let fixtures = fixtures.clone();
            tokio::spawn(async move {
                let f = &fixtures[i];
                let c = tokio::task::block_in_place(|| f.start()).unwrap();
                let status = c.wait().await.unwrap();
                c.stop(Duration::from_secs(1)).await.unwrap();
                status
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), ExitStatus::Exited(0));
        assert_eq!(fixtures[i].log().trim(), format!("it-conc-{i}"));
        fixtures[i].bundle.cleanup().unwrap();
    }
}

#[tokio::test]
async fn image_user_is_applied_without_effective_capabilities() {
    if !common::can_run(&requirements()) {
        return;
    }
    let script = "id -u; id -g; grep -E 'Cap(Eff|Bnd)' /proc/self/status";
    let f = fixture_as("it-user", Some("1000:1001"), &["sh", "-c", script], |_| {});
    let c = f.start().unwrap();
    assert_eq!(
        c.wait().await.unwrap(),
        ExitStatus::Exited(0),
        "{}",
        f.log()
    );
    c.stop(Duration::from_secs(1)).await.unwrap();
    let log = f.log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[..2], ["1000", "1001"], "{log}");
    // A non-root user keeps the defaults only in the bounding set, as
    // after a plain setuid: nothing effective.
    assert_eq!(lines[2], "CapEff:\t0000000000000000", "{log}");
    assert_eq!(lines[3], "CapBnd:\t00000000a80425fb", "{log}");
}

/// `init: true`: a shell as the command now stops on SIGTERM (PID 1 is the
/// runtime's init, which passes the signal on), exiting as a shell reports
/// it; its orphans are reaped; without the init, the same shell waits out
/// the grace and is killed.
#[tokio::test]
async fn with_init_a_shell_stops_on_sigterm_and_orphans_are_reaped() {
    if !common::can_run(&requirements()) {
        return;
    }
    // An orphan (the inner shell exits at once, leaving `sleep` to PID 1)
    // that ends after 0.2 s: only an init that reaps leaves no zombie.
    let script = "echo pid $$; sh -c 'sleep 0.2 &'; sleep 1; \
                  for s in /proc/[0-9]*/stat; do cat $s; echo; done; sleep 1000";
    let with = fixture("it-init", &["sh", "-c", script], |r| r.init = true);
    let c = with.start().unwrap();
    let grace = Duration::from_secs(10);
    // The process list is printed 1 s in, after the orphan (reparented to
    // PID 1, the init) has ended.
    for _ in 0..50 {
        if with.log().lines().count() > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = with.log();
    assert!(
        log.starts_with("pid 2\n"),
        "the command is not PID 1's child: {log}"
    );
    assert!(!log.contains(") Z "), "a zombie was left: {log}");
    let t = std::time::Instant::now();
    let exit = c.stop(grace).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(exit, ExitStatus::Exited(128 + libc::SIGTERM));

    let without = fixture("it-no-init", &["sh", "-c", "sleep 1000"], |_| {});
    let c = without.start().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    let exit = c.stop(Duration::from_millis(800)).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(exit, ExitStatus::Signaled(libc::SIGKILL));
}

/// Files the agent binds in (resolv.conf, hosts) land inside the container
/// whatever the image holds at their paths: an `/etc` that is a symlink to a
/// host directory, or a `resolv.conf` that is a symlink to a host file, is
/// resolved inside the container's root, never on the host. The same with a
/// user namespace, where the binds are cloned by an unprivileged root.
#[tokio::test]
async fn bound_files_never_follow_an_images_symlinks_to_the_host() {
    if !common::can_run(&requirements()) {
        return;
    }
    for userns in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let tag = format!("drover-bind-canary-{}-{userns}", std::process::id());
        // On the host: an empty directory and a file an escape would change.
        let canary_dir = Path::new("/tmp").join(&tag);
        std::fs::create_dir_all(&canary_dir).unwrap();
        let canary_file = Path::new("/tmp").join(format!("{tag}.hosts"));
        std::fs::write(&canary_file, "host file\n").unwrap();
        let image = common::busybox_image(tmp.path(), &["sh", "cat", "echo", "grep"]);
        let volume = tmp.path().join("volume");
        std::fs::create_dir_all(volume.join("sub")).unwrap();
        let layer = &image.layers[0];
        // The image: /etc -> /tmp/<tag> (absolute, so on the host it would
        // be the canary directory), a directory of that name inside it, and
        // /tmp/<tag>/hosts -> the host file's absolute path.
        std::fs::create_dir_all(layer.join("tmp").join(&tag)).unwrap();
        std::os::unix::fs::symlink(&canary_dir, layer.join("etc")).unwrap();
        // hosts: a symlink to the host file; in the second round a FIFO
        // (opening one to make a mount point would block).
        let hosts = layer.join("tmp").join(&tag).join("hosts");
        if userns {
            let path = std::ffi::CString::new(hosts.to_str().unwrap()).unwrap();
            // SAFETY: a NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
        } else {
            std::os::unix::fs::symlink(&canary_file, &hosts).unwrap();
        }
        let id = format!("it-bind-{userns}");
        let req = ContainerRequest {
            id: id.clone(),
            hostname: "box".into(),
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "cat /etc/resolv.conf /etc/hosts; echo t > /data/sub/x && grep -c ' /data/sub tmpfs ' /proc/mounts".into(),
            ]),
            // A host directory, and a tmpfs inside it after it in the spec:
            // mounted in that order, the tmpfs on top.
            binds: vec![drover_agent::bundle::HostBind {
                source: volume.clone(),
                destination: "/data".into(),
                read_only: false,
            }],
            tmpfs: vec![("/data/sub".into(), 1 << 20)],
            files: vec![
                drover_agent::bundle::ContainerFile {
                    path: "/etc/resolv.conf".into(),
                    contents: "nameserver 10.9.9.1\n".into(),
                    ..Default::default()
                },
                drover_agent::bundle::ContainerFile {
                    path: "/etc/hosts".into(),
                    contents: "10.9.9.2 box\n".into(),
                    read_only: true,
                    ..Default::default()
                },
            ],
            user_namespace: userns.then_some(drover_agent::bundle::IdRange {
                start: 3_800_000,
                size: 65536,
            }),
            ..Default::default()
        };
        let bundle = Bundle::create(&tmp.path().join("bundle"), &image, &req).unwrap();
        let log = tmp.path().join("log");
        let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
        let c = runtime
            .start(bundle.dir(), &id, std::fs::File::create(&log).unwrap())
            .unwrap();
        assert_eq!(
            c.wait().await.unwrap(),
            ExitStatus::Exited(0),
            "userns {userns}: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        c.stop(Duration::from_millis(50)).await.unwrap();
        let out = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            out, "nameserver 10.9.9.1\n10.9.9.2 box\n1\n",
            "userns {userns}"
        );
        assert!(
            !volume.join("sub/x").exists(),
            "the tmpfs is under the bind"
        );
        bundle.cleanup().unwrap();
        let left: Vec<_> = std::fs::read_dir(&canary_dir).unwrap().collect();
        assert!(
            left.is_empty(),
            "userns {userns}: a bind reached the host directory: {left:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&canary_file).unwrap(),
            "host file\n"
        );
        std::fs::remove_dir(&canary_dir).unwrap();
        std::fs::remove_file(&canary_file).unwrap();
    }
}

#[tokio::test]
async fn the_runtimes_setup_runs_outside_the_cgroup_and_the_command_inside() {
    if !common::can_run(&requirements()) {
        return;
    }
    // 10m: 1 ms of CPU per 100 ms. Joined before its setup, such a
    // container was throttled through the runtime's mounts for whole periods.
    let f = fixture("it-late-join", &["/bin/sleep", "30"], |r| {
        r.cpu_millis = Some(10)
    });
    let log = std::fs::File::create(&f.log).unwrap();
    let stdio = drover_agent::runtime::Stdio::log(log).unwrap();
    let cg = f.runtime.cgroups();
    let mut in_cgroup_before_setup = None;
    let mut before = |pid: i32| {
        in_cgroup_before_setup = Some(cg.procs("it-late-join").contains(&pid));
        Ok(())
    };
    let c = f
        .runtime
        .start_then(f.bundle.dir(), f.bundle.id(), stdio, &mut before)
        .unwrap();
    assert_eq!(
        in_cgroup_before_setup,
        Some(false),
        "the child was in its cgroup before its setup"
    );
    assert_eq!(cg.procs("it-late-join"), vec![c.pid()]);
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid())).unwrap();
    assert!(
        own.lines()
            .any(|l| l.contains(":cpu") && l.ends_with(":/drover/it-late-join")),
        "{own}"
    );
    c.stop(Duration::from_millis(100)).await.unwrap();
}
