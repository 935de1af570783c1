//! Output: tables for people, JSON and YAML for programs.
//!
//! Wire types become `serde_json::Value`s here, in one place, so `-o json`
//! and `-o yaml` show the same fields with the same names.

use crate::cli::Format;
use drover_proto::pb;
use serde_json::Value;

// The JSON documents: shared with the scheduler's HTTP API (`/v1/...`).
pub use drover_proto::json::{allocation, job, job_summary, node, read};

pub fn print(format: Format, value: &Value, table: impl FnOnce() -> String) {
    let text = match format {
        Format::Table if colour() => coloured(&table()),
        Format::Table => table(),
        Format::Json => serde_json::to_string_pretty(value).expect("json") + "\n",
        Format::Yaml => serde_yaml_ng::to_string(value).expect("yaml"),
    };
    // A closed pipe (`drover ... | head`) is the reader's choice, not an error.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Whether to colour what is printed: on a terminal, unless `NO_COLOR`
/// is set to anything (<https://no-color.org>) or `TERM` is `dumb`.
pub fn colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
        && std::io::stdout().is_terminal()
}

/// `text` with the words of good states in green, of bad ones in red and
/// of passing ones in yellow. Only whole cells (words between spaces) are
/// coloured, so a table's columns keep their widths.
pub fn coloured(text: &str) -> String {
    const GREEN: &[&str] = &[
        "running",
        "healthy",
        "ready",
        "succeeded",
        "complete",
        "leader",
    ];
    const RED: &[&str] = &[
        "failed",
        "unhealthy",
        "down",
        "lost",
        "oom-killed",
        "unreachable",
    ];
    const YELLOW: &[&str] = &[
        "pending",
        "starting",
        "stopping",
        "paused",
        "draining",
        "cordoned",
        "waiting-promotion",
        "rolling-back",
    ];
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut rest = line;
        while !rest.is_empty() {
            let start = rest.len() - rest.trim_start_matches(' ').len();
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let end = rest.find(' ').unwrap_or(rest.len());
            let word = &rest[..end];
            let code = if GREEN.contains(&word) {
                Some("32")
            } else if RED.contains(&word) {
                Some("31")
            } else if YELLOW.contains(&word) {
                Some("33")
            } else {
                None
            };
            match code {
                Some(c) => out.push_str(&format!("\x1b[{c}m{word}\x1b[0m")),
                None => out.push_str(word),
            }
            rest = &rest[end..];
        }
    }
    out
}

/// Left-aligned columns separated by three spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let s = ((now - ms) / 1000).max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

pub fn bytes(b: u64) -> String {
    drover_proto::quantity::Size(b - b % (1 << 20)).to_string()
}

pub fn cpu(m: u64) -> String {
    drover_proto::quantity::Cpu(m).to_string()
}

/// The scheduler's reason (why it stops it) and the node's (what happened,
/// and when it restarts), in one cell.
pub fn reason(a: &pb::Allocation) -> String {
    let node = node_reason(a);
    match (a.desired_reason.is_empty(), node.is_empty()) {
        (true, _) => node,
        (false, true) => a.desired_reason.clone(),
        (false, false) => format!("{}; {}", a.desired_reason, node),
    }
}

/// What the node said, with "restarting in ..." while it waits to restart.
pub fn node_reason(a: &pb::Allocation) -> String {
    if a.restarting_at_ms == 0 {
        return a.reason.clone();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // Whole seconds, rounded up: "restarting in 2s", not "1s734ms".
    let left_ms = (a.restarting_at_ms - now).max(0) as u64;
    let left = drover_proto::quantity::Duration(left_ms.div_ceil(1000) * 1000);
    match a.reason.is_empty() {
        true => format!("restarting in {left}"),
        false => format!("{}; restarting in {left}", a.reason),
    }
}

/// A note for stale reads, printed under tables.
pub fn stale_note(r: &Option<pb::ReadInfo>) -> String {
    match r {
        Some(r) if r.stale => format!(
            "(stale read from {} at index {}; {})\n",
            r.served_by,
            r.applied_index,
            staleness(r)
        ),
        _ => String::new(),
    }
}

/// How far behind the leader a stale read was last known to be.
pub fn staleness(r: &pb::ReadInfo) -> String {
    match r.leader_contact_ms {
        0 => "served by the leader".to_string(),
        ms if ms < 0 => "never heard from a leader".to_string(),
        ms => format!(
            "{} entries behind the leader when last heard from it {:.1}s ago",
            r.behind,
            ms as f64 / 1000.0
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align() {
        let t = super::table(&["A", "LONGER"], &[vec!["xxxx".into(), "y".into()]]);
        assert_eq!(t, "A      LONGER\nxxxx   y\n");
    }

    #[test]
    fn state_words_are_coloured_in_place_and_nothing_else() {
        let t = super::table(
            &["NAME", "STATE"],
            &[
                vec!["web-0".into(), "running".into()],
                vec!["runningman".into(), "failed".into()],
            ],
        );
        let c = super::coloured(&t);
        assert!(c.contains("web-0        \x1b[32mrunning\x1b[0m"), "{c:?}");
        assert!(c.contains("runningman   \x1b[31mfailed\x1b[0m"), "{c:?}");
        // Without the escapes it is the table itself.
        let plain = c
            .replace("\x1b[32m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[0m", "");
        assert_eq!(plain, t);
    }
}
