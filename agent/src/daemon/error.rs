//! Why an allocation could not be started. Typed inside the agent; its
//! words become the reason the node reports (the scheduler decides by the
//! reported phase, not by these words).

use crate::bundle::BundleError;
use crate::image::ImageError;
use crate::network::NetworkError;
use crate::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("spec: {0}")]
    Spec(#[from] drover_proto::spec::SpecError),
    #[error("image: {0}")]
    Image(#[from] ImageError),
    #[error("bundle: {0}")]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Waiting for the container failed (it was started).
    #[error("wait: {0}")]
    Wait(RuntimeError),
    /// The node's container network is not usable (its recorded problem).
    #[error("{0}")]
    NodeNetwork(NetworkUnavailable),
    /// ... and found so when attaching a started container to it.
    #[error("network: {0}")]
    AttachUnavailable(NetworkUnavailable),
    #[error("network: {0}")]
    Attach(#[from] NetworkError),
    #[error("log {path}: {source}")]
    Log {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The scheduler sent no value for a secret or config the job mounts.
    #[error("{kind} {name:?} was not delivered to this node (a scheduler peer could not unseal it: see its log)")]
    Secret { kind: &'static str, name: String },
    /// The job mounts a host volume this node's agent does not offer (as asked).
    #[error("volume {name:?}: {why}")]
    Volume { name: String, why: String },
    #[error("not started: no leader acknowledged this node for {secs:.1}s (fencing)")]
    Fenced { secs: f64 },
    #[error(transparent)]
    IdRanges(#[from] super::userns::IdRangeError),
    /// The blocking task that did the work panicked or was cancelled.
    #[error("{stage}: {source}")]
    Task {
        stage: &'static str,
        source: tokio::task::JoinError,
    },
}

/// Why removing what an ended allocation left failed. Its words are added to
/// the reason the node reports ("...; cleanup: <words>").
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The blocking task that did the work panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// The node's container network cannot be set up for the subnet the
/// scheduler gave (the setup's error, shared with the recorded problem).
#[derive(Debug, thiserror::Error)]
#[error("node network unavailable: {0}")]
pub struct NetworkUnavailable(pub std::sync::Arc<NetworkError>);

/// Why a connected period with the scheduler ended (the agent then moves
/// on to the next scheduler peer).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Connect(#[from] tonic::transport::Error),
    /// What the scheduler answered a call.
    #[error("{}", .0.message())]
    Call(#[from] tonic::Status),
    #[error("heartbeat not acknowledged in time")]
    HeartbeatDeadline,
    #[error("watch stream ended")]
    WatchEnded,
    #[error("the watch stream sent a delta before a whole set")]
    DeltaFirst,
}

impl StartError {
    pub(super) fn task(stage: &'static str) -> impl FnOnce(tokio::task::JoinError) -> StartError {
        move |source| StartError::Task { stage, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_nodes_report_stay_as_they_were() {
        assert_eq!(
            StartError::Fenced { secs: 4.25 }.to_string(),
            "not started: no leader acknowledged this node for 4.2s (fencing)"
        );
        let spec = drover_proto::spec::from_json("{").unwrap_err();
        assert!(StartError::from(spec).to_string().starts_with("spec: "));
        let image: ImageError = "no such:image:ref:"
            .parse::<crate::image::ImageRef>()
            .unwrap_err();
        assert!(StartError::from(image).to_string().starts_with("image: "));
        let unavailable = || {
            NetworkUnavailable(std::sync::Arc::new(NetworkError::Subnet(
                "10.0.0.0/8".into(),
            )))
        };
        assert_eq!(
            StartError::NodeNetwork(unavailable()).to_string(),
            "node network unavailable: \"10.0.0.0/8\" is not a /24 subnet"
        );
        assert_eq!(
            StartError::AttachUnavailable(unavailable()).to_string(),
            "network: node network unavailable: \"10.0.0.0/8\" is not a /24 subnet"
        );
        assert_eq!(
            StartError::from(super::super::userns::IdRangeError::Exhausted).to_string(),
            "all 16384 user namespace id ranges of this host are in use"
        );
    }
}
