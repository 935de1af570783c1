//! Secrets and configs: stored, rotated (every job mounting one restarts,
//! replica by replica, to pick up the new value) and deleted once unused.

use super::*;

impl State {
    pub(super) fn put_secret(
        &mut self,
        kind: SecretKind,
        name: &str,
        data: &[u8],
        (size, key_id): (u64, &str),
        create: bool,
        at_ms: i64,
    ) -> CommandResult {
        // One key seals every secret: a peer holding another is refused.
        if kind == SecretKind::Secret
            && !self.secrets_key_id.is_empty()
            && self.secrets_key_id != key_id
        {
            return CommandResult::refused(Refusal::Conflict(format!(
                "the scheduler peer that took this request holds secrets key {key_id}, not the cluster's ({}): copy secrets.key from a peer that holds the cluster's",
                self.secrets_key_id
            )));
        }
        if let Err(e) = drover_proto::spec::dns_label(name) {
            return CommandResult::refused(Refusal::Invalid(format!("name: {e}")));
        }
        if size > crate::secrets::MAX_SIZE as u64 {
            return CommandResult::refused(Refusal::Invalid(format!(
                "a {} is at most {} bytes, not {size}",
                kind.word(),
                crate::secrets::MAX_SIZE
            )));
        }
        let (word, command) = (kind.word(), kind.command());
        let version = match (self.stored(kind).get(name), create) {
            (Some(_), true) => {
                return CommandResult::refused(Refusal::Conflict(format!(
                    "{word} {name:?} exists (`drover {command} update {name}` gives it a new value)"
                )))
            }
            (None, false) => {
                return CommandResult::refused(Refusal::NotFound(format!(
                    "no {word} {name:?} (`drover {command} create {name}` makes it)"
                )))
            }
            (Some(old), false) => old.version + 1,
            (None, true) => 1,
        };
        if kind == SecretKind::Secret && self.secrets_key_id.is_empty() {
            self.secrets_key_id = key_id.to_string();
        }
        let created_at_ms = self
            .stored(kind)
            .get(name)
            .map_or(at_ms, |old| old.created_at_ms);
        self.stored_mut(kind).insert(
            name.to_string(),
            StoredSecret {
                version,
                data: data.to_vec(),
                size,
                created_at_ms,
                updated_at_ms: at_ms,
            },
        );
        // A new value reaches running replicas by replacing them.
        // A job whose rollout waits on its user (paused, or on canaries
        // not yet promoted) is left to it: its new replicas get the new
        // value, and the note says it was not restarted.
        let mut restarted = Vec::new();
        if version > 1 {
            for job in self.jobs_using(kind, name) {
                let rolling = self.jobs.get(&job).is_some_and(|j| {
                    j.rollout.as_ref().is_some_and(|r| {
                        matches!(
                            r.state,
                            RolloutState::Paused | RolloutState::WaitingPromotion
                        ) || (!r.promoted && !r.state.is_done())
                    })
                });
                if rolling {
                    restarted.push(format!("-{job}"));
                } else if self.restart_job(&job, at_ms).ok {
                    restarted.push(job);
                }
            }
        }
        CommandResult {
            version,
            count: restarted.len() as u32,
            note: restarted.join(","),
            ..CommandResult::ok(true)
        }
    }

    pub(super) fn delete_secret(&mut self, kind: SecretKind, name: &str) -> CommandResult {
        let word = kind.word();
        if !self.stored(kind).contains_key(name) {
            return CommandResult::refused(Refusal::NotFound(format!("no {word} {name:?}")));
        }
        let users = self.jobs_using(kind, name);
        if !users.is_empty() {
            return CommandResult::refused(Refusal::Conflict(format!(
                "{word} {name:?} is mounted by job{} {}: change or stop them first",
                if users.len() == 1 { "" } else { "s" },
                users.join(", ")
            )));
        }
        self.stored_mut(kind).remove(name);
        CommandResult::ok(true)
    }
}
