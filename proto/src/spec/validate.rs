//! The rules a job spec must follow beyond its shape.
//!
//! `validate` checks every rule and reports every broken one, each with the
//! field path and the rule in words, so a user fixes a spec in one round.

use super::{Amount, FieldError, JobSpec, OciRef, SpecError};

const MAX_REPLICAS: u32 = 10_000;
const MAX_CPU_MILLIS: u64 = 1_024_000;
const MIN_MEMORY: u64 = 4 << 20;
const MAX_MEMORY: u64 = 1 << 40;
const MAX_GRACE_MS: u64 = 3_600_000;
const MAX_RETRIES: u32 = 1000;
/// The largest spec, as JSON. A spec travels in one Raft log entry, which
/// must reach every replica within the heartbeat interval; larger data
/// belongs in a config (`drover config create`), which holds up to 256Ki.
pub const MAX_SPEC_BYTES: usize = 256 << 10;

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Whether `spec` is small enough to submit: checked where a spec is
/// parsed, not by `validate`, which every replica runs again when it
/// applies a submission, and a rule added there would make replicas of two
/// releases disagree about entries already in the log.
pub fn check_size(spec: &JobSpec) -> Result<(), SpecError> {
    let size = serde_json::to_vec(spec).map_or(0, |b| b.len());
    if size <= MAX_SPEC_BYTES {
        return Ok(());
    }
    let mut e = Errors(Vec::new());
    e.add(
        "spec",
        format!(
            "{size} bytes as JSON is more than the maximum of {MAX_SPEC_BYTES} (256Ki): keep large data in a config (drover config create) instead of env, command or args"
        ),
    );
    Err(SpecError { errors: e.0 })
}

/// Checks every rule; returns all problems found.
pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    let mut e = Errors(Vec::new());
    if let Err(m) = dns_label(&spec.name) {
        e.add("name", m);
    }
    if spec.replicas > MAX_REPLICAS {
        e.add(
            "replicas",
            format!(
                "{} is more than the maximum of {MAX_REPLICAS}",
                spec.replicas
            ),
        );
    }
    image(&mut e, &spec.image);
    placement_rules(&mut e, spec);
    job_type(&mut e, spec);
    for (field, list) in [("command", &spec.command), ("args", &spec.args)] {
        if let Some(list) = list {
            if field == "command" && list.is_empty() {
                e.add(
                    field,
                    "must not be empty (omit it to use the image's entrypoint)",
                );
            }
            for (i, s) in list.iter().enumerate() {
                if s.contains('\0') {
                    e.add(format!("{field}[{i}]"), "must not contain a NUL byte");
                }
            }
        }
    }
    if let Some(cmd) = &spec.command {
        if cmd.first().is_some_and(|c| c.is_empty()) {
            e.add("command[0]", "must name a program");
        }
    }
    for (k, v) in &spec.env {
        if !env_name_ok(k) {
            e.add(
                format!("env.{k}"),
                "is not a valid variable name (letters, digits and _, not starting with a digit)",
            );
        }
        if v.contains('\0') {
            e.add(format!("env.{k}"), "must not contain a NUL byte");
        }
    }
    if let Some(w) = &spec.workdir {
        if !w.starts_with('/') {
            e.add("workdir", format!("{w:?} must be an absolute path"));
        }
    }
    resources(&mut e, spec);
    let backoff = &spec.restart.0.backoff;
    if backoff.initial.millis() == 0 {
        e.add("restart.backoff.initial", "must be more than 0s");
    }
    if backoff.max < backoff.initial {
        e.add(
            "restart.backoff.max",
            format!(
                "{} must not be less than restart.backoff.initial ({})",
                backoff.max, backoff.initial
            ),
        );
    }
    if spec.stop_grace_period.millis() > MAX_GRACE_MS {
        e.add(
            "stop_grace_period",
            format!("{} is more than 1h", spec.stop_grace_period),
        );
    }
    health(&mut e, spec);
    update(&mut e, spec);
    ports(&mut e, spec);
    mounts(&mut e, spec);
    if spec.egress == super::Egress::None {
        // A raw socket, or its own addresses, would let it send as another
        // container (one with egress) and so leave after all.
        let forged = spec.security.capabilities.add.iter().find(|c| {
            let c = c.to_ascii_uppercase();
            let c = c.strip_prefix("CAP_").unwrap_or(&c).to_string();
            matches!(c.as_str(), "ALL" | "NET_RAW" | "NET_ADMIN")
        });
        if let Some(c) = forged {
            e.add(
                "security.capabilities.add",
                format!("{c} cannot be given with egress: none (it could send as another container's address)"),
            );
        }
    }
    if spec.egress == super::Egress::None && spec.network == super::Network::Host {
        e.add(
            "egress",
            "none needs network: private (a host-network replica has the node's own network)",
        );
    }
    for (path, rule) in super::security::problems(
        &spec.security,
        spec.user.as_deref(),
        spec.network == super::Network::Host,
    ) {
        e.add(path, rule);
    }
    if e.0.is_empty() {
        Ok(())
    } else {
        Err(SpecError { errors: e.0 })
    }
}

/// Kubernetes' DNS-1123 label: 1–63 of `a-z`, `0-9`, `-`, alphanumeric at both ends.
/// The most constraints a job may have: each is checked on every node
/// for every replica placed.
const MAX_CONSTRAINTS: usize = 32;
/// The most attributes a job may spread over.
const MAX_SPREADS: usize = 8;
/// The most values an `in` or `not_in` constraint may list.
const MAX_CONSTRAINT_VALUES: usize = 256;

/// The rules of batch and system jobs (see `JobType`).
fn job_type(e: &mut Errors, spec: &JobSpec) {
    use super::{JobType, RestartPolicy};
    let kind = spec.job_type;
    if kind != JobType::Batch {
        for (field, set) in [
            ("completions", spec.completions > 0),
            ("parallelism", spec.parallelism > 0),
            ("retries", spec.retries.is_some()),
            ("schedule", spec.schedule.is_some()),
        ] {
            if set {
                e.add(
                    field,
                    format!(
                        "only a batch job has {field} (this is a {} job)",
                        kind.word()
                    ),
                );
            }
        }
    }
    if kind == JobType::Service {
        return;
    }
    if spec.replicas != 1 {
        e.add(
            "replicas",
            match kind {
                JobType::Batch => "a batch job runs `parallelism` replicas at a time until `completions` have succeeded: set those instead",
                _ => "a system job runs one replica on every eligible node: leave replicas out (constraints choose the nodes)",
            },
        );
    }
    if spec.update.canary > 0 {
        e.add(
            "update.canary",
            format!("a {} job has no canaries", kind.word()),
        );
    }
    match kind {
        JobType::Batch => {
            for (field, n) in [
                ("completions", spec.completions),
                ("parallelism", spec.parallelism),
            ] {
                if n > MAX_REPLICAS {
                    e.add(
                        field,
                        format!("{n} is more than the maximum of {MAX_REPLICAS}"),
                    );
                }
            }
            if spec.retries() > MAX_RETRIES {
                e.add(
                    "retries",
                    format!(
                        "{} is more than the maximum of {MAX_RETRIES}",
                        spec.retries()
                    ),
                );
            }
            if let Some(schedule) = &spec.schedule {
                match schedule.parts() {
                    Err((field, m)) => e.add(format!("schedule.{field}"), m),
                    // Searched from a fixed time: every replica agrees.
                    Ok(_) if schedule.next_after(0).is_none() => {
                        e.add("schedule.cron", format!("{:?} never fires", schedule.cron))
                    }
                    Ok(_) => {}
                }
            }
            if spec.restart.0.policy != RestartPolicy::Never {
                e.add(
                    "restart.policy",
                    "a batch job's replicas are not restarted where they ran: the scheduler retries a failed one as a new replica, up to `retries` times (leave `restart` out, or set `never`)",
                );
            }
        }
        JobType::System => {
            if spec.max_per_node > 1 {
                e.add(
                    "max_per_node",
                    "a system job runs one replica per node: leave it out",
                );
            }
        }
        JobType::Service => {}
    }
}

fn placement_rules(e: &mut Errors, spec: &JobSpec) {
    if spec.constraints.len() > MAX_CONSTRAINTS {
        e.add(
            "constraints",
            format!(
                "{} constraints are more than the maximum of {MAX_CONSTRAINTS}",
                spec.constraints.len()
            ),
        );
    }
    for (i, c) in spec.constraints.iter().enumerate() {
        if let Err((field, m)) = c.matcher() {
            e.add(format!("constraints[{i}].{field}"), m);
        }
        if c.values.len() > MAX_CONSTRAINT_VALUES {
            e.add(
                format!("constraints[{i}].values"),
                format!(
                    "{} values are more than the maximum of {MAX_CONSTRAINT_VALUES}",
                    c.values.len()
                ),
            );
        }
    }
    if spec.affinities.len() > MAX_CONSTRAINTS {
        e.add(
            "affinities",
            format!(
                "{} affinities are more than the maximum of {MAX_CONSTRAINTS}",
                spec.affinities.len()
            ),
        );
    }
    for (i, a) in spec.affinities.iter().enumerate() {
        if let Err((field, m)) = a.rule().matcher() {
            e.add(format!("affinities[{i}].{field}"), m);
        }
        if a.values.len() > MAX_CONSTRAINT_VALUES {
            e.add(
                format!("affinities[{i}].values"),
                format!(
                    "{} values are more than the maximum of {MAX_CONSTRAINT_VALUES}",
                    a.values.len()
                ),
            );
        }
        if a.weight == 0 || !(-100..=100).contains(&a.weight) {
            e.add(
                format!("affinities[{i}].weight"),
                format!("{} is not from -100 to 100 and not 0", a.weight),
            );
        }
    }
    if spec.spread.len() > MAX_SPREADS {
        e.add(
            "spread",
            format!(
                "{} spreads are more than the maximum of {MAX_SPREADS}",
                spec.spread.len()
            ),
        );
    }
    for (i, s) in spec.spread.iter().enumerate() {
        if let Err(m) = super::constraint::attribute_key(&s.attr) {
            e.add(format!("spread[{i}].attr"), m);
        }
        if spec.spread[..i].iter().any(|o| o.attr == s.attr) {
            e.add(
                format!("spread[{i}].attr"),
                format!("{:?} is spread over already", s.attr),
            );
        }
        if !(1..=100).contains(&s.weight) {
            e.add(
                format!("spread[{i}].weight"),
                format!("{} is not from 1 to 100", s.weight),
            );
        }
    }
    if spec.priority > 100 {
        e.add(
            "priority",
            format!("{} is not from 0 to 100", spec.priority),
        );
    }
    if spec.max_per_node > MAX_REPLICAS {
        e.add(
            "max_per_node",
            format!(
                "{} is more than the maximum of {MAX_REPLICAS}",
                spec.max_per_node
            ),
        );
    }
}

pub fn dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !name.chars().all(ok_char) || !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Err(format!(
            "{name:?} is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

fn env_name_ok(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

fn image(e: &mut Errors, image: &str) {
    let Some(r) = OciRef::parse(image) else {
        if image.is_empty() {
            e.add("image", "must not be empty");
        } else if let Err(reason) = registry_ref(image) {
            e.add("image", format!("{image:?}: {reason}"));
        }
        return;
    };
    if r.path.is_empty() {
        e.add(
            "image",
            format!("{image:?} names no layout path (use oci:/path/to/layout:tag)"),
        );
    } else if !r.path.starts_with('/') {
        e.add(
            "image",
            format!("{image:?}: the layout path must be absolute (the drover CLI resolves relative paths)"),
        );
    }
    if let Some(tag) = &r.tag {
        if !tag_ok(tag) {
            e.add(
                "image",
                format!("{tag:?} is not a valid tag (letters, digits, '.', '_', '-'; at most 128)"),
            );
        }
    }
}

/// Checks `host[:port]/name[/more]:tag` or `host[:port]/name@sha256:<hex>`.
fn registry_ref(image: &str) -> Result<(), String> {
    if image.contains("://") {
        return Err("is not an image reference: use [host[:port]/]name[:tag], ...@sha256:<digest> or oci:/path/to/layout:tag".into());
    }
    // As Docker reads it: a first part with '.' or ':' (or localhost) is the
    // registry; without one, the agents' default registry.
    let (host, path) = match image.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => return repository(image),
    };
    let (hostname, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    let host_ok = !hostname.is_empty()
        && hostname.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !host_ok {
        return Err(format!(
            "{hostname:?} is not a registry host name (the image reference starts with the registry, e.g. registry.example.com/web:v1)"
        ));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{port:?} is not a registry port (1-65535)"));
        }
    }
    repository(path)
}

/// `name[:tag]` or `name@sha256:<digest>` (no tag: `latest`).
fn repository(path: &str) -> Result<(), String> {
    let name = if let Some((name, digest)) = path.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err(format!(
                "{digest:?} is not a valid digest (sha256:<64 lowercase hex digits>)"
            ));
        }
        name
    } else {
        let (name, tag) = path
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .unwrap_or((path, "latest"));
        if !tag_ok(tag) {
            return Err(format!(
                "{tag:?} is not a valid tag (letters, digits, '.', '_', '-'; at most 128)"
            ));
        }
        name
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if !name.split('/').all(component_ok) {
        return Err(format!(
            "{name:?} is not a valid repository name (lowercase letters, digits, '.', '_', '-' in '/'-separated parts)"
        ));
    }
    Ok(())
}

fn tag_ok(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !tag.starts_with(['.', '-'])
}

fn resources(e: &mut Errors, spec: &JobSpec) {
    let r = &spec.resources;
    if r.cpu.millis() == 0 {
        e.add("resources.cpu", "must be more than 0");
    } else if r.cpu.millis() > MAX_CPU_MILLIS {
        e.add(
            "resources.cpu",
            format!("{} cores is more than 1024", r.cpu),
        );
    }
    if r.memory.bytes() < MIN_MEMORY {
        e.add(
            "resources.memory",
            format!("{} is less than the minimum of 4Mi", r.memory),
        );
    } else if r.memory.bytes() > MAX_MEMORY {
        e.add("resources.memory", format!("{} is more than 1Ti", r.memory));
    }
    if r.pids == Some(0) {
        e.add("resources.pids", "must be at least 1");
    }
    if let Some(d) = r.disk {
        if d.bytes() < MIN_DISK {
            e.add(
                "resources.disk",
                format!("{d} is less than the minimum of 1Mi"),
            );
        } else if d.bytes() > MAX_DISK {
            e.add("resources.disk", format!("{d} is more than 1Pi"));
        }
    }
}

/// Where nothing may be mounted: what the runtime mounts itself, and the
/// files the agent writes for each container.
const RESERVED_PATHS: [&str; 5] = ["/proc", "/sys", "/dev", "/etc/resolv.conf", "/etc/hosts"];
const MAX_MOUNTS: usize = 32;
const MIN_DISK: u64 = 1 << 20;
const MAX_DISK: u64 = 1 << 50;

/// Why `path` cannot be a mount point in a container, if it cannot.
fn mount_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("{path:?} must be an absolute path"));
    }
    if path.len() > 1024 || path.contains('\0') {
        return Some(format!("{path:?} must be at most 1024 bytes, with no NUL"));
    }
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Some(format!(
            "{path:?} must be a plain path: no empty, \".\" or \"..\" parts, no trailing /"
        ));
    }
    if let Some(r) = RESERVED_PATHS
        .iter()
        .find(|r| path == **r || path.starts_with(&format!("{r}/")))
    {
        return Some(format!("{path:?} is under {r}, which the runtime provides"));
    }
    if let Some(r) = RESERVED_PATHS
        .iter()
        .find(|r| r.starts_with(&format!("{path}/")))
    {
        return Some(format!(
            "{path:?} would hide {r}, which the runtime provides"
        ));
    }
    None
}

fn mounts(e: &mut Errors, spec: &JobSpec) {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut check_path = |e: &mut Errors, field: String, path: &str| {
        if path == "/" {
            e.add(&field, "\"/\" cannot be mounted over");
        } else if let Some(m) = mount_path(path) {
            e.add(&field, m);
        } else if let Some((other, _)) = seen.iter().find(|(_, p)| p == path) {
            e.add(&field, format!("{path:?} is already mounted by {other}"));
        }
        seen.push((
            field.trim_end_matches(".path").to_string(),
            path.to_string(),
        ));
    };
    for (i, v) in spec.volumes.iter().enumerate() {
        if let Err(m) = dns_label(&v.name) {
            e.add(format!("volumes[{i}].name"), m);
        }
        check_path(e, format!("volumes[{i}].path"), &v.path);
    }
    for (field, list, dir) in [
        ("secrets", &spec.secrets, super::SECRETS_DIR),
        ("configs", &spec.configs, ""),
    ] {
        let mut names = std::collections::BTreeSet::new();
        for (i, f) in list.iter().enumerate() {
            if let Err(m) = dns_label(&f.name) {
                e.add(format!("{field}[{i}].name"), m);
            } else if !names.insert(&f.name) {
                e.add(
                    format!("{field}[{i}].name"),
                    format!("{:?} is listed twice", f.name),
                );
            }
            check_path(e, format!("{field}[{i}].path"), &f.path_or(dir));
            if let Some(m) = &f.mode {
                let ok =
                    (3..=4).contains(&m.len()) && m.bytes().all(|b| (b'0'..=b'7').contains(&b));
                if !ok {
                    e.add(
                        format!("{field}[{i}].mode"),
                        format!("{m:?} is not a file mode: three or four octal digits, such as \"0400\""),
                    );
                }
            }
        }
    }
    for (i, t) in spec.tmpfs.iter().enumerate() {
        check_path(e, format!("tmpfs[{i}].path"), &t.path);
        if t.size.bytes() == 0 {
            e.add(format!("tmpfs[{i}].size"), "must be more than 0");
        } else if t.size.bytes() > MAX_MEMORY {
            e.add(
                format!("tmpfs[{i}].size"),
                format!("{} is more than 1Ti", t.size),
            );
        }
    }
    // Secrets and configs are mounted first: a volume or tmpfs above one
    // would hide it.
    let files: Vec<String> = spec
        .secrets
        .iter()
        .map(|f| f.path_or(super::SECRETS_DIR))
        .chain(spec.configs.iter().map(|f| f.path_or("")))
        .collect();
    let dirs = spec
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("volumes[{i}].path"), &v.path))
        .chain(
            spec.tmpfs
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("tmpfs[{i}].path"), &t.path)),
        );
    for (field, dir) in dirs {
        if let Some(f) = files.iter().find(|f| f.starts_with(&format!("{dir}/"))) {
            e.add(
                field,
                format!("{dir:?} would hide the secret or config at {f}"),
            );
        }
    }
    let n = spec.volumes.len() + spec.tmpfs.len() + spec.secrets.len() + spec.configs.len();
    if n > MAX_MOUNTS {
        e.add(
            "volumes",
            format!("{n} volumes, tmpfs mounts, secrets and configs are more than the maximum of {MAX_MOUNTS}"),
        );
    }
}

fn health(e: &mut Errors, spec: &JobSpec) {
    let Some(h) = &spec.health else { return };
    let kinds = [h.exec.is_some(), h.http.is_some(), h.tcp.is_some()]
        .iter()
        .filter(|k| **k)
        .count();
    if kinds != 1 {
        e.add(
            "health",
            format!("must have exactly one of exec, http, tcp (found {kinds})"),
        );
    }
    if let Some(x) = &h.exec {
        if x.command.is_empty() || x.command[0].is_empty() {
            e.add("health.exec.command", "must name a program");
        }
    }
    if let Some(x) = &h.http {
        if !x.path.starts_with('/') {
            e.add(
                "health.http.path",
                format!("{:?} must start with /", x.path),
            );
        }
        port(e, "health.http.port", x.port);
        if !(100..=599).contains(&x.status) {
            e.add(
                "health.http.status",
                format!("{} is not an HTTP status (100-599)", x.status),
            );
        }
    }
    if let Some(x) = &h.tcp {
        port(e, "health.tcp.port", x.port);
    }
    if h.interval.millis() < 100 {
        e.add(
            "health.interval",
            format!("{} is shorter than 100ms", h.interval),
        );
    }
    if h.timeout.millis() == 0 {
        e.add("health.timeout", "must be more than 0s");
    } else if h.timeout > h.interval {
        e.add(
            "health.timeout",
            format!(
                "{} must not be longer than health.interval ({})",
                h.timeout, h.interval
            ),
        );
    }
    if h.failure_threshold == 0 {
        e.add("health.failure_threshold", "must be at least 1");
    }
}

fn port(e: &mut Errors, path: &str, p: u32) {
    if p == 0 || p > 65535 {
        e.add(path, format!("{p} is not a port (1-65535)"));
    }
}

fn ports(e: &mut Errors, spec: &JobSpec) {
    let mut names = std::collections::BTreeSet::new();
    let mut numbers = std::collections::BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        if let Err(m) = dns_label(&p.name) {
            e.add(format!("ports[{i}].name"), m);
        } else if !names.insert(p.name.as_str()) {
            e.add(
                format!("ports[{i}].name"),
                format!("{:?} is used twice", p.name),
            );
        }
        port(e, &format!("ports[{i}].container"), p.container);
        if !numbers.insert(p.container) {
            e.add(
                format!("ports[{i}].container"),
                format!("{} is listed twice", p.container),
            );
        }
    }
    if let Some(x) = &spec.expose {
        port(e, "expose.port", x.port);
        if !names.contains(x.target.as_str()) {
            let known: Vec<&str> = spec.ports.iter().map(|p| p.name.as_str()).collect();
            e.add(
                "expose.target",
                if known.is_empty() {
                    format!("{:?} names no port (declare it under ports)", x.target)
                } else {
                    format!("{:?} names no port (ports: {})", x.target, known.join(", "))
                },
            );
        }
    }
}

fn update(e: &mut Errors, spec: &JobSpec) {
    let u = &spec.update;
    let zero = |a: Amount| matches!(a, Amount::Count(0) | Amount::Percent(0));
    if zero(u.max_surge) && zero(u.max_unavailable) {
        e.add(
            "update",
            "max_surge and max_unavailable must not both be 0 (the rollout could never make progress)",
        );
    }
    if !(1..=1000).contains(&u.keep_versions) {
        e.add(
            "update.keep_versions",
            format!("{} must be between 1 and 1000", u.keep_versions),
        );
    }
    if u.canary > spec.replicas.max(1) {
        e.add(
            "update.canary",
            format!("{} is more than replicas ({})", u.canary, spec.replicas),
        );
    }
    if u.healthy_deadline <= u.min_healthy_time {
        e.add(
            "update.healthy_deadline",
            format!(
                "{} must be longer than update.min_healthy_time ({})",
                u.healthy_deadline, u.min_healthy_time
            ),
        );
    }
    if u.progress_deadline < u.healthy_deadline {
        e.add(
            "update.progress_deadline",
            format!(
                "{} must not be shorter than update.healthy_deadline ({})",
                u.progress_deadline, u.healthy_deadline
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::from_yaml;
    use super::*;

    fn errors(extra: &str) -> Vec<String> {
        let yaml = format!("name: web\nimage: oci:/images/web:v1\n{extra}");
        match from_yaml(&yaml) {
            Ok(_) => vec![],
            Err(e) => e
                .errors
                .iter()
                .map(|f| {
                    let mut s = f.to_string();
                    if let Some(i) = s.rfind(" (line ") {
                        s.truncate(i);
                    }
                    s
                })
                .collect(),
        }
    }

    fn one(extra: &str) -> String {
        let errs = errors(extra);
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].clone()
    }

    #[test]
    fn job_types_name_the_field_and_the_rule() {
        assert!(errors("type: batch\ncompletions: 10\nparallelism: 3\nretries: 0\n").is_empty());
        assert!(
            errors("type: system\nconstraints: [{attr: role, op: '=', value: edge}]\n").is_empty()
        );
        assert_eq!(
            one("completions: 3\n"),
            "completions: only a batch job has completions (this is a service job)"
        );
        assert!(one("type: batch\nreplicas: 3\n")
            .starts_with("replicas: a batch job runs `parallelism`"));
        assert!(one("type: system\nreplicas: 3\n")
            .starts_with("replicas: a system job runs one replica on every eligible node"));
        assert!(one("type: batch\nrestart: always\n")
            .starts_with("restart.policy: a batch job's replicas are not restarted"));
        assert!(errors("type: batch\nrestart: never\n").is_empty());
        assert!(errors("type: batch\nschedule: {cron: '0 8 * * 1-5', timezone: Europe/Berlin, overlap: replace}\n").is_empty());
        assert_eq!(
            one("schedule: {cron: '@daily'}\n"),
            "schedule: only a batch job has schedule (this is a service job)"
        );
        assert_eq!(
            one("type: batch\nschedule: {cron: '0 0 31 2 *'}\n"),
            "schedule.cron: \"0 0 31 2 *\" never fires"
        );
        assert_eq!(
            one("type: batch\nschedule: {cron: '0 8 * * *', timezone: Europe/Munich}\n"),
            "schedule.timezone: \"Europe/Munich\" is not a time zone (an IANA name such as Europe/Berlin or UTC)"
        );
        assert_eq!(
            one("type: batch\nschedule: {cron: '0 25 * * *'}\n"),
            "schedule.cron: hour field \"25\": 25 is not from 0 to 23"
        );
        assert_eq!(
            one("type: system\nupdate: {canary: 1}\n"),
            "update.canary: a system job has no canaries"
        );
        assert_eq!(
            one("type: batch\ncompletions: 20000\n"),
            "completions: 20000 is more than the maximum of 10000"
        );
        assert_eq!(
            one("type: cron\n"),
            "type: unknown value `cron` (use one of `service`, `batch`, `system`)"
        );
        // Left out, a batch job's restart policy is never, in YAML and JSON alike.
        let spec = from_yaml("name: b\nimage: oci:/x:v1\ntype: batch\n").unwrap();
        assert_eq!(spec.restart.0.policy, crate::spec::RestartPolicy::Never);
        let json = r#"{"name": "b", "image": "oci:/x:v1", "type": "batch"}"#;
        let spec = crate::spec::from_json(json).unwrap();
        assert_eq!(spec.restart.0.policy, crate::spec::RestartPolicy::Never);
        assert_eq!(crate::spec::from_json(&spec.to_json()).unwrap(), spec);
    }

    #[test]
    fn agents_get_no_field_only_the_scheduler_reads() {
        let spec = from_yaml(
            "name: b\nimage: oci:/x:v1\ntype: batch\ncompletions: 3\nparallelism: 2\nretries: 1\n\
             schedule: {cron: '@daily'}\npriority: 10\nmax_per_node: 1\n\
             constraints: [{attr: zone, op: '=', value: a}]\nspread: [{attr: zone}]\n\
             affinities: [{attr: disk, op: '=', value: ssd, weight: 5}]\n",
        )
        .unwrap();
        let json = spec.for_agents().to_json();
        for field in [
            "type",
            "completions",
            "parallelism",
            "retries",
            "schedule",
            "priority",
            "max_per_node",
            "constraints",
            "spread",
            "affinities",
        ] {
            assert!(!json.contains(&format!("\"{field}\"")), "{field} in {json}");
        }
        // What the replica does stays: it is not restarted in place.
        let back = crate::spec::from_json(&json).unwrap();
        assert_eq!(back.restart.0.policy, crate::spec::RestartPolicy::Never);
        assert_eq!(back.image, spec.image);
    }

    #[test]
    fn placement_rules_name_the_constraint_and_the_rule() {
        assert!(errors(
            "constraints: [{attr: zone, op: in, values: [a, b]}, {attr: node.kernel, op: version, value: '>= 5.10'}, {attr: disk, op: exists}]\nmax_per_node: 1\n"
        )
        .is_empty());
        assert_eq!(
            one("constraints: [{attr: zone, op: in, value: a}]\n"),
            "constraints[0].value: is not for `in`: list them under `values`"
        );
        assert_eq!(
            one("constraints: [{attr: zone, op: '=', value: a}, {attr: zone, op: regex, value: '('}]\n")
                .split(':')
                .next()
                .unwrap(),
            "constraints[1].value"
        );
        assert_eq!(
            one("max_per_node: 20000\n"),
            "max_per_node: 20000 is more than the maximum of 10000"
        );
        assert!(errors(
            "affinities: [{attr: disk, op: '=', value: ssd, weight: 50}, {attr: zone, op: exists, weight: -10}]\nspread: [{attr: zone}, {attr: rack, weight: 20}]\n"
        )
        .is_empty());
        assert_eq!(
            one("affinities: [{attr: disk, op: '=', value: ssd, weight: 0}]\n"),
            "affinities[0].weight: 0 is not from -100 to 100 and not 0"
        );
        assert_eq!(
            one("affinities: [{attr: disk, op: '=', weight: 5}]\n"),
            "affinities[0].value: `=` needs a value"
        );
        assert_eq!(
            one("spread: [{attr: zone}, {attr: zone, weight: 5}]\n"),
            "spread[1].attr: \"zone\" is spread over already"
        );
        assert_eq!(
            one("spread: [{attr: zone, weight: 101}]\n"),
            "spread[0].weight: 101 is not from 1 to 100"
        );
        assert_eq!(one("priority: 101\n"), "priority: 101 is not from 0 to 100");
        let many: Vec<String> = (0..33)
            .map(|_| "{attr: zone, op: exists}".to_string())
            .collect();
        assert_eq!(
            one(&format!("constraints: [{}]\n", many.join(", "))),
            "constraints: 33 constraints are more than the maximum of 32"
        );
    }

    #[test]
    fn volume_and_tmpfs_rules() {
        assert!(errors(
            "volumes: [{name: data, path: /data, read_only: true}]\ntmpfs: [{path: /scratch, size: 64Mi}]\nresources: {disk: 1Gi}\n"
        )
        .is_empty());
        assert_eq!(
            one("volumes: [{name: Data, path: /data}]\n"),
            "volumes[0].name: \"Data\" is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
        );
        assert_eq!(
            one("volumes: [{name: data, path: data}]\n"),
            "volumes[0].path: \"data\" must be an absolute path"
        );
        assert_eq!(
            one("volumes: [{name: data, path: /a/../etc}]\n"),
            "volumes[0].path: \"/a/../etc\" must be a plain path: no empty, \".\" or \"..\" parts, no trailing /"
        );
        assert_eq!(
            one("volumes: [{name: data, path: /}]\n"),
            "volumes[0].path: \"/\" cannot be mounted over"
        );
        assert_eq!(
            one("tmpfs: [{path: /proc/sys, size: 1Mi}]\n"),
            "tmpfs[0].path: \"/proc/sys\" is under /proc, which the runtime provides"
        );
        assert_eq!(
            one("tmpfs: [{path: /etc/resolv.conf, size: 1Mi}]\n"),
            "tmpfs[0].path: \"/etc/resolv.conf\" is under /etc/resolv.conf, which the runtime provides"
        );
        assert_eq!(
            one("volumes: [{name: data, path: /d}]\ntmpfs: [{path: /d, size: 1Mi}]\n"),
            "tmpfs[0].path: \"/d\" is already mounted by volumes[0]"
        );
        assert_eq!(
            one("volumes: [{name: data, path: /etc}]\n"),
            "volumes[0].path: \"/etc\" would hide /etc/resolv.conf, which the runtime provides"
        );
        assert_eq!(
            one("secrets: [{name: db}]\ntmpfs: [{path: /run, size: 1Mi}]\n"),
            "tmpfs[0].path: \"/run\" would hide the secret or config at /run/secrets/db"
        );
        assert_eq!(
            one("tmpfs: [{path: /t, size: 0}]\n"),
            "tmpfs[0].size: must be more than 0"
        );
        assert_eq!(
            one("resources: {disk: 10Ki}\n"),
            "resources.disk: 10Ki is less than the minimum of 1Mi"
        );
        assert!(errors(
            "secrets: [{name: db}, {name: tls, path: /etc/tls/key.pem, mode: \"0400\"}]\nconfigs: [{name: app, path: /etc/app.toml}]\n"
        )
        .is_empty());
        assert_eq!(
            one("secrets: [{name: db, mode: \"rw\"}]\n"),
            "secrets[0].mode: \"rw\" is not a file mode: three or four octal digits, such as \"0400\""
        );
        assert_eq!(
            one("secrets: [{name: db}, {name: db, path: /x}]\n"),
            "secrets[1].name: \"db\" is listed twice"
        );
        assert_eq!(
            one("secrets: [{name: db}]\ntmpfs: [{path: /run/secrets/db, size: 1Mi}]\n"),
            "tmpfs[0].path: \"/run/secrets/db\" is already mounted by secrets[0]"
        );
        // A job names a volume, never a host path.
        assert!(!errors("volumes: [{name: data, path: /d, host_path: /etc}]\n").is_empty());
    }

    #[test]
    fn egress_none_needs_a_private_network() {
        assert_eq!(
            one("network: host\negress: none\n"),
            "egress: none needs network: private (a host-network replica has the node's own network)"
        );
        assert!(errors("egress: none\n").is_empty());
        assert_eq!(
            one("egress: none\nsecurity: {capabilities: {add: [cap_net_raw]}}\n"),
            "security.capabilities.add: cap_net_raw cannot be given with egress: none (it could send as another container's address)"
        );
        assert!(errors("network: host\negress: all\n").is_empty());
    }

    #[test]
    fn names_must_be_dns_labels() {
        assert!(dns_label("web-1").is_ok());
        assert!(dns_label("a").is_ok());
        for bad in ["", "Web", "-web", "web-", "web_1", "we.b", &"a".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad:?} accepted");
        }
        let e = from_yaml("name: My_Web\nimage: oci:/x:v1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("name: \"My_Web\" is not a DNS-1123 label"),
            "{e}"
        );
    }

    #[test]
    fn image_rules() {
        // A name without a registry is the agents' default registry's.
        assert!(from_yaml("name: w\nimage: nginx:latest\n").is_ok());
        let e = from_yaml("name: w\nimage: oci:rel/path:v1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be absolute"), "{e}");
        let e = from_yaml("name: w\nimage: \"oci:/x:bad tag\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a valid tag"), "{e}");
        assert!(from_yaml("name: w\nimage: oci:/x\n").is_ok());
    }

    #[test]
    fn registry_image_rules() {
        let digest = format!("sha256:{}", "0a".repeat(32));
        for ok in [
            "127.0.0.1:5000/demo-web:v1".to_string(),
            "registry.example.com/team/web:1.2.3".to_string(),
            format!("localhost:5000/web@{digest}"),
            "nginx:1.27".to_string(),
            "library/nginx".to_string(),
            "reg:5000/web".to_string(),
        ] {
            let yaml = format!("name: w\nimage: \"{ok}\"\n");
            assert!(
                from_yaml(&yaml).is_ok(),
                "{ok}: {:?}",
                from_yaml(&yaml).err()
            );
        }
        for (bad, message) in [
            ("reg:0/web:v1", "\"0\" is not a registry port"),
            ("reg:x/web:v1", "\"x\" is not a registry port"),
            (
                "re_g.example/web:v1",
                "\"re_g.example\" is not a registry host name",
            ),
            ("reg/Web:v1", "is not a valid repository name"),
            ("Nginx:1.27", "\"Nginx\" is not a valid repository name"),
            ("docker://nginx", "is not an image reference"),
            ("reg/web:-v1", "\"-v1\" is not a valid tag"),
            ("reg/web@sha256:abc", "\"sha256:abc\" is not a valid digest"),
            ("reg//web:v1", "is not a valid repository name"),
        ] {
            let e = from_yaml(&format!("name: w\nimage: \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("image: \"{bad}\": ")), "{e}");
            assert!(e.contains(message), "{bad}: {e}");
        }
    }

    #[test]
    fn oci_refs_parse() {
        let r = OciRef::parse("oci:/a/b:v1").unwrap();
        assert_eq!((r.path.as_str(), r.tag.as_deref()), ("/a/b", Some("v1")));
        let r = OciRef::parse("oci:/a:b/c").unwrap();
        assert_eq!((r.path.as_str(), r.tag), ("/a:b/c", None));
        assert_eq!(OciRef::parse("docker://x"), None);
    }

    #[test]
    fn relative_paths_resolve_against_cwd() {
        let mut spec = from_yaml("name: w\nimage: oci:/x:v1\n").unwrap();
        spec.image = "oci:examples/out/web:v1".into();
        spec.resolve_paths(std::path::Path::new("/home/me/drover"));
        assert_eq!(spec.image, "oci:/home/me/drover/examples/out/web:v1");
    }

    #[test]
    fn command_env_workdir_rules() {
        assert_eq!(
            one("command: []\n"),
            "command: must not be empty (omit it to use the image's entrypoint)"
        );
        assert_eq!(one("command: [\"\"]\n"), "command[0]: must name a program");
        assert!(one("env: {\"1X\": a}\n").starts_with("env.1X: is not a valid variable name"));
        assert_eq!(
            one("workdir: tmp\n"),
            "workdir: \"tmp\" must be an absolute path"
        );
        assert!(errors("env: {A_B: x}\ncommand: [/bin/sh]\nargs: []\nworkdir: /tmp\n").is_empty());
    }

    #[test]
    fn a_spec_larger_than_one_log_entry_should_be_is_refused() {
        let big = "x".repeat(MAX_SPEC_BYTES);
        let e = one(&format!("env: {{BIG: {big}}}\n"));
        assert!(
            e.starts_with("spec: ") && e.contains("more than the maximum of 262144"),
            "{e}"
        );
        let fits = "x".repeat(MAX_SPEC_BYTES / 2);
        assert!(errors(&format!("env: {{BIG: {fits}}}\n")).is_empty());
    }

    #[test]
    fn resource_rules() {
        assert_eq!(
            one("resources: {cpu: 0}\n"),
            "resources.cpu: must be more than 0"
        );
        assert_eq!(
            one("resources: {cpu: 2000}\n"),
            "resources.cpu: 2000 cores is more than 1024"
        );
        assert_eq!(
            one("resources: {memory: 1Mi}\n"),
            "resources.memory: 1Mi is less than the minimum of 4Mi"
        );
        assert_eq!(
            one("resources: {memory: 2Ti}\n"),
            "resources.memory: 2Ti is more than 1Ti"
        );
        assert_eq!(
            one("resources: {pids: 0}\n"),
            "resources.pids: must be at least 1"
        );
        assert_eq!(
            one("replicas: 20000\n"),
            "replicas: 20000 is more than the maximum of 10000"
        );
        let e = one("resources: {pids: -1}\n");
        assert!(e.starts_with("resources.pids: invalid"), "{e}");
    }

    #[test]
    fn restart_and_grace_rules() {
        assert_eq!(
            one("restart: {backoff: {initial: 10s, max: 1s}}\n"),
            "restart.backoff.max: 1s must not be less than restart.backoff.initial (10s)"
        );
        assert_eq!(
            one("restart: {backoff: {initial: 0}}\n"),
            "restart.backoff.initial: must be more than 0s"
        );
        assert_eq!(
            one("stop_grace_period: 2h\n"),
            "stop_grace_period: 2h is more than 1h"
        );
    }

    #[test]
    fn health_rules() {
        assert_eq!(
            one("health: {interval: 5s}\n"),
            "health: must have exactly one of exec, http, tcp (found 0)"
        );
        assert_eq!(
            one("health: {tcp: {port: 80}, http: {port: 80}}\n"),
            "health: must have exactly one of exec, http, tcp (found 2)"
        );
        assert_eq!(
            one("health: {tcp: {port: 70000}}\n"),
            "health.tcp.port: 70000 is not a port (1-65535)"
        );
        assert_eq!(
            one("health: {http: {port: 80, path: x}}\n"),
            "health.http.path: \"x\" must start with /"
        );
        assert_eq!(
            one("health: {http: {port: 80, status: 42}}\n"),
            "health.http.status: 42 is not an HTTP status (100-599)"
        );
        assert_eq!(
            one("health: {exec: {command: []}}\n"),
            "health.exec.command: must name a program"
        );
        assert_eq!(
            one("health: {tcp: {port: 80}, interval: 1s, timeout: 2s}\n"),
            "health.timeout: 2s must not be longer than health.interval (1s)"
        );
        assert_eq!(
            one("health: {tcp: {port: 80}, interval: 10ms, timeout: 5ms}\n"),
            "health.interval: 10ms is shorter than 100ms"
        );
        assert_eq!(
            one("health: {tcp: {port: 80}, failure_threshold: 0}\n"),
            "health.failure_threshold: must be at least 1"
        );
        // The typo, and what its absence means: both at once.
        let errs = errors("health: {grpc: {port: 80}}\n");
        assert!(
            errs[0].starts_with("health.grpc: unknown field"),
            "{errs:?}"
        );
        assert_eq!(
            errs[1],
            "health: must have exactly one of exec, http, tcp (found 0)"
        );
    }

    #[test]
    fn update_rules() {
        assert!(one("update: {max_surge: 0, max_unavailable: 0%}\n")
            .starts_with("update: max_surge and max_unavailable must not both be 0"));
        assert_eq!(
            one("update: {keep_versions: 0}\n"),
            "update.keep_versions: 0 must be between 1 and 1000"
        );
        assert_eq!(
            one("update: {canary: 5}\n"),
            "update.canary: 5 is more than replicas (1)"
        );
        assert_eq!(
            one("update: {min_healthy_time: 1m, healthy_deadline: 30s, progress_deadline: 10m}\n"),
            "update.healthy_deadline: 30s must be longer than update.min_healthy_time (1m)"
        );
        assert_eq!(
            one("update: {healthy_deadline: 5m, progress_deadline: 1m}\n"),
            "update.progress_deadline: 1m must not be shorter than update.healthy_deadline (5m)"
        );
        assert!(one("update: {max_surge: 150%}\n")
            .starts_with("update.max_surge: \"150%\" is more than 100%"));
        assert_eq!(Amount::Percent(25).resolve(10, true), 3);
        assert_eq!(Amount::Percent(25).resolve(10, false), 2);
    }

    #[test]
    fn port_rules() {
        assert!(errors(
            "ports: [{name: http, container: 8080}]\nexpose: {port: 18080, target: http}\n"
        )
        .is_empty());
        assert_eq!(
            one("ports: [{name: http, container: 8080}]\nexpose: {port: 18080, target: web}\n"),
            "expose.target: \"web\" names no port (ports: http)"
        );
        assert_eq!(
            one("expose: {port: 18080, target: web}\n"),
            "expose.target: \"web\" names no port (declare it under ports)"
        );
        assert_eq!(
            one("ports: [{name: http, container: 8080}, {name: http, container: 8081}]\n"),
            "ports[1].name: \"http\" is used twice"
        );
        assert_eq!(
            one("ports: [{name: a, container: 0}]\n"),
            "ports[0].container: 0 is not a port (1-65535)"
        );
        assert_eq!(
            one("ports: [{name: http, container: 80}]\nexpose: {port: 70000, target: http}\n"),
            "expose.port: 70000 is not a port (1-65535)"
        );
    }

    #[test]
    fn security_rules() {
        assert_eq!(
            one("security:\n  capabilities:\n    add: [NET_ADMIN, WARP]\n"),
            "security.capabilities.add[1]: \"WARP\" is not a capability (see capabilities(7))"
        );
        assert!(one("user: \"1000:\"\n").starts_with("user: \"1000:\" must be UID[:GID]"));
        assert!(errors(
            "user: \"1000:1000\"\nread_only_rootfs: true\nsecurity:\n  capabilities:\n    drop: [ALL]\n    add: [cap_net_bind_service]\n"
        )
        .is_empty());
    }

    #[test]
    fn seccomp_rules() {
        assert!(errors("security: {seccomp: unconfined}\n").is_empty());
        assert_eq!(
            one("security: {seccomp: off}\n"),
            "security.seccomp: unknown value `off`, expected `default` or `unconfined`"
        );
        let profile = "security:\n  seccomp_profile:\n    defaultAction: SCMP_ACT_ERRNO\n    syscalls:\n      - {names: [read, write, exit_group], action: SCMP_ACT_ALLOW}\n";
        assert!(errors(profile).is_empty(), "{:?}", errors(profile));
        assert_eq!(
            one("security:\n  seccomp_profile:\n    defaultAction: SCMP_ACT_ALLOW\n    syscalls:\n      - {names: [mount], action: SCMP_ACT_DENY}\n"),
            "security.seccomp_profile.syscalls[0].action: unknown value `SCMP_ACT_DENY` (use one of `SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO`, `SCMP_ACT_KILL`, `SCMP_ACT_KILL_THREAD`, `SCMP_ACT_KILL_PROCESS`, `SCMP_ACT_TRAP`, `SCMP_ACT_TRACE`, `SCMP_ACT_LOG`, `SCMP_ACT_NOTIFY`)"
        );
        assert!(errors("security: {user_namespace: true}\n").is_empty());
        assert_eq!(
            one("network: host\nsecurity: {user_namespace: true}\n"),
            "security.user_namespace: needs network: private (a user namespace cannot mount /sys for the host's network)"
        );
        assert_eq!(
            one("security:\n  seccomp: unconfined\n  seccomp_profile: {defaultAction: SCMP_ACT_ALLOW}\n"),
            "security.seccomp_profile: cannot be combined with seccomp: unconfined"
        );
        assert_eq!(
            one("security:\n  seccomp_profile:\n    defaultAction: SCMP_ACT_ALLOW\n    syscalls: [{names: [Mount], action: SCMP_ACT_ERRNO}]\n"),
            "security.seccomp_profile.syscalls[0].names[0]: \"Mount\" is not a system call name (lower case, digits, _)"
        );
    }

    #[test]
    fn every_example_job_but_the_bad_one_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let text = std::fs::read_to_string(&path).unwrap();
            // As the CLI reads them, from the repository root.
            let parsed =
                crate::spec::from_yaml_in(&text, Some(dir.parent().unwrap().parent().unwrap()));
            if path.file_name().unwrap() == "bad.yaml" {
                assert!(parsed.is_err(), "bad.yaml parses");
            } else {
                parsed.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 5, "{seen} examples");
    }

    #[test]
    fn all_problems_reported_at_once() {
        let errs = errors("replicas: 20000\nresources: {cpu: 0, pids: 0}\nworkdir: x\n");
        assert_eq!(errs.len(), 4, "{errs:?}");
    }
}
