//! The web UI end to end: a scheduler serving `/ui/` on `--http-listen`,
//! a real agent running real replicas, and Debian's headless Chromium
//! loading the page and reading what it shows, while the CLI changes the
//! cluster under it.

use drover_e2e::browser::{chromium, Browser};
use drover_e2e::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The text of the elements `selector` matches, joined (JavaScript).
fn text_of(selector: &str) -> String {
    format!("[...document.querySelectorAll({selector:?})].map(e => e.innerText).join('\\n')")
}

#[test]
fn the_web_ui_shows_jobs_a_live_rollout_and_logs() {
    let test = "the_web_ui_shows_jobs_a_live_rollout_and_logs";
    if !require_root(test) {
        return;
    }
    if chromium().is_none() {
        skip_or_fail(test, "chromium is not installed (tests/run.sh installs it)");
        return;
    }
    let images = images();
    let port = free_port();
    // On every address: a browser elsewhere is asked for a token.
    let listen = format!("0.0.0.0:{port}");
    let c = Cluster::start_with_scheduler_args("e2e-ui", &["--http-listen", &listen]);
    let web = |version: &str| {
        format!(
            "name: web\nreplicas: 2\nimage: oci:{}/demo-web:{version}\nenv: {{PORT: \"8080\"}}\n\
             resources: {{cpu: 0.05, memory: 32Mi}}\nports: [{{name: http, container: 8080}}]\n\
             health: {{http: {{path: /healthz, port: 8080}}, interval: 300ms, timeout: 300ms}}\n\
             update: {{max_surge: 1, max_unavailable: 0, min_healthy_time: 2s}}\n",
            images.display()
        )
    };
    c.must(&["job", "run", c.spec("web", &web("v1")).to_str().unwrap()]);
    let talker = c.spec(
        "talker",
        &format!(
            "name: talker\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sh, -c]\n\
             args: ['i=0; while true; do i=$((i+1)); echo \"line $i from the talker\"; sleep 0.5; done']\n\
             resources: {{cpu: 0.05, memory: 16Mi}}\n",
            images.display()
        ),
    );
    c.must(&["job", "run", talker.to_str().unwrap()]);

    let mut b = Browser::start(1400, 1000);
    let ui = format!("http://127.0.0.1:{port}/ui/");
    b.goto(&ui);
    // The overview: jobs with their replicas, the node, the leader, events.
    let row = b.wait_for(
        "web 2/2 in the job list",
        WAIT,
        "(() => { const r = document.querySelector('#jobs tr[data-job=\"web\"]'); \
         return r && r.innerText.includes('2/2') ? r.innerText : null })()",
    );
    assert!(row.as_str().unwrap().contains("running"), "{row}");
    b.wait_for(
        "the talker in the job list",
        WAIT,
        "document.querySelector('#jobs tr[data-job=\"talker\"]')",
    );
    let nodes = b.wait_for(
        "the node",
        WAIT,
        &format!("({})", text_of("#nodes tr[data-node]")),
    );
    assert!(nodes.as_str().unwrap().contains("ready"), "{nodes}");
    let cluster = b.eval(&text_of("#cluster")).unwrap();
    assert!(cluster.as_str().unwrap().contains("leads"), "{cluster}");
    b.wait_for(
        "job-submitted in the event feed",
        WAIT,
        "[...document.querySelectorAll('#feed li')].some(l => l.dataset.type === 'job-submitted')",
    );

    // The job page while the CLI rolls out version 2: the rollout shows up
    // without a reload, and the chart draws a line for each version.
    b.goto(&format!("{ui}#/job/web"));
    b.wait_for(
        "two allocations of web",
        WAIT,
        "document.querySelectorAll('#allocations tr[data-alloc]').length === 2",
    );
    let loaded = b.eval("document.body.dataset.loadedMs").unwrap();
    let v2 = c.spec("web-v2", &web("v2"));
    let rollout = c.drover(&["job", "run", "--detach", v2.to_str().unwrap()]);
    assert!(rollout.ok(), "{}", rollout.stderr);
    b.wait_for(
        "the rollout to v2 on the job page",
        WAIT,
        "document.querySelector('#rollout').innerText.includes('to v2')",
    );
    b.wait_for(
        "the rollout to succeed, live",
        WAIT,
        "(() => { const t = document.querySelector('#rollout').innerText; \
         return t.includes('succeeded') && t.includes('to v2') })()",
    );
    let lines = b.wait_for(
        "a line per version in the chart",
        WAIT,
        "(() => { const v = [...document.querySelectorAll('#rollout polyline')].map(p => p.dataset.version); \
         return v.includes('1') && v.includes('2') ? v : null })()",
    );
    assert_eq!(lines, serde_json::json!(["1", "2"]));
    // What each running replica uses, asked of its agent by the peer.
    let used = b.wait_for(
        "the replicas' usage",
        WAIT,
        "(() => { const c = [...document.querySelectorAll('#allocations td.usage')].map(t => t.innerText); \
         return c.length === 2 && c.every(t => t.includes('cpu') && t.includes('of 32 MiB')) ? c : null })()",
    );
    assert_eq!(used.as_array().unwrap().len(), 2, "{used}");
    let reloaded = b.eval("document.body.dataset.loadedMs").unwrap();
    assert_eq!(
        loaded, reloaded,
        "the page followed the rollout without a reload"
    );
    let feed = b.eval(&text_of("#feed")).unwrap();
    assert!(
        feed.as_str().unwrap().contains("rollout-succeeded"),
        "{feed}"
    );
    let shot = std::env::var_os("DROVER_UI_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| c.dir.path().join("job.png"));
    b.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot of the page"
    );

    // A node's page: what runs there, and what it uses now.
    b.goto(&format!("{ui}#/node/{}", c.node));
    let in_use = b.wait_for(
        "the node's usage",
        WAIT,
        "(() => { const t = document.querySelector('#in-use'); \
         return t && t.innerText.includes('used now by 3 replicas') ? t.innerText : null })()",
    );
    assert!(in_use.as_str().unwrap().contains("cpu"), "{in_use}");

    // An allocation's page follows its output.
    let allocs = c.must(&["alloc", "ls", "--job", "talker", "-o", "json"]);
    let allocs: serde_json::Value = serde_json::from_str(&allocs).unwrap();
    let id = allocs[0]["id"].as_str().unwrap().to_string();
    b.goto(&format!("{ui}#/alloc/{id}"));
    let first = b.wait_for(
        "the talker's output",
        WAIT,
        "(() => { const m = document.querySelector('#logs').textContent.match(/line (\\d+) from the talker/g); \
         return m ? m.length : 0 })()",
    );
    b.wait_for(
        "a line written after the page opened",
        WAIT,
        &format!(
            "document.querySelector('#logs').textContent.match(/line (\\d+) from the talker/g).length > {first}"
        ),
    );

    // From another address, once the cluster has ACLs: the page asks for a
    // token, and shows the cluster with one that may read it.
    let admin = c.drover(&["acl", "bootstrap"]);
    assert!(admin.ok(), "{}", admin.stderr);
    std::fs::write(
        pki_dir_for(&c.addr).unwrap().join("token"),
        admin.stdout.trim(),
    )
    .unwrap();
    let reader = c.must(&["acl", "token", "create", "--name", "ui", "--role", "read"]);
    let elsewhere = format!("http://{}:{port}/ui/", global_ip());
    b.goto(&elsewhere);
    b.wait_for(
        "the sign-in form",
        WAIT,
        "document.querySelector('form.login #token')",
    );
    b.eval(&format!(
        "(() => {{ document.querySelector('#token').value = {:?}; \
         document.querySelector('form.login').requestSubmit(); return true }})()",
        reader.trim()
    ))
    .unwrap();
    b.wait_for(
        "the job list with the token",
        WAIT,
        "document.querySelector('#jobs tr[data-job=\"web\"]')",
    );

    // The API behind the page, from elsewhere: a reader may not read logs;
    // a token fenced to some jobs sees only those, and their events.
    let api = format!("127.0.0.1:{port}");
    let from = Some(global_ip());
    let reader = reader.trim();
    let logs = format!("/v1/allocation/{id}/logs?follow=false");
    let (code, body) = http_get(&api, &logs, from, Some(reader));
    assert_eq!(code, 403, "{body}");
    let (code, _) = http_get(&api, "/v1/jobs", from, None);
    assert_eq!(code, 401);
    let fenced = c.must(&[
        "acl", "token", "create", "--name", "talk", "--role", "read", "--job", "talker", "--logs",
    ]);
    let fenced = fenced.trim();
    let (code, body) = http_get(&api, "/v1/jobs", from, Some(fenced));
    assert_eq!(code, 200, "{body}");
    let jobs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["talker"], "{body}");
    assert_eq!(http_get(&api, "/v1/job/web", from, Some(fenced)).0, 404);
    let web = c.must(&["alloc", "ls", "--job", "web", "-o", "json"]);
    let web: serde_json::Value = serde_json::from_str(&web).unwrap();
    let web_id = web[0]["id"].as_str().unwrap();
    let path = format!("/v1/allocation/{web_id}");
    assert_eq!(http_get(&api, &path, from, Some(fenced)).0, 404);
    assert_eq!(http_get(&api, &path, from, Some(reader)).0, 200);
    let (code, body) = http_get(&api, &format!("/v1/node/{}", c.node), from, Some(fenced));
    assert_eq!(code, 200, "{body}");
    let node: serde_json::Value = serde_json::from_str(&body).unwrap();
    let on_node: Vec<&str> = node["allocation_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["job"].as_str().unwrap())
        .collect();
    assert_eq!(on_node, vec!["talker"], "{body}");
    let (code, body) = http_get(&api, &logs, from, Some(fenced));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("from the talker"), "{body}");
}
