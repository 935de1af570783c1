//! The state dir lock: an exclusive `flock` on `<state-dir>/agent.lock`,
//! held by the running agent for its whole life and released by the kernel
//! when the process ends, however it ends. The file holds the holder's pid,
//! for messages only: the lock, not the pid, decides who is alive (a pid
//! may be reused; a lock is never held by a dead process).

use super::LeftoverError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "agent.lock";

/// Held for as long as the agent runs on a state dir.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    pub path: PathBuf,
}

impl StateLock {
    /// Takes the lock of `state_dir` (created if needed), or says who has it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LeftoverError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |op| {
            let path = path.clone();
            move |source| LeftoverError::Io { op, path, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open"))?;
        // A probe (see `probe`) holds the lock shared for an instant: retry
        // briefly before calling the state dir taken.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LeftoverError::InUse {
                        state_dir: state_dir.to_path_buf(),
                        pid: holder_pid(&path),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io("lock")(e)),
            }
        }
        file.set_len(0).map_err(io("truncate"))?;
        file.write_all(std::process::id().to_string().as_bytes())
            .map_err(io("write"))?;
        Ok(StateLock { _file: file, path })
    }
}

/// Whether a live process holds `state_dir`'s lock.
#[derive(Debug)]
pub enum Probe {
    Held { pid: String },
    Free,
}

/// Checks the lock without creating anything. A state dir without a lock
/// file (or gone altogether) has no live agent.
pub fn probe(state_dir: &Path) -> Probe {
    let path = state_dir.join(LOCK_FILE);
    let Ok(file) = File::open(&path) else {
        return Probe::Free;
    };
    match file.try_lock_shared() {
        Err(TryLockError::WouldBlock) => Probe::Held {
            pid: holder_pid(&path),
        },
        // Taken (and released with `file`) or unlockable: nobody holds it.
        _ => Probe::Free,
    }
}

fn holder_pid(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
