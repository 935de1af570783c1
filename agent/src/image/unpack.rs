//! Unpacking layer tarballs into the content-addressed layer cache.
//!
//! A layer is unpacked into a temporary directory while its compressed bytes
//! are hashed; only when the digest matches is the directory renamed to
//! `<cache>/layers/<hex>`, so a cache entry is always complete and verified.
//! A per-digest `flock` makes concurrent pulls (threads or processes) of the
//! same layer wait for one another instead of unpacking twice.
//!
//! OCI whiteouts are rewritten into the form overlayfs understands: a
//! `.wh.NAME` file becomes a 0/0 character device `NAME`, and `.wh..wh..opq`
//! marks its directory opaque with the `trusted.overlay.opaque=y` xattr.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::layout::{blob_path, check, Compression, HashingReader, LayerBlob};
use super::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Where a layer blob comes from: a file in a layout, or a download that is
/// made only once the per-digest lock is held (so concurrent pulls of a layer
/// download it once) and removed after unpacking.
pub(crate) enum BlobSource<'a> {
    Layout(&'a Path),
    Download(&'a dyn Fn(&LayerBlob, &Path) -> Result<PathBuf, ImageError>),
}

/// Returns the cache directory of `layer`, unpacking it first if needed.
pub(crate) fn ensure_layer(
    source: &BlobSource,
    layer: &LayerBlob,
    layers_dir: &Path,
) -> Result<PathBuf, ImageError> {
    let dest = layers_dir.join(&layer.hex);
    if dest.is_dir() {
        return Ok(dest);
    }
    let lock_path = layers_dir.join(format!("{}.lock", layer.hex));
    let lock_file = File::create(&lock_path).map_err(ImageError::io(&lock_path))?;
    let _lock =
        Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| ImageError::Io {
            path: lock_path.clone(),
            source: errno.into(),
        })?;
    // Someone else may have finished while we waited for the lock.
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = layers_dir.join(format!(".tmp-{}", layer.hex));
    if tmp.exists() {
        // Left over from a crash; we hold the lock, so nobody else uses it.
        std::fs::remove_dir_all(&tmp).map_err(ImageError::io(&tmp))?;
    }
    let (blob, downloaded) = match source {
        BlobSource::Layout(layout) => (blob_path(layout, &layer.hex), false),
        BlobSource::Download(fetch) => (fetch(layer, layers_dir)?, true),
    };
    std::fs::create_dir(&tmp).map_err(ImageError::io(&tmp))?;
    let unpacked = unpack_verified(&blob, layer, &tmp);
    if downloaded {
        let _ = std::fs::remove_file(&blob);
    }
    match unpacked {
        Ok(()) => {
            std::fs::rename(&tmp, &dest).map_err(ImageError::io(&dest))?;
            Ok(dest)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Removes the cached layer `hex` unless a pull holds its lock right now.
pub(crate) fn remove_unless_locked(layers_dir: &Path, hex: &str) -> Result<bool, ImageError> {
    let lock_path = layers_dir.join(format!("{hex}.lock"));
    let lock_file = File::create(&lock_path).map_err(ImageError::io(&lock_path))?;
    let Ok(_lock) = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) else {
        return Ok(false);
    };
    let dest = layers_dir.join(hex);
    // Rename first so a half-removed directory is never mistaken for a layer.
    let doomed = layers_dir.join(format!(".gc-{hex}"));
    std::fs::rename(&dest, &doomed).map_err(ImageError::io(&dest))?;
    std::fs::remove_dir_all(&doomed).map_err(ImageError::io(&doomed))?;
    Ok(true)
}

fn unpack_verified(path: &Path, layer: &LayerBlob, dest: &Path) -> Result<(), ImageError> {
    let path = path.to_path_buf();
    let file = File::open(&path).map_err(ImageError::io(&path))?;
    let hashing = HashingReader::new(std::io::BufReader::new(file));
    let io_err = |source| ImageError::Io {
        path: path.clone(),
        source,
    };
    let (size, digest) = match layer.compression {
        Compression::None => {
            let archive = unpack_tar(hashing, &layer.hex, dest)?;
            archive.into_inner().finish().map_err(io_err)?
        }
        Compression::Gzip => {
            let archive = unpack_tar(flate2::read::GzDecoder::new(hashing), &layer.hex, dest)?;
            let mut gz = archive.into_inner();
            // Drain the decoder so the gzip trailer is read and checked.
            std::io::copy(&mut gz, &mut std::io::sink()).map_err(io_err)?;
            gz.into_inner().finish().map_err(io_err)?
        }
    };
    check(&path, &layer.hex, layer.size, size, &digest)
}

fn unpack_tar<R: Read>(reader: R, hex: &str, dest: &Path) -> Result<tar::Archive<R>, ImageError> {
    let err = |entry: &Path| {
        let entry = entry.to_path_buf();
        move |source| ImageError::Unpack {
            digest: hex.to_string(),
            entry,
            source,
        }
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(err(Path::new("")))? {
        let mut entry = entry.map_err(err(Path::new("")))?;
        let raw = entry.path().map_err(err(Path::new("")))?.into_owned();
        let rel = contained(&raw).ok_or_else(|| ImageError::PathTraversal {
            digest: hex.into(),
            entry: raw.clone(),
        })?;
        if let Some(link) = entry.link_name().map_err(err(&raw))? {
            if entry.header().entry_type().is_hard_link() && contained(&link).is_none() {
                return Err(ImageError::PathTraversal {
                    digest: hex.into(),
                    entry: raw,
                });
            }
        }
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the layer root itself
        };
        let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
        if name == OPAQUE_MARKER {
            std::fs::create_dir_all(&parent).map_err(err(&raw))?;
            set_opaque(&parent).map_err(err(&raw))?;
        } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            std::fs::create_dir_all(&parent).map_err(err(&raw))?;
            whiteout(&parent.join(hidden)).map_err(err(&raw))?;
        } else if !entry.unpack_in(dest).map_err(err(&raw))? {
            return Err(ImageError::PathTraversal {
                digest: hex.into(),
                entry: raw,
            });
        }
    }
    Ok(archive)
}

/// The path relative to the layer root, or `None` if it would leave the root.
fn contained(path: &Path) -> Option<PathBuf> {
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

fn whiteout(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path)?,
        Ok(_) => std::fs::remove_file(path)?,
        Err(_) => {}
    }
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))?;
    Ok(())
}

fn set_opaque(dir: &Path) -> std::io::Result<()> {
    let path = CString::new(dir.as_os_str().as_bytes())?;
    let value = b"y";
    // SAFETY: `path` and the attribute name are NUL-terminated C strings and
    // `value` is a valid buffer of the length passed; the call does not retain them.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
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
}
