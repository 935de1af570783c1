//! Backups of the replicated state: `drover operator snapshot save` writes
//! the whole state as a snapshot file (`drover_proto::snapshot`), and
//! `drover operator snapshot restore` puts its *desired* state back: jobs
//! with their versions, secrets, configs and ACL tokens. Nodes and
//! placements stay the cluster's own: the controller places the restored
//! jobs on the nodes there are, as it would after any change.

use super::acl::Acl;
use super::{Job, State, StoredSecret};
use crate::cluster::batch::json_size;
use drover_proto::snapshot::{self, Header, SnapshotError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The snapshot file of `state`, taken at `taken_at_ms`.
pub fn save(state: &State, taken_at_ms: i64) -> Result<Vec<u8>, SnapshotError> {
    // A restore under way is not the cluster's desired state (yet).
    let unstaged;
    let state = if state.restoring.is_some() {
        unstaged = State {
            restoring: None,
            ..state.clone()
        };
        &unstaged
    } else {
        state
    };
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

    /// This restore in parts of about `part_bytes` of JSON each (one item
    /// is never split: a part holds at least one). Jobs, secrets, configs
    /// and tokens are spread over the parts; the first also says whether
    /// tokens are required and which key seals the secrets. One part when
    /// it all fits.
    pub fn split(self, part_bytes: usize) -> Vec<Restored> {
        let Restored {
            jobs,
            secrets,
            configs,
            secrets_key_id,
            acl,
        } = self;
        let first = Restored {
            secrets_key_id,
            acl: Acl {
                bootstrapped: acl.bootstrapped,
                tokens: BTreeMap::new(),
            },
            ..Restored::default()
        };
        let mut parts = Parts {
            bytes: json_size(&first),
            list: vec![first],
            items: 0,
            limit: part_bytes,
        };
        for (name, job) in jobs {
            let size = json_size(&job) + name.len();
            parts.with_room(size).jobs.insert(name, job);
        }
        for (name, secret) in secrets {
            let size = json_size(&secret) + name.len();
            parts.with_room(size).secrets.insert(name, secret);
        }
        for (name, config) in configs {
            let size = json_size(&config) + name.len();
            parts.with_room(size).configs.insert(name, config);
        }
        for (accessor, token) in acl.tokens {
            let size = json_size(&token) + accessor.len();
            parts.with_room(size).acl.tokens.insert(accessor, token);
        }
        parts.list
    }

    /// Adds `part`'s jobs, secrets, configs and tokens to these.
    pub fn merge(&mut self, part: &Restored) {
        let copy = |from: &BTreeMap<String, StoredSecret>,
                    to: &mut BTreeMap<String, StoredSecret>| {
            to.extend(from.iter().map(|(n, s)| (n.clone(), s.clone())));
        };
        self.jobs
            .extend(part.jobs.iter().map(|(n, j)| (n.clone(), j.clone())));
        copy(&part.secrets, &mut self.secrets);
        copy(&part.configs, &mut self.configs);
        self.acl
            .tokens
            .extend(part.acl.tokens.iter().map(|(a, t)| (a.clone(), t.clone())));
    }
}

/// The parts a restore is split into, as they fill.
struct Parts {
    list: Vec<Restored>,
    /// The bytes and items in the last part.
    bytes: usize,
    items: usize,
    limit: usize,
}

impl Parts {
    /// The part an item of `size` bytes goes in: the last, or a new one
    /// when it would overflow (a part holds at least one item).
    fn with_room(&mut self, size: usize) -> &mut Restored {
        if self.bytes + size > self.limit && self.items > 0 {
            self.list.push(Restored::default());
            self.bytes = 0;
            self.items = 0;
        }
        self.bytes += size;
        self.items += 1;
        self.list.last_mut().expect("one part")
    }
}

/// A restore in parts (`Command::RestorePart`): the parts applied so far,
/// or, once the last has been, what the restore did (so a part proposed
/// twice, as a retry after a leader change may, answers as the first did).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Staged {
    /// Which restore the parts belong to.
    pub restore: String,
    /// The part expected next, and how many there are (equal: finished).
    pub next: u32,
    pub parts: u32,
    /// The parts so far, merged (empty once finished).
    pub restored: Restored,
    /// What the finished restore did.
    #[serde(default)]
    pub note: String,
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
        let done = s.restoring.as_ref().unwrap();
        assert_eq!((done.next, done.parts), (n, n), "finished");
        assert!(done.restored.jobs.is_empty(), "nothing kept but the note");
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
        // A part proposed twice (a retry after a leader change) changes
        // nothing the second time; a part past the count is refused.
        let r = s.apply(6, &part("b", 1, 4, &parts[1]));
        assert!(
            r.ok && !r.changed && r.note.contains("staged already"),
            "{r:?}"
        );
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
        // The last part again answers as the restore did, and restores
        // nothing again (a job submitted since stays as it is).
        submit(&mut s, 10, "job-0", "oci:/x:v2");
        let again = s.apply(11, &part("b", 3, 4, &parts[3]));
        assert!(again.ok && !again.changed, "{again:?}");
        assert_eq!(again.note, r.note);
        assert_eq!(s.jobs["job-0"].current_spec().image, "oci:/x:v2");
        // A whole restore supersedes what a restore in parts left.
        assert!(s.apply(12, &part("c", 0, 4, &parts[0])).ok);
        let r = s.apply(
            13,
            &Command::Restore {
                restored: Box::default(),
                from_index: 1,
                at_ms: 9,
            },
        );
        assert!(r.ok, "{r:?}");
        assert_eq!(s.restoring, None);
    }

    #[test]
    fn secrets_configs_and_tokens_spread_over_parts_and_come_back_whole() {
        let mut saved = State::default();
        submit(&mut saved, 1, "web", "oci:/x:latest");
        let secret = |n: u8| StoredSecret {
            version: 1,
            data: vec![n; 100 << 10],
            size: 100 << 10,
            created_at_ms: 1,
            updated_at_ms: 1,
        };
        for i in 0..4u8 {
            saved.secrets.insert(format!("s{i}"), secret(i));
            saved.configs.insert(format!("c{i}"), secret(i));
        }
        saved.secrets_key_id = "k1".into();
        saved.acl.bootstrapped = true;
        let whole = Restored::from_state(saved);
        // 100KiB as hex is 200KiB of JSON: no part of at most 512KiB holds
        // more than two, and part 0 is no exception.
        let parts = whole.clone().split(512 << 10);
        assert!(parts.len() >= 4, "{} parts", parts.len());
        for p in &parts {
            let size = serde_json::to_vec(p).unwrap().len();
            assert!(size <= 512 << 10, "a part of {size} bytes");
        }
        assert!(parts[0].acl.bootstrapped && parts[0].secrets_key_id == "k1");
        let mut back = Restored {
            secrets_key_id: parts[0].secrets_key_id.clone(),
            acl: Acl {
                bootstrapped: parts[0].acl.bootstrapped,
                tokens: BTreeMap::new(),
            },
            ..Restored::default()
        };
        for p in &parts {
            back.merge(p);
        }
        assert_eq!(back, whole);
    }

    #[test]
    fn a_saved_snapshot_leaves_out_a_restore_under_way() {
        let mut s = State::default();
        submit(&mut s, 1, "web", "oci:/x:latest");
        let mut other = State::default();
        submit(&mut other, 1, "a", "oci:/x:latest");
        submit(&mut other, 2, "b", "oci:/x:latest");
        let parts = Restored::from_state(other).split(1);
        assert_eq!(parts.len(), 2);
        assert!(s.apply(2, &part("r", 0, 2, &parts[0])).ok);
        assert!(s.restoring.is_some());
        let (_, back) = open(&save(&s, 1).unwrap()).unwrap();
        assert_eq!(back.restoring, None);
        assert_eq!(back.jobs.keys().collect::<Vec<_>>(), vec!["web"]);
    }
}
