//! Accept loop and per-connection threads.
//!
//! One thread per connection keeps the code obvious and is plenty for the few
//! hundred requests per second the load tests send, especially with keep-alive
//! reusing connections. Connection threads read with a short timeout so that an
//! idle keep-alive connection notices the stop flag quickly; a request that is
//! already being read or answered is finished first (its response then says
//! `Connection: close`). Each thread holds a clone of a "done" channel sender;
//! when the accept loop has stopped and every sender is dropped, the receiver
//! returns and the server knows all in-flight requests are finished.

use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::http::{parse_request, Parse, Request, Response};
use crate::routes::{route, App};
use crate::shutdown::Shutdown;

/// How often a waiting connection re-checks the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Idle keep-alive connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A started request must arrive completely within this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    pub app: Arc<App>,
    pub shutdown: Arc<Shutdown>,
    /// Process start, the origin for `FAIL_HEALTH_AFTER`.
    pub started: Instant,
}

impl Server {
    /// Serve on `listener` until the stop flag is raised, then wait for the
    /// in-flight connections to finish.
    pub fn run(self, listener: TcpListener) -> io::Result<()> {
        self.shutdown.set_listener(listener.as_raw_fd());
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let this = Arc::new(self);
        while !this.shutdown.is_stopping() {
            let (stream, peer) = match listener.accept() {
                Ok(conn) => conn,
                Err(_) if this.shutdown.is_stopping() => break,
                Err(e) if is_transient_accept_error(&e) => {
                    eprintln!("demo-web: accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let server = Arc::clone(&this);
            let done = done_tx.clone();
            let spawned = std::thread::Builder::new()
                .name("conn".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    let _done = done;
                    server.serve_connection(stream, peer);
                });
            if let Err(e) = spawned {
                eprintln!("demo-web: cannot spawn connection thread: {e}");
            }
        }
        drop(listener);
        drop(done_tx);
        // Returns Err once every connection thread has dropped its sender.
        let _ = done_rx.recv();
        eprintln!("demo-web: drained, exiting");
        Ok(())
    }

    fn serve_connection(&self, mut stream: TcpStream, peer: SocketAddr) {
        if stream.set_read_timeout(Some(POLL)).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let mut waiting_since = Instant::now();
        loop {
            match parse_request(&buf) {
                Ok(Parse::Complete { request, consumed }) => {
                    let began = Instant::now();
                    buf.drain(..consumed);
                    let response = route(&self.app, &request, self.started.elapsed());
                    let keep_alive = request.keep_alive() && !self.shutdown.is_stopping();
                    let head_only = request.method == "HEAD";
                    let sent = response.write_to(&mut stream, head_only, keep_alive);
                    log_request(
                        peer,
                        Some(&request),
                        response.status,
                        response.body.len(),
                        began,
                    );
                    if sent.is_err() || !keep_alive {
                        return;
                    }
                    waiting_since = Instant::now();
                    continue;
                }
                Ok(Parse::Partial) => {}
                Err(e) => {
                    let response = Response::text(e.status(), format!("{e}\n"));
                    let _ = response.write_to(&mut stream, false, false);
                    log_request(
                        peer,
                        None,
                        response.status,
                        response.body.len(),
                        Instant::now(),
                    );
                    return;
                }
            }
            let waited = waiting_since.elapsed();
            if buf.is_empty() && (self.shutdown.is_stopping() || waited > IDLE_TIMEOUT) {
                return;
            }
            if !buf.is_empty() && waited > REQUEST_TIMEOUT {
                return;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    if buf.is_empty() {
                        waiting_since = Instant::now();
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return,
            }
        }
    }
}

/// Errors after which accepting again makes sense (a peer gave up, or we are
/// briefly out of file descriptors).
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// One line per request on stdout:
/// `<unix time> <peer> "<method> <path>" <status> <body bytes> <micros>us`.
fn log_request(peer: SocketAddr, req: Option<&Request>, status: u16, bytes: usize, began: Instant) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let line = match req {
        Some(r) => format!("{} {}", r.method, r.path),
        None => "-".to_string(),
    };
    println!(
        "{}.{:03} {peer} \"{line}\" {status} {bytes} {}us",
        now.as_secs(),
        now.subsec_millis(),
        began.elapsed().as_micros()
    );
}
