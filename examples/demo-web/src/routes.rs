//! The three endpoints demo-web serves.
//!
//! `/` says which version runs on which host, so a load test or `curl` loop
//! shows traffic moving from v1 to v2 replicas during a rollout. `/healthz` is
//! the target of the job's HTTP health check and can be made to fail with the
//! fault switches in [`crate::config`]. `/version` is the bare version for
//! scripts. Routing is a pure function of the request, the app and the uptime.

use std::time::Duration;

use crate::config::Config;
use crate::http::{Request, Response};

/// What the handlers need to know about this process.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Config,
    pub hostname: String,
}

pub fn route(app: &App, req: &Request, uptime: Duration) -> Response {
    let known = matches!(req.path.as_str(), "/" | "/healthz" | "/version");
    if !known {
        return Response::text(404, "not found\n");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "method not allowed\n");
    }
    match req.path.as_str() {
        "/" => Response::text(
            200,
            format!("demo-web {} on {}\n", app.config.version, app.hostname),
        ),
        "/healthz" if app.config.healthy_at(uptime) => Response::text(200, "ok\n"),
        "/healthz" => Response::text(503, "unhealthy\n"),
        _ => Response::text(200, format!("{}\n", app.config.version)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, Parse};

    fn app(vars: &[(&str, &str)]) -> App {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config =
            Config::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
                .unwrap();
        App {
            config,
            hostname: "host-a".into(),
        }
    }

    fn get(app: &App, raw: &str, uptime_secs: u64) -> Response {
        let Ok(Parse::Complete { request, .. }) = parse_request(raw.as_bytes()) else {
            panic!("test request did not parse: {raw:?}");
        };
        route(app, &request, Duration::from_secs(uptime_secs))
    }

    #[test]
    fn root_names_version_and_host() {
        let r = get(&app(&[("VERSION", "v2")]), "GET / HTTP/1.1\r\n\r\n", 0);
        assert_eq!(r, Response::text(200, "demo-web v2 on host-a\n"));
    }

    #[test]
    fn version_endpoint() {
        let r = get(
            &app(&[("VERSION", "v1")]),
            "GET /version HTTP/1.1\r\n\r\n",
            0,
        );
        assert_eq!(r, Response::text(200, "v1\n"));
    }

    #[test]
    fn healthz_follows_fault_switches() {
        let req = "GET /healthz HTTP/1.1\r\n\r\n";
        assert_eq!(get(&app(&[]), req, 0).status, 200);
        assert_eq!(get(&app(&[("FAIL_HEALTH", "1")]), req, 0).status, 503);
        let later = app(&[("FAIL_HEALTH_AFTER", "5")]);
        assert_eq!(get(&later, req, 4).status, 200);
        assert_eq!(get(&later, req, 5).status, 503);
    }

    #[test]
    fn unknown_path_and_method() {
        assert_eq!(get(&app(&[]), "GET /nope HTTP/1.1\r\n\r\n", 0).status, 404);
        assert_eq!(get(&app(&[]), "DELETE / HTTP/1.1\r\n\r\n", 0).status, 405);
        assert_eq!(
            get(&app(&[]), "HEAD /healthz HTTP/1.1\r\n\r\n", 0).status,
            200
        );
    }
}
