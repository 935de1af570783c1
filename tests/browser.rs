//! A real browser for the web UI's tests and benchmark: Debian's headless
//! Chromium, driven over the Chrome DevTools Protocol (a JSON-RPC over a
//! WebSocket) to load a page, read what it shows by running JavaScript in
//! it, and take screenshots.

use base64::Engine;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// The Chromium binary on this machine (`tests/run.sh` installs Debian's).
pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!path.is_empty()).then(|| PathBuf::from(path))
        })
}

/// A headless Chromium with one page, killed when dropped.
pub struct Browser {
    page: WebSocket<TcpStream>,
    next_id: u64,
    _process: Process,
}

/// Chromium's processes (a group of their own) and its profile, gone when
/// dropped, also when starting it failed half-way.
struct Process {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        // The browser, its renderers and helpers: the whole group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET to the DevTools endpoint: its JSON body (read by its length:
/// the endpoint keeps the connection open).
fn devtools_get(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })?;
        if body.len() >= length {
            return serde_json::from_str(body).ok();
        }
    }
}

impl Browser {
    /// Starts Chromium with a blank page of `width`×`height` and connects
    /// to that page.
    pub fn start(width: u32, height: u32) -> Browser {
        let exe = chromium().expect("chromium (tests/run.sh installs it)");
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(exe)
            .args([
                "--headless=new",
                // As root, and in a container, the sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                // No crash reporter: it would outlive the browser.
                "--disable-crash-reporter",
                "--disable-breakpad",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let process = Process {
            child,
            _profile: profile,
        };
        let profile = process._profile.path();
        // Chromium writes the port it chose into the profile.
        let active = profile.join("DevToolsActivePort");
        let port: u16 =
            crate::wait_for("chromium's DevTools port", Duration::from_secs(30), || {
                std::fs::read_to_string(&active)
                    .ok()?
                    .lines()
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            });
        let url = crate::wait_for("chromium's page", Duration::from_secs(30), || {
            devtools_get(port, "/json/list")?
                .as_array()?
                .iter()
                .find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(str::to_string)
        });
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (page, _) = tungstenite::client::client(url.as_str(), stream).expect("devtools socket");
        let mut b = Browser {
            page,
            next_id: 0,
            _process: process,
        };
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// Calls a DevTools method on the page: its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.page.send(Message::text(msg)).expect("devtools send");
        loop {
            let m = self.page.read().expect("devtools read");
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("devtools json");
            // Events the page sends meanwhile are not asked for here.
            if v["id"] != id {
                continue;
            }
            if let Some(e) = v.get("error") {
                panic!("{method}: {e}");
            }
            return v["result"].clone();
        }
    }

    /// Opens `url` in the page.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// The value of a JavaScript expression in the page (a promise is
    /// awaited); `Err` with the exception's text if it threw.
    pub fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        match r.get("exceptionDetails") {
            Some(e) => Err(e.to_string()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Evaluates `expr` until its value is truthy (not null, false, 0 or
    /// ""): that value. Panics after `timeout` with `what` and the page's
    /// text.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, expr: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expr).unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self
                    .eval("document.body ? document.body.innerText : ''")
                    .unwrap_or_default();
                let fetched = self
                    .eval(
                        "performance.getEntriesByType('resource').map(e => \
                         `${e.name} ${e.responseStatus} ${Math.round(e.duration)}ms`).join('\\n')",
                    )
                    .unwrap_or_default();
                panic!(
                    "timed out waiting for {what}; the page shows:\n{text}\nit fetched:\n{fetched}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The page as a PNG, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        std::fs::write(path, data).expect("write screenshot");
    }
}
