//! `drover events`: what the cluster did, from the event stream any
//! scheduler peer serves.
//!
//! Following (`-f`) survives a lost connection: the stream is asked for
//! again from where the last batch said to resume (after every event it
//! looked at, shown or filtered out), so nothing is missed or printed
//! twice, whichever peer answers (events are numbered by their place in
//! the replicated log, the same on every peer).

use crate::cli::{EventsArgs, Format};
use crate::client::{self, status};
use anyhow::{anyhow, bail, Result};
use drover_proto::json::{time, word};
use drover_proto::pb;
use std::io::Write;
use std::time::Duration;

/// How long a follower keeps trying to get its stream back.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

pub async fn run(addr: &str, a: EventsArgs) -> Result<i32> {
    let topics = a
        .topics
        .iter()
        .map(|t| topic(t).map(|t| t as i32))
        .collect::<Result<Vec<_>>>()?;
    let mut req = pb::EventsRequest {
        topics,
        job: a.job.clone().unwrap_or_default(),
        follow: a.follow,
        ..Default::default()
    };
    match a.since.as_deref().map(since).transpose()? {
        Some(Since::At(index, seq)) => (req.from_index, req.from_seq) = (index, seq),
        Some(Since::Ago(d)) => req.since_ms = now_ms() - d.as_millis() as i64,
        None => {}
    }
    let mut c = client::connect(addr).await?;
    let mut lost_at: Option<std::time::Instant> = None;
    loop {
        let mut stream = match c.events(req.clone()).await {
            Ok(s) => s.into_inner(),
            Err(s) if a.follow && transient(&s) => {
                wait_to_retry(&mut lost_at, &s).await?;
                continue;
            }
            Err(s) => return Err(status(s)),
        };
        loop {
            match stream.message().await {
                Ok(Some(batch)) => {
                    lost_at = None;
                    for e in &batch.events {
                        print(a.output, e)?;
                    }
                    // Resume there, whatever the stream began with.
                    if batch.next_index > 0 {
                        (req.from_index, req.from_seq, req.since_ms) =
                            (batch.next_index, batch.next_seq, 0);
                    }
                }
                Ok(None) if !a.follow => return Ok(0),
                // The peer stopped serving: ask again.
                Ok(None) => break,
                Err(s) if a.follow && transient(&s) => {
                    wait_to_retry(&mut lost_at, &s).await?;
                    break;
                }
                Err(s) => return Err(status(s)),
            }
        }
    }
}

/// Errors a follow rides out: the peer or the path to it went away.
fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

async fn wait_to_retry(lost_at: &mut Option<std::time::Instant>, s: &tonic::Status) -> Result<()> {
    let since = *lost_at.get_or_insert_with(std::time::Instant::now);
    if since.elapsed() > RECONNECT_FOR {
        bail!(
            "lost the event stream for {}s: {}",
            RECONNECT_FOR.as_secs(),
            s.message()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

#[derive(Debug)]
enum Since {
    At(u64, u32),
    Ago(Duration),
}

/// `1234`, `1234.2`, or a duration (`10m`).
fn since(text: &str) -> Result<Since> {
    let (index, seq) = text.split_once('.').unwrap_or((text, "0"));
    if let (Ok(i), Ok(s)) = (index.parse::<u64>(), seq.parse::<u32>()) {
        return Ok(Since::At(i, s));
    }
    drover_proto::quantity::Duration::parse(text)
        .map(|d| Since::Ago(d.std()))
        .map_err(|e| {
            anyhow!("--since {text:?}: neither a log index (1234 or 1234.2) nor a duration ({e})")
        })
}

fn topic(word: &str) -> Result<pb::EventTopic> {
    pb::EventTopic::from_str_name(&format!("EVENT_TOPIC_{}", word.to_uppercase()))
        .filter(|t| *t != pb::EventTopic::Unspecified)
        .ok_or_else(|| anyhow!("--topic {word:?}: not one of job, rollout, alloc, node, cluster"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn print(format: Format, e: &pb::Event) -> Result<()> {
    let kind = word(e.r#type().as_str_name(), "EVENT_TYPE_");
    let text = match format {
        Format::Table => {
            let subject = match (e.job.is_empty(), e.node.is_empty()) {
                (false, _) => e.job.clone(),
                (true, false) => e.node.clone(),
                (true, true) => "cluster".into(),
            };
            format!(
                "{}  {:>9}  {:<26} {:<16} {}\n",
                time(e.at_ms),
                format!("{}.{}", e.index, e.seq),
                kind,
                subject,
                e.message
            )
        }
        Format::Json | Format::Yaml => {
            let v = drover_proto::json::event(e);
            if format == Format::Json {
                serde_json::to_string(&v)? + "\n"
            } else {
                format!("---\n{}", serde_yaml_ng::to_string(&v)?)
            }
        }
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`drover events | head`) is the reader's choice.
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_an_index_a_cursor_or_a_duration() {
        assert!(matches!(since("1234").unwrap(), Since::At(1234, 0)));
        assert!(matches!(since("1234.2").unwrap(), Since::At(1234, 2)));
        assert!(matches!(since("10m").unwrap(), Since::Ago(d) if d == Duration::from_secs(600)));
        let e = since("yesterday").unwrap_err().to_string();
        assert!(e.contains("--since \"yesterday\""), "{e}");
    }

    #[test]
    fn topics_and_types_read_as_words() {
        assert_eq!(topic("alloc").unwrap(), pb::EventTopic::Alloc);
        assert!(topic("unspecified").is_err());
        assert_eq!(
            word(pb::EventType::AllocOomKilled.as_str_name(), "EVENT_TYPE_"),
            "alloc-oom-killed"
        );
        assert_eq!(time(1_764_660_063_123), "2025-12-02T07:21:03.123Z");
    }
}
