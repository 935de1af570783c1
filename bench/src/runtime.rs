//! Start-latency benchmark: Drover's runtime against `runc run` on the very
//! same bundle, interleaved so both see the same machine state.
//!
//! One sample is the wall time from "start the container" to "it has exited
//! and its cgroup is gone", which is what `runc run` does for a short-lived
//! command like `/bin/true`. The `monitored` row times the way the agent
//! starts containers: through a monitor process (`drover-agent monitor`,
//! beside this binary), which adds one exec of the agent binary to every
//! start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use drover_agent::bundle::{Bundle, BundleError, ContainerRequest, Network};
use drover_agent::image::{Image, ImageConfig, ImageError, ImageRef, ImageStore};
use drover_agent::runtime::{MonitorConfig, Runtime, RuntimeError};

pub use crate::stats::Samples;

/// Errors from preparing or running the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("runc run: {0}")]
    Runc(String),
    #[error("drover run of {command:?} exited with {code}")]
    Failed { command: Vec<String>, code: i32 },
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub runs: usize,
    /// An OCI image to run instead of the built-in busybox rootfs.
    pub image: Option<ImageRef>,
    /// Command to run in the container.
    pub command: Vec<String>,
    /// Scratch directory (bundle, layer cache).
    pub work_dir: PathBuf,
    pub busybox: PathBuf,
    /// `runc` binary; `None` benchmarks Drover alone.
    pub runc: Option<PathBuf>,
    /// Share the host network namespace instead of creating one per start.
    pub network: Network,
    /// Also time starts under a monitor process.
    pub monitor: Option<MonitorConfig>,
    /// Start in a user namespace mapped to these host ids.
    pub user_namespace: Option<drover_agent::bundle::IdRange>,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub bundle: PathBuf,
    pub drover: Samples,
    pub monitored: Option<Samples>,
    pub runc: Option<Samples>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        writeln!(f, "bundle: {}", self.bundle.display())?;
        writeln!(
            f,
            "{:<9} {:>5} {:>10} {:>10} {:>10}",
            "runtime", "runs", "median", "p90", "min"
        )?;
        let rows = std::iter::once(&self.drover)
            .chain(self.monitored.as_ref())
            .chain(self.runc.as_ref());
        for s in rows {
            writeln!(
                f,
                "{:<9} {:>5} {:>10} {:>10} {:>10}",
                s.name,
                s.durations.len(),
                ms(s.median()),
                ms(s.percentile(90)),
                ms(s.min())
            )?;
        }
        if let Some(runc) = &self.runc {
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
            writeln!(
                f,
                "ratio drover/runc: median {:.2}, p90 {:.2}",
                ratio(self.drover.median(), runc.median()),
                ratio(self.drover.percentile(90), runc.percentile(90))
            )?;
            if let Some(m) = &self.monitored {
                writeln!(
                    f,
                    "ratio monitored/runc: median {:.2}, p90 {:.2}",
                    ratio(m.median(), runc.median()),
                    ratio(m.percentile(90), runc.percentile(90))
                )?;
            }
        }
        Ok(())
    }
}

/// A one-layer image holding a static busybox and `/bin/true`.
pub fn busybox_image(dir: &Path, busybox: &Path) -> Result<Image, BenchError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BenchError::Io { path, source }
    };
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(io(&bin))?;
    let target = bin.join("busybox");
    if !target.exists() {
        std::fs::copy(busybox, &target).map_err(io(busybox))?;
    }
    for applet in ["true", "sh"] {
        let link = bin.join(applet);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io(&link))?;
        }
    }
    Ok(Image {
        layers: vec![dir.to_path_buf()],
        config: ImageConfig {
            cmd: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        digest: "busybox:local".into(),
    })
}

/// Builds the bundle, then times `opts.runs` starts of each runtime.
pub fn run(runtime: &Runtime, opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let image = match &opts.image {
        Some(r) => ImageStore::new(opts.work_dir.join("cache")).pull(r)?,
        None => busybox_image(&opts.work_dir.join("busybox-layer"), &opts.busybox)?,
    };
    let id = format!("drover-bench-{}", std::process::id());
    if opts.user_namespace.is_some() {
        // The namespace's root must pass through to the bundle.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&opts.work_dir, std::fs::Permissions::from_mode(0o711)).map_err(
            |source| BenchError::Io {
                path: opts.work_dir.clone(),
                source,
            },
        )?;
    }
    let req = ContainerRequest {
        id: id.clone(),
        hostname: "bench".into(),
        command: Some(opts.command.clone()),
        network: opts.network,
        user_namespace: opts.user_namespace,
        ..Default::default()
    };
    let bundle = Bundle::create(&opts.work_dir.join("bundle"), &image, &req)?;
    let result = sample(runtime, opts, &bundle, &id);
    let cleanup = bundle.cleanup();
    let report = result?;
    cleanup?;
    Ok(report)
}

fn sample(
    runtime: &Runtime,
    opts: &BenchOptions,
    bundle: &Bundle,
    id: &str,
) -> Result<BenchReport, BenchError> {
    let mut drover = Samples {
        name: "drover",
        durations: Vec::with_capacity(opts.runs),
    };
    let mut monitored = opts.monitor.as_ref().map(|_| Samples {
        name: "monitored",
        durations: Vec::with_capacity(opts.runs),
    });
    let mut runc = opts.runc.as_ref().map(|_| Samples {
        name: "runc",
        durations: Vec::with_capacity(opts.runs),
    });
    // One untimed warm-up round each (page cache, binaries, cgroup parents).
    for round in 0..=opts.runs {
        let d = time_drover(runtime, None, bundle, id, &opts.command)?;
        if let (Some(m), Some(samples)) = (&opts.monitor, monitored.as_mut()) {
            let t = time_drover(runtime, Some(m), bundle, id, &opts.command)?;
            if round > 0 {
                samples.durations.push(t);
            }
        }
        if let (Some(runc_bin), Some(samples)) = (&opts.runc, runc.as_mut()) {
            let r = time_runc(runc_bin, bundle, id)?;
            if round > 0 {
                samples.durations.push(r);
            }
        }
        if round > 0 {
            drover.durations.push(d);
        }
    }
    Ok(BenchReport {
        bundle: bundle.dir().to_path_buf(),
        drover,
        monitored,
        runc,
    })
}

fn time_drover(
    runtime: &Runtime,
    monitor: Option<&MonitorConfig>,
    bundle: &Bundle,
    id: &str,
    command: &[String],
) -> Result<Duration, BenchError> {
    let devnull = |p: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .map_err(|source| BenchError::Io {
                path: p.into(),
                source,
            })
    };
    let log = devnull(Path::new("/dev/null"))?;
    let start = Instant::now();
    let container = match monitor {
        Some(m) => {
            runtime.start_monitored(m, bundle.dir(), id, Path::new("/dev/null"), None, None)?
        }
        None => runtime.start(bundle.dir(), id, log)?,
    };
    container.wait_blocking()?;
    let status = container.stop_blocking(Duration::ZERO)?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(BenchError::Failed {
            command: command.to_vec(),
            code: status.code(),
        });
    }
    Ok(elapsed)
}

fn time_runc(runc: &Path, bundle: &Bundle, id: &str) -> Result<Duration, BenchError> {
    let start = Instant::now();
    let out = Command::new(runc)
        .args(["run", "--bundle"])
        .arg(bundle.dir())
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| BenchError::Runc(format!("spawn {}: {e}", runc.display())))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return Err(BenchError::Runc(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(elapsed)
}

/// What `drover-bench runtime` was asked.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Image to benchmark instead of a busybox rootfs, e.g. oci:/images/alpine:3
    #[arg(long)]
    pub bundle_from: Option<String>,
    /// Command to run in the container.
    #[arg(long, num_args = 1.., default_values_t = ["/bin/true".to_string()])]
    pub command: Vec<String>,
    #[arg(long, default_value = "/usr/bin/busybox")]
    pub busybox: PathBuf,
    #[arg(long, default_value = "runc")]
    pub runc: String,
    /// Benchmark Drover only.
    #[arg(long)]
    pub no_runc: bool,
    /// Use the host network namespace (no per-start network namespace).
    #[arg(long)]
    pub host_network: bool,
    /// Skip the row for starts under a monitor process (as the agent does).
    #[arg(long)]
    pub no_monitor: bool,
    /// Start the container in a user namespace (the last of the agent's
    /// id ranges), as `--user-namespaces` does; runc runs the same bundle.
    #[arg(long)]
    pub user_namespace: bool,
    #[arg(long, default_value = "/sys/fs/cgroup", env = "DROVER_CGROUP_ROOT")]
    pub cgroup_root: PathBuf,
    /// Print the medians as JSON (for `drover-bench figures`), not the table.
    #[arg(long)]
    pub json: bool,
}

/// The medians of a run, as `--json` prints them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Medians {
    pub runs: usize,
    pub drover_ms: f64,
    pub monitored_ms: Option<f64>,
    pub runc_ms: Option<f64>,
}

impl From<&BenchReport> for Medians {
    fn from(r: &BenchReport) -> Medians {
        let ms = |s: &Samples| s.median().as_secs_f64() * 1e3;
        Medians {
            runs: r.drover.durations.len(),
            drover_ms: ms(&r.drover),
            monitored_ms: r.monitored.as_ref().map(ms),
            runc_ms: r.runc.as_ref().map(ms),
        }
    }
}

/// Where `main` leaves the path of `drover-agent` across its re-exec.
pub const AGENT_ENV: &str = "DROVER_BENCH_AGENT";

/// `drover-agent` in this binary's directory, if it is there.
pub fn agent_beside_this_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let agent = std::fs::canonicalize(&exe)
        .ok()?
        .parent()?
        .join("drover-agent");
    agent.exists().then_some(agent)
}

/// `drover-bench runtime`: prints the table (or, with `--json`, the medians).
pub fn command(c: Args) -> anyhow::Result<i32> {
    let json = c.json;
    let report = report(c)?;
    if json {
        println!("{}", serde_json::to_string(&Medians::from(&report))?);
    } else {
        print!("{report}");
    }
    Ok(0)
}

/// Runs the benchmark `c` asks for.
pub fn report(c: Args) -> anyhow::Result<BenchReport> {
    use drover_agent::daemon::userns::{IdRanges, REGISTRY};
    let monitor = if c.no_monitor {
        None
    } else {
        // The agent's monitors: `drover-agent monitor`, from beside this binary.
        let agent = std::env::var_os(AGENT_ENV)
            .map(PathBuf::from)
            .or_else(agent_beside_this_binary)
            .ok_or_else(|| {
                anyhow::anyhow!("drover-agent is not beside drover-bench (build the workspace)")
            })?;
        Some(MonitorConfig {
            exe: agent,
            cgroup_root: c.cgroup_root.clone(),
            log_max_bytes: 0,
            defaults: Default::default(),
        })
    };
    let runtime = Runtime::new(drover_agent::cgroups::manager_for(c.cgroup_root));
    let work = tempfile::Builder::new().prefix("drover-bench").tempdir()?;
    // A range from the host's pool, as the agent's containers get.
    let ranges = c
        .user_namespace
        .then(|| IdRanges::open(Path::new(REGISTRY), work.path()))
        .transpose()?;
    let opts = BenchOptions {
        runs: c.runs,
        image: c.bundle_from.map(|r| r.parse::<ImageRef>()).transpose()?,
        command: c.command,
        work_dir: work.path().to_path_buf(),
        busybox: c.busybox,
        runc: (!c.no_runc).then(|| PathBuf::from(c.runc)),
        network: if c.host_network {
            Network::Host
        } else {
            Network::Private
        },
        monitor,
        user_namespace: match &ranges {
            Some(r) => Some(r.allocate("bench")?),
            None => None,
        },
    };
    let report = run(&runtime, &opts);
    if let Some(r) = &ranges {
        r.release("bench");
    }
    Ok(report?)
}
