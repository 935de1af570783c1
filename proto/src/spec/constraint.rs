//! Where a job's replicas may run: constraints over node attributes.
//!
//! A node's attributes are its labels (`drover-agent run --label
//! zone=eu-1a`, changed at runtime with `drover node label`) and the facts
//! its agent reports, under `node.`: `node.name`, `node.os`, `node.arch`
//! (OCI names: amd64, arm64), `node.kernel`, `node.cores`,
//! `node.memory_mib` and `node.cgroup` (v1 or v2). A job's `constraints`
//! must all hold on a node for a replica to be placed there, as Nomad's
//! constraints and Kubernetes' required node affinity; they are checked
//! when a replica is placed, so a node relabelled later keeps what it runs.
//!
//! Soft rules rank the nodes that pass: `spread` first (replicas even
//! across an attribute's values, weighted), then `affinities` (nodes
//! matching one gain its weight, -100 to 100; a negative weight repels).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The prefix of the attributes an agent reports about its machine; no
/// label may use it.
pub const FACT_PREFIX: &str = "node.";

/// One rule a node must satisfy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// The attribute: a label key, or `node.` and a fact.
    pub attr: String,
    pub op: Op,
    /// What `=`, `!=`, `regex` and `version` compare with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What `in` and `not_in` compare with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "in")]
    In,
    #[serde(rename = "not_in")]
    NotIn,
    /// The whole value matches the regular expression.
    #[serde(rename = "regex")]
    Regex,
    /// The value, read as a dotted version (`6.1.0-18-amd64` is 6.1.0),
    /// satisfies every comparison in `value`, e.g. `>= 5.10, < 7`.
    #[serde(rename = "version")]
    Version,
    #[serde(rename = "exists")]
    Exists,
    #[serde(rename = "not_exists")]
    NotExists,
}

impl Op {
    fn word(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Regex => "regex",
            Op::Version => "version",
            Op::Exists => "exists",
            Op::NotExists => "not_exists",
        }
    }
}

impl fmt::Display for Constraint {
    /// As a user would write it: `zone in [a, b]`, `node.kernel version >= 5.10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.attr, self.op.word())?;
        match self.op {
            Op::In | Op::NotIn => write!(f, " [{}]", self.values.join(", ")),
            Op::Exists | Op::NotExists => Ok(()),
            _ => write!(f, " {}", self.value.as_deref().unwrap_or("")),
        }
    }
}

/// A preference: nodes matching `attr op value(s)` rank higher by
/// `weight` (lower, when negative).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    pub attr: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// -100 to 100, not 0.
    pub weight: i32,
}

impl Affinity {
    /// The rule it tests, as a constraint.
    pub fn rule(&self) -> Constraint {
        Constraint {
            attr: self.attr.clone(),
            op: self.op,
            value: self.value.clone(),
            values: self.values.clone(),
        }
    }
}

impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (weight {})", self.rule(), self.weight)
    }
}

/// Replicas spread evenly over the values of a node attribute (nodes
/// without it count as one more value), before any affinity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    pub attr: String,
    /// 1 to 100: how much this spread counts against the others.
    #[serde(default = "default_spread_weight")]
    pub weight: u32,
}

fn default_spread_weight() -> u32 {
    100
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spread over {}", self.attr)?;
        if self.weight != default_spread_weight() {
            write!(f, " (weight {})", self.weight)?;
        }
        Ok(())
    }
}

/// A constraint made ready to check many nodes: its regular expression
/// compiled and its version comparisons parsed once.
#[derive(Clone, Debug)]
pub struct Matcher {
    attr: String,
    test: Test,
}

#[derive(Clone, Debug)]
enum Test {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Regex(regex::Regex),
    Version(Vec<(Cmp, Vec<u64>)>),
    Exists,
    NotExists,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The largest compiled regular expression a constraint may hold.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Constraint {
    /// Compiles the constraint, or says (for the field named `path`) which
    /// rule it breaks.
    pub fn matcher(&self) -> Result<Matcher, (String, String)> {
        let field = |f: &str| f.to_string();
        attribute_key(&self.attr).map_err(|m| (field("attr"), m))?;
        let one = || -> Result<&str, (String, String)> {
            if !self.values.is_empty() {
                return Err((
                    field("values"),
                    format!(
                        "is for `in` and `not_in`; `{}` takes one `value`",
                        self.op.word()
                    ),
                ));
            }
            self.value.as_deref().ok_or_else(|| {
                (
                    field("value"),
                    format!("`{}` needs a value", self.op.word()),
                )
            })
        };
        let many = || -> Result<Vec<String>, (String, String)> {
            if self.value.is_some() {
                return Err((
                    field("value"),
                    format!("is not for `{}`: list them under `values`", self.op.word()),
                ));
            }
            if self.values.is_empty() {
                return Err((
                    field("values"),
                    format!("`{}` needs at least one value", self.op.word()),
                ));
            }
            Ok(self.values.clone())
        };
        let none = || -> Result<(), (String, String)> {
            if self.value.is_some() || !self.values.is_empty() {
                return Err((
                    field(if self.value.is_some() {
                        "value"
                    } else {
                        "values"
                    }),
                    format!("`{}` compares with nothing", self.op.word()),
                ));
            }
            Ok(())
        };
        let test = match self.op {
            Op::Eq => Test::Eq(one()?.to_string()),
            Op::Ne => Test::Ne(one()?.to_string()),
            Op::In => Test::In(many()?),
            Op::NotIn => Test::NotIn(many()?),
            Op::Regex => {
                let pattern = one()?;
                let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        let why = e.to_string();
                        let why = why.lines().last().unwrap_or("").trim().to_string();
                        (
                            field("value"),
                            format!("{pattern:?} is not a regular expression: {why}"),
                        )
                    })?;
                Test::Regex(re)
            }
            Op::Version => Test::Version(comparisons(one()?).map_err(|m| (field("value"), m))?),
            Op::Exists => {
                none()?;
                Test::Exists
            }
            Op::NotExists => {
                none()?;
                Test::NotExists
            }
        };
        Ok(Matcher {
            attr: self.attr.clone(),
            test,
        })
    }
}

impl Matcher {
    /// Whether a node with `attributes` satisfies it.
    pub fn matches(&self, attributes: &BTreeMap<String, String>) -> bool {
        let value = attributes.get(&self.attr).map(String::as_str);
        match (&self.test, value) {
            (Test::Exists, v) => v.is_some(),
            (Test::NotExists, v) => v.is_none(),
            (Test::Ne(want), v) => v != Some(want.as_str()),
            (Test::NotIn(set), v) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
            (_, None) => false,
            (Test::Eq(want), Some(v)) => v == want,
            (Test::In(set), Some(v)) => set.iter().any(|s| s == v),
            (Test::Regex(re), Some(v)) => re.is_match(v),
            (Test::Version(cmps), Some(v)) => version(v).is_some_and(|have| {
                cmps.iter().all(|(cmp, want)| {
                    let o = compare(&have, want);
                    match cmp {
                        Cmp::Eq => o.is_eq(),
                        Cmp::Ne => o.is_ne(),
                        Cmp::Lt => o.is_lt(),
                        Cmp::Le => o.is_le(),
                        Cmp::Gt => o.is_gt(),
                        Cmp::Ge => o.is_ge(),
                    }
                })
            }),
        }
    }
}

/// `>= 5.10, < 7` as comparisons; a bare version means `=`.
fn comparisons(text: &str) -> Result<Vec<(Cmp, Vec<u64>)>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (cmp, rest) = [
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            ("!=", Cmp::Ne),
            ("==", Cmp::Eq),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
            ("=", Cmp::Eq),
        ]
        .iter()
        .find_map(|(word, cmp)| part.strip_prefix(word).map(|rest| (*cmp, rest)))
        .unwrap_or((Cmp::Eq, part));
        let rest = rest.trim();
        let v = version(rest)
            .filter(|_| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("{part:?} is not a version comparison (like `>= 5.10, < 7`: =, !=, <, <=, >, >= and numbers separated by dots)")
            })?;
        out.push((cmp, v));
    }
    Ok(out)
}

/// The leading dotted numbers of `text`: `6.1.0-18-amd64` is [6, 1, 0].
fn version(text: &str) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    for part in text.split('.') {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            break;
        }
        out.push(digits.parse().ok()?);
        if digits.len() < part.len() {
            break;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Compares dotted versions, a missing part counting as 0 (5.10 = 5.10.0).
fn compare(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    (0..n)
        .map(|i| at(a, i).cmp(&at(b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// Whether `key` names an attribute: a label key, or a fact under `node.`.
pub fn attribute_key(key: &str) -> Result<(), String> {
    let name = key.strip_prefix(FACT_PREFIX).unwrap_or(key);
    word(key, name, 63)
}

/// Whether `key` may be a label (facts' `node.` prefix is the agent's).
pub fn label_key(key: &str) -> Result<(), String> {
    if key.starts_with(FACT_PREFIX) {
        return Err(format!(
            "{key:?} starts with {FACT_PREFIX:?}, which is kept for the facts agents report"
        ));
    }
    word(key, key, 63)
}

/// Whether `value` may be a label's value: up to 63 letters, digits, '.',
/// '_' and '-' (Kubernetes' rule; empty is allowed).
pub fn label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!("{value:?} is longer than 63 characters"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !value.chars().all(ok) {
        return Err(format!(
            "{value:?} may hold only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn word(whole: &str, name: &str, max: usize) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = |c: char| alnum(c) || matches!(c, '.' | '_' | '-' | '/');
    if name.is_empty() || whole.len() > max {
        return Err(format!("{whole:?} must be 1 to {max} characters"));
    }
    if !name.chars().all(ok) || !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Err(format!(
            "{whole:?} is not an attribute name (lower-case letters, digits, '.', '_', '-' and '/', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// Parses `KEY=VALUE` (a label to set) or `KEY-` (one to remove), as
/// `drover-agent run --label` and `drover node label` take them.
pub fn parse_label(arg: &str) -> Result<(String, Option<String>), String> {
    if let Some((k, v)) = arg.split_once('=') {
        label_key(k)?;
        label_value(v)?;
        return Ok((k.to_string(), Some(v.to_string())));
    }
    if let Some(k) = arg.strip_suffix('-') {
        label_key(k)?;
        return Ok((k.to_string(), None));
    }
    Err(format!(
        "{arg:?} is neither KEY=VALUE (set a label) nor KEY- (remove one)"
    ))
}

/// A digest of what an agent reports about its node (labels and facts), so
/// a heartbeat can say cheaply whether the scheduler holds the same.
pub fn attributes_digest(
    labels: &BTreeMap<String, String>,
    facts: &BTreeMap<String, String>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (kind, map) in [("l", labels), ("f", facts)] {
        for (k, v) in map {
            h.update(format!("{kind}\0{k}\0{v}\0").as_bytes());
        }
    }
    hex::encode(&h.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(attr: &str, op: Op, value: Option<&str>, values: &[&str]) -> Constraint {
        Constraint {
            attr: attr.into(),
            op,
            value: value.map(str::to_string),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn node(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_operator_matches_as_documented() {
        let a = node(&[("zone", "eu-1a"), ("node.kernel", "6.1.0-18-amd64")]);
        let b = node(&[("zone", "us-2"), ("node.kernel", "5.4.0")]);
        let none = node(&[]);
        let cases = [
            (c("zone", Op::Eq, Some("eu-1a"), &[]), [true, false, false]),
            (c("zone", Op::Ne, Some("eu-1a"), &[]), [false, true, true]),
            (
                c("zone", Op::In, None, &["eu-1a", "x"]),
                [true, false, false],
            ),
            (c("zone", Op::NotIn, None, &["eu-1a"]), [false, true, true]),
            (
                c("zone", Op::Regex, Some("eu-.*"), &[]),
                [true, false, false],
            ),
            (c("zone", Op::Regex, Some("1a"), &[]), [false, false, false]),
            (c("zone", Op::Exists, None, &[]), [true, true, false]),
            (c("zone", Op::NotExists, None, &[]), [false, false, true]),
            (
                c("node.kernel", Op::Version, Some(">= 5.10, < 7"), &[]),
                [true, false, false],
            ),
            (
                c("node.kernel", Op::Version, Some("5.4"), &[]),
                [false, true, false],
            ),
            (
                c("node.kernel", Op::Version, Some("!= 6.1, > 5.4"), &[]),
                [false, false, false],
            ),
        ];
        for (con, want) in cases {
            let m = con.matcher().unwrap();
            let got = [m.matches(&a), m.matches(&b), m.matches(&none)];
            assert_eq!(got, want, "{con}");
        }
    }

    #[test]
    fn a_malformed_constraint_names_the_field_and_the_rule() {
        let err = |con: Constraint| con.matcher().unwrap_err();
        assert_eq!(
            err(c("zone", Op::In, Some("a"), &[])),
            (
                "value".into(),
                "is not for `in`: list them under `values`".into()
            )
        );
        assert_eq!(err(c("zone", Op::In, None, &[])).0, "values");
        assert_eq!(err(c("zone", Op::Eq, None, &[])).1, "`=` needs a value");
        assert_eq!(err(c("zone", Op::Eq, None, &["a"])).0, "values");
        assert_eq!(err(c("zone", Op::Exists, Some("a"), &[])).0, "value");
        assert_eq!(err(c("Zone", Op::Exists, None, &[])).0, "attr");
        assert_eq!(err(c("node.", Op::Exists, None, &[])).0, "attr");
        let (f, m) = err(c("zone", Op::Regex, Some("a("), &[]));
        assert_eq!(f, "value");
        assert!(m.starts_with("\"a(\" is not a regular expression"), "{m}");
        let (f, m) = err(c("node.kernel", Op::Version, Some("~> 5"), &[]));
        assert_eq!(f, "value");
        assert!(m.contains("not a version comparison"), "{m}");
        assert!(c("k", Op::Version, Some(">= 5.1x"), &[]).matcher().is_err());
    }

    #[test]
    fn versions_compare_by_number_not_text() {
        assert_eq!(version("6.1.0-18-amd64"), Some(vec![6, 1, 0]));
        assert_eq!(version("10"), Some(vec![10]));
        assert_eq!(version("v1"), None);
        assert!(compare(&[5, 10], &[5, 9]).is_gt());
        assert!(compare(&[5, 10], &[5, 10, 0]).is_eq());
    }

    #[test]
    fn labels_parse_and_reject_the_fact_prefix() {
        assert_eq!(
            parse_label("zone=eu-1a").unwrap(),
            ("zone".into(), Some("eu-1a".into()))
        );
        assert_eq!(
            parse_label("disk=").unwrap(),
            ("disk".into(), Some(String::new()))
        );
        assert_eq!(parse_label("zone-").unwrap(), ("zone".into(), None));
        assert!(parse_label("node.arch=x")
            .unwrap_err()
            .contains("kept for the facts"));
        assert!(parse_label("zone").is_err());
        assert!(parse_label("zone=a b").is_err());
        assert!(parse_label("-=a").is_err());
    }

    #[test]
    fn the_digest_changes_with_any_attribute() {
        let l = node(&[("zone", "a")]);
        let f = node(&[("kernel", "6.1")]);
        let d = attributes_digest(&l, &f);
        assert_eq!(d, attributes_digest(&l, &f));
        assert_ne!(d, attributes_digest(&f, &l));
        assert_ne!(d, attributes_digest(&node(&[("zone", "b")]), &f));
        assert_eq!(d.len(), 24);
    }
}
