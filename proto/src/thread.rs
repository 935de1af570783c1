//! Threads of background work that must not crowd out the ones that answer.

/// Lowers the calling thread's CPU priority (nice 10; on Linux a thread has
/// its own), for work that can wait, such as serialising a snapshot: on a
/// busy machine the threads answering peers and clients then run first.
/// Use it on a thread of its own (not a pooled one, which would keep the
/// lower priority for whatever it runs next). Best effort: a failure
/// leaves the priority as it was.
pub fn lower_priority() {
    // SAFETY: gettid and setpriority take plain integers and touch no
    // memory of ours.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_calling_thread_is_lowered() {
        let nice = || {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            rest.split_whitespace()
                .nth(16)
                .unwrap()
                .parse::<i64>()
                .unwrap()
        };
        let before = nice();
        let lowered = std::thread::spawn(move || {
            super::lower_priority();
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 10).min(19));
        assert_eq!(nice(), before, "the caller's own thread kept its priority");
    }
}
