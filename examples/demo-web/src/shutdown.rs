//! Graceful stop on SIGTERM (and SIGINT).
//!
//! Drover stops a replica by sending SIGTERM, waiting `stop_grace_period`, then
//! sending SIGKILL. demo-web uses that window to stop accepting, finish the
//! requests it is serving and exit 0, so a rollout loses no requests.
//!
//! std has no signal API. Instead of an async-signal handler we block the
//! signals in every thread (the mask is set before any thread is spawned, and
//! threads inherit it) and let one dedicated thread `sigwait` for them; it then
//! runs ordinary code: raise the stop flag and `shutdown(2)` the listening
//! socket, which on Linux wakes the thread blocked in `accept` with `EINVAL`.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

/// Shared "stop now" state between the signal thread, the accept loop and the
/// connection threads.
#[derive(Debug, Default)]
pub struct Shutdown {
    stopping: AtomicBool,
    /// The listening socket to wake, or -1 before the server listens.
    listener: AtomicI32,
}

impl Shutdown {
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown {
            stopping: AtomicBool::new(false),
            listener: AtomicI32::new(-1),
        })
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Remember the listening socket so a later signal can wake `accept`.
    pub fn set_listener(&self, fd: RawFd) {
        self.listener.store(fd, Ordering::SeqCst);
    }

    /// Raise the stop flag and wake the accept loop. Before the server listens
    /// there is nothing in flight, so the process exits at once.
    pub fn trigger(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let fd = self.listener.load(Ordering::SeqCst);
        if fd < 0 {
            eprintln!("demo-web: stopped before listening");
            std::process::exit(0);
        }
        // SAFETY: `fd` is the listening socket, which the accept loop keeps open
        // until it observes the stop flag; shutdown(2) on it only affects that
        // socket and reports errors through its return value.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
    }
}

/// Block SIGTERM and SIGINT in the calling thread and all threads it spawns
/// later, and start the thread that waits for them. Call before spawning.
pub fn install(shutdown: Arc<Shutdown>) -> io::Result<()> {
    let set = stop_signals();
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                continue;
            }
            eprintln!("demo-web: signal {sig} received, draining");
            shutdown.trigger();
        })?;
    Ok(())
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset fully initialises the zeroed set before sigaddset
    // touches it; both only write to the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}
