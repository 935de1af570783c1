//! A directory that paths cannot leave.
//!
//! A layer tarball names paths, and earlier entries of the same tarball can
//! make those paths point anywhere: a symlink `a -> /etc` followed by a file
//! `a/passwd`, or a whiteout `a/.wh.passwd`, would write or delete host files
//! if the path were joined onto the destination and handed to `open` or
//! `unlink`. `Root` never does that. It holds the destination open and asks
//! the kernel to resolve every parent path *inside* it (`openat2` with
//! `RESOLVE_IN_ROOT`: absolute symlinks and `..` stop at the root, as they
//! would inside the container); the final component is then created or
//! removed relative to that parent's descriptor without following it
//! (`*at` calls with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`). Nothing here can
//! touch a path outside the root, whatever the tarball says.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// An open directory inside which every path is resolved.
pub(crate) struct Root {
    fd: OwnedFd,
}

/// The kind of an existing directory entry, read without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    Missing,
    Dir,
    Other,
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open call and nothing
    // else owns it; `OwnedFd` closes it exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Splits a contained relative path into its parent and final name.
pub(crate) fn split(rel: &Path) -> Option<(&Path, &OsStr)> {
    Some((rel.parent().unwrap_or(Path::new("")), rel.file_name()?))
}

/// The path relative to the root, or `None` if it names `..` (an archive
/// path must not climb, even when the kernel would stop it at the root).
pub(crate) fn contained(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

impl Root {
    /// Opens `dir` (which must exist and be a real directory) as a root.
    pub(crate) fn open(dir: &Path) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd: owned(fd) })
    }

    /// Opens the directory `rel` (relative, no `..`), resolving every
    /// component inside the root.
    fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return self.fd.try_clone();
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        Ok(owned(openat2(self.fd.as_raw_fd(), rel, how)?))
    }

    /// Opens the directory `rel`, creating missing components (mode 0755,
    /// owned by root) one at a time, each inside the root.
    pub(crate) fn mkdir_all(&self, rel: &Path) -> io::Result<OwnedFd> {
        match self.open_dir(rel) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let (parent, name) = split(rel).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let parent = self.mkdir_all(parent)?;
        match mkdirat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) => {}
            // A dangling symlink: refuse rather than create its target.
            Err(Errno::EEXIST) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) => return Err(e.into()),
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC);
        Ok(owned(openat2(parent.as_raw_fd(), name, how)?))
    }

    /// What `name` in `dir` is, without following a symlink.
    pub(crate) fn existing(dir: &OwnedFd, name: &OsStr) -> io::Result<Existing> {
        match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(Existing::Dir),
            Ok(_) => Ok(Existing::Other),
            Err(Errno::ENOENT) => Ok(Existing::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `name` in `dir` (recursively if it is a directory, never
    /// following symlinks). A missing entry is not an error.
    pub(crate) fn remove(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        match Self::existing(dir, name)? {
            Existing::Missing => Ok(()),
            Existing::Other => Ok(unlinkat(
                Some(dir.as_raw_fd()),
                name,
                UnlinkatFlags::NoRemoveDir,
            )?),
            Existing::Dir => {
                let how = OpenHow::new().flags(
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                );
                let sub = owned(openat2(dir.as_raw_fd(), name, how)?);
                let names: Vec<CString> = {
                    let d = nix::dir::Dir::from_fd(sub.try_clone()?.into_raw_fd())?;
                    let mut names = Vec::new();
                    for entry in d {
                        let entry = entry?;
                        let n = entry.file_name();
                        if n.to_bytes() != b"." && n.to_bytes() != b".." {
                            names.push(n.to_owned());
                        }
                    }
                    names
                };
                for n in names {
                    Self::remove(&sub, OsStr::from_bytes(n.to_bytes()))?;
                }
                Ok(unlinkat(
                    Some(dir.as_raw_fd()),
                    name,
                    UnlinkatFlags::RemoveDir,
                )?)
            }
        }
    }

    /// Creates a new regular file `name` in `dir` for writing (never through
    /// a symlink, never an existing file).
    pub(crate) fn create_file(dir: &OwnedFd, name: &OsStr) -> io::Result<File> {
        let fd = openat(
            Some(dir.as_raw_fd()),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        Ok(File::from(owned(fd)))
    }

    /// Makes `name` in `dir` a directory (keeping one that is already there)
    /// and opens it.
    pub(crate) fn make_dir(dir: &OwnedFd, name: &OsStr) -> io::Result<File> {
        match Self::existing(dir, name)? {
            Existing::Dir => {}
            Existing::Other => {
                Self::remove(dir, name)?;
                mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o700))?;
            }
            Existing::Missing => {
                mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o700))?
            }
        }
        let fd = openat(
            Some(dir.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(owned(fd)))
    }

    pub(crate) fn symlink(dir: &OwnedFd, name: &OsStr, target: &Path) -> io::Result<()> {
        Ok(symlinkat(target, Some(dir.as_raw_fd()), name)?)
    }

    pub(crate) fn mknod(dir: &OwnedFd, name: &OsStr, kind: SFlag, dev: u64) -> io::Result<()> {
        Ok(mknodat(
            Some(dir.as_raw_fd()),
            name,
            kind,
            Mode::empty(),
            dev,
        )?)
    }

    /// Hard-links `name` in `dir` to the entry `target` (relative, no `..`),
    /// whose parent is resolved inside the root; a symlink target is linked
    /// itself, never followed.
    pub(crate) fn hard_link(&self, target: &Path, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        let (tparent, tname) =
            split(target).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let tdir = self.open_dir(tparent)?;
        Ok(linkat(
            Some(tdir.as_raw_fd()),
            tname,
            Some(dir.as_raw_fd()),
            name,
            AtFlags::empty(),
        )?)
    }

    /// Sets owner, then mode (chown clears setuid bits), of `name` in `dir`
    /// without following a symlink; symlinks only get their owner.
    pub(crate) fn set_owner_mode(
        dir: &OwnedFd,
        name: &OsStr,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    ) -> io::Result<()> {
        fchownat(
            Some(dir.as_raw_fd()),
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if let Some(mode) = mode {
            // fchmodat cannot refuse symlinks by flag on every kernel, so the
            // caller passes a mode only for entries that are not symlinks.
            fchmodat(
                Some(dir.as_raw_fd()),
                name,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )?;
        }
        Ok(())
    }

    /// Sets the extended attribute `key` on an open file or directory.
    pub(crate) fn set_xattr(file: &impl AsRawFd, key: &str, value: &[u8]) -> io::Result<()> {
        let key = CString::new(key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `file` is an open descriptor, `key` is NUL-terminated and
        // `value` is a valid buffer of the length passed; nothing is retained.
        let rc = unsafe {
            libc::fsetxattr(
                file.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sets the modification (and access) time of `name` in `dir`, not
    /// following a symlink.
    pub(crate) fn set_mtime(dir: &OwnedFd, name: &OsStr, secs: u64) -> io::Result<()> {
        let t = nix::sys::time::TimeSpec::new(secs.min(i64::MAX as u64) as i64, 0);
        Ok(nix::sys::stat::utimensat(
            Some(dir.as_raw_fd()),
            name,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contained_strips_root_and_rejects_parent() {
        assert_eq!(
            contained(Path::new("/etc/passwd")),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(contained(Path::new("./a/./b")), Some(PathBuf::from("a/b")));
        assert_eq!(contained(Path::new("a/../../etc")), None);
    }

    #[test]
    fn parents_resolve_inside_the_root_through_absolute_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root_dir.path().join("a")).unwrap();
        let root = Root::open(root_dir.path()).unwrap();
        // `a` points at an absolute host path; inside the root it names
        // `<root><outside>`, which does not exist: creating under it fails
        // instead of writing into the host directory.
        let err = root.mkdir_all(Path::new("a/b")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn remove_does_not_follow_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(root_dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root_dir.path().join("d/link")).unwrap();
        let root = Root::open(root_dir.path()).unwrap();
        let top = root.mkdir_all(Path::new("")).unwrap();
        Root::remove(&top, OsStr::new("d")).unwrap();
        assert!(!root_dir.path().join("d").exists());
        assert!(outside.path().join("keep").exists());
    }
}
