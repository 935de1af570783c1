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

    /// This restore in parts of about `part_bytes` of JSON each: the first
    /// carries the secrets, configs and tokens, and every part some jobs
    /// (a job is never split). One part when it all fits.
    pub fn split(self, part_bytes: usize) -> Vec<Restored> {
        let Restored {
            jobs,
            secrets,
            configs,
            secrets_key_id,
            acl,
        } = self;
        let mut parts = vec![Restored {
            jobs: BTreeMap::new(),
            secrets,
            configs,
            secrets_key_id,
            acl,
        }];
        let mut bytes = serde_json::to_vec(&parts[0]).map_or(0, |b| b.len());
        for (name, job) in jobs {
            let size = serde_json::to_vec(&job).map_or(0, |b| b.len()) + name.len();
            let last = parts.last().expect("one part");
            if bytes + size > part_bytes && !last.jobs.is_empty() {
                parts.push(Restored::default());
                bytes = 0;
            }
            bytes += size;
            parts.last_mut().expect("one part").jobs.insert(name, job);
        }
        parts
    }
}

/// The parts of a restore applied so far (`Command::RestorePart`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Staged {
    /// Which restore the parts belong to.
    pub restore: String,
    /// The part expected next, and how many there are.
    pub next: u32,
    pub parts: u32,
    /// The parts so far, merged.
    pub restored: Restored,
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

    fn part(restore: &str, part: u32, parts: u32, restored: &Restored) -> Command {
        Command::RestorePart {
            restore: restore.into(),
            part,
            parts,
            restored: Box::new(restored.clone()),
            from_index: 7,
            at_ms: 9,
        }
    }

    #[test]
    fn a_large_restore_splits_into_parts_that_hold_every_job_once() {
        let mut saved = State::default();
        for i in 0..50 {
            submit(&mut saved, i + 1, &format!("job-{i:02}"), "oci:/x:latest");
        }
        saved.secrets_key_id = "k1".into();
        let whole = Restored::from_state(saved);
        let one_job = serde_json::to_vec(&whole.jobs["job-00"]).unwrap().len();
        let parts = whole.clone().split(one_job * 10);
        assert!(parts.len() >= 5, "{} parts", parts.len());
        assert_eq!(parts[0].secrets_key_id, "k1", "part 0 carries the rest");
        assert!(parts[1..].iter().all(|p| p.secrets_key_id.is_empty()));
        for p in &parts {
            assert!(!p.jobs.is_empty());
            let size = serde_json::to_vec(p).unwrap().len();
            assert!(size <= one_job * 12, "a part of {size} bytes");
        }
        let mut names: Vec<&String> = parts.iter().flat_map(|p| p.jobs.keys()).collect();
        names.sort();
        assert_eq!(names, whole.jobs.keys().collect::<Vec<_>>());
        assert_eq!(whole.clone().split(usize::MAX), vec![whole]);
    }

    #[test]
    fn restore_parts_stay_out_of_sight_until_the_last_then_restore_the_whole() {
        let mut saved = State::default();
        for i in 0..6 {
            submit(&mut saved, i + 1, &format!("job-{i}"), "oci:/x:latest");
        }
        let whole = Restored::from_state(saved.clone());
        let one_job = serde_json::to_vec(&whole.jobs["job-0"]).unwrap().len();
        let parts = whole.split(one_job * 2);
        let n = u32::try_from(parts.len()).unwrap();
        assert!(n >= 3, "{n} parts");

        let mut s = State::default();
        submit(&mut s, 1, "old", "oci:/x:latest");
        for (i, p) in parts.iter().enumerate().take(parts.len() - 1) {
            let r = s.apply(10 + i as u64, &part("r1", i as u32, n, p));
            assert!(r.ok, "{r:?}");
            assert!(
                r.note.contains(&format!("staged part {}", i + 1)),
                "{}",
                r.note
            );
            assert_eq!(
                s.jobs.keys().collect::<Vec<_>>(),
                vec!["old"],
                "nothing restored before the last part"
            );
        }
        // The staging survives a snapshot of the state.
        let mut s: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        let r = s.apply(20, &part("r1", n - 1, n, &parts[parts.len() - 1]));
        assert!(r.ok && r.changed, "{r:?}");
        assert!(r.note.contains("restored 6 jobs"), "{}", r.note);
        for (name, job) in &saved.jobs {
            assert_eq!(s.jobs[name].versions, job.versions, "{name}");
        }
        assert!(s.jobs["old"].stopped, "a job the snapshot lacks goes");
        assert_eq!(s.restoring, None);
    }

    #[test]
    fn a_restore_part_out_of_order_is_refused_and_a_newer_restore_takes_over() {
        let mut saved = State::default();
        for i in 0..4 {
            submit(&mut saved, i + 1, &format!("job-{i}"), "oci:/x:latest");
        }
        let whole = Restored::from_state(saved);
        let one_job = serde_json::to_vec(&whole.jobs["job-0"]).unwrap().len();
        let parts = whole.split(one_job);
        assert_eq!(parts.len(), 4);

        let mut s = State::default();
        // A part 1 with no part 0 before it.
        let r = s.apply(1, &part("a", 1, 4, &parts[1]));
        assert!(
            !r.ok && r.error.as_deref().unwrap_or("").contains("out of order"),
            "{r:?}"
        );
        assert!(s.apply(2, &part("a", 0, 4, &parts[0])).ok);
        // Restore b begins: a's next part is refused, b goes on.
        assert!(s.apply(3, &part("b", 0, 4, &parts[0])).ok);
        let r = s.apply(4, &part("a", 1, 4, &parts[1]));
        assert!(!r.ok, "{r:?}");
        let r = s.apply(5, &part("b", 1, 4, &parts[1]));
        assert!(r.ok, "{r:?}");
        // A repeated part, and a part past the count.
        assert!(!s.apply(6, &part("b", 1, 4, &parts[1])).ok);
        let r = s.apply(7, &part("b", 4, 4, &parts[1]));
        assert!(
            !r.ok && r.error.as_deref().unwrap_or("").contains("count from 0"),
            "{r:?}"
        );
        assert!(s.apply(8, &part("b", 2, 4, &parts[2])).ok);
        assert!(s.jobs.is_empty());
        let r = s.apply(9, &part("b", 3, 4, &parts[3]));
        assert!(r.ok && r.note.contains("restored 4 jobs"), "{r:?}");
        assert_eq!(s.jobs.len(), 4);
    }
}
