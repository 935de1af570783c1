//! Unpacking layer tarballs into the content-addressed layer cache.
//!
//! A layer is unpacked into a temporary directory while its compressed bytes
//! are hashed; only when the digest matches is the directory renamed to
//! `<cache>/layers/<hex>`, so a cache entry is always complete and verified.
//! A per-digest `flock` makes concurrent pulls (threads or processes) of the
//! same layer wait for one another instead of unpacking twice.
//!
//! A layer from a layout is verified *before* a byte of it is unpacked (a
//! download is verified as it arrives), and unpacking goes through
//! [`root::Root`], so a hostile tarball can neither escape the layer
//! directory nor be half-trusted. [`entries`] decides what each entry
//! becomes. The uncompressed size is capped per layer and per image.

mod entries;
mod root;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use nix::fcntl::{Flock, FlockArg};

use super::layout::{blob_path, check, Compression, HashingReader, LayerBlob};
use super::ImageError;
use entries::Budget;

/// Where a layer blob comes from: a file in a layout, or a download that is
/// made only once the per-digest lock is held (so concurrent pulls of a layer
/// download it once) and removed after unpacking.
pub(crate) enum BlobSource<'a> {
    Layout(&'a Path),
    Download(&'a dyn Fn(&LayerBlob, &Path) -> Result<PathBuf, ImageError>),
}

/// Returns the cache directory of `layer` and its uncompressed size,
/// unpacking it first if needed; refuses a layer larger than `budget` bytes.
pub(crate) fn ensure_layer(
    source: &BlobSource,
    layer: &LayerBlob,
    layers_dir: &Path,
    budget: u64,
) -> Result<(PathBuf, u64), ImageError> {
    let dest = layers_dir.join(&layer.hex);
    let cached = |dest: PathBuf| -> Result<(PathBuf, u64), ImageError> {
        let size = unpacked_size(layers_dir, &layer.hex);
        if size > budget {
            return Err(ImageError::TooLarge {
                digest: layer.hex.clone(),
                limit: budget,
            });
        }
        Ok((dest, size))
    };
    if dest.is_dir() {
        return cached(dest);
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
        return cached(dest);
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
    // A download was verified as it arrived; a layout's blob is verified
    // here, before anything in it is believed.
    let verified = if downloaded {
        Ok(())
    } else {
        verify(&blob, layer)
    };
    std::fs::create_dir(&tmp).map_err(ImageError::io(&tmp))?;
    let unpacked = verified.and_then(|()| unpack_layer(&blob, layer, &tmp, budget));
    if downloaded {
        let _ = std::fs::remove_file(&blob);
    }
    match unpacked {
        Ok(size) => {
            let size_file = size_path(layers_dir, &layer.hex);
            std::fs::write(&size_file, size.to_string()).map_err(ImageError::io(&size_file))?;
            // On disk before it is named: a power cut after the rename
            // must not leave a layer whose files never reached the disk
            // (seen in a VM powered off 16 s after a pull: the next start
            // ran a binary that read back as zeros, "Exec format error").
            durable(&tmp)?;
            std::fs::rename(&tmp, &dest).map_err(ImageError::io(&dest))?;
            // And the rename itself.
            File::open(layers_dir)
                .and_then(|d| d.sync_all())
                .map_err(ImageError::io(layers_dir))?;
            Ok((dest, size))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Flushes the filesystem holding `dir` to disk (every file just unpacked
/// into it, and its directory entries). One `syncfs` per layer: cheaper
/// than an fsync per file of a layer with thousands of them.
fn durable(dir: &Path) -> Result<(), ImageError> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir).map_err(ImageError::io(dir))?;
    nix::unistd::syncfs(d.as_raw_fd()).map_err(|errno| ImageError::Io {
        path: dir.to_path_buf(),
        source: errno.into(),
    })
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
    let _ = std::fs::remove_file(size_path(layers_dir, hex));
    Ok(true)
}

fn size_path(layers_dir: &Path, hex: &str) -> PathBuf {
    layers_dir.join(format!("{hex}.size"))
}

/// The uncompressed size recorded when the layer was unpacked (0 for a
/// layer cached before sizes were recorded).
fn unpacked_size(layers_dir: &Path, hex: &str) -> u64 {
    std::fs::read_to_string(size_path(layers_dir, hex))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Checks a blob's size and sha256 against its descriptor.
fn verify(path: &Path, layer: &LayerBlob) -> Result<(), ImageError> {
    let file = File::open(path).map_err(ImageError::io(path))?;
    let (size, digest) = HashingReader::new(std::io::BufReader::new(file))
        .finish()
        .map_err(ImageError::io(path))?;
    check(path, &layer.hex, layer.size, size, &digest)
}

/// A zstd stream of any number of frames (zstd:chunked and pzstd write
/// many), skippable frames passed over, read to its very end: trailing
/// bytes that are no frame are an error, never a silent end of the layer.
struct ZstdFrames<R> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    /// Whether a frame is being decoded.
    in_frame: bool,
}

impl<R: std::io::BufRead> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames {
            source,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }

    fn bad(e: impl std::fmt::Display) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a zstd stream: {e}"),
        )
    }

    /// Starts the next frame; false at the end of the input.
    fn next_frame(&mut self) -> std::io::Result<bool> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = std::io::copy(
                        &mut (&mut self.source).take(length as u64),
                        &mut std::io::sink(),
                    )?;
                    if skipped != length as u64 {
                        return Err(Self::bad("a skippable frame runs past the end"));
                    }
                }
                Err(e) => return Err(Self::bad(e)),
            }
        }
    }
}

impl<R: std::io::BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            let d = &mut self.decoder;
            while d.can_collect() < buf.len() && !d.is_finished() {
                let want = buf.len() - d.can_collect();
                d.decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(want))
                    .map_err(Self::bad)?;
            }
            let n = d.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if d.is_finished() && d.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

/// Unpacks a verified blob into `dest`; returns the uncompressed size.
fn unpack_layer(
    path: &Path,
    layer: &LayerBlob,
    dest: &Path,
    budget: u64,
) -> Result<u64, ImageError> {
    let file = File::open(path).map_err(ImageError::io(path))?;
    let reader = std::io::BufReader::new(file);
    let too_large = || ImageError::TooLarge {
        digest: layer.hex.clone(),
        limit: budget,
    };
    let drain = |mut r: Box<dyn Read + '_>| {
        // Read to the end so a gzip trailer (its CRC) is checked too.
        std::io::copy(&mut r, &mut std::io::sink()).map_err(ImageError::io(path))
    };
    let (read, result) = match layer.compression {
        Compression::None => {
            let (counted, read) = Budget::new(reader, budget);
            let result = entries::unpack(counted, &layer.hex, dest)
                .and_then(|a| drain(Box::new(a.into_inner())));
            (read, result)
        }
        Compression::Gzip => {
            let (counted, read) = Budget::new(flate2::read::MultiGzDecoder::new(reader), budget);
            let result = entries::unpack(counted, &layer.hex, dest)
                .and_then(|a| drain(Box::new(a.into_inner())));
            (read, result)
        }
        Compression::Zstd => {
            let (counted, read) = Budget::new(ZstdFrames::new(reader), budget);
            let result = entries::unpack(counted, &layer.hex, dest)
                .and_then(|a| drain(Box::new(a.into_inner())));
            (read, result)
        }
    };
    let size = read.load(Ordering::Relaxed);
    match result {
        _ if size > budget => Err(too_large()),
        Ok(_) => Ok(size),
        Err(e) => Err(e),
    }
}
