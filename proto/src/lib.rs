//! Drover's wire protocol and job-spec model.
//!
//! `pb` holds the generated gRPC code and nothing else; `spec` is the job
//! specification users write (YAML) with its complete validation, shared by the
//! CLI (fast feedback) and the scheduler (the authority); `quantity` parses the
//! sizes and durations specs are written in; `preflight` checks a machine
//! before a daemon runs on it.
#![deny(unsafe_code)]

pub mod codec;
pub mod desired;
pub mod fencing;
pub mod format;
pub mod http;
pub mod json;
/// Raises the open-file limit through libc (getrlimit, setrlimit).
#[allow(unsafe_code)]
pub mod limits;
pub mod pki;
/// Reads the machine through a few libc calls (euid, statvfs, adjtimex).
#[allow(unsafe_code)]
pub mod preflight;
pub mod quantity;
pub mod snapshot;
pub mod spec;
pub mod text;
/// Lowers a thread's priority through libc (setpriority).
#[allow(unsafe_code)]
pub mod thread;

/// Generated protobuf and tonic code for `drover.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("drover.v1");

    // A secret's value never reaches a log through `{:?}`.
    impl std::fmt::Debug for SecretData {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SecretData")
                .field("name", &self.name)
                .field("kind", &self.kind)
                .field("version", &self.version)
                .field("data", &format_args!("<{} bytes>", self.data.len()))
                .finish()
        }
    }

    impl std::fmt::Debug for PutSecretRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PutSecretRequest")
                .field("name", &self.name)
                .field("kind", &self.kind)
                .field("data", &format_args!("<{} bytes>", self.data.len()))
                .field("mode", &self.mode)
                .finish()
        }
    }

    /// The words of the typed allocation fields, as the string fields and
    /// the CLI's output have always said them: one vocabulary for every
    /// crate, so none parses another's.
    impl AllocationPhase {
        pub fn word(self) -> &'static str {
            match self {
                AllocationPhase::Unspecified => "",
                AllocationPhase::Pending => "pending",
                AllocationPhase::Starting => "starting",
                AllocationPhase::Running => "running",
                AllocationPhase::Stopping => "stopping",
                AllocationPhase::Stopped => "stopped",
                AllocationPhase::Failed => "failed",
            }
        }

        /// From the word (what agents of the release before send alone).
        pub fn from_word(w: &str) -> Option<AllocationPhase> {
            [
                AllocationPhase::Pending,
                AllocationPhase::Starting,
                AllocationPhase::Running,
                AllocationPhase::Stopping,
                AllocationPhase::Stopped,
                AllocationPhase::Failed,
            ]
            .into_iter()
            .find(|p| p.word() == w)
        }

        /// The process is gone for good.
        pub fn is_ended(self) -> bool {
            matches!(self, AllocationPhase::Stopped | AllocationPhase::Failed)
        }
    }

    impl Health {
        pub fn word(self) -> &'static str {
            match self {
                Health::Unknown => "",
                Health::Healthy => "healthy",
                Health::Unhealthy => "unhealthy",
            }
        }

        pub fn from_word(w: &str) -> Health {
            match w {
                "healthy" => Health::Healthy,
                "unhealthy" => Health::Unhealthy,
                _ => Health::Unknown,
            }
        }
    }

    impl Desired {
        pub fn word(self) -> &'static str {
            match self {
                Desired::Unspecified => "",
                Desired::Run => "run",
                Desired::Stop => "stop",
            }
        }
    }

    impl RolloutPhase {
        pub fn word(self) -> &'static str {
            match self {
                RolloutPhase::Unspecified => "",
                RolloutPhase::Running => "running",
                RolloutPhase::Paused => "paused",
                RolloutPhase::WaitingPromotion => "waiting-promotion",
                RolloutPhase::Succeeded => "succeeded",
                RolloutPhase::Failed => "failed",
            }
        }
    }

    impl Rollout {
        /// The typed phase, or the word read into it (from a scheduler of the
        /// release before).
        pub fn typed_phase(&self) -> RolloutPhase {
            match self.phase() {
                RolloutPhase::Unspecified => [
                    RolloutPhase::Running,
                    RolloutPhase::Paused,
                    RolloutPhase::WaitingPromotion,
                    RolloutPhase::Succeeded,
                    RolloutPhase::Failed,
                ]
                .into_iter()
                .find(|p| p.word() == self.state)
                .unwrap_or_default(),
                p => p,
            }
        }
    }

    /// The typed fields, or (from a scheduler of the release before, which
    /// sends the words only) the words read into them.
    impl Allocation {
        pub fn typed_phase(&self) -> AllocationPhase {
            match self.phase() {
                AllocationPhase::Unspecified => {
                    AllocationPhase::from_word(&self.state).unwrap_or_default()
                }
                p => p,
            }
        }

        pub fn typed_health(&self) -> Health {
            match self.health_state() {
                Health::Unknown => Health::from_word(&self.health),
                h => h,
            }
        }

        pub fn typed_desired(&self) -> Desired {
            match (self.desired_state(), self.desired.as_str()) {
                (Desired::Unspecified, "run") => Desired::Run,
                (Desired::Unspecified, "stop") => Desired::Stop,
                (d, _) => d,
            }
        }
    }
}

#[cfg(test)]
mod wire_words {
    use super::pb;

    #[test]
    fn typed_fields_win_and_words_alone_still_read() {
        let typed = pb::Allocation {
            state: "ignored".into(),
            phase: pb::AllocationPhase::Stopping as i32,
            health_state: pb::Health::Healthy as i32,
            desired_state: pb::Desired::Stop as i32,
            ..Default::default()
        };
        assert_eq!(typed.typed_phase(), pb::AllocationPhase::Stopping);
        assert_eq!(typed.typed_health(), pb::Health::Healthy);
        assert_eq!(typed.typed_desired(), pb::Desired::Stop);
        let words = pb::Allocation {
            state: "failed".into(),
            health: "unhealthy".into(),
            desired: "run".into(),
            ..Default::default()
        };
        assert_eq!(words.typed_phase(), pb::AllocationPhase::Failed);
        assert!(words.typed_phase().is_ended());
        assert_eq!(words.typed_health(), pb::Health::Unhealthy);
        assert_eq!(words.typed_desired(), pb::Desired::Run);
        for p in [
            pb::AllocationPhase::Pending,
            pb::AllocationPhase::Running,
            pb::AllocationPhase::Failed,
        ] {
            assert_eq!(pb::AllocationPhase::from_word(p.word()), Some(p));
        }
        let rollout = pb::Rollout {
            state: "waiting-promotion".into(),
            ..Default::default()
        };
        assert_eq!(rollout.typed_phase(), pb::RolloutPhase::WaitingPromotion);
    }
}
