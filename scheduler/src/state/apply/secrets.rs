//! Secrets and configs: stored, rotated (every job mounting one restarts,
//! replica by replica, to pick up the new value) and deleted once unused.

use super::*;

impl State {
    pub(super) fn put_secret(
        &mut self,
        kind: SecretKind,
        name: &str,
        data: &[u8],
        size: u64,
        create: bool,
        at_ms: i64,
    ) -> CommandResult {
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
        let mut restarted = Vec::new();
        if version > 1 {
            for job in self.jobs_using(kind, name) {
                if self.restart_job(&job, at_ms).ok {
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
