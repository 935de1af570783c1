//! `drover-agent cleanup`: find and remove what agents that no longer run
//! left on this machine. State dirs are taken from the command line, or
//! discovered from what points at them: link markers (`drover:<dir>`),
//! running monitors (`drover-agent monitor --bundle <dir>/bundles/<id>`),
//! overlay mounts at `<dir>/bundles/<id>/rootfs`, and the default state dir.
//! A state dir whose lock a live agent holds is never touched; for every
//! other one the plan lists its orphaned containers (see [`super::orphans`])
//! its marked links and the routes it recorded, and removing carries the plan out while holding the
//! state dir's lock, so no agent starts on it meanwhile.

use super::orphans::{self, Orphan};
use super::{LeftoverError, Owner, StateLock};
use crate::cgroups::CgroupManager;
use crate::network::{self, inventory::Link};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where `drover-agent run` keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/drover/agent";

/// What agents that are gone left behind.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub orphans: Vec<Orphan>,
    /// Marked links and the state dir that made them.
    pub links: Vec<(Link, PathBuf)>,
    /// Routes to other nodes' subnets a state dir's agent recorded (dir,
    /// subnet, via).
    pub routes: Vec<(PathBuf, String, String)>,
    /// State dirs skipped because their agent runs (dir, pid).
    pub live: Vec<(PathBuf, String)>,
    /// Guard tables (`inet drv*`) whose bridge is gone: no agent uses them.
    pub tables: Vec<String>,
}

/// State dirs something on this host points at.
pub fn discover() -> Vec<PathBuf> {
    let mut dirs = BTreeSet::new();
    if let Ok(links) = network::links() {
        for l in links {
            if let Some(d) = l.alias.as_deref().and_then(super::parse_marker) {
                dirs.insert(d);
            }
        }
    }
    for bundle in monitor_bundles().into_iter().chain(orphans::mount_points()) {
        // <dir>/bundles/<id>[/rootfs]
        let bundle = if bundle.ends_with("rootfs") {
            bundle.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            bundle
        };
        let Some(bundles) = bundle.parent() else {
            continue;
        };
        if bundles.file_name().is_some_and(|n| n == "bundles")
            && bundle.join("config.json").exists()
        {
            if let Some(dir) = bundles.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
    }
    if Path::new(DEFAULT_STATE_DIR).join("bundles").exists() {
        dirs.insert(DEFAULT_STATE_DIR.into());
    }
    dirs.into_iter().collect()
}

/// The `--bundle` of every running `drover-agent monitor`.
fn monitor_bundles() -> Vec<PathBuf> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) != Some(&&b"monitor"[..]) {
            continue;
        }
        if let Some(i) = args.iter().position(|a| *a == b"--bundle") {
            if let Some(b) = args.get(i + 1) {
                out.push(PathBuf::from(String::from_utf8_lossy(b).into_owned()));
            }
        }
    }
    out
}

/// What the gone agents of `state_dirs` left.
pub fn scan(state_dirs: &[PathBuf], cgroups: &dyn CgroupManager) -> Leftovers {
    let all_links = network::links().unwrap_or_default();
    let mut out = Leftovers::default();
    for dir in state_dirs {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        if let Owner::Live { pid, .. } = Owner::of_state_dir(&dir) {
            out.live.push((dir, pid));
            continue;
        }
        out.orphans.extend(orphans::find(&dir, cgroups));
        for l in &all_links {
            if l.alias.as_deref().and_then(super::parse_marker).as_ref() == Some(&dir) {
                out.links.push((l.clone(), dir.clone()));
            }
        }
        for (subnet, via) in network::routes::load(&dir) {
            out.routes.push((dir.clone(), subnet, via));
        }
    }
    out.tables = network::guard::orphan_tables();
    out
}

/// Removes a state dir whole (images, logs, bundles, certificates) once
/// nothing of it runs: refused while an agent holds it, while containers of
/// it still run, or while anything is mounted under it (deleting through a
/// mount would reach into what is mounted).
pub fn remove_state_dir(dir: &Path) -> Result<(), LeftoverError> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if !dir.exists() {
        return Ok(());
    }
    match Owner::of_state_dir(&dir) {
        Owner::Live { pid, .. } => {
            return Err(LeftoverError::InUse {
                state_dir: dir,
                pid,
            })
        }
        Owner::Dormant { containers, .. } => {
            return Err(LeftoverError::Io {
                op: "remove",
                path: dir,
                source: std::io::Error::other(format!(
                    "{containers} of its containers still run under their monitors"
                )),
            })
        }
        _ => {}
    }
    if let Some(m) = orphans::mount_points()
        .into_iter()
        .find(|m| m.starts_with(&dir))
    {
        return Err(LeftoverError::Io {
            op: "remove",
            path: dir,
            source: std::io::Error::other(format!("{} is still mounted", m.display())),
        });
    }
    std::fs::remove_dir_all(&dir).map_err(|source| LeftoverError::Io {
        op: "remove",
        path: dir,
        source,
    })
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.orphans.is_empty()
            && self.links.is_empty()
            && self.routes.is_empty()
            && self.tables.is_empty()
    }

    /// Removes everything listed; returns what could not be removed.
    pub fn remove(&self, cgroups: &dyn CgroupManager) -> Vec<LeftoverError> {
        let mut errors = Vec::new();
        for t in &self.tables {
            network::guard::remove(t);
        }
        let dirs: BTreeSet<&Path> = self
            .orphans
            .iter()
            .map(|o| o.state_dir.as_path())
            .chain(self.links.iter().map(|(_, d)| d.as_path()))
            .chain(self.routes.iter().map(|(d, ..)| d.as_path()))
            .collect();
        for dir in dirs {
            // Held while removing, so no agent starts on the dir meanwhile.
            let lock = match StateLock::acquire(dir) {
                Ok(l) => Some(l),
                // A state dir that is gone cannot be locked, nor can an agent use it.
                Err(LeftoverError::Io { .. }) => None,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            for o in self.orphans.iter().filter(|o| o.state_dir == dir) {
                if let Err(e) = orphans::remove(o, cgroups) {
                    errors.push(e);
                }
            }
            for (l, _) in self.links.iter().filter(|(_, d)| d == dir) {
                if let Err(e) = network::delete_link(&l.name) {
                    errors.push(LeftoverError::Link {
                        link: l.name.clone(),
                        message: e.to_string(),
                    });
                }
            }
            for (subnet, via) in self
                .routes
                .iter()
                .filter(|(d, ..)| d == dir)
                .map(|(_, s, v)| (s, v))
            {
                if let Err(e) = network::routes::delete(subnet, via) {
                    errors.push(LeftoverError::Link {
                        link: format!("route {subnet} via {via}"),
                        message: e.to_string(),
                    });
                }
            }
            if let Err(e) = network::routes::save(dir, &Default::default()) {
                errors.push(LeftoverError::Io {
                    op: "remove the routes record of",
                    path: dir.into(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
            if let Some(lock) = lock {
                let path = lock.path.clone();
                drop(lock);
                let _ = std::fs::remove_file(path);
            }
        }
        errors
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (dir, pid) in &self.live {
            writeln!(
                f,
                "skipped {}: a running agent holds it (pid {pid})",
                dir.display()
            )?;
        }
        if self.is_empty() {
            return writeln!(f, "nothing left behind");
        }
        if !self.orphans.is_empty() {
            writeln!(
                f,
                "{:<40} {:<8} {:<9} {:<9} {:<7} STATE DIR",
                "CONTAINER", "STATE", "MONITOR", "PID", "MOUNTED"
            )?;
            for o in &self.orphans {
                let pid = |p: Option<i32>| p.map_or("-".to_string(), |p| p.to_string());
                writeln!(
                    f,
                    "{:<40} {:<8} {:<9} {:<9} {:<7} {}",
                    o.id,
                    if o.running() { "running" } else { "stopped" },
                    pid(o.monitor_pid),
                    pid(o.container_pid),
                    if o.mounted { "yes" } else { "no" },
                    o.state_dir.display()
                )?;
            }
        }
        if !self.links.is_empty() {
            writeln!(f, "{:<16} STATE DIR", "LINK")?;
            for (l, dir) in &self.links {
                writeln!(f, "{:<16} {}", l.name, dir.display())?;
            }
        }
        if !self.routes.is_empty() {
            writeln!(f, "{:<32} STATE DIR", "ROUTE")?;
            for (dir, subnet, via) in &self.routes {
                let route = format!("{subnet} via {via}");
                writeln!(f, "{route:<32} {}", dir.display())?;
            }
        }
        for t in &self.tables {
            writeln!(f, "nftables table inet {t} (its bridge is gone)")?;
        }
        Ok(())
    }
}
