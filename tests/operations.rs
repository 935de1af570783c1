//! Operating a cluster, end to end: snapshots saved from one cluster and
//! restored into a fresh one, and the state of a stopped peer recovered
//! from its data dir alone.

use drover_e2e::*;
use std::time::Duration;

fn spec(name: &str, arg: u32) -> String {
    format!(
        "name: {name}\nreplicas: 1\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sleep, '{arg}']\n\
         resources: {{cpu: 10m, memory: 16Mi}}\nstop_grace_period: 1s\n",
        images().display()
    )
}

/// Every job's name with its versions (number, time, what changed), as
/// `job status -o json` shows them.
fn versions(c: &Cluster, jobs: &[&str]) -> Vec<(String, Vec<(u64, String)>)> {
    jobs.iter()
        .map(|j| {
            let v = c.json(&["job", "status", j]);
            let vs = v["versions"]
                .as_array()
                .unwrap_or_else(|| panic!("versions of {j}: {v}"))
                .iter()
                .map(|x| {
                    (
                        x["version"].as_u64().unwrap(),
                        format!("{} {}", x["submitted_at_ms"], x["changes"]),
                    )
                })
                .collect();
            (j.to_string(), vs)
        })
        .collect()
}

fn running(c: &Cluster, job: &str) -> bool {
    let v = c.json(&["job", "status", job]);
    v["running"] == 1
}

#[test]
fn a_snapshot_restores_every_job_and_version_into_a_fresh_cluster() {
    if !require_root("a_snapshot_restores_every_job_and_version_into_a_fresh_cluster") {
        return;
    }
    let a = Cluster::start("snap-a");
    let dir = tempfile::tempdir().unwrap();
    let jobs = ["alpha", "beta", "gamma"];
    for (i, job) in jobs.iter().enumerate() {
        let file = dir.path().join(format!("{job}.yaml"));
        std::fs::write(&file, spec(job, 1000 + i as u32)).unwrap();
        a.must(&["job", "run", file.to_str().unwrap()]);
    }
    // beta gets a second version.
    let file = dir.path().join("beta-2.yaml");
    std::fs::write(&file, spec("beta", 2000)).unwrap();
    a.must(&["job", "run", file.to_str().unwrap()]);
    let value = dir.path().join("secret");
    std::fs::write(&value, "s3cret").unwrap();
    a.must(&[
        "secret",
        "create",
        "db",
        "--from-file",
        value.to_str().unwrap(),
    ]);
    let before = versions(&a, &jobs);
    assert_eq!(before[1].1.len(), 2, "beta has two versions: {before:?}");

    let with_secret = dir.path().join("with-secret.snap");
    let out = a.must(&[
        "operator",
        "snapshot",
        "save",
        with_secret.to_str().unwrap(),
    ]);
    assert!(out.contains("3 jobs") && out.contains("1 secrets"), "{out}");
    a.must(&["secret", "rm", "db"]);
    let snap = dir.path().join("backup.snap");
    let out = a.must(&["operator", "snapshot", "save", snap.to_str().unwrap()]);
    assert!(out.contains("3 jobs") && out.contains("0 secrets"), "{out}");
    let h = a.json(&["operator", "snapshot", "inspect", snap.to_str().unwrap()]);
    assert_eq!(
        (h["jobs"].as_u64(), h["format"].as_str()),
        (Some(3), Some("drover-snapshot")),
        "{h}"
    );

    // The state of A's scheduler from its data dir alone, once it is
    // stopped, as for a cluster whose majority is gone for good.
    let mut a = a;
    drop(a.scheduler.take());
    let recovered = dir.path().join("recovered.snap");
    let out = std::process::Command::new(bin_dir().join("drover-scheduler"))
        .args(["recover", "--data-dir"])
        .arg(a.dir.path().join("scheduler"))
        .arg("--out")
        .arg(&recovered)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "recover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h2 = a.json(&[
        "operator",
        "snapshot",
        "inspect",
        recovered.to_str().unwrap(),
    ]);
    assert_eq!(
        (h2["jobs"].as_u64(), h2["secrets"].as_u64()),
        (Some(3), Some(0)),
        "{h2}"
    );
    // A is gone.
    drop(a);

    let b = Cluster::start("snap-b");
    let no_jobs = |b: &Cluster| b.json(&["job", "ls"]).as_array().unwrap().is_empty();
    // B has a secrets key of its own: A's sealed secret could not be
    // opened there, and the restore says so and changes nothing.
    let out = b.drover(&[
        "operator",
        "snapshot",
        "restore",
        with_secret.to_str().unwrap(),
    ]);
    assert!(!out.ok(), "a secret sealed with another key is refused");
    assert!(out.stderr.contains("sealed with key"), "{}", out.stderr);
    assert!(no_jobs(&b));
    // A damaged file is refused whole.
    let mut bytes = std::fs::read(&snap).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    let damaged = dir.path().join("damaged.snap");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = b.drover(&["operator", "snapshot", "restore", damaged.to_str().unwrap()]);
    assert!(
        !out.ok() && out.stderr.contains("corrupt"),
        "{}",
        out.stderr
    );
    assert!(no_jobs(&b));

    // Every job and version back, running on B's node.
    let out = b.must(&["operator", "snapshot", "restore", snap.to_str().unwrap()]);
    assert!(out.contains("restored 3 jobs"), "{out}");
    assert_eq!(versions(&b, &jobs), before);
    wait_for(
        "the restored jobs to run on B",
        Duration::from_secs(60),
        || jobs.iter().all(|j| running(&b, j)).then_some(()),
    );
    let allocs = |b: &Cluster| {
        let v = b.json(&["alloc", "ls"]);
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let placed = allocs(&b);
    assert_eq!(placed.len(), 3, "{placed:?}");

    // The recovered copy holds the same desired state: restoring it over
    // B keeps every replica running (their specs are the same).
    let out = b.must(&[
        "operator",
        "snapshot",
        "restore",
        recovered.to_str().unwrap(),
    ]);
    assert!(out.contains("0 replicas replaced"), "{out}");
    assert_eq!(versions(&b, &jobs), before);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(allocs(&b), placed, "no replica was replaced");
}
