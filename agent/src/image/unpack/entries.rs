//! What each kind of tar entry becomes in a layer directory.
//!
//! Every entry is placed through [`Root`], so no entry can reach outside the
//! layer, whatever earlier entries made of its parent path. The rest is
//! policy, the same as containerd's and runc's for a root daemon:
//!
//! - OCI whiteouts become what overlayfs understands: `.wh.NAME` a 0/0
//!   character device `NAME`, `.wh..wh..opq` the `trusted.overlay.opaque`
//!   xattr on its directory. Layers' own `trusted.*` xattrs (which could
//!   forge those) and `security.*` other than file capabilities are dropped.
//! - Device nodes are not created: a container gets its devices from the
//!   runtime, and a block device in the layer cache would be a door into the
//!   host's disks. (A 0/0 character device is the overlay whiteout form that
//!   some tools write, and is kept.)
//! - Owners, modes (setuid/setgid included, as images such as `su` need),
//!   times and hard links inside the layer are kept.
//! - The uncompressed stream is counted, and a layer larger than its budget
//!   is refused (a decompression bomb stops at the budget, not at the disk).

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::sys::stat::{makedev, SFlag};

use super::root::{contained, split, Root};
use crate::image::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Counts the bytes read through it and fails once more than `limit` pass.
pub(crate) struct Budget<R> {
    inner: R,
    read: Arc<AtomicU64>,
    limit: u64,
}

impl<R> Budget<R> {
    pub fn new(inner: R, limit: u64) -> (Self, Arc<AtomicU64>) {
        let read = Arc::new(AtomicU64::new(0));
        let me = Budget {
            inner,
            read: read.clone(),
            limit,
        };
        (me, read)
    }
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.limit {
            return Err(io::Error::other("layer exceeds its size budget"));
        }
        Ok(n)
    }
}

/// Unpacks the tar stream `reader` into `dest` (an empty directory).
/// Returns the reader, positioned after the end-of-archive marker.
pub(crate) fn unpack<R: Read>(
    reader: R,
    hex: &str,
    dest: &Path,
) -> Result<tar::Archive<R>, ImageError> {
    let root = Root::open(dest).map_err(ImageError::io(dest))?;
    let mut archive = tar::Archive::new(reader);
    let stream_err = |source| ImageError::Unpack {
        digest: hex.to_string(),
        entry: PathBuf::new(),
        source,
    };
    for entry in archive.entries().map_err(stream_err)? {
        let mut entry = entry.map_err(stream_err)?;
        let raw = entry.path().map_err(stream_err)?.into_owned();
        place(&root, &mut entry, &raw).map_err(|e| e.into_image_error(hex, raw))?;
    }
    Ok(archive)
}

/// Why one entry could not be placed.
enum EntryError {
    Io(io::Error),
    Refused(&'static str),
    Parent(io::Error),
    /// The entry's path or hard link target climbs out with `..`.
    Climbs,
}

impl From<io::Error> for EntryError {
    fn from(e: io::Error) -> Self {
        EntryError::Io(e)
    }
}

impl EntryError {
    fn into_image_error(self, hex: &str, entry: PathBuf) -> ImageError {
        let digest = hex.to_string();
        match self {
            EntryError::Io(source) => ImageError::Unpack {
                digest,
                entry,
                source,
            },
            EntryError::Climbs => ImageError::PathTraversal { digest, entry },
            EntryError::Refused(reason) => ImageError::UnsafeEntry {
                digest,
                entry,
                reason,
            },
            EntryError::Parent(source) => ImageError::UnsafeEntry {
                digest,
                entry,
                reason: match source.raw_os_error() {
                    Some(libc::ENOTDIR) | Some(libc::ENOENT) | Some(libc::ELOOP) => {
                        "its parent is not a directory inside the layer (a symlink or a file)"
                    }
                    _ => "its parent directory cannot be opened inside the layer",
                },
            },
        }
    }
}

fn place<R: Read>(root: &Root, entry: &mut tar::Entry<R>, raw: &Path) -> Result<(), EntryError> {
    let rel = contained(raw).ok_or(EntryError::Climbs)?;
    let Some((parent_rel, name)) = split(&rel) else {
        return Ok(()); // the layer root itself
    };
    let parent = root.mkdir_all(parent_rel).map_err(EntryError::Parent)?;
    let name_bytes = name.as_bytes();
    if name_bytes == OPAQUE_MARKER.as_bytes() {
        Root::set_xattr(&parent, OPAQUE_XATTR, b"y")?;
        return Ok(());
    }
    if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(EntryError::Refused("it whites out no name"));
        }
        let hidden = OsStr::from_bytes(hidden);
        Root::remove(&parent, hidden)?;
        Root::mknod(&parent, hidden, SFlag::S_IFCHR, makedev(0, 0))?;
        return Ok(());
    }
    let header = entry.header();
    let kind = header.entry_type();
    let uid =
        u32::try_from(header.uid()?).map_err(|_| EntryError::Refused("its uid is too large"))?;
    let gid =
        u32::try_from(header.gid()?).map_err(|_| EntryError::Refused("its gid is too large"))?;
    let mode = header.mode()? & 0o7777;
    let mtime = header.mtime()?;
    let set_meta = |is_symlink: bool| -> Result<(), EntryError> {
        Root::set_owner_mode(&parent, name, uid, gid, (!is_symlink).then_some(mode))?;
        Root::set_mtime(&parent, name, mtime)?;
        Ok(())
    };
    match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            Root::remove(&parent, name)?;
            let mut file = Root::create_file(&parent, name)?;
            io::copy(entry, &mut file)?;
            apply_xattrs(entry, &file)?;
            set_meta(false)
        }
        tar::EntryType::Directory => {
            let dir = Root::make_dir(&parent, name)?;
            apply_xattrs(entry, &dir)?;
            set_meta(false)
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()?
                .ok_or(EntryError::Refused("a symlink without a target"))?;
            Root::remove(&parent, name)?;
            // The target is stored as written: it is resolved inside the
            // container's root at run time, and inside the layer root here.
            Root::symlink(&parent, name, &target)?;
            set_meta(true)
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name()?
                .ok_or(EntryError::Refused("a hard link without a target"))?;
            let target = contained(&target).ok_or(EntryError::Climbs)?;
            Root::remove(&parent, name)?;
            root.hard_link(&target, &parent, name)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => {
                        EntryError::Refused(
                            "its hard link target is not an earlier entry of the layer",
                        )
                    }
                    _ => EntryError::Io(e),
                })
        }
        tar::EntryType::Fifo => {
            Root::remove(&parent, name)?;
            Root::mknod(&parent, name, SFlag::S_IFIFO, 0)?;
            set_meta(false)
        }
        tar::EntryType::Char => {
            let h = entry.header();
            let device = (
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            );
            if device == (0, 0) {
                Root::remove(&parent, name)?;
                Root::mknod(&parent, name, SFlag::S_IFCHR, makedev(0, 0))?;
            } else {
                tracing::debug!(entry = %raw.display(), "device node in a layer skipped");
            }
            Ok(())
        }
        tar::EntryType::Block => {
            tracing::debug!(entry = %raw.display(), "device node in a layer skipped");
            Ok(())
        }
        _ => Ok(()), // pax/GNU headers are folded into entries by `tar`
    }
}

/// Applies the entry's `SCHILY.xattr.*` records that a layer may carry.
fn apply_xattrs<R: Read>(entry: &mut tar::Entry<R>, file: &std::fs::File) -> io::Result<()> {
    let Some(exts) = entry.pax_extensions()? else {
        return Ok(());
    };
    let mut wanted = Vec::new();
    for ext in exts {
        let ext = ext?;
        let Ok(key) = ext.key() else { continue };
        if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
            if allowed_xattr(attr) {
                wanted.push((attr.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    for (attr, value) in wanted {
        Root::set_xattr(file, &attr, &value)?;
    }
    Ok(())
}

/// `user.*` and file capabilities; never `trusted.*` (overlayfs's own
/// metadata lives there) nor other `security.*` labels.
fn allowed_xattr(name: &str) -> bool {
    name.starts_with("user.") || name == "security.capability"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_user_and_capability_xattrs_are_applied() {
        assert!(allowed_xattr("user.foo"));
        assert!(allowed_xattr("security.capability"));
        assert!(!allowed_xattr("trusted.overlay.opaque"));
        assert!(!allowed_xattr("trusted.overlay.redirect"));
        assert!(!allowed_xattr("security.selinux"));
    }

    #[test]
    fn budget_fails_past_its_limit() {
        let (mut b, read) = Budget::new(&[0u8; 100][..], 50);
        let mut sink = Vec::new();
        assert!(io::copy(&mut b, &mut sink).is_err());
        assert!(read.load(Ordering::Relaxed) > 50);
        let (mut b, _) = Budget::new(&[0u8; 50][..], 50);
        assert_eq!(io::copy(&mut b, &mut sink).unwrap(), 50);
    }
}
