//! Helpers for Drover's end-to-end tests: they start the real binaries
//! (`drover-scheduler`, `drover-agent`, `drover`) as processes on real
//! sockets and run real containers, then assert on what a user would see.
//! `drover-bench` starts its daemons with the same helpers.
//!
//! The binaries come from the same target directory as the test; build the
//! workspace first (`cargo build --workspace`, as `.ci/run` does).

pub mod browser;
pub mod history;
pub mod netcluster;
pub mod vmcluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether this test can run here. Needs root (namespaces, cgroups, mounts).
/// Skipping prints why; under `CI=true` a skip is a failure.
pub fn require_root(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        return true;
    }
    skip_or_fail(test, "needs root for namespaces, cgroups and mounts");
    false
}

/// Says why `test` skips; under `CI=true` a skip is a failure.
pub fn skip_or_fail(test: &str, why: &str) {
    let why = format!("{test}: skipped: {why}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (CI=true: a skip is a failure)");
    }
    eprintln!("{why}");
}

/// The directory holding the workspace's binaries: `DROVER_BIN` if set
/// (e.g. `target/release` for a bench on VMs), else the caller's own
/// (`drover-bench`, beside them) or, for a test in `target/<profile>/deps`,
/// the one above it.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own binary path");
    let own = exe.parent().expect("binary dir").to_path_buf();
    let dir = if let Some(d) = std::env::var_os("DROVER_BIN").filter(|d| !d.is_empty()) {
        repo_root().join(d)
    } else if own.join("drover-scheduler").exists() {
        own
    } else {
        own.parent().expect("target dir").to_path_buf()
    };
    for b in ["drover", "drover-scheduler", "drover-agent"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: run `cargo build --workspace` before the end-to-end tests",
            dir.join(b).display()
        );
    }
    dir
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Builds the example images once (the script is idempotent) and returns the layout dir.
pub fn images() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let out = repo_root().join("examples/images/out");
        let st = Command::new("bash")
            .arg(repo_root().join("examples/images/build.sh"))
            .arg(&out)
            .status()
            .expect("run examples/images/build.sh");
        assert!(st.success(), "building the example images failed");
        out
    })
    .clone()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.into(),
            log,
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // Politely first: SIGINT makes an agent stop its containers
            // (SIGTERM would leave them running for the next agent).
            self.signal("INT");
            if self.wait(Duration::from_secs(15)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A scheduler and an agent, as separate processes, with their own state.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub node: String,
    pub scheduler: Option<Proc>,
    pub agent: Option<Proc>,
    scheduler_port: u16,
    pub agent_port: u16,
    /// The container address range (default: from `test_cidr`).
    cidr: Option<String>,
    /// Extra flags for every start of the scheduler.
    pub scheduler_args: Vec<String>,
    /// Where the scheduler and the agent listen (they are dialled at 127.0.0.1).
    listen_ip: &'static str,
}

impl Cluster {
    pub fn start(node: &str) -> Cluster {
        Cluster::start_inner(node, None, &[], "127.0.0.1")
    }

    /// A cluster whose scheduler runs with extra command-line flags.
    pub fn start_with_scheduler_args(node: &str, args: &[&str]) -> Cluster {
        Cluster::start_inner(node, None, args, "127.0.0.1")
    }

    /// A cluster whose scheduler and agent listen on every address of the
    /// host, as on a real node (containers could reach them by network).
    pub fn start_listening_everywhere(node: &str) -> Cluster {
        Cluster::start_inner(node, None, &[], "0.0.0.0")
    }

    /// A cluster whose nodes get their subnets from `cidr` (two clusters
    /// given one range hand out the same first /24, as two `drover dev`
    /// runs do).
    pub fn start_with_cidr(node: &str, cidr: &str) -> Cluster {
        Cluster::start_inner(node, Some(cidr.to_string()), &[], "127.0.0.1")
    }

    fn start_inner(
        node: &str,
        cidr: Option<String>,
        scheduler_args: &[&str],
        listen_ip: &'static str,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("drover-e2e")
            .tempdir()
            .unwrap();
        let scheduler_port = free_port();
        let agent_port = free_port();
        let mut c = Cluster {
            addr: format!("127.0.0.1:{scheduler_port}"),
            node: node.into(),
            dir,
            scheduler: None,
            agent: None,
            scheduler_port,
            agent_port,
            cidr,
            scheduler_args: scheduler_args.iter().map(|a| a.to_string()).collect(),
            listen_ip,
        };
        c.start_scheduler();
        c.start_agent();
        let name = node.to_string();
        // Generous: on 2 cores, ten clusters of one test file start at once.
        let registered = || {
            let out = c.drover(&["node", "ls", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            v.as_array()?
                .iter()
                .any(|n| n["name"] == name.as_str() && n["status"] == "ready")
                .then_some(())
        };
        let start = Instant::now();
        while registered().is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let log = |p: &Option<Proc>| p.as_ref().map(Proc::output).unwrap_or_default();
                let tail = |s: String| {
                    s.lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                panic!(
                    "timed out after 60s waiting for node {name} to register\n\
                     agent log (last lines):\n{}\nscheduler log (last lines):\n{}",
                    tail(log(&c.agent)),
                    tail(log(&c.scheduler))
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    pub fn start_scheduler(&mut self) {
        let data = self.dir.path().join("scheduler");
        let mut cmd = Command::new(bin_dir().join("drover-scheduler"));
        let listen = format!("{}:{}", self.listen_ip, self.scheduler_port);
        cmd.args(["--id", "1", "--listen", &listen, "--advertise", &self.addr])
            .arg("--data-dir")
            .arg(&data)
            .args(&self.scheduler_args);
        // Clusters of parallel tests share this host's routing: give each its own range.
        let cidr = self
            .cidr
            .clone()
            .unwrap_or_else(|| test_cidr(self.scheduler_port));
        cmd.env("DROVER_CLUSTER_CIDR", cidr);
        let log = self.dir.path().join("scheduler.log");
        register_pki(&self.addr, &data.join("pki"));
        self.scheduler = Some(Proc::spawn("drover-scheduler", &mut cmd, log));
        let addr = self.addr.clone();
        wait_for("the scheduler to serve", Duration::from_secs(20), || {
            let out = run_drover(&addr, &["job", "ls"]);
            out.ok().then_some(())
        });
    }

    pub fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    /// Starts the agent with extra command-line flags.
    pub fn start_agent_with(&mut self, extra: &[&str]) {
        let mut cmd = Command::new(bin_dir().join("drover-agent"));
        cmd.args([
            "run",
            "--name",
            &self.node,
            "--scheduler",
            &self.addr,
            "--listen",
            &format!("{}:{}", self.listen_ip, self.agent_port),
            "--advertise",
            &format!("127.0.0.1:{}", self.agent_port),
            "--heartbeat",
            "500ms",
            "--state-dir",
        ])
        .arg(self.dir.path().join("agent"))
        .args(extra);
        // The first start joins with a token; later ones have the certificate.
        if !self.dir.path().join("agent/pki/node.pem").exists() {
            cmd.env("DROVER_JOIN_TOKEN", join_token(&self.addr));
        }
        let log = self.dir.path().join("agent.log");
        self.agent = Some(Proc::spawn("drover-agent", &mut cmd, log));
    }

    pub fn agent_state_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    pub fn scheduler_port(&self) -> u16 {
        self.scheduler_port
    }

    /// Runs `drover` against this cluster.
    pub fn drover(&self, args: &[&str]) -> Run {
        run_drover(&self.addr, args)
    }

    /// Runs `drover` and parses its `-o json` output.
    /// Runs `drover` and insists it succeeds; its standard output.
    pub fn must(&self, args: &[&str]) -> String {
        let out = self.drover(args);
        assert!(
            out.ok(),
            "drover {args:?} failed: {}{}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.drover(&all);
        assert!(out.ok(), "drover {args:?} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("drover {args:?}: bad json ({e}): {}", out.stdout))
    }

    /// Writes a spec file into the cluster's dir and returns its path.
    pub fn spec(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, yaml).unwrap();
        p
    }
}

impl Drop for Cluster {
    /// Agents first (SIGINT: they stop their containers and remove their
    /// network), then whatever an agent a test killed on purpose left in
    /// this cluster's state dirs (`agent`, `agent-*`), as an operator would
    /// with `drover-agent cleanup`; the scheduler last.
    fn drop(&mut self) {
        drop(self.agent.take());
        let dirs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("agent") && e.path().is_dir())
            .map(|e| e.path())
            .collect();
        let exe = std::env::current_exe().ok();
        let agent = exe
            .as_deref()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(|d| d.join("drover-agent"));
        if let (Some(agent), false) = (agent, dirs.is_empty()) {
            let mut cmd = Command::new(agent);
            cmd.arg("cleanup").stdout(Stdio::null());
            for d in &dirs {
                cmd.arg("--state-dir").arg(d);
            }
            let _ = cmd.status();
        }
        drop(self.scheduler.take());
    }
}

/// What a `drover` invocation printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Scheduler addresses and the pki dir holding their cluster's CA and
/// admin credential (`<data-dir>/pki` of the replica that made the CA).
static PKI_DIRS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Makes `drover` invocations for any of `addrs` (comma-separated) use the
/// credentials in `pki_dir`.
pub fn register_pki(addrs: &str, pki_dir: &Path) {
    let mut all = PKI_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    for a in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        all.retain(|(x, _)| x != a);
        all.push((a.to_string(), pki_dir.to_path_buf()));
    }
}

/// The pki dir registered for (the first known of) `addrs`.
pub fn pki_dir_for(addrs: &str) -> Option<PathBuf> {
    let all = PKI_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    addrs
        .split(',')
        .map(str::trim)
        .find_map(|a| all.iter().find(|(x, _)| x == a).map(|(_, d)| d.clone()))
}

/// `drover` with `DROVER_ADDR=addrs` and the credentials of that cluster.
pub fn drover_command(addrs: &str) -> Command {
    let mut cmd = Command::new(bin_dir().join("drover"));
    cmd.env("DROVER_ADDR", addrs);
    if let Some(d) = pki_dir_for(addrs) {
        cmd.env("DROVER_PKI_DIR", d);
    }
    cmd
}

/// How a test's own gRPC client dials the schedulers at `addrs`: TLS with
/// the admin credential registered for them.
pub fn client_tls(addrs: &str) -> drover_proto::pki::tls::ClientTls {
    let dir = pki_dir_for(addrs).expect("a cluster registered with register_pki");
    let m = drover_proto::pki::tls::TlsMaterial::load(&dir, "admin").expect("admin credential");
    drover_proto::pki::tls::ClientTls::new(
        m.client_config().expect("client config"),
        drover_proto::pki::SCHEDULER_NAME,
    )
}

/// Puts the ACL token kept beside a cluster's admin credential (if the
/// cluster has ACLs on) on every call of a test's own gRPC client.
#[derive(Clone)]
pub struct TokenInterceptor(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// A test's own client of the client API.
pub type Api = drover_proto::pb::drover_client::DroverClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenInterceptor>,
>;

/// The client API over `ch` (dialled with [`client_tls`]) to the cluster at
/// `addrs`, with its ACL token if it has one.
pub fn api(ch: tonic::transport::Channel, addrs: &str) -> Api {
    let token = pki_dir_for(addrs)
        .and_then(|d| std::fs::read_to_string(d.join("token")).ok())
        .and_then(|t| format!("Bearer {}", t.trim()).parse().ok());
    drover_proto::pb::drover_client::DroverClient::with_interceptor(ch, TokenInterceptor(token))
}

/// A fresh join token for agents of the cluster at `addrs`.
pub fn join_token(addrs: &str) -> String {
    let r = run_drover(addrs, &["cluster", "join-token", "agent", "--ttl", "10m"]);
    assert!(r.ok(), "join-token: {}", r.stderr);
    r.stdout.trim().to_string()
}

pub fn run_drover(addr: &str, args: &[&str]) -> Run {
    let out: Output = drover_command(addr)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run drover");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The memory limit of the cgroup `pid` is in, v1 or v2.
pub fn memory_limit_of(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            let f = format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes");
            return std::fs::read_to_string(f).ok()?.trim().parse().ok();
        }
        if controllers.is_empty() {
            let f = format!("/sys/fs/cgroup{path}/memory.max");
            if let Ok(s) = std::fs::read_to_string(f) {
                return s.trim().parse().ok();
            }
        }
    }
    None
}

/// Whether any mount on this host mentions `needle`.
pub fn mounted(needle: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .contains(needle)
}

/// Whether any cgroup directory named `id` exists under /sys/fs/cgroup.
pub fn cgroup_exists(id: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return false;
    };
    entries
        .flatten()
        .any(|e| e.path().join("drover").join(id).exists() || e.path().join(id).exists())
        || Path::new("/sys/fs/cgroup/drover").join(id).exists()
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A container address range for one test cluster, distinct from its
/// neighbours' (each cluster's nodes get /24s of it; `drover dev` uses 10.88/16).
/// Ranges are handed out in turn within a test binary (its tests run in
/// parallel), so two live clusters never share one: an agent refuses a
/// subnet another running agent's bridge holds. `seed` only varies the start.
pub fn test_cidr(seed: u16) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| seed as u32 + std::process::id());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.0.0/16", 100 + (start + n) % 150)
}

/// Ids of the Drover containers running on this host right now: their
/// cgroups (the v1 `pids` controller's tree, or the v2 tree) hold
/// processes. What the host shows, whatever the scheduler believes.
pub fn running_containers() -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for parent in ["/sys/fs/cgroup/pids/drover", "/sys/fs/cgroup/drover"] {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
            if !procs.trim().is_empty() {
                out.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// A job of two sleeping replicas (toolbox) named `name`, written to `dir`.
pub fn two_sleepers(
    dir: &std::path::Path,
    images: &std::path::Path,
    name: &str,
) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nreplicas: 2\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sleep, '1000']\nresources: {{cpu: 10m, memory: 16Mi}}\nstop_grace_period: 1s\n",
            images.display()
        ),
    )
    .unwrap();
    p
}

/// This host's first global IPv4 address.
pub fn global_ip() -> std::net::IpAddr {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .expect("a global IPv4 address on this host")
}

/// A GET of `path` over plain HTTP/1.0 from `from` (an address of this host) with an
/// optional bearer token: (status code, body).
pub fn http_get(
    addr: &str,
    path: &str,
    from: Option<std::net::IpAddr>,
    token: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let mut s = match from {
        None => TcpStream::connect(addr).unwrap(),
        Some(ip) => {
            // Connecting from `ip` to itself: the listener sees `ip`.
            let port = addr.rsplit_once(':').unwrap().1;
            TcpStream::connect(format!("{ip}:{port}")).unwrap()
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}
