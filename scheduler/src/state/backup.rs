//! Backups of the replicated state: `drover operator snapshot save` writes
//! the whole state as a snapshot file (`drover_proto::snapshot`), and
//! `drover operator snapshot restore` puts its *desired* state back: jobs
//! with their versions, secrets, configs and ACL tokens. Nodes and
//! placements stay the cluster's own: the controller places the restored
//! jobs on the nodes there are, as it would after any change.

use super::acl::Acl;
use super::{Job, State, StoredSecret};
use drover_proto::snapshot::{self, Header, SnapshotError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The snapshot file of `state`, taken at `taken_at_ms`.
pub fn save(state: &State, taken_at_ms: i64) -> Result<Vec<u8>, SnapshotError> {
    let bytes = serde_json::to_vec(state).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let header = Header {
        index: state.last_index,
        taken_at_ms,
        jobs: state.jobs.len() as u64,
        allocations: state.allocations.len() as u64,
        nodes: state.nodes.len() as u64,
        secrets: state.secrets.len() as u64,
        configs: state.configs.len() as u64,
        tokens: state.acl.tokens.len() as u64,
        ..Header::default()
    };
    snapshot::write(header, &bytes)
}

/// A snapshot file, checked and decoded.
pub fn open(file: &[u8]) -> Result<(Header, State), SnapshotError> {
    let (header, bytes) = snapshot::read(file)?;
    let state = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    Ok((header, state))
}

/// What a restore puts back.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Restored {
    pub jobs: BTreeMap<String, Job>,
    pub secrets: BTreeMap<String, StoredSecret>,
    pub configs: BTreeMap<String, StoredSecret>,
    pub secrets_key_id: String,
    pub acl: Acl,
}

impl Restored {
    pub fn from_state(s: State) -> Restored {
        Restored {
            jobs: s.jobs,
            secrets: s.secrets,
            configs: s.configs,
            secrets_key_id: s.secrets_key_id,
            acl: s.acl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;

    fn submit(s: &mut State, index: u64, name: &str, image: &str) {
        let spec = drover_proto::spec::from_json(&format!(
            r#"{{"name":"{name}","image":"{image}","resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
        ))
        .unwrap();
        let r = s.apply(
            index,
            &Command::SubmitJob {
                request_id: format!("r{index}"),
                spec: Box::new(spec),
                at_ms: 5,
            },
        );
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn a_saved_state_opens_as_it_was() {
        let mut s = State::default();
        submit(&mut s, 1, "web", "oci:/x:latest");
        let file = save(&s, 42).unwrap();
        let (h, back) = open(&file).unwrap();
        assert_eq!(back, s);
        assert_eq!((h.index, h.jobs, h.taken_at_ms), (1, 1, 42));
    }

    #[test]
    fn a_restore_replaces_jobs_and_keeps_replicas_of_unchanged_specs() {
        let mut saved = State::default();
        submit(&mut saved, 1, "web", "oci:/x:latest");
        submit(&mut saved, 2, "db", "oci:/db:latest");
        // After the save, db is changed and a job is added.
        let mut s = saved.clone();
        submit(&mut s, 3, "db", "oci:/db:v2");
        submit(&mut s, 4, "extra", "oci:/x:latest");
        let r = s.apply(
            5,
            &Command::Restore {
                restored: Box::new(Restored::from_state(saved.clone())),
                from_index: saved.last_index,
                at_ms: 9,
            },
        );
        assert!(r.ok && r.changed, "{r:?}");
        assert_eq!(s.jobs["web"].versions, saved.jobs["web"].versions);
        assert_eq!(s.jobs["db"].current, saved.jobs["db"].current);
        assert_eq!(s.jobs["db"].current_spec().image, "oci:/db:latest");
        let extra = &s.jobs["extra"];
        assert!(
            extra.stopped && extra.purge,
            "a job the snapshot lacks goes"
        );
        assert!(r.note.contains("restored 2 jobs"), "{}", r.note);
    }
}
