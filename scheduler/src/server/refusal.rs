//! The one place a state-machine refusal becomes a gRPC status.

use crate::state::Refusal;
use tonic::Status;

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        let message = r.to_string();
        match r {
            Refusal::NoJob(_)
            | Refusal::NoNode(_)
            | Refusal::NoVersion { .. }
            | Refusal::NotFound(_) => Status::not_found(message),
            Refusal::Invalid(_) => Status::invalid_argument(message),
            Refusal::Conflict(_) => Status::failed_precondition(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code() {
        let code = |r: Refusal| Status::from(r).code();
        assert_eq!(code(Refusal::NoJob("w".into())), tonic::Code::NotFound);
        assert_eq!(code(Refusal::NotFound("t".into())), tonic::Code::NotFound);
        assert_eq!(
            code(Refusal::Invalid("x".into())),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(Refusal::Conflict("x".into())),
            tonic::Code::FailedPrecondition
        );
        let s = Status::from(Refusal::NoNode("n1".into()));
        assert_eq!(s.message(), "no node named \"n1\"");
    }
}
