//! Why the state machine refused a command.
//!
//! A refusal is decided where the state is (at apply time, on every peer
//! alike) and travels with the command's result: to the proposer, through
//! a forwarding peer, and into the table of remembered request results
//! that snapshots keep. Its kind decides the gRPC code, in one place
//! (`server::status`); its message is for people, and nothing parses it.
//!
//! Results remembered before refusals had a kind carry only the message;
//! they read back as `Conflict`, the code every such caller got before.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    #[error("no job named {0:?}")]
    NoJob(String),
    #[error("no node named {0:?}")]
    NoNode(String),
    #[error("job {job:?} has no version {version}")]
    NoVersion { job: String, version: u64 },
    /// Something else named in the command does not exist (an ACL token).
    #[error("{0}")]
    NotFound(String),
    /// The command itself is wrong: no state of the cluster would take it.
    #[error("{0}")]
    Invalid(String),
    /// The cluster's state does not allow it now (a job is stopped, a
    /// rollout is in force, ...).
    #[error("{0}")]
    Conflict(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_before_and_kinds_survive_json() {
        assert_eq!(
            Refusal::NoJob("web".into()).to_string(),
            "no job named \"web\""
        );
        assert_eq!(
            Refusal::NoVersion {
                job: "web".into(),
                version: 7
            }
            .to_string(),
            "job \"web\" has no version 7"
        );
        for r in [
            Refusal::NoNode("n1".into()),
            Refusal::Conflict("job \"web\" is stopped".into()),
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Refusal>(&json).unwrap(), r);
        }
    }

    #[test]
    fn results_remembered_before_refusals_had_kinds_still_load() {
        // A refused result as snapshots and forwarding peers held it.
        let old = r#"{"ok":false,"error":"job \"web\" is stopped","version":0,"changed":false,"count":0}"#;
        let r: super::super::CommandResult = serde_json::from_str(old).unwrap();
        assert_eq!(
            r.accepted().unwrap_err(),
            Refusal::Conflict("job \"web\" is stopped".into())
        );
        // A new one keeps its kind through JSON, and its words for old readers.
        let new = super::super::CommandResult::refused(Refusal::NoJob("web".into()));
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains(r#""error":"no job named \"web\"""#), "{json}");
        let back: super::super::CommandResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.accepted().unwrap_err(), Refusal::NoJob("web".into()));
    }
}
