//! demo-web binary: read the environment, apply the fault switches, serve.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use demo_web::config::{Config, CRASH_EXIT_CODE};
use demo_web::hostname::hostname;
use demo_web::routes::App;
use demo_web::server::Server;
use demo_web::shutdown::{self, Shutdown};

fn main() -> ExitCode {
    let started = Instant::now();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo-web: {e}");
            return ExitCode::from(2);
        }
    };
    if config.crash_after.is_some_and(|d| d.is_zero()) {
        eprintln!("demo-web: CRASH_AFTER=0, exiting with code {CRASH_EXIT_CODE}");
        return ExitCode::from(CRASH_EXIT_CODE as u8);
    }

    let stop = Shutdown::new();
    if let Err(e) = shutdown::install(Arc::clone(&stop)) {
        eprintln!("demo-web: cannot set up signal handling: {e}");
        return ExitCode::from(1);
    }
    if let Some(after) = config.crash_after {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            eprintln!(
                "demo-web: CRASH_AFTER={after:?} elapsed, exiting with code {CRASH_EXIT_CODE}"
            );
            std::process::exit(CRASH_EXIT_CODE);
        });
    }
    if let Some(delay) = config.start_delay {
        eprintln!("demo-web: START_DELAY={delay:?}, waiting before listening");
        std::thread::sleep(delay);
    }

    let addr = format!("0.0.0.0:{}", config.port);
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-web: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let app = App {
        hostname: hostname(),
        config,
    };
    eprintln!(
        "demo-web {} listening on {addr} as {}",
        app.config.version, app.hostname
    );
    let server = Server {
        app: Arc::new(app),
        shutdown: stop,
        started,
    };
    match server.run(listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-web: {e}");
            ExitCode::from(1)
        }
    }
}
