//! Pull benchmark: fetching an image from a registry and unpacking its layers
//! into a fresh layer cache, against `skopeo copy docker://… oci:…` of the
//! same image into a fresh OCI layout (which downloads and verifies but does
//! not unpack). Runs alternate so both see the same registry and page cache.
//! A third row times a pull whose layers are already cached (manifest and
//! config only), which is what every start after the first one pays.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use drover_agent::image::{ImageError, ImageRef, ImageStore, RegistryConfig};

use crate::stats::Samples;

/// Errors from the pull benchmark.
#[derive(Debug, thiserror::Error)]
pub enum PullBenchError {
    #[error("bench-pull needs a registry image (host[:port]/name:tag), not {0}")]
    NotRegistry(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{skopeo} copy: {reason}")]
    Skopeo { skopeo: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct PullBenchOptions {
    pub image: ImageRef,
    pub registries: RegistryConfig,
    pub runs: usize,
    pub skopeo: Option<String>,
    pub work_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PullBenchReport {
    pub image: String,
    pub rows: Vec<Samples>,
}

pub fn run(opts: &PullBenchOptions) -> Result<PullBenchReport, PullBenchError> {
    let ImageRef::Registry(reg) = &opts.image else {
        return Err(PullBenchError::NotRegistry(opts.image.to_string()));
    };
    let insecure = opts.registries.insecure.contains(&reg.host);
    let mut drover = Samples {
        name: "drover pull+unpack",
        durations: vec![],
    };
    let mut cached = Samples {
        name: "drover pull, cached",
        durations: vec![],
    };
    let mut skopeo = Samples {
        name: "skopeo copy",
        durations: vec![],
    };
    for i in 0..opts.runs {
        let dir = opts.work_dir.join(format!("run-{i}"));
        let io = |source| PullBenchError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let store = ImageStore::new(dir.join("cache")).with_registries(opts.registries.clone());
        let start = Instant::now();
        store.pull(&opts.image)?;
        drover.durations.push(start.elapsed());
        let start = Instant::now();
        store.pull(&opts.image)?;
        cached.durations.push(start.elapsed());

        if let Some(bin) = &opts.skopeo {
            let start = Instant::now();
            let out = Command::new(bin)
                .args(["copy", "--quiet"])
                .arg(format!("--src-tls-verify={}", !insecure))
                .arg(format!("docker://{}", opts.image))
                .arg(format!("oci:{}:bench", dir.join("layout").display()))
                .output()
                .map_err(|e| PullBenchError::Skopeo {
                    skopeo: bin.clone(),
                    reason: e.to_string(),
                })?;
            skopeo.durations.push(start.elapsed());
            if !out.status.success() {
                return Err(PullBenchError::Skopeo {
                    skopeo: bin.clone(),
                    reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        std::fs::remove_dir_all(&dir).map_err(io)?;
    }
    let mut rows = vec![drover, cached];
    if opts.skopeo.is_some() {
        rows.push(skopeo);
    }
    Ok(PullBenchReport {
        image: opts.image.to_string(),
        rows,
    })
}

impl std::fmt::Display for PullBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: std::time::Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        writeln!(f, "image: {}", self.image)?;
        writeln!(
            f,
            "{:<20} {:>5} {:>11} {:>11} {:>11}",
            "", "runs", "median", "p90", "min"
        )?;
        for s in &self.rows {
            writeln!(
                f,
                "{:<20} {:>5} {:>11} {:>11} {:>11}",
                s.name,
                s.durations.len(),
                ms(s.median()),
                ms(s.percentile(90)),
                ms(s.min())
            )?;
        }
        if let [drover, _, skopeo] = &self.rows[..] {
            writeln!(
                f,
                "drover pull+unpack / skopeo copy (median): {:.2}x",
                drover.median().as_secs_f64() / skopeo.median().as_secs_f64().max(1e-9)
            )?;
        }
        Ok(())
    }
}
/// What `drover-bench pull` was asked.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A registry image, e.g. 127.0.0.1:5000/demo-web:v1.
    pub image: String,
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Reach this registry over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    #[arg(long, default_value = "skopeo")]
    pub skopeo: String,
    /// Benchmark Drover only.
    #[arg(long)]
    pub no_skopeo: bool,
}

/// `drover-bench pull`: prints the table.
pub fn command(a: Args) -> anyhow::Result<i32> {
    print!("{}", report(a)?);
    Ok(0)
}

/// Runs the benchmark `a` asks for.
pub fn report(a: Args) -> anyhow::Result<PullBenchReport> {
    let work = tempfile::Builder::new()
        .prefix("drover-bench-pull")
        .tempdir()?;
    let opts = PullBenchOptions {
        image: a.image.parse()?,
        registries: RegistryConfig {
            insecure: a.insecure_registry.into_iter().collect(),
            ..Default::default()
        },
        runs: a.runs,
        skopeo: (!a.no_skopeo).then_some(a.skopeo),
        work_dir: work.path().to_path_buf(),
    };
    Ok(run(&opts)?)
}
