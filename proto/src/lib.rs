//! Drover's wire protocol and job-spec model.
//!
//! `pb` holds the generated gRPC code and nothing else; `spec` is the job
//! specification users write (YAML) with its complete validation, shared by the
//! CLI (fast feedback) and the scheduler (the authority); `quantity` parses the
//! sizes and durations specs are written in.
#![forbid(unsafe_code)]

pub mod fencing;
pub mod pki;
pub mod quantity;
pub mod spec;

/// Generated protobuf and tonic code for `drover.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("drover.v1");

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
