//! `drover logs`: an allocation's output, read from its node's agent.

use crate::cli::LogsArgs;
use crate::client::{self, status};
use anyhow::{bail, Result};
use drover_proto::pb;
use std::io::Write;

pub async fn run(addr: &str, a: LogsArgs) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    // A job name selects all of the job's current allocations; anything else is an id.
    let allocs: Vec<pb::Allocation> = match c
        .list_allocations(pb::ListAllocationsRequest {
            job: a.target.clone(),
            read: None,
            all: false,
        })
        .await
    {
        Ok(r) => r.into_inner().allocations,
        Err(s) if s.code() == tonic::Code::NotFound => {
            let one = c
                .get_allocation(pb::GetAllocationRequest {
                    id: a.target.clone(),
                    read: None,
                })
                .await
                .map_err(|s| {
                    anyhow::anyhow!("no job or allocation {:?}: {}", a.target, s.message())
                })?;
            vec![one.into_inner()]
        }
        Err(s) => return Err(status(s)),
    };
    if allocs.is_empty() {
        bail!("job {:?} has no allocations", a.target);
    }
    let since_ms = match a.since.as_deref() {
        None => 0,
        Some(text) => since(text)?,
    };
    let prefix = allocs.len() > 1;
    let mut tasks = Vec::new();
    for alloc in allocs {
        let how = How {
            follow: a.follow,
            tail: a.tail.unwrap_or(-1),
            since_ms,
            timestamps: a.timestamps,
            prefix,
        };
        let c = c.clone();
        tasks.push(tokio::spawn(async move { stream(c, alloc, how).await }));
    }
    let mut code = 0;
    for t in tasks {
        if let Err(e) = t.await? {
            eprintln!("error: {e:#}");
            code = 1;
        }
    }
    Ok(code)
}

/// `10m` (back from now) or `2026-12-02T10:00:00Z`: ms since the epoch.
fn since(text: &str) -> Result<i64> {
    if let Some(ms) = drover_proto::json::parse_time(text) {
        return Ok(ms);
    }
    let d = drover_proto::quantity::Duration::parse(text).map_err(|e| {
        anyhow::anyhow!(
            "--since {text:?}: neither a duration (10m) nor a time (2026-12-02T10:00:00Z): {e}"
        )
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Ok(now - d.std().as_millis() as i64)
}

#[derive(Clone, Copy, Debug)]
struct How {
    follow: bool,
    tail: i64,
    since_ms: i64,
    timestamps: bool,
    /// Start lines with the allocation's name (several are printed).
    prefix: bool,
}

/// Where one stream's output goes, and whether its next byte starts a line.
struct Out {
    at_line_start: bool,
}

impl Out {
    /// Writes one record, starting each line with its prefix.
    fn write(&mut self, w: &mut dyn Write, lead: &str, data: &[u8]) -> std::io::Result<()> {
        for piece in data.split_inclusive(|b| *b == b'\n') {
            if self.at_line_start {
                w.write_all(lead.as_bytes())?;
            }
            w.write_all(piece)?;
            self.at_line_start = piece.ends_with(b"\n");
        }
        Ok(())
    }
}

async fn stream(
    mut c: pb::drover_client::DroverClient<client::Backoff>,
    alloc: pb::Allocation,
    how: How,
) -> Result<()> {
    if alloc.node_address.is_empty() {
        bail!("allocation {} is not on a known node", alloc.name);
    }
    let (mut agent, ticket) = client::agent(&mut c, &alloc.id, "logs").await?;
    let mut s = agent
        .logs(ticket.request(pb::LogsRequest {
            alloc_id: alloc.id.clone(),
            follow: how.follow,
            tail: how.tail,
            since_ms: how.since_ms,
            records: true,
        }))
        .await
        .map_err(status)?
        .into_inner();
    let (mut out, mut err) = (
        Out {
            at_line_start: true,
        },
        Out {
            at_line_start: true,
        },
    );
    while let Some(chunk) = s.message().await.map_err(status)? {
        if !chunk.data.is_empty() && how.since_ms > 0 {
            bail!(
                "the agent of {} is too old for --since (it keeps no times): upgrade it, or leave --since out",
                alloc.name
            );
        }
        // From an agent that keeps no records: plain text, as stdout.
        let plain = (!chunk.data.is_empty()).then_some(pb::LogRecord {
            stream: pb::LogStream::Stdout as i32,
            at_ns: 0,
            data: chunk.data,
        });
        for r in chunk.records.into_iter().chain(plain) {
            let mut lead = String::new();
            if how.prefix {
                lead = format!("{} | ", alloc.name);
            }
            if how.timestamps {
                match r.at_ns {
                    0 => lead.push_str("-                              "),
                    at => lead.push_str(&drover_proto::json::time_ns(at)),
                }
                lead.push(' ');
            }
            let written = if r.stream() == pb::LogStream::Stderr {
                let mut w = std::io::stderr().lock();
                err.write(&mut w, &lead, &r.data).and_then(|()| w.flush())
            } else {
                let mut w = std::io::stdout().lock();
                out.write(&mut w, &lead, &r.data).and_then(|()| w.flush())
            };
            // A closed pipe (`drover logs web | head`) is the reader's choice.
            if let Err(e) = written {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    std::process::exit(0);
                }
                return Err(e.into());
            }
        }
    }
    for (o, mut w) in [
        (&out, Box::new(std::io::stdout()) as Box<dyn Write>),
        (&err, Box::new(std::io::stderr())),
    ] {
        if !o.at_line_start {
            let _ = writeln!(w);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_with_their_lead_even_across_records() {
        let mut o = Out {
            at_line_start: true,
        };
        let mut w = Vec::new();
        o.write(&mut w, "web-0 | ", b"one\ntw").unwrap();
        o.write(&mut w, "web-0 | ", b"o\n").unwrap();
        assert_eq!(String::from_utf8(w).unwrap(), "web-0 | one\nweb-0 | two\n");
    }

    #[test]
    fn since_reads_a_duration_or_a_time() {
        assert_eq!(since("2026-12-02T10:00:00Z").unwrap(), 1_796_205_600_000);
        let ago = since("10m").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((now - ago - 600_000).abs() < 5_000);
        let e = since("yesterday").unwrap_err().to_string();
        assert!(e.contains("--since \"yesterday\""), "{e}");
    }
}
