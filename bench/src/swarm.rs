//! Docker Swarm beside Drover, on the same machine in the same run: a
//! `dockerd` of its own (Debian's `docker.io`; `--iptables=false
//! --bridge=none`, so it leaves the host's firewall alone), its state,
//! sockets and containers' cgroups under names of its own, a one-node swarm,
//! and the same images loaded from the same OCI layouts. Measured through
//! the `docker` CLI, as a user would, polling every 50 ms: a poll costs the
//! CLI's own start (~20-40 ms), small beside Swarm's seconds.
//!
//! Everything it made is removed when it is dropped: the swarm left, the
//! daemon stopped, its state directory, the `docker_gwbridge` bridge it
//! made and its cgroups.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::stats::Samples;

/// The cgroup every Swarm container is put under (`--cgroup-parent`).
const CGROUP_PARENT: &str = "drover-bench-swarm";
const POLL: Duration = Duration::from_millis(50);

pub struct Swarm {
    dir: PathBuf,
    dockerd: Option<Child>,
    host: String,
    docker: PathBuf,
    /// Whether `docker_gwbridge` was made by this daemon (removed at the end).
    made_gwbridge: bool,
}

/// `dockerd --version`, if Docker's daemon is installed.
pub fn version() -> Option<String> {
    crate::figures::first_line("dockerd", &["--version"])
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl Swarm {
    /// Starts the daemon, makes a one-node swarm and loads `images`
    /// (`oci:` layout references, each with the tag to give it).
    pub async fn start(images: &[(&str, &str)]) -> Result<Swarm> {
        let dir = crate::ha::scratch("swarm")?;
        // Debian's client beside Debian's daemon, else whichever is on PATH.
        let docker = ["/usr/bin/docker"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("docker"));
        let host = format!("unix://{}/docker.sock", dir.display());
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        let made_gwbridge = !link_exists("docker_gwbridge");
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--cgroup-parent", CGROUP_PARENT])
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["-H", &host])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start dockerd (Debian: apt install docker.io)")?;
        let s = Swarm {
            dir,
            dockerd: Some(child),
            host,
            docker,
            made_gwbridge,
        };
        let start = Instant::now();
        while s.docker(&["version"]).is_err() {
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "dockerd did not answer within 60s (log: {})",
                    s.dir.join("dockerd.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        s.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        for (layout, tag) in images {
            let archive = s.dir.join("image.tar");
            let out = Command::new("skopeo")
                .args(["copy", "--quiet", layout])
                .arg(format!("docker-archive:{}:{tag}", archive.display()))
                .output()
                .context("cannot run skopeo (Debian: apt install skopeo)")?;
            if !out.status.success() {
                bail!(
                    "skopeo copy {layout}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            s.docker(&["load", "-i", archive.to_str().expect("utf-8 path")])?;
            let _ = std::fs::remove_file(&archive);
        }
        Ok(s)
    }

    /// Runs `docker ARGS` against this daemon; its output, or why it failed.
    fn docker(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.docker)
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.docker.display()))?;
        if !out.status.success() {
            bail!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Creates a service of `n` replicas of `image` sleeping, with the
    /// same reservations and stop grace as Drover's benchmark jobs, and the
    /// update settings of `drover bench rollout` (one at a time,
    /// start-first, no delay, no monitoring period).
    fn create(&self, name: &str, n: u32, image: &str) -> Result<()> {
        let n = n.to_string();
        self.docker(&[
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--replicas",
            &n,
            "--restart-condition",
            "none",
            "--reserve-cpu",
            "0.01",
            "--reserve-memory",
            "16M",
            "--stop-grace-period",
            "1s",
            "--update-parallelism",
            "1",
            "--update-order",
            "start-first",
            "--update-delay",
            "0s",
            "--update-monitor",
            "1ns",
            image,
            "/bin/sleep",
            "3600",
        ])?;
        Ok(())
    }

    /// Removes a service and waits until its containers are gone.
    async fn remove(&self, name: &str) -> Result<()> {
        self.docker(&["service", "rm", name])?;
        let start = Instant::now();
        while !self.docker(&["ps", "-aq"])?.is_empty() {
            if start.elapsed() > Duration::from_secs(120) {
                bail!("{name}: containers still there 120s after docker service rm");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Waits until `docker service ls` says all `n` replicas run.
    async fn wait_running(&self, name: &str, n: u32) -> Result<()> {
        let want = format!("{n}/{n}");
        let start = Instant::now();
        loop {
            let r = self.docker(&[
                "service",
                "ls",
                "--filter",
                &format!("name={name}"),
                "--format",
                "{{.Replicas}}",
            ])?;
            if r.split_whitespace().next() == Some(want.as_str()) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(600) {
                bail!("{name}: {r} replicas after 10 minutes");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `docker service create` of `n` replicas until all run, `trials` times.
    pub async fn job_run(&self, image: &str, n: u32, trials: usize) -> Result<Samples> {
        let mut times = Vec::new();
        for t in 0..trials {
            let name = format!("bench-{n}-{t}");
            let start = Instant::now();
            self.create(&name, n, image)?;
            self.wait_running(&name, n).await?;
            let took = start.elapsed();
            println!(
                "  swarm: {n} replicas, trial {}: {:.3}s",
                t + 1,
                took.as_secs_f64()
            );
            times.push(took);
            self.remove(&name).await?;
        }
        Ok(Samples {
            name: "swarm job run",
            durations: times,
        })
    }

    /// `docker service update` of `n` replicas (a new environment variable,
    /// as Drover's rollout benchmark changes), until Swarm says the update
    /// completed, `trials` times.
    pub async fn rollout(&self, image: &str, n: u32, trials: usize) -> Result<Samples> {
        let name = "bench-rollout";
        self.create(name, n, image)?;
        self.wait_running(name, n).await?;
        let state = || {
            self.docker(&[
                "service",
                "inspect",
                "--format",
                "{{if .UpdateStatus}}{{.UpdateStatus.State}} {{.UpdateStatus.StartedAt}}{{end}}",
                name,
            ])
        };
        let mut times = Vec::new();
        for t in 1..=trials {
            let before = state()?;
            let start = Instant::now();
            self.docker(&[
                "service",
                "update",
                "--detach",
                "--env-add",
                &format!("BENCH_VERSION={t}"),
                name,
            ])?;
            loop {
                let now = state()?;
                if now != before && now.starts_with("completed") {
                    break;
                }
                if now.starts_with("paused") || now.starts_with("rollback") {
                    bail!("swarm: the update of {name} ended {now}");
                }
                if start.elapsed() > Duration::from_secs(300) {
                    bail!("swarm: the update of {name} not done after 5m ({now})");
                }
                tokio::time::sleep(POLL).await;
            }
            let took = start.elapsed();
            println!(
                "  swarm: rollout {t}: {n} replicas in {:.3}s",
                took.as_secs_f64()
            );
            times.push(took);
        }
        self.remove(name).await?;
        Ok(Samples {
            name: "swarm rollout",
            durations: times,
        })
    }

    /// The memory of Docker's node side with `n` containers running:
    /// dockerd and containerd, and one containerd-shim per container.
    pub async fn memory(&self, image: &str, n: u32) -> Result<crate::rss::Memory> {
        let name = "bench-rss";
        self.create(name, n, image)?;
        self.wait_running(name, n).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let dir = self.dir.to_string_lossy().to_string();
        let ours = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&dir))
                .unwrap_or(false)
        };
        let daemons: Vec<u32> = crate::rss::processes_named(&["dockerd", "containerd"])
            .into_iter()
            .filter(|p| ours(*p))
            .collect();
        let shims: Vec<u32> = crate::rss::processes_named(&["containerd-shim-runc-v2"])
            .into_iter()
            .filter(|p| ours(*p))
            .collect();
        let m = crate::rss::Memory::of(&daemons, &shims);
        self.remove(name).await?;
        Ok(m)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = self.docker(&["swarm", "leave", "--force"]);
        if let Some(mut d) = self.dockerd.take() {
            // SIGTERM: dockerd stops its containerd and unmounts its layers.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while matches!(d.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        if self.made_gwbridge && link_exists("docker_gwbridge") {
            let _ = Command::new("ip")
                .args(["link", "del", "docker_gwbridge"])
                .status();
        }
        remove_cgroups(Path::new("/sys/fs/cgroup"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the (empty, once the daemon is gone) cgroups under
/// `CGROUP_PARENT`, in every hierarchy (v1) or the one (v2).
fn remove_cgroups(root: &Path) {
    fn rmdir_tree(d: &Path) {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    rmdir_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(d);
    }
    rmdir_tree(&root.join(CGROUP_PARENT));
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let d = e.path().join(CGROUP_PARENT);
            if d.is_dir() {
                rmdir_tree(&d);
            }
        }
    }
}
