//! Container logs: one file per allocation, rotated by size.
//!
//! The monitor (see [`super::monitor`]) reads the container's stdout and
//! stderr from a pipe each and appends to `<id>.log` one record per line,
//! as the kubelet writes CRI logs: the time the line was read (RFC 3339,
//! UTC, nanoseconds), the stream, `F` for a full line or `P` for a piece
//! (a line longer than [`MAX_LINE`], or one the container left unfinished
//! and went quiet), then the line:
//!
//! ```text
//! 2026-12-02T10:35:00.123456789Z stdout F listening on :8080
//! 2026-12-02T10:35:01.000000001Z stderr F warning: no config, using defaults
//! ```
//!
//! So `drover logs` can keep the streams apart, show times and start at a
//! time. A line in no such form (a file an older monitor wrote, or a
//! container started without a monitor writing straight into the file) is
//! read as stdout of unknown time. When a write would take
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

/// The longest line kept whole in one record; longer ones are cut into
/// partial records.
pub const MAX_LINE: usize = 16 * 1024;

/// Which of a container's outputs a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn word(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

/// One record read back: a line (ending in a newline) or a piece of one.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub stream: Stream,
    /// When the monitor read it, in ns since the epoch (0: unknown).
    pub at_ns: i64,
    /// The line with its newline, or a piece of one without.
    pub data: std::borrow::Cow<'a, [u8]>,
}

fn parse_timestamp(s: &[u8]) -> Option<i64> {
    drover_proto::json::parse_time_ns(std::str::from_utf8(s).ok()?)
}

/// Appends the record of `content` (no newline in it) to `out`.
pub fn encode(out: &mut Vec<u8>, stream: Stream, at_ns: i64, content: &[u8], full: bool) {
    out.extend_from_slice(drover_proto::json::time_ns(at_ns).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.word());
    out.extend_from_slice(if full { b" F " } else { b" P " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// A line of a log file (without its newline) as a record.
pub fn parse(line: &[u8]) -> Record<'_> {
    let raw = || Record {
        stream: Stream::Stdout,
        at_ns: 0,
        data: std::borrow::Cow::Owned([line, b"\n"].concat()),
    };
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return raw();
    };
    let content = parts.next().unwrap_or_default();
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return raw(),
    };
    let Some(at_ns) = parse_timestamp(ts) else {
        return raw();
    };
    let data = match tag {
        b"F" => std::borrow::Cow::Owned([content, b"\n"].concat()),
        b"P" => std::borrow::Cow::Borrowed(content),
        _ => return raw(),
    };
    Record {
        stream,
        at_ns,
        data,
    }
}

/// Where to cut a piece of at most [`MAX_LINE`] bytes off `text`: not
/// inside a UTF-8 character, so each piece reads as text by itself.
fn piece(text: &[u8]) -> usize {
    let mut cut = MAX_LINE.min(text.len());
    // Continuation bytes (10xxxxxx) belong to the character before them.
    while cut > MAX_LINE - 3 && cut < text.len() && text[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    cut
}

/// Cuts what one stream writes into records: each finished line, and the
/// unfinished rest once it is [`MAX_LINE`] long or [`Lines::flush`]ed.
#[derive(Debug)]
pub struct Lines {
    stream: Stream,
    pending: Vec<u8>,
}

impl Lines {
    pub fn new(stream: Stream) -> Lines {
        Lines {
            stream,
            pending: Vec::new(),
        }
    }

    /// Whether part of a line waits for its end.
    pub fn holding(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The records of `data`, read at `at_ns`, appended to `out`.
    pub fn push(&mut self, data: &[u8], at_ns: i64, out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let mut line = &self.pending[start..start + i];
            while line.len() > MAX_LINE {
                let cut = piece(line);
                encode(out, self.stream, at_ns, &line[..cut], false);
                line = &line[cut..];
            }
            encode(out, self.stream, at_ns, line, true);
            start += i + 1;
        }
        while self.pending.len() - start >= MAX_LINE {
            let cut = piece(&self.pending[start..]);
            encode(
                out,
                self.stream,
                at_ns,
                &self.pending[start..start + cut],
                false,
            );
            start += cut;
        }
        self.pending.drain(..start);
    }

    /// The unfinished rest, as a piece, appended to `out`.
    pub fn flush(&mut self, at_ns: i64, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            encode(out, self.stream, at_ns, &self.pending, false);
            self.pending.clear();
        }
    }
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
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

    fn records(data: &[u8]) -> Vec<(Stream, i64, String)> {
        data.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(parse)
            .map(|r| {
                (
                    r.stream,
                    r.at_ns,
                    String::from_utf8_lossy(&r.data).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_become_records_of_their_stream_and_time() {
        let mut out = Vec::new();
        let mut lines = Lines::new(Stream::Stderr);
        lines.push(b"one\ntw", 1_764_669_600_123_456_789, &mut out);
        assert!(lines.holding());
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text, "2025-12-02T10:00:00.123456789Z stderr F one\n");
        lines.push(b"o\n", 2_000_000_000, &mut out);
        lines.push(b"prompt: ", 3_000_000_000, &mut out);
        lines.flush(4_000_000_000, &mut out);
        assert!(!lines.holding());
        assert_eq!(
            records(&out),
            vec![
                (Stream::Stderr, 1_764_669_600_123_456_789, "one\n".into()),
                (Stream::Stderr, 2_000_000_000, "two\n".into()),
                (Stream::Stderr, 4_000_000_000, "prompt: ".into()),
            ]
        );
        // Too long for one record: pieces, then the end of the line.
        let mut out = Vec::new();
        let mut lines = Lines::new(Stream::Stdout);
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        lines.push(&long, 1, &mut out);
        lines.push(b"\n", 1, &mut out);
        let got = records(&out);
        assert_eq!(got.len(), 3, "{got:?}");
        let joined: String = got.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(joined.len(), long.len() + 1);
        // Pieces are not cut inside a character.
        let mut out = Vec::new();
        let mut lines = Lines::new(Stream::Stdout);
        let snow = "☃".repeat(MAX_LINE / 3 + 5);
        lines.push(snow.as_bytes(), 1, &mut out);
        lines.push(b"\n", 1, &mut out);
        let got = records(&out);
        assert!(
            got.len() >= 2 && got.iter().all(|r| !r.2.contains('\u{fffd}')),
            "{}",
            got.len()
        );
        let joined: String = got.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(joined, snow + "\n");
        // A line an older monitor wrote: stdout, time unknown.
        assert_eq!(
            records(b"just text\n2025-13-01T00:00:00Z stdout F bad month\n"),
            vec![
                (Stream::Stdout, 0, "just text\n".into()),
                (
                    Stream::Stdout,
                    0,
                    "2025-13-01T00:00:00Z stdout F bad month\n".into()
                ),
            ]
        );
        assert_eq!(
            parse_timestamp(b"1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
    }

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
