//! Orphaned containers: bundles in the state dir of an agent that no longer
//! runs. A container started under a monitor outlives its agent on purpose
//! (the next agent on the same state dir re-adopts it); one started by
//! `drover dev` (no monitor) outlives a crashed `drover dev` by accident.
//! Until an agent takes the state dir again, such containers belong to
//! nobody: they hold an overlay mount, a cgroup, maybe an address and a
//! veth, and keep running. Here they are found (from the bundle directory,
//! the monitor's state file, the cgroup and the mount table) and removed.

use super::LeftoverError;
use crate::bundle::Bundle;
use crate::cgroups::CgroupManager;
use crate::runtime::monitor::{self, State, STATE_FILE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};

/// A container left in a state dir no agent holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub state_dir: PathBuf,
    /// The allocation id (the bundle's directory name).
    pub id: String,
    /// Its monitor, if that still runs.
    pub monitor_pid: Option<i32>,
    /// Its init process, if that still runs.
    pub container_pid: Option<i32>,
    /// Processes still in its cgroup.
    pub cgroup_procs: usize,
    /// Whether its overlay rootfs is still mounted.
    pub mounted: bool,
}

impl Orphan {
    /// Whether anything of it still runs.
    pub fn running(&self) -> bool {
        self.monitor_pid.is_some() || self.container_pid.is_some() || self.cgroup_procs > 0
    }
}

/// `pid` if it is still the process that started at `start`.
fn alive(pid: i32, start: u64) -> Option<i32> {
    (pid > 0 && monitor::start_time(pid) == Some(start)).then_some(pid)
}

fn bundle_dirs(state_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("bundles")) else {
        return vec![];
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// How many containers of `state_dir` still run under a live monitor (which
/// the next agent on that state dir could re-adopt).
pub fn monitored_alive(state_dir: &Path) -> usize {
    bundle_dirs(state_dir)
        .iter()
        .filter_map(|(_, dir)| State::load(&dir.join(STATE_FILE)).ok())
        .filter(|s| alive(s.monitor_pid, s.monitor_start).is_some())
        .count()
}

/// Mount points of the host's mount table.
pub fn mount_points() -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

/// Every container bundle in `state_dir` (the caller has made sure no agent
/// holds it), with what of it is still alive.
pub fn find(state_dir: &Path, cgroups: &dyn CgroupManager) -> Vec<Orphan> {
    let mounts = mount_points();
    bundle_dirs(state_dir)
        .into_iter()
        .map(|(id, dir)| {
            let state = State::load(&dir.join(STATE_FILE)).ok();
            Orphan {
                state_dir: state_dir.to_path_buf(),
                monitor_pid: state
                    .as_ref()
                    .and_then(|s| alive(s.monitor_pid, s.monitor_start)),
                container_pid: state
                    .as_ref()
                    .filter(|s| s.exit.is_none())
                    .and_then(|s| alive(s.container_pid, s.container_start)),
                cgroup_procs: cgroups.procs(&id).len(),
                mounted: mounts.contains(&dir.join("rootfs")),
                id,
            }
        })
        .collect()
}

/// Kills what of the orphan runs and removes its cgroup, mounts, bundle,
/// veth and address. Idempotent.
pub fn remove(o: &Orphan, cgroups: &dyn CgroupManager) -> Result<(), LeftoverError> {
    let fail = |message: String| LeftoverError::Container {
        state_dir: o.state_dir.clone(),
        id: o.id.clone(),
        message,
    };
    // The container first (its monitor then records the exit and ends).
    if let Some(pid) = o.container_pid {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    cgroups
        .remove(&o.id)
        .map_err(|e| fail(format!("cgroup: {e}")))?;
    if let Some(pid) = o.monitor_pid {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let dir = o.state_dir.join("bundles").join(&o.id);
    Bundle::at(dir, o.id.clone())
        .cleanup()
        .map_err(|e| fail(format!("bundle: {e}")))?;
    crate::network::forget_container(&o.state_dir, &o.id)
        .map_err(|e| fail(format!("network: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_of_a_state_dir_are_found_with_nothing_running() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bundles/a1")).unwrap();
        std::fs::create_dir_all(d.path().join("bundles/b2")).unwrap();
        // A monitor that recorded a dead process: nothing runs.
        std::fs::write(
            d.path().join("bundles/a1").join(STATE_FILE),
            r#"{"monitor_pid":999999999,"monitor_start":1,"container_pid":999999998,"container_start":1}"#,
        )
        .unwrap();
        let cg = tempfile::tempdir().unwrap();
        let cgroups = crate::cgroups::manager_for(cg.path());
        let found = find(d.path(), cgroups.as_ref());
        assert_eq!(
            found.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["a1", "b2"]
        );
        assert!(found.iter().all(|o| !o.running() && !o.mounted));
        assert_eq!(monitored_alive(d.path()), 0);
        for o in &found {
            remove(o, cgroups.as_ref()).unwrap();
        }
        assert!(find(d.path(), cgroups.as_ref()).is_empty());
    }
}
