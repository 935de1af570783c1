//! The snapshot file format (`drover operator snapshot save`): one header
//! line (JSON) and then the scheduler's whole state (JSON). The header
//! names the format and its version, the log index the state was taken at,
//! what it holds, and the state's length and SHA-256: a truncated or altered
//! file is refused before anything changes, and a file from a newer Drover
//! is refused with what to do rather than misread. What the state holds is
//! the scheduler's business (`drover_scheduler::state::backup`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "drover-snapshot";
/// The newest format this Drover writes and reads.
pub const VERSION: u32 = 1;

/// The first line of a snapshot file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The log index the state is at.
    pub index: u64,
    pub taken_at_ms: i64,
    /// Length and SHA-256 (hex) of the state after the header line.
    pub bytes: u64,
    pub sha256: String,
    pub jobs: u64,
    pub allocations: u64,
    pub nodes: u64,
    pub secrets: u64,
    pub configs: u64,
    pub tokens: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    #[error("not a Drover snapshot (it does not start with a {FORMAT} header line)")]
    NotASnapshot,
    #[error("written by a newer Drover (snapshot format {found}; this one reads up to {VERSION}): restore it with that version or newer")]
    Newer { found: u32 },
    #[error(
        "truncated or padded: the header says {expected} bytes of state, the file has {found}"
    )]
    Length { expected: u64, found: u64 },
    #[error("corrupt: the state's SHA-256 is {found}, the header says {expected}")]
    Checksum { expected: String, found: String },
    #[error("the state does not decode: {0}")]
    Decode(String),
    #[error("the state does not encode: {0}")]
    Encode(String),
}

/// A snapshot file: `header` (its format, version, length and checksum
/// filled in here) and `state`.
pub fn write(mut header: Header, state: &[u8]) -> Result<Vec<u8>, SnapshotError> {
    header.format = FORMAT.into();
    header.version = VERSION;
    header.bytes = state.len() as u64;
    header.sha256 = hex::encode(Sha256::digest(state));
    let mut out = serde_json::to_vec(&header).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    out.push(b'\n');
    out.extend_from_slice(state);
    Ok(out)
}

/// A snapshot file's header and state bytes, checked.
pub fn read(file: &[u8]) -> Result<(Header, &[u8]), SnapshotError> {
    let nl = file
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(SnapshotError::NotASnapshot)?;
    let header: Header =
        serde_json::from_slice(&file[..nl]).map_err(|_| SnapshotError::NotASnapshot)?;
    if header.format != FORMAT {
        return Err(SnapshotError::NotASnapshot);
    }
    if header.version > VERSION {
        return Err(SnapshotError::Newer {
            found: header.version,
        });
    }
    let state = &file[nl + 1..];
    if state.len() as u64 != header.bytes {
        return Err(SnapshotError::Length {
            expected: header.bytes,
            found: state.len() as u64,
        });
    }
    let found = hex::encode(Sha256::digest(state));
    if found != header.sha256 {
        return Err(SnapshotError::Checksum {
            expected: header.sha256,
            found,
        });
    }
    Ok((header, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_foreign_and_newer_files_are_refused() {
        let file = write(
            Header {
                jobs: 1,
                ..Header::default()
            },
            br#"{"jobs":{}}"#,
        )
        .unwrap();
        let (h, state) = read(&file).unwrap();
        assert_eq!((h.jobs, state), (1, &br#"{"jobs":{}}"#[..]));
        assert_eq!(read(b"{}\n{}").unwrap_err(), SnapshotError::NotASnapshot);
        assert_eq!(read(b"no header").unwrap_err(), SnapshotError::NotASnapshot);
        let short = &file[..file.len() - 1];
        assert!(matches!(read(short), Err(SnapshotError::Length { .. })));
        let mut flipped = file.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        assert!(matches!(
            read(&flipped),
            Err(SnapshotError::Checksum { .. })
        ));
        let nl = file.iter().position(|b| *b == b'\n').unwrap();
        let mut h: serde_json::Value = serde_json::from_slice(&file[..nl]).unwrap();
        h["version"] = (VERSION + 1).into();
        let mut newer = serde_json::to_vec(&h).unwrap();
        newer.extend_from_slice(&file[nl..]);
        let e = read(&newer).unwrap_err();
        assert_eq!(e, SnapshotError::Newer { found: VERSION + 1 });
        assert!(e.to_string().contains("newer Drover"), "{e}");
    }
}
