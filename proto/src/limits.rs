//! Process limits a server needs raised before it serves.

/// The most open files a daemon asks for (what Docker and the project's
/// systemd units set).
const WANTED_OPEN_FILES: u64 = 1 << 20;

/// Raises this process's open-file limit (soft and hard) to 2^20, or to
/// the kernel's `fs.nr_open` if lower, or failing that (no
/// CAP_SYS_RESOURCE) its soft limit to its hard one. Started by a plain
/// init, a daemon gets 1,024: the routing mesh holds two sockets per
/// proxied connection, and at a few hundred requests/s in flight
/// everything that opens a file fails ("Too many open files"). Containers
/// are not affected: each gets the limits of its own spec.
///
/// Returns the soft limit before and after; never lowers it.
pub fn raise_open_files() -> (u64, u64) {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(WANTED_OPEN_FILES);
    raise_to(WANTED_OPEN_FILES.min(nr_open))
}

fn get() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r
}

fn set(soft: u64, hard: u64) -> bool {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 }
}

fn raise_to(want: u64) -> (u64, u64) {
    let before = get();
    if before.rlim_cur >= want {
        return (before.rlim_cur, before.rlim_cur);
    }
    let hard = before.rlim_max.max(want);
    if !set(want, hard) {
        // Not allowed to raise the hard limit: as far as it goes.
        set(before.rlim_max.max(before.rlim_cur), before.rlim_max);
    }
    (before.rlim_cur, get().rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child (limits are per process, and the test
    /// runner's other threads must keep theirs); its exit code.
    fn in_child(f: fn() -> i32) -> i32 {
        // SAFETY: the child calls only getrlimit, setrlimit and _exit,
        // which are async-signal-safe, and allocates nothing.
        unsafe {
            match libc::fork() {
                0 => libc::_exit(f()),
                pid => {
                    let mut status = 0;
                    libc::waitpid(pid, &mut status, 0);
                    libc::WEXITSTATUS(status)
                }
            }
        }
    }

    #[test]
    fn a_low_limit_is_raised() {
        let code = in_child(|| {
            let hard = get().rlim_max;
            if hard < 512 || !set(256, hard) {
                return 2;
            }
            match raise_to(512) {
                (256, 512) => 0,
                _ => 1,
            }
        });
        assert_eq!(code, 0, "1: not raised to 512; 2: could not set up");
    }

    #[test]
    fn a_higher_limit_is_never_lowered() {
        let code = in_child(|| {
            let hard = get().rlim_max;
            if hard < 2048 || !set(2048, hard) {
                return 2;
            }
            match raise_to(1024) {
                (2048, 2048) if get().rlim_cur == 2048 => 0,
                _ => 1,
            }
        });
        assert_eq!(code, 0, "1: lowered; 2: could not set up");
    }

    #[test]
    fn the_hard_limit_is_raised_when_allowed() {
        let code = in_child(|| {
            // Root may raise its hard limit; the soft one follows.
            if !set(256, 1024) {
                return 2;
            }
            match raise_to(4096) {
                (256, 4096) if get().rlim_max == 4096 => 0,
                // Not root: only as far as the hard limit.
                (256, 1024) => 0,
                _ => 1,
            }
        });
        assert_eq!(code, 0);
    }
}
