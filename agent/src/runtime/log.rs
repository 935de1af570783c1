//! Container logs: one file per allocation, rotated by size.
//!
//! The monitor (see [`super::monitor`]) reads the container's stdout and
//! stderr from one pipe and appends to `<id>.log`. When a write would take
//! the file past the size limit, the file is renamed to `<id>.log.1`
//! (replacing an older one) and a new `<id>.log` is started, so a chatty
//! container uses at most twice the limit on disk. Readers read `.log.1`
//! and then `.log`; a follower that sees the file replaced finishes the old
//! one (its open descriptor still reads it) and continues with the new.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The previous generation of `path`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    path.with_file_name(name)
}

/// An append-only log file that rotates once it would exceed `max` bytes
/// (0: never).
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    /// The file ends with a newline (or is empty).
    at_line_start: bool,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl RotatingLog {
    pub fn open(path: &Path, max: u64) -> std::io::Result<RotatingLog> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            max,
            at_line_start: true,
        })
    }

    /// Appends `data`, rotating whenever the file would outgrow the limit.
    /// Data is cut after the last newline that fits, so files start with a
    /// whole line: if the file ends mid-line (a line split across two reads
    /// of the pipe), the line is finished first, which may take the file
    /// past the limit by that line's rest. Only a line longer than the limit
    /// is cut in the middle.
    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.max == 0 {
                return self.append(data);
            }
            let room = self.max.saturating_sub(self.size) as usize;
            if data.len() <= room {
                return self.append(data);
            }
            let cut = data[..room]
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|i| i + 1);
            let window = &data[..data.len().min(self.max as usize)];
            let finish_line = || window.iter().position(|b| *b == b'\n').map(|i| i + 1);
            match cut {
                Some(n) => {
                    self.append(&data[..n])?;
                    data = &data[n..];
                }
                None if self.size == 0 => {
                    self.append(&data[..room])?;
                    data = &data[room..];
                }
                None if !self.at_line_start => {
                    if let Some(n) = finish_line() {
                        self.append(&data[..n])?;
                        data = &data[n..];
                    }
                }
                None => {}
            }
            self.rotate()?;
        }
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        if let Some(last) = data.last() {
            self.at_line_start = *last == b'\n';
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, rotated(&self.path))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Everything still on disk for `path`: the rotated generation, then the
/// current file. `NotFound` only if neither exists.
pub fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let old = File::open(rotated(path)).and_then(|mut f| f.read_to_end(&mut data));
    let current = File::open(path).and_then(|mut f| f.read_to_end(&mut data));
    match (old, current) {
        (Err(e), Err(_)) => Err(e),
        _ => Ok(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_reads_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        assert_eq!(rotated(&path), dir.path().join("a.log.1"));
        assert!(read_all(&path).is_err());
        let mut log = RotatingLog::open(&path, 10).unwrap();
        log.write(b"12345\n").unwrap();
        log.write(b"678\n").unwrap();
        assert!(!rotated(&path).exists());
        log.write(b"abc\n").unwrap(); // 14 > 10: rotate first
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"12345\n678\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"abc\n");
        assert_eq!(read_all(&path).unwrap(), b"12345\n678\nabc\n");
        // A write larger than the limit is cut after newlines that fit.
        log.write(b"0123\n4567\n89ab\n").unwrap();
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"abc\n0123\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"4567\n89ab\n");
        // A line longer than the limit is cut where the file is full.
        log.write(b"0123456789abcdef\n").unwrap();
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"0123456789");
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdef\n");
        assert_eq!(read_all(&path).unwrap(), b"0123456789abcdef\n");
        // A line split across two writes is finished before rotating.
        let mut log = RotatingLog::open(&dir.path().join("b.log"), 8).unwrap();
        log.write(b"123\n4567").unwrap();
        log.write(b"89\nab\n").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("b.log.1")).unwrap(),
            b"123\n456789\n"
        );
        assert_eq!(std::fs::read(dir.path().join("b.log")).unwrap(), b"ab\n");
        // Reopening continues the size count.
        let mut again = RotatingLog::open(&path, 40).unwrap();
        again.write(b"x\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdef\nx\n");
    }
}
