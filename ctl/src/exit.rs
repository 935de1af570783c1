//! `drover`'s exit codes, one per kind of outcome a script may act on.
//!
//! `drover exec` is the exception: it exits with its command's code.

/// It did what was asked.
pub const OK: i32 = 0;
/// It failed in a way none of the others names.
pub const FAILED: i32 = 1;
/// The command line was wrong (clap's code for usage errors).
pub const USAGE: i32 = 2;
/// What it names (a job, an allocation, a node, a token) does not exist.
pub const NOT_FOUND: i32 = 3;
/// The scheduler refused: invalid input, not allowed, a conflict with the
/// state, over the caller's rate.
pub const REFUSED: i32 = 4;
/// A rollout (or a batch job) it waited for failed.
pub const ROLLOUT_FAILED: i32 = 5;
/// No scheduler could be reached, or none answered in time.
pub const CONNECTION: i32 = 6;

/// The codes as `--help` lists them.
pub const HELP: &str = "Exit codes:
  0  it did what was asked
  1  it failed otherwise (a wait that timed out, say)
  2  usage error (the command line was wrong)
  3  not found (no such job, allocation, node or token)
  4  refused (invalid input, not allowed, a conflict, rate limited)
  5  a rollout or batch job it waited for failed
  6  connection error (no scheduler reachable or answering)
  drover exec exits with its command's code.";

/// A call the scheduler answered with an error, with the exit code its
/// kind gets.
#[derive(Debug)]
pub struct CallError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

/// The exit code for gRPC code `c`, when the scheduler answered it
/// (`transport`: the connection failed, nobody answered).
pub fn for_status(c: tonic::Code, transport: bool) -> i32 {
    use tonic::Code::*;
    if transport {
        return CONNECTION;
    }
    match c {
        Ok => OK,
        NotFound => NOT_FOUND,
        InvalidArgument | PermissionDenied | Unauthenticated | FailedPrecondition
        | AlreadyExists | ResourceExhausted | OutOfRange | Aborted => REFUSED,
        Unavailable | DeadlineExceeded => CONNECTION,
        _ => FAILED,
    }
}

/// The exit code for an error `drover` ends with.
pub fn of(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<CallError>())
        .map_or(FAILED, |c| c.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_answer_has_its_code() {
        assert_eq!(for_status(tonic::Code::NotFound, false), NOT_FOUND);
        assert_eq!(for_status(tonic::Code::PermissionDenied, false), REFUSED);
        assert_eq!(for_status(tonic::Code::Unavailable, false), CONNECTION);
        assert_eq!(for_status(tonic::Code::Internal, true), CONNECTION);
        assert_eq!(for_status(tonic::Code::Internal, false), FAILED);
        let e = anyhow::Error::new(CallError {
            code: NOT_FOUND,
            message: "no job \"web\"".into(),
        })
        .context("job status");
        assert_eq!(of(&e), NOT_FOUND);
        assert_eq!(of(&anyhow::anyhow!("other")), FAILED);
    }
}
