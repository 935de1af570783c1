//! Runtime configuration, read from the environment.
//!
//! Everything demo-web does differently between runs is switched by
//! environment variables, because that is what a job spec's `env` map sets.
//! Besides the port and version there are fault switches that the rollout
//! demos use to produce replicas that crash, start slowly or fail their health
//! checks. Parsing is a pure function over a lookup closure so it can be tested
//! without touching the process environment.

use std::fmt;
use std::time::Duration;

/// Version reported when neither the runtime nor the build set `VERSION`.
pub const DEFAULT_VERSION: &str = match option_env!("VERSION") {
    Some(v) => v,
    None => "dev",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `PORT`, default 8080.
    pub port: u16,
    /// `VERSION`, default [`DEFAULT_VERSION`].
    pub version: String,
    /// `CRASH_AFTER`: exit with code 3 after this long (zero: at once).
    pub crash_after: Option<Duration>,
    /// `FAIL_HEALTH=1`: `/healthz` answers 503 from the start.
    pub fail_health: bool,
    /// `FAIL_HEALTH_AFTER`: `/healthz` answers 503 once this long has passed.
    pub fail_health_after: Option<Duration>,
    /// `START_DELAY`: sleep this long before listening.
    pub start_delay: Option<Duration>,
}

/// Exit code used by `CRASH_AFTER`, distinct from panics (101) and signals.
pub const CRASH_EXIT_CODE: i32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read the configuration through `lookup` (normally `std::env::var`).
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
        let port = match get("PORT") {
            None => 8080,
            Some(v) => v.trim().parse().map_err(|_| ConfigError {
                var: "PORT",
                value: v,
                expected: "a port number 0-65535",
            })?,
        };
        let secs = |var: &'static str| -> Result<Option<Duration>, ConfigError> {
            get(var)
                .map(|v| {
                    parse_secs(&v).ok_or(ConfigError {
                        var,
                        value: v,
                        expected: "a number of seconds such as 5 or 0.5",
                    })
                })
                .transpose()
        };
        let fail_health = match get("FAIL_HEALTH").as_deref().map(str::trim) {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(v) => {
                return Err(ConfigError {
                    var: "FAIL_HEALTH",
                    value: v.to_string(),
                    expected: "1, true, 0 or false",
                })
            }
        };
        Ok(Config {
            port,
            version: get("VERSION").unwrap_or_else(|| DEFAULT_VERSION.to_string()),
            crash_after: secs("CRASH_AFTER")?,
            fail_health,
            fail_health_after: secs("FAIL_HEALTH_AFTER")?,
            start_delay: secs("START_DELAY")?,
        })
    }

    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|var| std::env::var(var).ok())
    }

    /// Whether `/healthz` should pass `uptime` after start.
    pub fn healthy_at(&self, uptime: Duration) -> bool {
        !self.fail_health && self.fail_health_after.is_none_or(|after| uptime < after)
    }
}

/// Seconds as a non-negative decimal, with an optional `s` suffix ("5", "0.5", "2s").
fn parse_secs(value: &str) -> Option<Duration> {
    let v = value.trim();
    let v = v.strip_suffix('s').unwrap_or(v);
    let secs: f64 = v.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.version, DEFAULT_VERSION);
        assert_eq!(c.crash_after, None);
        assert!(!c.fail_health);
        assert!(c.healthy_at(Duration::from_secs(1_000_000)));
    }

    #[test]
    fn reads_switches() {
        let c = config(&[
            ("PORT", "9000"),
            ("VERSION", "v2"),
            ("CRASH_AFTER", "0"),
            ("START_DELAY", "1.5"),
            ("FAIL_HEALTH_AFTER", "10s"),
        ])
        .unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.version, "v2");
        assert_eq!(c.crash_after, Some(Duration::ZERO));
        assert_eq!(c.start_delay, Some(Duration::from_millis(1500)));
        assert!(c.healthy_at(Duration::from_secs(9)));
        assert!(!c.healthy_at(Duration::from_secs(10)));
    }

    #[test]
    fn fail_health_is_unhealthy_from_the_start() {
        let c = config(&[("FAIL_HEALTH", "1")]).unwrap();
        assert!(!c.healthy_at(Duration::ZERO));
        assert!(config(&[("FAIL_HEALTH", "0")])
            .unwrap()
            .healthy_at(Duration::ZERO));
    }

    #[test]
    fn empty_values_count_as_unset() {
        assert_eq!(
            config(&[("PORT", ""), ("CRASH_AFTER", " ")]).unwrap(),
            config(&[]).unwrap()
        );
    }

    #[test]
    fn rejects_bad_values_naming_the_variable() {
        let e = config(&[("PORT", "80800")]).unwrap_err();
        assert_eq!(e.var, "PORT");
        assert_eq!(
            config(&[("CRASH_AFTER", "-1")]).unwrap_err().var,
            "CRASH_AFTER"
        );
        assert_eq!(
            config(&[("START_DELAY", "soon")]).unwrap_err().var,
            "START_DELAY"
        );
        assert_eq!(
            config(&[("FAIL_HEALTH", "yes")]).unwrap_err().var,
            "FAIL_HEALTH"
        );
        assert_eq!(
            e.to_string(),
            "invalid PORT=\"80800\": expected a port number 0-65535"
        );
    }
}
