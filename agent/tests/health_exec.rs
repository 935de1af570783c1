//! Exec health probes, with real containers: a probe runs as confined as
//! the container (the spec's user, its cgroup, no capabilities left to a
//! non-root user, no_new_privs, seccomp), a probe that hangs is killed at
//! its timeout with everything it started, and a chatty probe's output is
//! capped in the reason.

use std::path::Path;
use std::time::Duration;

use drover_agent::bundle::{Bundle, ContainerRequest};
use drover_agent::cgroups;
use drover_agent::daemon::health::{probe, Target, Verdict, EXEC_OUTPUT_MAX};
use drover_agent::runtime::Runtime;
use drover_proto::spec::{Health, Network};

mod common;

fn bundle(dir: &Path, id: &str, user: Option<&str>) -> Bundle {
    let image = common::busybox_image(
        dir,
        &["sh", "sleep", "grep", "id", "test", "yes", "head", "cat"],
    );
    let req = ContainerRequest {
        id: id.into(),
        hostname: id.into(),
        command: Some(vec!["sleep".into(), "60".into()]),
        memory_bytes: Some(32 << 20),
        pids: Some(64),
        user: user.map(str::to_string),
        ..Default::default()
    };
    Bundle::create(&dir.join("bundle"), &image, &req).unwrap()
}

/// An exec health check as a job spec writes it.
fn check(command: &str, timeout: &str) -> Health {
    let yaml = format!(
        "name: x\nimage: oci:/x\nhealth:\n  exec: {{command: [sh, -c, {command:?}]}}\n  \
         interval: 10s\n  timeout: {timeout}\n"
    );
    drover_proto::spec::from_yaml(&yaml)
        .unwrap()
        .health
        .unwrap()
}

struct Running {
    _tmp: tempfile::TempDir,
    bundle: Bundle,
    container: drover_agent::runtime::Container,
    target: Target,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.container.stop_blocking(Duration::from_millis(100));
        let _ = self.bundle.cleanup();
    }
}

fn start(id: &str, user: Option<&str>) -> Running {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path(), id, user);
    let runtime = Runtime::new(cgroups::manager_for("/sys/fs/cgroup"));
    let log = std::fs::File::create(tmp.path().join("log")).unwrap();
    let container = runtime.start(bundle.dir(), id, log).unwrap();
    let target = Target {
        pid: container.pid(),
        id: id.into(),
        bundle: bundle.dir().to_path_buf(),
        runtime,
    };
    Running {
        _tmp: tmp,
        bundle,
        container,
        target,
    }
}

#[tokio::test]
async fn an_exec_probe_runs_as_the_spec_user_inside_the_container() {
    if !common::root_and_busybox() {
        return;
    }
    let id = "it-probe-user";
    let c = start(id, Some("1000"));
    // Passes only when run as the spec's user, in the container's cgroup,
    // with no capability, no_new_privs and the seccomp filter.
    let confined = check(
        &format!(
            "test \"$(id -u)\" = 1000 && grep -q drover/{id} /proc/self/cgroup && \
             grep -q '^CapEff:.0000000000000000$' /proc/self/status && \
             grep -q '^NoNewPrivs:.1$' /proc/self/status && grep -q '^Seccomp:.2$' /proc/self/status"
        ),
        "5s",
    );
    let mut verdict = Verdict::default();
    let first = probe(&confined, &c.target, Network::Host).await;
    assert_eq!(first, Ok(()));
    assert!(verdict.record(&first, 1));
    assert_eq!(verdict.healthy, Some(true));

    // A failing probe's reason carries its output (stdout and stderr).
    let failing = check("id -u; grep ^CapBnd /proc/self/status >&2; exit 3", "5s");
    assert_eq!(
        probe(&failing, &c.target, Network::Host).await,
        Err("exec \"sh\" exited with 3: 1000\nCapBnd:\t00000000a80425fb".into())
    );
}

#[tokio::test]
async fn a_hanging_probe_is_killed_at_its_timeout() {
    if !common::root_and_busybox() {
        return;
    }
    let id = "it-probe-hang";
    let c = start(id, None);
    let cgroups = cgroups::manager_for("/sys/fs/cgroup");
    let before = cgroups.procs(id);
    // The shell forks (the subshell), so the whole group must be killed.
    let hang = check("(sleep 1000; echo late); echo never", "1s");
    let got = probe(&hang, &c.target, Network::Host).await;
    assert_eq!(got, Err("exec \"sh\" timed out after 1s".into()));
    // Nothing the probe started is left in the container.
    let mut after = cgroups.procs(id);
    for _ in 0..100 {
        if after == before {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        after = cgroups.procs(id);
    }
    assert_eq!(after, before, "the probe's processes outlived it");
    assert_eq!(before, vec![c.container.pid()]);
}

#[tokio::test]
async fn a_chatty_probe_keeps_a_bounded_reason() {
    if !common::root_and_busybox() {
        return;
    }
    let id = "it-probe-chatty";
    let c = start(id, None);
    let chatty = check("yes | head -c 1000000; exit 1", "10s");
    let why = probe(&chatty, &c.target, Network::Host).await.unwrap_err();
    assert!(
        why.starts_with("exec \"sh\" exited with 1: y\ny\n"),
        "{why}"
    );
    assert!(why.ends_with(" …"), "{}", &why[why.len() - 20..]);
    assert!(why.len() <= EXEC_OUTPUT_MAX + 64, "{} bytes", why.len());
}
