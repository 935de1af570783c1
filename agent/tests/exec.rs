//! `Runtime::exec`: a command run inside a running container lands in its
//! namespaces, cgroup and root, with its capabilities, no_new_privs and
//! seccomp filter; stdio and the exit code come back; a tty works.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use drover_agent::bundle::{Bundle, ContainerRequest, IdRange};
use drover_agent::cgroups;
use drover_agent::image::{Image, ImageConfig};
use drover_agent::runtime::{ExecRequest, ExitStatus, Runtime, RuntimeError};

use common::BUSYBOX;

fn bundle(dir: &Path, id: &str) -> Bundle {
    bundle_with(dir, id, None)
}

fn bundle_with(dir: &Path, id: &str, userns: Option<IdRange>) -> Bundle {
    let layer = dir.join("layer");
    for d in ["bin", "tmp", "work"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, layer.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "sleep", "cat", "grep", "hostname", "id", "echo", "pwd", "unshare",
    ] {
        std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).unwrap();
    }
    let image = Image {
        layers: vec![layer],
        config: ImageConfig {
            env: vec!["PATH=/bin".into(), "FROM_IMAGE=1".into()],
            working_dir: Some("/work".into()),
            ..Default::default()
        },
        digest: "sha256:test".into(),
    };
    let req = ContainerRequest {
        id: id.into(),
        hostname: "inside".into(),
        command: Some(vec!["sleep".into(), "60".into()]),
        memory_bytes: Some(32 << 20),
        user_namespace: userns,
        ..Default::default()
    };
    Bundle::create(&dir.join("bundle"), &image, &req).unwrap()
}

/// Runs `req` in the container with no input; its stdout and stderr, once
/// it exited with `want`.
fn exec_to_end(
    rt: &Runtime,
    b: &Bundle,
    id: &str,
    pid: i32,
    req: &ExecRequest,
    want: ExitStatus,
) -> (String, String) {
    let mut p = rt.exec(b.dir(), id, pid, req).unwrap();
    drop(p.stdin.take());
    let out = read(Some(&mut p.stdout));
    let err = read(p.stderr.as_mut());
    assert_eq!(p.wait_blocking().unwrap(), want, "{out}{err}");
    (out, err)
}

/// Starts the bundle, its output going to `<dir>/log`.
fn start(rt: &Runtime, b: &Bundle, id: &str, dir: &Path) -> drover_agent::runtime::Container {
    rt.start(b.dir(), id, std::fs::File::create(dir.join("log")).unwrap())
        .unwrap()
}

fn read(f: Option<&mut std::fs::File>) -> String {
    let mut s = String::new();
    if let Some(f) = f {
        f.read_to_string(&mut s).unwrap();
    }
    s
}

#[test]
fn exec_runs_inside_the_container_with_its_isolation() {
    if !common::root_and_busybox() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let id = "it-exec";
    let b = bundle(tmp.path(), id);
    let rt = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let c = start(&rt, &b, id, tmp.path());
    let script = "echo pid=$$; hostname; pwd; echo $FROM_IMAGE $EXTRA; \
                  grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
                  cat /proc/1/cmdline; echo; grep -c drover/it-exec /proc/self/cgroup; \
                  unshare -U true 2>&1; echo err >&2; exit 3";
    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["EXTRA=2".into()],
        tty: None,
    };
    let (out, err) = exec_to_end(&rt, &b, id, c.pid(), &req, ExitStatus::Exited(3));
    let lines: Vec<&str> = out.lines().collect();
    let pid: u32 = lines[0].strip_prefix("pid=").unwrap().parse().unwrap();
    assert!(
        pid > 1 && pid < 100,
        "a pid of the container's namespace: {pid}"
    );
    assert_eq!(lines[1..4], ["inside", "/work", "1 2"], "{out}");
    assert_eq!(lines[4], "CapEff:\t00000000a80425fb");
    assert_eq!(lines[5], "NoNewPrivs:\t1");
    assert_eq!(lines[6], "Seccomp:\t2");
    assert_eq!(
        lines[7], "sleep\u{0}60\u{0}",
        "pid 1 is the container's init"
    );
    assert_ne!(lines[8], "0", "in the container's cgroup: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert_eq!(err, "err\n");

    // A terminal: stdin is a tty, output comes back through it.
    let req = ExecRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "[ -t 0 ] && echo is-a-tty; exit 0".into(),
        ],
        env: vec![],
        tty: Some((24, 80)),
    };
    let mut p = rt.exec(b.dir(), id, c.pid(), &req).unwrap();
    let status = p.wait_blocking().unwrap();
    let mut buf = vec![0u8; 4096];
    let n = p.stdout.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(status, ExitStatus::Exited(0), "{text}");
    assert!(text.contains("is-a-tty"), "{text:?}");

    // A missing program is a clear error, and leaves nothing running.
    let req = ExecRequest {
        argv: vec!["/bin/nope".into()],
        ..Default::default()
    };
    match rt.exec(b.dir(), id, c.pid(), &req) {
        Err(RuntimeError::Exec { program, .. }) => assert_eq!(program, "/bin/nope"),
        other => panic!("{other:?}"),
    }
    c.stop_blocking(Duration::from_millis(100)).unwrap();
    b.cleanup().unwrap();
}

#[test]
fn exec_joins_the_containers_user_namespace() {
    if !common::root_and_busybox() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The container's root must reach its rootfs (see the runtime's docs).
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let id = "it-exec-userns";
    let range = IdRange {
        start: (1 << 30) + 65536 * 4001,
        size: 65536,
    };
    let b = bundle_with(tmp.path(), id, Some(range));
    let rt = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let c = start(&rt, &b, id, tmp.path());
    let req = ExecRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "cat /proc/self/uid_map; id -u; echo hi > /work/file && echo wrote".into(),
        ],
        env: vec![],
        tty: None,
    };
    let (out, _) = exec_to_end(&rt, &b, id, c.pid(), &req, ExitStatus::Exited(0));
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words,
        ["0", &range.start.to_string(), "65536", "0", "wrote"],
        "{out}"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(b.dir().join("upper/work/file")).unwrap();
    assert_eq!(meta.uid(), range.start);
    c.stop_blocking(Duration::from_millis(100)).unwrap();
    b.cleanup().unwrap();
}
