//! `drover bench load`: a load generator that records every request.
//!
//! Sends HTTP GETs at a fixed rate (open loop: one new connection per
//! request, so a slow or broken replica cannot hide behind a reused
//! connection), records each result by second — ok, failed, which version
//! answered (demo-web says `demo-web <version> on <host>`) and latency — and
//! prints the timeline. It can also write the timeline as JSON and as an SVG
//! chart. Only loopback and the cluster's own addresses are ever targets.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default, Clone, Debug)]
pub struct Second {
    pub ok: u64,
    pub failed: u64,
    pub versions: BTreeMap<String, u64>,
    pub latencies_us: Vec<u64>,
    /// Why requests failed, and how many.
    pub errors: BTreeMap<String, u64>,
    /// Requests slower than a second (where the time went wrong, if not failed).
    pub slow: u64,
}

pub struct Options {
    pub target: String,
    pub path: String,
    pub rate: u32,
    pub duration: Duration,
    pub json: Option<std::path::PathBuf>,
    pub svg: Option<std::path::PathBuf>,
    pub title: String,
}

/// `host:port` and path of an `http://host:port/path` URL.
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if !host.contains(':') {
        bail!("{url}: give the port explicitly");
    }
    Ok((host.to_string(), path.to_string()))
}

/// One request; Ok(version) on a 200.
async fn request(target: &str, path: &str) -> Result<String, String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("status {status:?}"));
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // demo-web: "demo-web v2 on web-1"
    Ok(body.split_whitespace().nth(1).unwrap_or("?").to_string())
}

/// Runs the load until `duration` passes or `stop` fires; returns the timeline.
pub async fn run(o: &Options, stop: impl std::future::Future<Output = ()>) -> Vec<Second> {
    let timeline: Arc<Mutex<Vec<Second>>> = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        if start.elapsed() >= o.duration {
            break;
        }
        let (target, path, tl) = (o.target.clone(), o.path.clone(), timeline.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let second = sent.duration_since(start).as_secs() as usize;
            let r = request(&target, &path).await;
            let mut tl = tl.lock().expect("timeline lock");
            if tl.len() <= second {
                tl.resize(second + 1, Second::default());
            }
            let s = &mut tl[second];
            match r {
                Ok(v) => {
                    s.ok += 1;
                    *s.versions.entry(v).or_default() += 1;
                    let us = sent.elapsed().as_micros() as u64;
                    if us > 1_000_000 {
                        s.slow += 1;
                    }
                    s.latencies_us.push(us);
                }
                Err(e) => {
                    s.failed += 1;
                    *s.errors.entry(e).or_default() += 1;
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let t = timeline.lock().expect("timeline lock").clone();
    t
}

pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints the per-second table and the totals; writes JSON and SVG if asked.
pub fn report(o: &Options, timeline: &[Second]) -> Result<(u64, u64)> {
    let mut rows = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    let mut all = Vec::new();
    for (i, s) in timeline.iter().enumerate() {
        ok += s.ok;
        failed += s.failed;
        all.extend_from_slice(&s.latencies_us);
        let versions: Vec<String> = s.versions.iter().map(|(v, n)| format!("{v}:{n}")).collect();
        let errors: Vec<String> = s.errors.iter().map(|(e, n)| format!("{n}× {e}")).collect();
        rows.push(vec![
            i.to_string(),
            s.ok.to_string(),
            s.failed.to_string(),
            s.slow.to_string(),
            versions.join(" "),
            errors.join("; "),
        ]);
    }
    print!(
        "{}",
        drover_ctl::output::table(
            &["SECOND", "OK", "FAILED", "SLOW", "ANSWERED BY", "ERRORS"],
            &rows
        )
    );
    all.sort_unstable();
    println!(
        "total: {ok} ok, {failed} failed; latency p50 {:.1} ms, p99 {:.1} ms",
        percentile(&all, 0.5) as f64 / 1000.0,
        percentile(&all, 0.99) as f64 / 1000.0
    );
    if let Some(path) = &o.json {
        let v = json!(timeline
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"second": i, "ok": s.ok, "failed": s.failed, "versions": s.versions}))
            .collect::<Vec<_>>());
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    if let Some(path) = &o.svg {
        std::fs::write(path, svg(&o.title, timeline))?;
        println!("chart written to {}", path.display());
    }
    Ok((ok, failed))
}

/// A stacked bar per second: answers by version, failures in red on top.
pub fn svg(title: &str, timeline: &[Second]) -> String {
    let palette = [
        "#4e79a7", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948",
    ];
    let mut versions: Vec<&String> = timeline.iter().flat_map(|s| s.versions.keys()).collect();
    versions.sort();
    versions.dedup();
    let max = timeline
        .iter()
        .map(|s| s.ok + s.failed)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (w, h, left, top, bottom) = (900.0, 360.0, 60.0, 40.0, 40.0);
    let bw = (w - left - 20.0) / timeline.len().max(1) as f64;
    let scale = (h - top - bottom) / max;
    let mut out = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n<text x='{left}' y='22' font-size='15'>{title}</text>\n"
    );
    for (i, s) in timeline.iter().enumerate() {
        let x = left + i as f64 * bw;
        let mut y = h - bottom;
        for (vi, v) in versions.iter().enumerate() {
            let n = s.versions.get(*v).copied().unwrap_or(0) as f64;
            if n > 0.0 {
                y -= n * scale;
                out.push_str(&format!(
                    "<rect x='{x:.1}' y='{y:.1}' width='{:.1}' height='{:.1}' fill='{}'/>\n",
                    bw * 0.9,
                    n * scale,
                    palette[vi % palette.len()]
                ));
            }
        }
        if s.failed > 0 {
            let n = s.failed as f64;
            y -= n * scale;
            out.push_str(&format!(
                "<rect x='{x:.1}' y='{y:.1}' width='{:.1}' height='{:.1}' fill='#e15759'/>\n",
                bw * 0.9,
                n * scale
            ));
        }
    }
    out.push_str(&format!(
        "<line x1='{left}' y1='{0}' x2='{1}' y2='{0}' stroke='black'/>\n<text x='{left}' y='{2}'>seconds →</text>\n\
         <text x='5' y='{top}'>{max} req/s</text>\n",
        h - bottom,
        w - 20.0,
        h - 12.0
    ));
    let mut lx = left + 120.0;
    for (vi, v) in versions.iter().enumerate() {
        out.push_str(&format!(
            "<rect x='{lx}' y='{0}' width='12' height='12' fill='{1}'/><text x='{2}' y='{3}'>{v}</text>\n",
            h - 24.0,
            palette[vi % palette.len()],
            lx + 16.0,
            h - 14.0
        ));
        lx += 70.0;
    }
    out.push_str(&format!(
        "<rect x='{lx}' y='{0}' width='12' height='12' fill='#e15759'/><text x='{1}' y='{2}'>failed</text>\n</svg>\n",
        h - 24.0,
        lx + 16.0,
        h - 14.0
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("http://127.0.0.1:18080/").unwrap(),
            ("127.0.0.1:18080".into(), "/".into())
        );
        assert_eq!(
            split_url("http://10.0.0.1:80").unwrap(),
            ("10.0.0.1:80".into(), "/".into())
        );
        assert!(split_url("https://x:1/").is_err());
        assert!(split_url("http://x/").is_err());
    }

    #[test]
    fn chart_has_a_bar_per_version_and_failures() {
        let mut s = Second {
            ok: 3,
            failed: 1,
            ..Default::default()
        };
        s.versions.insert("v1".into(), 2);
        s.versions.insert("v2".into(), 1);
        let out = svg("demo", &[s]);
        assert!(out.starts_with("<svg"));
        assert_eq!(
            out.matches("fill='#e15759'").count(),
            2,
            "a failure bar and the legend"
        );
        assert!(out.contains(">v1<") && out.contains(">v2<"));
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
