//! Sealed copies of the runtime binary (CVE-2019-5736).
//!
//! Every process that becomes a container process (the container's init,
//! an exec'd command) starts as a copy of the runtime process that cloned
//! it, so until its `execve` its `/proc/self/exe` is the runtime's binary.
//! A hostile image can name `/proc/self/exe` (or a script with
//! `#!/proc/self/exe`) as its program: the kernel then runs the runtime's
//! binary *inside* the container, where any process of the container may
//! open it through `/proc/<pid>/exe` and, once it no longer runs, rewrite
//! the host's binary (runc's CVE-2019-5736). So the processes that clone
//! containers run from an anonymous, sealed in-memory copy of the binary,
//! as runc's `cloned_binary` and youki's pentacle do: `memfd_create`, copy,
//! `F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE`, then exec the
//! memfd. A container that reaches such a copy can neither write nor resize
//! it, and it is not a file of the host's.
//!
//! The copy costs one read of the binary; it is made once per process and
//! path ([`sealed`]) and every monitor is exec'd from the same memfd, which
//! shares its pages. [`reexec_sealed`] puts the agent itself (which clones
//! exec'd commands and, without monitors, containers) on such a copy.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Errors from making or running a sealed copy.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// `MFD_EXEC` (Linux 6.3): an executable memfd even where the
/// `vm.memfd_noexec` sysctl would make memfds non-executable by default.
const MFD_EXEC: libc::c_uint = 0x10;

/// Whether `fd` is a memfd carrying all of [`SEALS`].
pub fn is_sealed(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GET_SEALS takes no argument; on a non-memfd it fails (EINVAL).
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals != -1 && seals & SEALS == SEALS
}

/// A new sealed memfd holding the bytes of the file at `path`.
pub fn seal_copy(path: &Path) -> Result<OwnedFd, SealError> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| SealError::Io { op, path, source }
    };
    let mut source = File::open(path).map_err(io("open"))?;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let name = c"drover-agent";
    // SAFETY: memfd_create with a static NUL-terminated name and flags.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
    if fd == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // A kernel before 6.3 does not know MFD_EXEC; memfds are executable there.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd == -1 {
        return Err(io("memfd_create for")(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a fresh fd that nothing else owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut copy = File::from(memfd);
    std::io::copy(&mut source, &mut copy).map_err(io("copy"))?;
    // SAFETY: F_ADD_SEALS with an integer argument on our own memfd.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } == -1 {
        return Err(io("seal the copy of")(std::io::Error::last_os_error()));
    }
    Ok(copy.into())
}

/// One sealed copy of `path` per process, made on first use. If `path`
/// already is a sealed memfd (`/proc/self/exe` of a process that runs from
/// one), that memfd itself is used, without a copy.
pub fn sealed(path: &Path) -> Result<Arc<OwnedFd>, SealError> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<OwnedFd>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(fd) = cache.get(path) {
        return Ok(fd.clone());
    }
    let file = File::open(path).map_err(|source| SealError::Io {
        op: "open",
        path: path.to_path_buf(),
        source,
    })?;
    let fd = if is_sealed(&file) {
        OwnedFd::from(file)
    } else {
        seal_copy(path)?
    };
    let fd = Arc::new(fd);
    cache.insert(path.to_path_buf(), fd.clone());
    Ok(fd)
}

/// The path under which `fd` can be exec'd by this process or a child it
/// forks (`/proc/self/fd/N`: the kernel opens it before close-on-exec fds
/// are closed).
pub fn exec_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Re-executes this process from a sealed copy of its binary, with the
/// same arguments and environment, unless it already runs from one. Call
/// first thing in `main`. Returns only if the process already runs sealed;
/// otherwise it is replaced, or an error says why not.
pub fn reexec_sealed() -> Result<(), SealError> {
    let exe = Path::new("/proc/self/exe");
    let me = File::open(exe).map_err(|source| SealError::Io {
        op: "open",
        path: exe.to_path_buf(),
        source,
    })?;
    if is_sealed(&me) {
        name_after_argv0();
        return Ok(());
    }
    drop(me);
    let copy = seal_copy(exe)?;
    let cstrings = |items: Vec<OsString>| -> Vec<CString> {
        items
            .into_iter()
            .filter_map(|s| CString::new(s.as_bytes()).ok())
            .collect()
    };
    let argv = cstrings(std::env::args_os().collect());
    let envp = cstrings(
        std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect(),
    );
    let argv_ptrs = super::plan::ptr_array(&argv);
    let envp_ptrs = super::plan::ptr_array(&envp);
    // SAFETY: a NUL-terminated empty path with AT_EMPTY_PATH execs the fd
    // itself; argv and envp are NULL-terminated arrays of pointers into
    // CStrings that outlive the call (it returns only on failure).
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            copy.as_raw_fd(),
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(SealError::Io {
        op: "execveat a sealed copy of",
        path: exe.to_path_buf(),
        source: std::io::Error::last_os_error(),
    })
}

/// An exec of a memfd names the process after the fd ("3"); `ps`,
/// `pidof` and `killall` know it by its `argv[0]`.
fn name_after_argv0() {
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let base = Path::new(&arg0)
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let mut name = [0u8; 16];
    let len = base.len().min(15);
    name[..len].copy_from_slice(&base[..len]);
    if len > 0 && !name[..len].contains(&0) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
        // bytes from our stack buffer.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_sealed_copy_holds_the_bytes_and_refuses_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"\x7fELF not really").unwrap();
        let fd = seal_copy(&path).unwrap();
        assert!(is_sealed(&fd));
        assert!(!is_sealed(&File::open(&path).unwrap()));
        let mut text = Vec::new();
        File::open(exec_path(&fd))
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text, b"\x7fELF not really");
        // Reopened for writing through /proc, as a container would: the
        // open may succeed, but no byte can change and the size is fixed.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(exec_path(&fd))
            .unwrap();
        assert_eq!(
            w.write(b"evil").unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(w.set_len(0).unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(
            w.set_len(100).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        // SAFETY: F_ADD_SEALS with an integer argument on our own memfd.
        let unseal = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, 0) };
        assert_eq!(unseal, -1, "F_SEAL_SEAL: the seals are final");
    }

    #[test]
    fn the_cache_copies_once_and_reuses_a_sealed_memfd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"v1").unwrap();
        let a = sealed(&path).unwrap();
        std::fs::write(&path, b"v2").unwrap();
        let b = sealed(&path).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one copy per path and process");
        let mut text = String::new();
        File::open(exec_path(&b))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "v1");
        // A path that already is a sealed memfd is not copied again.
        let again = sealed(&exec_path(&a)).unwrap();
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_ino;
        assert_eq!(ino(&again), ino(&a));
    }
}
