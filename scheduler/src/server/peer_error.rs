//! The one place a peer's error becomes a gRPC status (and how handlers
//! that answer in statuses call through `forward::with_leader`).

use crate::cluster::forward::CallError;
use crate::cluster::PeerError;
use tonic::{Code, Status};

impl From<PeerError> for Status {
    fn from(e: PeerError) -> Status {
        let message = e.to_string();
        match e {
            PeerError::Remote(s) => s,
            PeerError::CommitTimeout { .. } => Status::deadline_exceeded(message),
            PeerError::BadAddress { .. } | PeerError::Encode(_) | PeerError::Decode(_) => {
                Status::internal(message)
            }
            PeerError::TooOld(_) => Status::failed_precondition(message),
            PeerError::TooLarge { .. } => Status::invalid_argument(message),
            PeerError::NotLeader { leader } => {
                let mut s = Status::unavailable(message);
                // Where the leader is, for clients that go there next.
                let hint = (!leader.is_empty()).then(|| leader.parse().ok()).flatten();
                if let Some(v) = hint {
                    s.metadata_mut()
                        .insert(crate::cluster::forward::LEADER_HINT, v);
                }
                s
            }
            PeerError::ShuttingDown
            | PeerError::CutOff { .. }
            | PeerError::Raft(_)
            | PeerError::Behind { .. }
            | PeerError::NoLeader { .. }
            | PeerError::LeaderChanged => Status::unavailable(message),
        }
    }
}

impl CallError for Status {
    fn retryable(&self) -> bool {
        matches!(self.code(), Code::Unavailable | Code::Cancelled)
    }

    fn why(&self) -> String {
        self.message().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_keeps_its_code_and_words() {
        let s = Status::from(PeerError::CommitTimeout { secs: 10 });
        assert_eq!(s.code(), Code::DeadlineExceeded);
        assert!(s.message().starts_with("not committed within 10s"));
        let s = Status::from(PeerError::NotLeader {
            leader: "10.0.0.1:7400".into(),
        });
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "not the leader; the leader is 10.0.0.1:7400");
        assert_eq!(s.metadata().get("drover-leader").unwrap(), "10.0.0.1:7400");
        let s = Status::from(PeerError::NotLeader { leader: "".into() });
        assert_eq!(s.message(), "no leader elected yet");
        assert!(s.metadata().get("drover-leader").is_none());
        let remote = Status::permission_denied("no");
        let s = Status::from(PeerError::Remote(remote));
        assert_eq!((s.code(), s.message()), (Code::PermissionDenied, "no"));
    }

    #[test]
    fn what_is_retried_is_the_same_either_way() {
        let all = [
            PeerError::CommitTimeout { secs: 1 },
            PeerError::ShuttingDown,
            PeerError::NotLeader { leader: "".into() },
            PeerError::CutOff { secs: 1 },
            PeerError::Raft("x".into()),
            PeerError::Behind { index: 3 },
            PeerError::LeaderChanged,
            PeerError::Remote(Status::unavailable("x")),
            PeerError::Remote(Status::invalid_argument("x")),
            PeerError::BadAddress {
                addr: "x".into(),
                reason: "y".into(),
            },
        ];
        for e in all {
            let peer = PeerError::retryable(&e);
            let what = e.to_string();
            assert_eq!(CallError::retryable(&Status::from(e)), peer, "{what}");
        }
    }
}
