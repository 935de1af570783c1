//! Exec health probes, end to end: a probe is a program from the image, so
//! it runs as confined as the replica itself. A replica whose probe passes
//! only as the job's `user`, inside the replica's cgroup, without
//! capabilities and with no_new_privs becomes healthy; a probe that hangs is
//! killed at its timeout and the replica ends unhealthy, saying why.

use drover_e2e::*;
use std::time::Duration;

#[test]
fn exec_probes_run_confined_and_end_at_their_timeout() {
    if !require_root("exec_probes_run_confined_and_end_at_their_timeout") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-probe");
    let image = format!("oci:{}/toolbox:latest", images.display());
    let confined = c.spec(
        "confined",
        &format!(
            "name: confined\nimage: {image}\ncommand: [sleep, \"3600\"]\nuser: \"1000\"\n\
             health:\n  exec:\n    command:\n      - sh\n      - -c\n      - \
             test \"$(id -u)\" = 1000 && grep -q drover /proc/self/cgroup && \
             grep -q '^CapEff:.0000000000000000' /proc/self/status && \
             grep -q '^NoNewPrivs:.1' /proc/self/status\n  \
             interval: 1s\n  timeout: 1s\n  failure_threshold: 1\n\
             stop_grace_period: 1s\n"
        ),
    );
    let hang = c.spec(
        "hang",
        &format!(
            "name: hang\nimage: {image}\ncommand: [sleep, \"3600\"]\nrestart: never\n\
             health:\n  exec:\n    command: [sh, -c, \"sleep 3600; true\"]\n  \
             interval: 2s\n  timeout: 1s\n  failure_threshold: 1\n\
             stop_grace_period: 1s\n"
        ),
    );
    for spec in [&confined, &hang] {
        let out = c.drover(&["job", "run", "--detach", spec.to_str().unwrap()]);
        assert!(out.ok(), "{}", out.stderr);
    }
    let st = wait_for(
        "a healthy confined replica",
        Duration::from_secs(30),
        || {
            let v = c.json(&["alloc", "ls", "--job", "confined"]);
            let a = v.as_array()?.first()?.clone();
            (a["health"] == "healthy").then_some(a)
        },
    );
    assert_eq!(st["state"], "running", "{st}");

    let st = wait_for("the hanging probe to fail", Duration::from_secs(30), || {
        let v = c.json(&["alloc", "ls", "--job", "hang"]);
        let a = v.as_array()?.first()?.clone();
        (a["state"] == "failed").then_some(a)
    });
    assert_eq!(
        st["reason"], "unhealthy: exec \"sh\" timed out after 1s",
        "{st}"
    );
    assert!(c.drover(&["job", "stop", "confined"]).ok());
}
