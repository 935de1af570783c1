//! Which layout a directory of Drover's durable state is in.
//!
//! A scheduler's data directory (Raft log, snapshots) and an agent's state
//! directory (bundles, monitors, addresses, images) each carry a small
//! marker file, `drover-format.json`: what kind of directory it is and the
//! version of its layout. A daemon checks it before reading anything else:
//!
//! - no marker: a new directory, or one from before markers existed (whose
//!   layout is version 1): the current version is recorded;
//! - an older version: the daemon reads it (and records its own version once
//!   it has converted what changed, if anything did);
//! - a newer version: the daemon refuses to start, saying which Drover wrote
//!   it, instead of misreading it;
//! - another kind (an agent's directory given to a scheduler): refused.
//!
//! The marker changes only when the layout does; what the Raft log's
//! commands mean is versioned separately, cluster-wide
//! (`drover_scheduler::state::version`).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The marker's file name, in the directory it describes.
pub const FILE: &str = "drover-format.json";

/// What a directory's marker says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Marker {
    /// e.g. `drover-scheduler-data`.
    pub format: String,
    pub version: u32,
    /// The program that last recorded it (e.g. `drover-scheduler 0.1.0`),
    /// for the error a newer directory gets.
    #[serde(default)]
    pub written_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: written by a newer Drover ({written_by}: {format} version {found}; this {program} reads up to version {supported}). Run that version or newer on it; to start over instead, move the directory away")]
    Newer {
        path: PathBuf,
        format: String,
        found: u32,
        supported: u32,
        written_by: String,
        program: String,
    },
    #[error("{path}: this is a {found} directory, not a {expected} one: check the path")]
    OtherKind {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: not a Drover format marker: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads `dir`'s marker, if it has one.
pub fn read(dir: &Path) -> Result<Option<Marker>, FormatError> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| FormatError::Corrupt { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FormatError::Io {
            path,
            what: "reading the format marker",
            source,
        }),
    }
}

/// Checks that `program` (e.g. `drover-agent 0.1.0`), which reads `format`
/// directories up to version `supported`, may use `dir`; answers the
/// version the directory is in (a missing marker is version 1). Does not
/// write: see [`record`].
pub fn check(dir: &Path, format: &str, supported: u32, program: &str) -> Result<u32, FormatError> {
    Ok(checked(dir, format, supported, program)?.map_or(1, |m| m.version))
}

/// [`check`], answering the marker itself.
fn checked(
    dir: &Path,
    format: &str,
    supported: u32,
    program: &str,
) -> Result<Option<Marker>, FormatError> {
    let Some(m) = read(dir)? else {
        return Ok(None);
    };
    if m.format != format {
        return Err(FormatError::OtherKind {
            path: dir.to_owned(),
            found: m.format,
            expected: format.to_owned(),
        });
    }
    if m.version > supported {
        return Err(FormatError::Newer {
            path: dir.join(FILE),
            format: m.format,
            found: m.version,
            supported,
            written_by: if m.written_by.is_empty() {
                "a newer program".into()
            } else {
                m.written_by
            },
            program: program.to_owned(),
        });
    }
    Ok(Some(m))
}

/// Records that `dir` is a `format` directory at `version`, written by
/// `program`: atomically (a temporary file renamed over the marker, both
/// fsynced), so a crash leaves the old marker or the new one.
pub fn record(dir: &Path, format: &str, version: u32, program: &str) -> Result<(), FormatError> {
    use std::io::Write;
    let marker = Marker {
        format: format.to_owned(),
        version,
        written_by: program.to_owned(),
    };
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| FormatError::Io { path, what, source }
    };
    let mut bytes = serde_json::to_vec_pretty(&marker).expect("plain data serializes");
    bytes.push(b'\n');
    let mut f = std::fs::File::create(&tmp).map_err(io("writing the format marker", &tmp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("writing the format marker", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("replacing the format marker", &path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the directory", dir))
}

/// [`check`], then [`record`] `supported` unless the directory already says
/// so: for a daemon that keeps the directory in the current layout (one
/// with nothing to convert from `check`'s answer). Answers what `check` did.
pub fn check_and_record(
    dir: &Path,
    format: &str,
    supported: u32,
    program: &str,
) -> Result<u32, FormatError> {
    let found = checked(dir, format, supported, program)?;
    let up_to_date = found
        .as_ref()
        .is_some_and(|m| m.version == supported && m.written_by == program);
    if !up_to_date {
        record(dir, format, supported, program)?;
    }
    Ok(found.map_or(1, |m| m.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_or_unmarked_directory_is_version_1_and_gets_recorded() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(check(d.path(), "drover-test", 2, "t 1").unwrap(), 1);
        assert_eq!(
            check_and_record(d.path(), "drover-test", 2, "t 1").unwrap(),
            1
        );
        let m = read(d.path()).unwrap().unwrap();
        assert_eq!((m.format.as_str(), m.version), ("drover-test", 2));
        assert_eq!(check(d.path(), "drover-test", 2, "t 1").unwrap(), 2);
    }

    #[test]
    fn a_newer_directory_is_refused_saying_who_wrote_it() {
        let d = tempfile::tempdir().unwrap();
        record(d.path(), "drover-test", 3, "drover-agent 9.0.0").unwrap();
        let e = check_and_record(d.path(), "drover-test", 2, "drover-agent 0.1.0").unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                FormatError::Newer {
                    found: 3,
                    supported: 2,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("drover-agent 9.0.0") && msg.contains("reads up to version 2"),
            "{msg}"
        );
        // Refused means untouched.
        assert_eq!(read(d.path()).unwrap().unwrap().version, 3);
    }

    #[test]
    fn another_kind_of_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        record(d.path(), "drover-agent-state", 1, "a").unwrap();
        let e = check(d.path(), "drover-scheduler-data", 1, "s").unwrap_err();
        assert!(
            e.to_string().contains("drover-agent-state directory"),
            "{e}"
        );
    }

    #[test]
    fn a_garbled_marker_is_an_error_not_a_guess() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), b"{\"format\": 3").unwrap();
        assert!(matches!(
            check(d.path(), "x", 1, "p"),
            Err(FormatError::Corrupt { .. })
        ));
    }
}
