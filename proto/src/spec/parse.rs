//! Strict parsing of job specs from YAML (what users write) and JSON (the wire).
//!
//! serde does the structural work; this module turns its errors into the
//! `path: rule` form and adds a "did you mean" for misspelled fields.

use super::{check_size, validate, FieldError, JobSpec, JobType, RestartPolicy, SpecError};

/// Parses and validates a YAML job spec, reporting every problem at once:
/// after a structural error the offending field is set aside and parsing
/// goes on, so a spec with a typo and a bad size shows both.
pub fn from_yaml(text: &str) -> Result<JobSpec, SpecError> {
    from_yaml_in(text, None)
}

/// As `from_yaml`, but relative `oci:` paths are first resolved against `cwd`
/// (what the CLI does: the scheduler and agents do not share the user's directory).
pub fn from_yaml_in(text: &str, cwd: Option<&std::path::Path>) -> Result<JobSpec, SpecError> {
    let resolve = |mut spec: JobSpec| {
        if let Some(cwd) = cwd {
            spec.resolve_paths(cwd);
        }
        spec
    };
    if text.trim().is_empty() {
        return Err(SpecError::one("", "the spec is empty"));
    }
    // The first pass parses the text itself, so its error carries a line number.
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let first = match serde_path_to_error::deserialize::<_, JobSpec>(de) {
        Ok(mut spec) => {
            if spec.job_type == JobType::Batch {
                let given = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
                    .is_ok_and(|v| v.get("restart").is_some());
                batch_restart_default(&mut spec, given);
            }
            let spec = resolve(spec);
            validate(&spec)?;
            check_size(&spec)?;
            return Ok(spec);
        }
        Err(e) => e,
    };
    let path = first.path().to_string();
    let mut errors = decorate(
        path.clone(),
        clean_message(&first.inner().to_string(), &path),
    )
    .errors;
    if let Some(loc) = first.inner().location() {
        for f in &mut errors {
            f.message = format!("{} (line {})", f.message, loc.line());
        }
    }
    let Ok(mut value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
        return Err(SpecError { errors });
    };
    // Set the failing field aside and parse again, a bounded number of times.
    let mut removed = vec![segments(&first)];
    for _ in 0..20 {
        if !remove(&mut value, removed.last().expect("one at least")) {
            return Err(SpecError { errors });
        }
        match serde_path_to_error::deserialize::<_, JobSpec>(value.clone()) {
            Ok(mut spec) => {
                batch_restart_default(&mut spec, value.get("restart").is_some());
                if let Err(more) = validate(&resolve(spec)) {
                    // Rules about fields set aside would only repeat the first error.
                    errors.extend(
                        more.errors
                            .into_iter()
                            .filter(|f| !removed.iter().any(|r| f.path.starts_with(&r.join(".")))),
                    );
                }
                return Err(SpecError { errors });
            }
            Err(e) => {
                let path = e.path().to_string();
                let mut next =
                    decorate(path.clone(), clean_message(&e.inner().to_string(), &path)).errors;
                let segs = segments(&e);
                if let Some(line) = segs.last().and_then(|k| line_of(text, k)) {
                    for f in &mut next {
                        f.message = format!("{} (line {line})", f.message);
                    }
                }
                if removed.contains(&segs) {
                    return Err(SpecError { errors });
                }
                errors.extend(next);
                removed.push(segs);
            }
        }
    }
    Err(SpecError { errors })
}

/// The map keys on the path of a parse error.
fn segments<E>(e: &serde_path_to_error::Error<E>) -> Vec<String> {
    e.path()
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

/// Removes the entry at `path` from a YAML mapping; false if there is none.
fn remove(value: &mut serde_yaml_ng::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for key in parents {
        match at.get_mut(key.as_str()) {
            Some(v) => at = v,
            None => return false,
        }
    }
    at.as_mapping_mut()
        .and_then(|m| m.remove(last.as_str()))
        .is_some()
}

/// The first line that sets `key` (for errors found without a position).
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches(['{', '-', ' ']);
            t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
                || l.contains(&format!("{{{key}:"))
                || l.contains(&format!(", {key}:"))
        })
        .map(|i| i + 1)
}

/// Parses and validates a JSON job spec (the wire form).
pub fn from_json(text: &str) -> Result<JobSpec, SpecError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut spec: JobSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = clean_message(&e.inner().to_string(), &path);
        decorate(path, message)
    })?;
    if spec.job_type == JobType::Batch {
        let given = serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("restart").is_some());
        batch_restart_default(&mut spec, given);
    }
    validate(&spec)?;
    check_size(&spec)?;
    Ok(spec)
}

/// A batch job's replicas are not restarted where they ran (the scheduler
/// retries failed ones): left out, its `restart` policy is `never`.
fn batch_restart_default(spec: &mut JobSpec, restart_given: bool) {
    if spec.job_type == JobType::Batch && !restart_given {
        spec.restart.0.policy = RestartPolicy::Never;
    }
}

/// Drops the location suffix and any path prefix the format's error already carries.
fn clean_message(raw: &str, path: &str) -> String {
    let mut m = raw.to_string();
    for marker in [" at line ", " at position "] {
        if let Some(i) = m.find(marker) {
            m.truncate(i);
        }
    }
    // serde_yaml_ng prefixes the path it knows (sometimes only the parent's).
    if let Some((head, rest)) = m.split_once(": ") {
        if !head.is_empty() && !head.contains(' ') && path.starts_with(head) {
            m = rest.to_string();
        }
    }
    m
}

/// Turns serde's "unknown field `x`, expected one of `a`, `b`" into
/// `path.x: unknown field (did you mean `a`?)`.
fn decorate(path: String, message: String) -> SpecError {
    let path = if path == "." { String::new() } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            let field = &rest[..end];
            let expected: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
            // serde_path_to_error's path already ends with the unknown field.
            let full = if path.is_empty() {
                field.to_string()
            } else {
                path
            };
            let hint = match closest(field, &expected) {
                Some(best) => format!("unknown field (did you mean `{best}`?)"),
                None => format!("unknown field (known fields: {})", expected.join(", ")),
            };
            return SpecError {
                errors: vec![FieldError {
                    path: full,
                    message: hint,
                }],
            };
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        let full = if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return SpecError::one(full, "is required");
    }
    if message.starts_with("unknown variant `") {
        let m = message
            .replace("unknown variant", "unknown value")
            .replace(", expected one of", " (use one of");
        let m = if m.contains("(use one of") {
            format!("{m})")
        } else {
            m
        };
        return SpecError::one(path, m);
    }
    SpecError::one(path, message)
}

/// The candidate closest to `word`, if it is close enough to be a typo.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error without its `(line N)` suffix.
    fn err(yaml: &str) -> String {
        let mut s = from_yaml(yaml).unwrap_err().to_string();
        if let Some(i) = s.rfind(" (line ") {
            s.truncate(i);
        }
        s
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = from_yaml("name: web\nreplica: 2\nimage: oci:/x:v1\nresources: {memory: 64XB, cpu: 0}\nworkdir: tmp\n")
            .unwrap_err();
        let lines: Vec<String> = e.errors.iter().map(|f| f.to_string()).collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(
            lines[0],
            "replica: unknown field (did you mean `replicas`?) (line 2)"
        );
        assert_eq!(
            lines[1],
            r#"resources.memory: "64XB" is not a size (use Ki, Mi, Gi) (line 4)"#
        );
        assert!(
            lines.contains(&"resources.cpu: must be more than 0".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"workdir: \"tmp\" must be an absolute path".to_string()),
            "{lines:?}"
        );
    }

    #[test]
    fn parse_errors_carry_the_line() {
        let e = from_yaml(
            "name: web
image: oci:/x:v1
replicas: lots
",
        )
        .unwrap_err()
        .to_string();
        assert!(e.ends_with("(line 3)"), "{e}");
    }

    const MINIMAL: &str = "name: web\nimage: oci:/images/web:v1\n";

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = from_yaml(MINIMAL).unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.resources.memory.bytes(), 64 << 20);
        assert_eq!(spec.stop_grace_period.millis(), 10_000);
        assert_eq!(spec.restart.0.policy, super::super::RestartPolicy::Always);
    }

    #[test]
    fn full_spec_parses() {
        let spec = from_yaml(
            r#"
name: web
replicas: 3
image: oci:/images/demo-web:v1
command: ["/demo-web"]
args: ["--verbose"]
env: {PORT: "8080", MODE: fast}
workdir: /
resources: {cpu: 0.5, memory: 64Mi, pids: 100}
restart: {policy: on-failure, backoff: {initial: 500ms, max: 1m}}
stop_grace_period: 5s
network: host
health:
  http: {path: /healthz, port: 8080}
  interval: 2s
  timeout: 1s
  failure_threshold: 3
update:
  max_surge: 25%
  max_unavailable: 0
  min_healthy_time: 3s
  healthy_deadline: 30s
  progress_deadline: 2m
  auto_rollback: true
  canary: 1
"#,
        )
        .unwrap();
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.resources.cpu.millis(), 500);
        assert_eq!(spec.resources.pids, Some(100));
        assert_eq!(spec.restart.0.backoff.max.millis(), 60_000);
        assert_eq!(
            spec.health.as_ref().unwrap().http.as_ref().unwrap().status,
            200
        );
        assert_eq!(spec.update.max_surge, super::super::Amount::Percent(25));
        assert_eq!(spec.network, super::super::Network::Host);
    }

    #[test]
    fn restart_shorthand() {
        let spec = from_yaml(&format!("{MINIMAL}restart: never\n")).unwrap();
        assert_eq!(spec.restart.0.policy, super::super::RestartPolicy::Never);
        assert!(err(&format!("{MINIMAL}restart: sometimes\n"))
            .starts_with("restart: unknown value `sometimes`"));
    }

    #[test]
    fn bad_size_names_field_and_rule() {
        let e = err(&format!("{MINIMAL}resources: {{memory: 64XB}}\n"));
        assert!(
            e.starts_with(r#"resources.memory: "64XB" is not a size (use Ki, Mi, Gi)"#),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_suggests() {
        assert_eq!(
            err("name: web\nreplica: 3\nimage: oci:/x:v1\n"),
            "replica: unknown field (did you mean `replicas`?)"
        );
        assert_eq!(
            err(&format!("{MINIMAL}resources: {{memroy: 1Gi}}\n")),
            "resources.memroy: unknown field (did you mean `memory`?)"
        );
        let e = err(&format!("{MINIMAL}zzzzzz: 1\n"));
        assert!(
            e.starts_with("zzzzzz: unknown field (known fields: name, replicas"),
            "{e}"
        );
    }

    #[test]
    fn missing_and_wrong_types() {
        assert_eq!(err("name: web\n"), "image: is required");
        let e = err(&format!("{MINIMAL}replicas: many\n"));
        assert!(e.starts_with("replicas: invalid type"), "{e}");
        let e = err(&format!("{MINIMAL}stop_grace_period: 10\n"));
        assert!(e.starts_with("stop_grace_period: 10 has no unit"), "{e}");
        assert_eq!(err(""), "the spec is empty");
    }

    #[test]
    fn on_disconnect_defaults_to_stop_and_rejects_unknown_values() {
        use super::super::OnDisconnect;
        assert_eq!(
            from_yaml(MINIMAL).unwrap().on_disconnect,
            OnDisconnect::Stop
        );
        let spec = from_yaml(&format!("{MINIMAL}on_disconnect: keep-running\n")).unwrap();
        assert_eq!(spec.on_disconnect, OnDisconnect::KeepRunning);
        // The default is not written out, so older agents read new specs.
        assert!(!from_yaml(MINIMAL)
            .unwrap()
            .to_json()
            .contains("on_disconnect"));
        let e = err(&format!("{MINIMAL}on_disconnect: keep_running\n"));
        assert_eq!(
            e,
            "on_disconnect: unknown value `keep_running`, expected `stop` or `keep-running`"
        );
    }

    #[test]
    fn json_round_trip_is_canonical() {
        let spec = from_yaml(&format!(
            "{MINIMAL}resources: {{cpu: 500m, memory: 1073741824}}\n"
        ))
        .unwrap();
        let json = spec.to_json();
        assert!(json.contains(r#""cpu":"0.5""#), "{json}");
        assert!(json.contains(r#""memory":"1Gi""#), "{json}");
        assert_eq!(from_json(&json).unwrap(), spec);
    }

    #[test]
    fn json_is_validated_too() {
        let e = from_json(r#"{"name":"Bad_Name","image":"oci:/x:v1"}"#).unwrap_err();
        assert_eq!(e.errors[0].path, "name");
        let e = from_json(r#"{"name":"web","image":"oci:/x:v1","bogus":1}"#).unwrap_err();
        assert_eq!(e.errors[0].path, "bogus");
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("replica", "replicas"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("imgae", &["image", "name"]), Some("image"));
        assert_eq!(closest("qqqqqqq", &["image", "name"]), None);
    }
}
