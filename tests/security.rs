//! Nobody gets in who does not belong (issue 11), against a real scheduler
//! and agent over real TLS: plaintext and foreign certificates are refused
//! at every port, a node certificate can neither call the client API nor
//! speak for another node, a forged join token gets nothing, and joining
//! with a real one gives a node its certificate.

use drover_e2e::{client_tls, pki_dir_for, Cluster};
use drover_proto::pb;
use drover_proto::pki::{ca::Ca, tls, Identity, AGENT_NAME, SCHEDULER_NAME};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

fn endpoint(addr: &str) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
}

async fn dial(addr: &str, t: &tls::ClientTls) -> Result<Channel, String> {
    t.connect(&endpoint(addr))
        .await
        .map_err(|e| drover_proto::pki::join::source_chain(&e))
}

/// A client presenting `id`'s certificate from the cluster's own CA.
fn as_identity(c: &Cluster, id: Identity, server: &'static str) -> tls::ClientTls {
    let ca = Ca::load(&pki_dir_for(&c.addr).unwrap()).unwrap();
    let cred = ca.issue(&id, Duration::from_secs(600)).unwrap();
    tls::ClientTls::new(
        tls::client_config(&ca.cert_pem, Some(&cred)).unwrap(),
        server,
    )
}

/// Runs a one-replica job `name` of the toolbox image running `command`
/// (a shell line), with `extra` spec lines, and waits for it.
fn run_toolbox(c: &Cluster, name: &str, command: &str, extra: &str) -> std::path::PathBuf {
    let spec = c.spec(
        name,
        &format!(
            "name: {name}\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sh, -c, '{command}']\n\
             resources: {{cpu: 10m, memory: 16Mi}}\nstop_grace_period: 1s\n{extra}",
            drover_e2e::images().display()
        ),
    );
    let run = c.drover(&["job", "run", spec.to_str().unwrap()]);
    assert!(run.ok(), "job run {name}: {}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("all 1 replica(s) of version 1 running"),
        "{}",
        run.stdout
    );
    spec
}

async fn list_jobs(ch: Channel) -> Result<pb::ListJobsResponse, tonic::Status> {
    pb::drover_client::DroverClient::new(ch)
        .list_jobs(pb::ListJobsRequest { read: None })
        .await
        .map(|r| r.into_inner())
}

#[test]
fn only_certificates_of_the_cluster_ca_get_in_and_each_only_where_it_belongs() {
    if !drover_e2e::require_root(
        "only_certificates_of_the_cluster_ca_get_in_and_each_only_where_it_belongs",
    ) {
        return;
    }
    let c = Cluster::start("sec-node");
    let agent_addr = format!("127.0.0.1:{}", c.agent_port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The admin credential works.
        let ch = dial(&c.addr, &client_tls(&c.addr)).await.unwrap();
        list_jobs(ch).await.unwrap();

        // Plaintext: the handshake never completes, on either port.
        for addr in [&c.addr, &agent_addr] {
            let plain = dial(addr, &tls::ClientTls::Plain).await;
            let r = match plain {
                Ok(ch) => list_jobs(ch).await.map(|_| ()).map_err(|s| s.to_string()),
                Err(e) => Err(e),
            };
            assert!(r.is_err(), "plaintext to {addr} was served");
        }

        // A certificate from another CA fails the handshake.
        let other = Ca::generate("other").unwrap();
        let cred = other
            .issue(&Identity::Client("admin".into()), Duration::from_secs(600))
            .unwrap();
        let foreign = tls::ClientTls::new(
            tls::client_config(
                &std::fs::read_to_string(pki_dir_for(&c.addr).unwrap().join("ca.pem")).unwrap(),
                Some(&cred),
            )
            .unwrap(),
            SCHEDULER_NAME,
        );
        let r = match dial(&c.addr, &foreign).await {
            Ok(ch) => list_jobs(ch).await.map(|_| ()).map_err(|s| s.to_string()),
            Err(e) => Err(e),
        };
        assert!(r.is_err(), "a certificate of another CA was served");

        // No client certificate at all: refused before any work, saying why.
        let ca_pem = std::fs::read_to_string(pki_dir_for(&c.addr).unwrap().join("ca.pem")).unwrap();
        let anonymous =
            tls::ClientTls::new(tls::client_config(&ca_pem, None).unwrap(), SCHEDULER_NAME);
        let e = list_jobs(dial(&c.addr, &anonymous).await.unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
        assert!(
            e.message().contains("needs a client certificate"),
            "{}",
            e.message()
        );

        // A node certificate cannot use the client API...
        let node = as_identity(&c, Identity::Node("sec-node".into()), SCHEDULER_NAME);
        let ch = dial(&c.addr, &node).await.unwrap();
        let e = pb::drover_client::DroverClient::new(ch.clone())
            .submit_job(pb::SubmitJobRequest {
                spec_json: r#"{"name":"x","image":"oci:/x:v1"}"#.into(),
                request_id: "sec-1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert!(
            e.message().contains("node sec-node may not call"),
            "{}",
            e.message()
        );
        // ...nor speak for another node, nor watch another node's allocations.
        let mut nodes = pb::node_service_client::NodeServiceClient::new(ch);
        let e = nodes
            .heartbeat(pb::HeartbeatRequest {
                name: "someone-else".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert!(
            e.message().contains("may not speak for node someone-else"),
            "{}",
            e.message()
        );
        let e = nodes
            .watch(pb::WatchRequest {
                name: "someone-else".into(),
                deltas: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        let e = nodes
            .report(pb::ReportRequest {
                node: "someone-else".into(),
                allocations: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        // It may heartbeat as itself.
        nodes
            .heartbeat(pb::HeartbeatRequest {
                name: "sec-node".into(),
                ..Default::default()
            })
            .await
            .unwrap();

        // A node the cluster does not know cannot renew its certificate
        // (a removed node's runs out).
        let stranger = Identity::Node("stranger".into());
        let ch = dial(&c.addr, &as_identity(&c, stranger.clone(), SCHEDULER_NAME))
            .await
            .unwrap();
        let e = drover_proto::pki::renew::renew_over(ch, &stranger)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not part of the cluster"), "{e}");

        // A client certificate cannot call Raft.
        let ch = dial(&c.addr, &client_tls(&c.addr)).await.unwrap();
        let e = pb::raft_service_client::RaftServiceClient::new(ch)
            .vote(pb::RaftPayload::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");

        // The agent's API: a node certificate is refused, a client's served.
        let node_to_agent = as_identity(&c, Identity::Node("intruder".into()), AGENT_NAME);
        let ch = dial(&agent_addr, &node_to_agent).await.unwrap();
        let e = pb::agent_api_client::AgentApiClient::new(ch)
            .usage(pb::UsageRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        // A scheduler's name is not the agent's: the client refuses to talk
        // to an agent presenting a certificate for another role.
        let wrong_name = client_tls(&c.addr);
        let r = match dial(&agent_addr, &wrong_name).await {
            Ok(ch) => pb::agent_api_client::AgentApiClient::new(ch)
                .usage(pb::UsageRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
            Err(e) => Err(e),
        };
        assert!(r.is_err(), "an agent was trusted as a scheduler");
    });
}

#[test]
fn joining_needs_a_token_of_this_cluster_and_gives_the_node_its_certificate() {
    if !drover_e2e::require_root(
        "joining_needs_a_token_of_this_cluster_and_gives_the_node_its_certificate",
    ) {
        return;
    }
    let c = Cluster::start("sec-join");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = drover_e2e::join_token(&c.addr);
    rt.block_on(async {
        // Forged: a longer life breaks the signature.
        let parts: Vec<&str> = token.split('-').collect();
        let forged = format!("DRV1-agent-{}-{}-{}", u64::MAX / 4, parts[3], parts[4]);
        let e = join_refused(&c.addr, &forged, "n2").await;
        assert!(e.contains("signature is wrong"), "{e}");
        // Another cluster's token: the joiner stops at the handshake (the
        // CA is not the one its token pins), before sending it.
        let other = Ca::generate("other").unwrap();
        let theirs = drover_proto::pki::token::JoinToken::create(
            &other,
            drover_proto::pki::token::Role::Agent,
            Duration::from_secs(60),
        );
        let e = join_refused(&c.addr, &theirs, "n2").await;
        assert!(e.contains("not the one the join token names"), "{e}");
        // An agent token does not make a scheduler.
        let e = drover_proto::pki::join::join(&c.addr, &token, "", 7)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("node_name"), "{e}");
        // The real one: a certificate naming the node, from the cluster's CA.
        let j = drover_proto::pki::join::join(&c.addr, &token, "n2", 0)
            .await
            .unwrap();
        assert_eq!(
            j.credential.identity().unwrap(),
            Identity::Node("n2".into())
        );
        assert!(j.ca_key_pem.is_none(), "an agent never gets the CA key");
        // Not under the name of a node that is up: the token would let its
        // holder speak for that node.
        let e = join_refused(&c.addr, &token, "sec-join").await;
        assert!(e.contains("is a node that is up"), "{e}");
    });
    // The CLI says which credential is missing.
    let r = drover_e2e::drover_command(&c.addr)
        .env_remove("DROVER_PKI_DIR")
        .env("DROVER_CACERT", "/nonexistent/ca.pem")
        .args(["job", "ls"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    // A plaintext CLI against this TLS scheduler is told so, not only
    // "transport error".
    let r = drover_e2e::drover_command(&c.addr)
        .args(["--insecure-plaintext", "job", "ls"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("drop --insecure-plaintext"), "{err}");
}

fn not_after(pem_path: &std::path::Path) -> std::time::SystemTime {
    let pem = std::fs::read_to_string(pem_path).unwrap();
    drover_proto::pki::ca::not_after(&drover_proto::pki::ca::pem_to_der(&pem).unwrap()).unwrap()
}

#[test]
fn certificates_are_renewed_before_they_end_and_an_expired_one_is_refused() {
    if !drover_e2e::require_root(
        "certificates_are_renewed_before_they_end_and_an_expired_one_is_refused",
    ) {
        return;
    }
    // Certificates of 30 s: renewed about 20 s after they are issued.
    let mut c = Cluster::start_with_scheduler_args("sec-renew", &["--cert-ttl", "30s"]);
    let node_pem = c.agent_state_dir().join("pki/node.pem");
    let own_pem = c.dir.path().join("scheduler/pki/scheduler.pem");
    let (node_end, own_end) = (not_after(&node_pem), not_after(&own_pem));
    let first_node = std::fs::read_to_string(&node_pem).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // An expired certificate of the cluster's own CA is refused.
    let ca = Ca::load(&pki_dir_for(&c.addr).unwrap()).unwrap();
    let short = ca
        .issue(&Identity::Client("admin".into()), Duration::from_secs(1))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let expired = tls::ClientTls::new(
        tls::client_config(&ca.cert_pem, Some(&short)).unwrap(),
        SCHEDULER_NAME,
    );
    let r = rt.block_on(async {
        match dial(&c.addr, &expired).await {
            Ok(ch) => list_jobs(ch).await.map(|_| ()).map_err(|s| s.to_string()),
            Err(e) => Err(e),
        }
    });
    assert!(r.is_err(), "an expired certificate was served");

    // Both the node's and the replica's certificates are replaced before
    // the first ones end.
    drover_e2e::wait_for(
        "both certificates to be renewed",
        Duration::from_secs(40),
        || (not_after(&node_pem) > node_end && not_after(&own_pem) > own_end).then_some(()),
    );
    let renewed =
        drover_proto::pki::Credential::load(&c.agent_state_dir().join("pki"), "node").unwrap();
    assert_ne!(renewed.cert_pem, first_node);
    assert_eq!(
        renewed.identity().unwrap(),
        Identity::Node("sec-renew".into())
    );

    // Once the first certificates have ended, new connections in both
    // directions use the renewed ones: restart the scheduler, and the agent
    // (which kept running) reconnects to it and stays ready.
    let wait = node_end
        .max(own_end)
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    std::thread::sleep(wait + Duration::from_secs(1));
    c.scheduler.as_ref().unwrap().signal("KILL");
    c.scheduler.take();
    c.start_scheduler();
    let node_tls = tls::ClientTls::new(
        tls::client_config(&ca.cert_pem, Some(&renewed)).unwrap(),
        SCHEDULER_NAME,
    );
    rt.block_on(async {
        let ch = dial(&c.addr, &node_tls).await.unwrap();
        pb::node_service_client::NodeServiceClient::new(ch)
            .heartbeat(pb::HeartbeatRequest {
                name: "sec-renew".into(),
                ..Default::default()
            })
            .await
            .expect("the renewed node certificate is accepted");
    });
    // The agent's own new connection (watch) brings it a new replica.
    run_toolbox(&c, "renewed", "exec sleep 1000", "");
    c.drover(&["job", "stop", "renewed"]);
}

/// Whether a TCP connection from inside the network namespace of `pid` to
/// `ip:port` opens within 3 s.
fn connects_from(pid: u64, ip: &str, port: u16) -> bool {
    std::process::Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "--",
            "timeout",
            "3",
            "bash",
            "-c",
        ])
        .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
        .status()
        .unwrap()
        .success()
}

#[test]
fn a_container_cannot_reach_the_control_plane_unless_its_job_asks() {
    if !drover_e2e::require_root("a_container_cannot_reach_the_control_plane_unless_its_job_asks") {
        return;
    }
    let c = Cluster::start_listening_everywhere("sec-guard");
    // Something else on the host, open to containers: proves the probe works.
    let other = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in other.incoming() {});
    let sleeper = |name: &str, extra: &str| {
        run_toolbox(&c, name, "exec sleep 1000", extra);
        let job = c.json(&["job", "status", name]);
        let a = &job["allocations"][0];
        let ip = a["ip"].as_str().unwrap().to_string();
        let gateway = format!("{}.1", ip.rsplit_once('.').unwrap().0);
        (a["pid"].as_u64().unwrap(), gateway)
    };

    let (pid, gw) = sleeper("boxed", "");
    assert!(
        connects_from(pid, &gw, other_port),
        "the host is unreachable at all"
    );
    assert!(
        !connects_from(pid, &gw, c.agent_port),
        "a container reached the agent's API"
    );
    assert!(
        !connects_from(pid, &gw, c.scheduler_port()),
        "a container reached the scheduler"
    );

    let (pid, gw) = sleeper("trusted", "security: {control_plane_access: true}\n");
    assert!(
        connects_from(pid, &gw, c.scheduler_port()),
        "a job that asked could not reach the scheduler"
    );
    assert!(connects_from(pid, &gw, c.agent_port));
    c.drover(&["job", "stop", "boxed"]);
    c.drover(&["job", "stop", "trusted"]);
}

#[test]
fn a_jobs_seccomp_setting_reaches_its_replicas() {
    if !drover_e2e::require_root("a_jobs_seccomp_setting_reaches_its_replicas") {
        return;
    }
    let c = Cluster::start("sec-seccomp");
    let exec = |job: &str, script: &str| {
        let id = c.json(&["job", "status", job])["allocations"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let out = c.drover(&["exec", &id, "--", "/bin/sh", "-c", script]);
        format!("{}{}", out.stdout, out.stderr)
    };
    let status = "grep ^Seccomp: /proc/self/status; mkdir /tmp/d && echo made";
    run_toolbox(&c, "filtered", "exec sleep 1000", "");
    run_toolbox(
        &c,
        "unconfined",
        "exec sleep 1000",
        "security: {seccomp: unconfined}\n",
    );
    // A profile of the job's own, in Docker's format: mkdir fails with EACCES.
    run_toolbox(
        &c,
        "own-profile",
        "exec sleep 1000",
        "security:\n  seccomp_profile:\n    defaultAction: SCMP_ACT_ALLOW\n    syscalls:\n      \
         - {names: [mkdir, mkdirat], action: SCMP_ACT_ERRNO, errnoRet: 13}\n",
    );
    let out = exec("filtered", status);
    assert!(out.contains("Seccomp:\t2") && out.contains("made"), "{out}");
    let out = exec("unconfined", status);
    assert!(out.contains("Seccomp:\t0") && out.contains("made"), "{out}");
    let out = exec("own-profile", status);
    assert!(
        out.contains("Seccomp:\t2") && out.contains("Permission denied") && !out.contains("made"),
        "{out}"
    );
    // (What each profile allows and denies call by call, beside runc, is
    // agent/tests/runtime_trust.rs.)
    for job in ["filtered", "unconfined", "own-profile"] {
        assert!(c.drover(&["job", "stop", job]).ok());
    }
}

#[test]
fn a_job_in_a_user_namespace_runs_as_an_unprivileged_host_id() {
    if !drover_e2e::require_root("a_job_in_a_user_namespace_runs_as_an_unprivileged_host_id") {
        return;
    }
    let c = Cluster::start("sec-userns");
    // A user namespace's root must pass through the state dir's parents.
    std::fs::set_permissions(
        c.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    run_toolbox(
        &c,
        "mapped",
        "echo hi > /made; exec sleep 1000",
        "security: {user_namespace: true}\n",
    );
    let job = c.json(&["job", "status", "mapped"]);
    let a = &job["allocations"][0];
    let (id, pid) = (
        a["id"].as_str().unwrap().to_string(),
        a["pid"].as_u64().unwrap(),
    );
    let out = c.drover(&[
        "exec",
        &id,
        "--",
        "/bin/sh",
        "-c",
        "cat /proc/self/uid_map; id -u; cat /made",
    ]);
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.len(), 5, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        [words[0], words[2], words[3], words[4]],
        ["0", "65536", "0", "hi"]
    );
    // A range of its own from the host's pool: from 2^30, 65,536 apart.
    let start: u64 = words[1].parse().unwrap();
    assert!(
        start >= 1 << 30 && (start - (1 << 30)).is_multiple_of(65536),
        "{start}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.ends_with(&start.to_string()), "{uid}");
    // The host's registry names this agent's state dir for the range.
    let owner = std::fs::canonicalize(c.agent_state_dir()).unwrap();
    let held = || {
        std::fs::read_dir("/run/drover/userns")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path())
                    .is_ok_and(|t| t.starts_with(&format!("{}\n", owner.display())))
            })
            .count()
    };
    assert_eq!(held(), 1);

    // The README's hardened example: a user, no capabilities, a read-only
    // root and a profile of its own, in its own range.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs/hardened.yaml"),
    )
    .unwrap()
    .replace(
        "oci:examples/images/out/toolbox:latest",
        &format!("oci:{}/toolbox:latest", drover_e2e::images().display()),
    );
    let spec = c.spec("hardened", &example);
    let run = c.drover(&["job", "run", spec.to_str().unwrap()]);
    assert!(run.ok(), "{}{}", run.stdout, run.stderr);
    let id = c.json(&["job", "status", "hardened"])["allocations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = c.drover(&[
        "exec",
        &id,
        "--",
        "/bin/sh",
        "-c",
        "cat /proc/self/uid_map; id -u; grep CapEff /proc/self/status; mkdir /tmp/x",
    ]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !text.contains(&format!(" {start} ")),
        "a range of its own: {text}"
    );
    assert!(
        text.contains("1000") && text.contains("CapEff:\t0000000000000000"),
        "{text}"
    );
    assert!(text.contains("Permission denied"), "{text}");
    assert!(c.drover(&["job", "stop", "hardened"]).ok());
    assert!(c.drover(&["job", "stop", "mapped"]).ok());
    drover_e2e::wait_for(
        "the id ranges to be released",
        Duration::from_secs(20),
        || (held() == 0).then_some(()),
    );
}

/// Why a join with `token` under `name` is refused.
async fn join_refused(addr: &str, token: &str, name: &str) -> String {
    drover_proto::pki::join::join(addr, token, name, 0)
        .await
        .err()
        .expect("the join is refused")
        .to_string()
}

/// `ListJobs` over `ch` presenting ACL token `token`.
async fn list_jobs_as(ch: Channel, token: &str) -> Result<pb::ListJobsResponse, tonic::Status> {
    let mut req = tonic::Request::new(pb::ListJobsRequest { read: None });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    pb::drover_client::DroverClient::new(ch)
        .list_jobs(req)
        .await
        .map(|r| r.into_inner())
}

#[test]
fn a_burst_from_one_token_is_limited_while_another_token_is_served() {
    if !drover_e2e::require_root("a_burst_from_one_token_is_limited_while_another_token_is_served")
    {
        return;
    }
    let (rate, burst) = (100u64, 200u64);
    let c = Cluster::start_with_scheduler_args(
        "sec-limit",
        &[
            "--rate-limit",
            &rate.to_string(),
            "--rate-burst",
            &burst.to_string(),
        ],
    );
    let b = c.drover(&["acl", "bootstrap"]);
    assert!(b.ok(), "{}", b.stderr);
    let admin = b.stdout.trim().to_string();
    let pki = pki_dir_for(&c.addr).unwrap();
    std::fs::write(pki.join("token"), &admin).unwrap();
    let token = |name: &str| {
        let r = c.drover(&["acl", "token", "create", "--name", name, "--role", "read"]);
        assert!(r.ok(), "{}", r.stderr);
        r.stdout.trim().to_string()
    };
    let (hog, other) = (token("hog"), token("other"));
    // Both over the same client certificate: the token is the identity.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (served, limited, others_ok, secs) = rt.block_on(async {
        let ch = dial(&c.addr, &client_tls(&c.addr)).await.unwrap();
        let start = std::time::Instant::now();
        // Another token, calling all through the burst.
        let (och, other) = (ch.clone(), other.clone());
        let others = tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..20 {
                list_jobs_as(och.clone(), &other)
                    .await
                    .expect("another token is served");
                ok += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ok
        });
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (ch, hog) = (ch.clone(), hog.clone());
            tasks.push(tokio::spawn(async move {
                let (mut served, mut limited) = (0u64, 0u64);
                for _ in 0..200 {
                    match list_jobs_as(ch.clone(), &hog).await {
                        Ok(_) => served += 1,
                        Err(s) => {
                            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s}");
                            assert!(s.metadata().get("retry-after-ms").is_some());
                            limited += 1;
                        }
                    }
                }
                (served, limited)
            }));
        }
        let (mut served, mut limited) = (0, 0);
        for t in tasks {
            let (s, l) = t.await.unwrap();
            served += s;
            limited += l;
        }
        let secs = start.elapsed().as_secs_f64();
        (served, limited, others.await.unwrap(), secs)
    });
    assert_eq!(served + limited, 10_000);
    let allowed = burst + (rate as f64 * secs).ceil() as u64 + 1;
    assert!(
        served <= allowed,
        "{served} of 10000 served in {secs:.1}s: more than the burst and the rate allow ({allowed})"
    );
    assert!(limited > 0);
    assert_eq!(others_ok, 20);

    // The CLI, with the limited token, backs off, says so, and gets its
    // answer. The hog's bucket is kept empty meanwhile, so the CLI's calls
    // are limited (one that catches a token the moment it comes free gets
    // through, so a few runs are made).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let (addr, hog, stop) = (c.addr.clone(), hog.clone(), stop.clone());
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let ch = dial(&addr, &client_tls(&addr)).await.unwrap();
                    let mut tasks = Vec::new();
                    for _ in 0..8 {
                        let (ch, stop, hog) = (ch.clone(), stop.clone(), hog.clone());
                        tasks.push(tokio::spawn(async move {
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                let _ = list_jobs_as(ch.clone(), &hog).await;
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut backed_off = 0;
    for _ in 0..5 {
        let (ok, _, err) = drover_as(&c, &hog, &["job", "ls"]);
        assert!(ok, "the CLI gave up: {err}");
        if err.contains("rate-limiting this credential; retrying in") {
            backed_off += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hammer.join().unwrap();
    assert!(
        backed_off > 0,
        "the CLI was never limited, or never said so"
    );

    // A request over the size limit is refused and changes nothing.
    let big = format!(
        r#"{{"name":"big","image":"oci:/x:v1","env":{{"X":"{}"}}}}"#,
        "x".repeat(5 << 20)
    );
    let e = rt.block_on(async {
        let ch = dial(&c.addr, &client_tls(&c.addr)).await.unwrap();
        drover_e2e::api(ch, &c.addr)
            .max_encoding_message_size(usize::MAX)
            .submit_job(pb::SubmitJobRequest {
                spec_json: big,
                request_id: "big-1".into(),
            })
            .await
            .unwrap_err()
    });
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e}");
    let jobs = c.json(&["job", "ls"]);
    assert_eq!(jobs.as_array().map(|a| a.len()), Some(0), "{jobs}");
}

/// `drover ARGS` presenting ACL token `token`.
fn drover_as(c: &Cluster, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = drover_e2e::drover_command(&c.addr)
        .env("DROVER_TOKEN", token)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tokens_bound_what_each_caller_may_do() {
    if !drover_e2e::require_root("tokens_bound_what_each_caller_may_do") {
        return;
    }
    let c = Cluster::start("sec-acl");
    let web = run_toolbox(&c, "web-a", "echo hello from web-a; exec sleep 1000", "");

    // Before the bootstrap the certificate is enough; after it, not.
    let b = c.drover(&["acl", "bootstrap"]);
    assert!(b.ok(), "{}", b.stderr);
    let admin = b.stdout.trim().to_string();
    assert!(admin.starts_with("DRVT-"), "{admin}");
    let again = drover_as(&c, &admin, &["acl", "bootstrap"]);
    assert!(
        !again.0 && again.2.contains("bootstrapped already"),
        "{}",
        again.2
    );
    let (ok, _, err) = drover_as(&c, "", &["job", "ls"]);
    assert!(!ok && err.contains("requires an ACL token"), "{err}");
    let forged = format!("{}{}", &admin[..admin.len() - 4], "0000");
    let (ok, _, err) = drover_as(&c, &forged, &["job", "ls"]);
    assert!(!ok && err.contains("is not known"), "{err}");
    assert!(
        !err.contains(&forged[22..]),
        "a refusal repeated the secret: {err}"
    );
    // The harness's own calls use the admin token from here on.
    std::fs::write(pki_dir_for(&c.addr).unwrap().join("token"), &admin).unwrap();

    let create = |args: &[&str]| {
        let mut a = vec!["acl", "token", "create"];
        a.extend_from_slice(args);
        let (ok, out, err) = drover_as(&c, &admin, &a);
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    let reader = create(&["--name", "reader", "--role", "read"]);
    let team = create(&["--name", "team", "--role", "operate", "--job", "team-"]);
    let logs = create(&["--name", "oncall", "--role", "read", "--logs"]);

    // read: inspects, cannot change, cannot read output.
    let (ok, out, _) = drover_as(&c, &reader, &["job", "ls"]);
    assert!(ok && out.contains("web-a"), "{out}");
    let (ok, _, err) = drover_as(&c, &reader, &["job", "run", web.to_str().unwrap()]);
    assert!(
        !ok && err.contains("(reader, role read) may not submit job \"web-a\""),
        "{err}"
    );
    let (ok, _, err) = drover_as(&c, &reader, &["logs", "web-a"]);
    assert!(
        !ok && err.contains("may not read the output of job \"web-a\""),
        "{err}"
    );
    let alloc = c.json(&["job", "status", "web-a"])["allocations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, _, err) = drover_as(&c, &reader, &["exec", &alloc, "--", "true"]);
    assert!(
        !ok && err.contains("may not run commands in replicas of job \"web-a\""),
        "{err}"
    );
    // The admin token may, through the ticket the scheduler signs.
    let (ok, out, err) = drover_as(&c, &admin, &["exec", &alloc, "--", "echo", "inside"]);
    assert!(ok && out.contains("inside"), "{out}{err}");

    // A token fenced to team-* sees and touches nothing else.
    let (ok, out, _) = drover_as(&c, &team, &["job", "ls", "-o", "json"]);
    assert!(ok && !out.contains("web-a"), "{out}");
    let (ok, _, err) = drover_as(&c, &team, &["job", "stop", "web-a"]);
    assert!(!ok && err.contains("may not stop job \"web-a\""), "{err}");
    // Nor may it reach past a container's walls, even for its own jobs,
    // nor weaken the seccomp filter.
    for (name, extra, refused) in [
        ("team-host", "network: host\n", "network: host"),
        (
            "team-unconfined",
            "security: {seccomp: unconfined}\n",
            "security.seccomp",
        ),
    ] {
        let spec = c.spec(
            name,
            &format!(
                "name: {name}\nimage: oci:{}/toolbox:latest\n{extra}",
                drover_e2e::images().display()
            ),
        );
        let (ok, _, err) = drover_as(&c, &team, &["job", "run", spec.to_str().unwrap()]);
        assert!(
            !ok && err.contains(&format!("may not submit job {name:?} with {refused}")),
            "{err}"
        );
    }
    let (ok, _, err) = drover_as(&c, &team, &["node", "drain", "sec-acl"]);
    assert!(!ok && err.contains("permission denied"), "{err}");
    let (ok, out, _) = drover_as(&c, &team, &["acl", "whoami"]);
    assert!(
        ok && out.contains("role operate on jobs named team-*"),
        "{out}"
    );
    let (ok, _, err) = drover_as(&c, &team, &["acl", "token", "ls"]);
    assert!(!ok && err.contains("may not list ACL tokens"), "{err}");

    // A context in the CLI's config file stands in for the environment.
    let cfg = c.dir.path().join("drover-config.yaml");
    let plain = |args: &[&str]| {
        let out = std::process::Command::new(drover_e2e::bin_dir().join("drover"))
            .env_remove("DROVER_ADDR")
            .env_remove("DROVER_PKI_DIR")
            .env_remove("DROVER_TOKEN")
            .env("DROVER_CONFIG", &cfg)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let pki = pki_dir_for(&c.addr).unwrap();
    let (ok, _, err) = plain(&[
        "config",
        "set-context",
        "team",
        "--addr",
        &c.addr,
        "--ca-cert",
        pki.join("ca.pem").to_str().unwrap(),
        "--cert",
        pki.join("admin.pem").to_str().unwrap(),
        "--key",
        pki.join("admin.key").to_str().unwrap(),
        "--token",
        &team,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = plain(&["acl", "whoami"]);
    assert!(
        ok && out.contains("role operate on jobs named team-*"),
        "{out}{err}"
    );
    let (ok, _, err) = plain(&["--context", "prod", "job", "ls"]);
    assert!(
        !ok && err.contains("no context \"prod\"") && err.contains("there are: team"),
        "{err}"
    );

    // logs: the scheduler's ticket opens the agent's door for that call.
    let (ok, out, err) = drover_as(&c, &logs, &["logs", "web-a"]);
    assert!(ok && out.contains("hello from web-a"), "{out}{err}");

    // Revoked: refused from then on.
    let accessor = &reader[5..21];
    let (ok, _, err) = drover_as(&c, &admin, &["acl", "token", "revoke", accessor]);
    assert!(ok, "{err}");
    let (ok, _, err) = drover_as(&c, &reader, &["job", "ls"]);
    assert!(!ok && err.contains("is not known"), "{err}");

    c.drover(&["job", "stop", "web-a"]);
}

#[test]
fn an_agent_serves_a_call_only_with_a_ticket_for_that_call_and_that_client() {
    if !drover_e2e::require_root(
        "an_agent_serves_a_call_only_with_a_ticket_for_that_call_and_that_client",
    ) {
        return;
    }
    let c = Cluster::start("sec-ticket");
    run_toolbox(&c, "web-a", "exec sleep 1000", "");
    let alloc = drover_e2e::wait_for("web-a to run", Duration::from_secs(20), || {
        let a = &c.json(&["job", "status", "web-a"])["allocations"][0];
        (a["state"] == "running").then(|| a["id"].as_str().map(str::to_string))?
    });
    // The agent takes nothing without a ticket, even from a client
    // certificate, and a ticket opens only its own call.
    let agent_addr = format!("127.0.0.1:{}", c.agent_port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tls = tls::ClientTls::new(
            drover_proto::pki::tls::TlsMaterial::load(&pki_dir_for(&c.addr).unwrap(), "admin")
                .unwrap()
                .client_config()
                .unwrap(),
            AGENT_NAME,
        );
        let ch = dial(&agent_addr, &tls).await.unwrap();
        let mut agent = pb::agent_api_client::AgentApiClient::new(ch);
        let e = agent
            .usage(pb::UsageRequest {
                alloc_id: alloc.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
        assert!(e.message().contains("no ticket"), "{}", e.message());
        // A real ticket for usage, from the scheduler...
        let mut api = pb::drover_client::DroverClient::new(
            dial(&c.addr, &client_tls(&c.addr)).await.unwrap(),
        );
        let ask = tonic::Request::new(pb::AgentTicketRequest {
            alloc_id: alloc.clone(),
            action: "usage".into(),
        });
        let t = api.agent_ticket(ask).await.unwrap().into_inner();
        fn with<M>(ticket: &str, m: M) -> tonic::Request<M> {
            let mut r = tonic::Request::new(m);
            r.metadata_mut()
                .insert(drover_proto::pki::ticket::METADATA, ticket.parse().unwrap());
            r
        }
        agent
            .usage(with(
                &t.ticket,
                pb::UsageRequest {
                    alloc_id: alloc.clone(),
                },
            ))
            .await
            .expect("a ticket for usage opens usage");
        // The ticket is the admin client's: another client cannot use it.
        let ch = dial(
            &agent_addr,
            &as_identity(&c, Identity::Client("eve".into()), AGENT_NAME),
        )
        .await
        .unwrap();
        let e = pb::agent_api_client::AgentApiClient::new(ch)
            .usage(with(
                &t.ticket,
                pb::UsageRequest {
                    alloc_id: alloc.clone(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        // ...does not open logs.
        let e = agent
            .logs(with(
                &t.ticket,
                pb::LogsRequest {
                    alloc_id: alloc.clone(),
                    follow: false,
                    tail: -1,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    });
    c.drover(&["job", "stop", "web-a"]);
}

#[test]
fn rotating_the_ca_keeps_every_container_running_and_ends_trusting_only_the_new_one() {
    if !drover_e2e::require_root(
        "rotating_the_ca_keeps_every_container_running_and_ends_trusting_only_the_new_one",
    ) {
        return;
    }
    let mut c = Cluster::start("sec-rotate");
    run_toolbox(&c, "steady", "exec sleep 1000", "");
    let before = c.json(&["job", "status", "steady"])["allocations"][0].clone();
    let (alloc, pid) = (
        before["id"].as_str().unwrap().to_string(),
        before["pid"].as_u64().unwrap(),
    );
    let pki = pki_dir_for(&c.addr).unwrap();
    let old = Ca::load(&pki).unwrap();

    let r = c.drover(&[
        "cluster",
        "rotate-ca",
        "--min-phase",
        "3s",
        "--timeout",
        "3m",
    ]);
    assert!(r.ok(), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("CA rotation done"), "{}", r.stdout);

    // Nothing stopped: the same allocation, the same process.
    let after = c.json(&["job", "status", "steady"])["allocations"][0].clone();
    assert_eq!(after["id"].as_str(), Some(alloc.as_str()));
    assert_eq!(after["state"], "running");
    assert_eq!(after["pid"].as_u64(), Some(pid));
    assert!(drover_e2e::pid_alive(pid as u32));

    // Everyone holds the new CA's certificates and trusts it alone.
    let new = Ca::load(&pki).unwrap();
    assert_ne!(new.fingerprint(), old.fingerprint());
    use drover_proto::pki::ca::{bundle_id, issuer};
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(
        bundle_id(&read(pki.join("ca.pem"))),
        bundle_id(&new.cert_pem)
    );
    assert_eq!(
        issuer(&read(pki.join("scheduler.pem"))),
        Some(new.subject())
    );
    assert_eq!(issuer(&read(pki.join("admin.pem"))), Some(new.subject()));
    let node = c.agent_state_dir().join("pki");
    assert_eq!(issuer(&read(node.join("node.pem"))), Some(new.subject()));
    // The node drops the old CA at its next heartbeat after the end.
    drover_e2e::wait_for(
        "the node to trust the new CA alone",
        Duration::from_secs(10),
        || (bundle_id(&read(node.join("ca.pem"))) == bundle_id(&new.cert_pem)).then_some(()),
    );

    // A certificate of the old CA gets nowhere now.
    let stale = old
        .issue(&Identity::Client("admin".into()), Duration::from_secs(600))
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(async {
        let t = tls::ClientTls::new(
            tls::client_config(&old.cert_pem, Some(&stale)).unwrap(),
            SCHEDULER_NAME,
        );
        match dial(&c.addr, &t).await {
            Ok(ch) => list_jobs(ch).await.map(|_| ()).map_err(|s| s.to_string()),
            Err(e) => Err(e),
        }
    });
    assert!(r.is_err(), "the old CA is still trusted");

    // From their files alone (new handshakes both ways), a restarted agent
    // and scheduler find each other and the container is still there.
    c.agent.as_ref().unwrap().signal("TERM");
    c.agent.take();
    c.scheduler.as_ref().unwrap().signal("KILL");
    c.scheduler.take();
    c.start_scheduler();
    c.start_agent();
    // A new job: the agent's new watch brings it, over the new CA only.
    run_toolbox(&c, "after", "exec sleep 1000", "");
    let again = c.json(&["job", "status", "steady"])["allocations"][0].clone();
    assert_eq!(
        again["pid"].as_u64(),
        Some(pid),
        "the container was replaced"
    );
    c.drover(&["job", "stop", "steady"]);
    c.drover(&["job", "stop", "after"]);
}
