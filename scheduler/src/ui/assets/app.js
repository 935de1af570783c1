// Drover's web UI: one page, plain JavaScript, no build step.
//
// It reads the scheduler peer's HTTP API (/v1/...: the documents
// `drover ... -o json` prints) and follows its event stream
// (/v1/events, server-sent events), refreshing what it shows when an
// event says something changed. Streams are read with fetch rather than
// EventSource so that an ACL token can go in the Authorization header.
// Everything the cluster says is put on the page as text, never as HTML.
'use strict';

// ---------------------------------------------------------------- DOM

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    // Through the CSSOM: the page's policy refuses style attributes.
    else if (k === 'style') el.style.cssText = v;
    else if (k === 'class') el.setAttribute('class', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
}

function replace(el, ...kids) {
  el.replaceChildren();
  append(el, kids);
}

function table(head, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted' }, empty || 'None.');
  return h('table', null,
    h('thead', null, h('tr', null, head.map((c) => h('th', { class: /^(cpu|memory|replicas|restarts|behind)/i.test(c) ? 'num' : null }, c)))),
    h('tbody', null, rows));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- words

function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + 's ago';
  if (s < 3600) return Math.floor(s / 60) + 'm ago';
  if (s < 86400) return Math.floor(s / 3600) + 'h ago';
  return Math.floor(s / 86400) + 'd ago';
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function bytes(b) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(b < 10 ? 1 : 0) : b) + ' ' + units[i];
}

function cpu(millis) {
  // 2 cpu, 1.5 cpu, 0.05 cpu, 0 cpu
  return (millis / 1000).toFixed(2).replace(/\.?0+$/, '') + ' cpu';
}

function tone(word) {
  if (/^(running|ready|healthy|succeeded|complete|ok|leader)$/.test(word)) return 'ok';
  if (/(fail|down|lost|unhealthy|oom|dead|error|rolled)/.test(word)) return 'bad';
  if (/(pending|starting|stopping|paused|waiting|draining|cordoned|progress|restart)/.test(word)) return 'warn';
  return '';
}

const badge = (word) => h('span', { class: 'badge ' + tone(String(word)) }, word);

function bar(used, total, label) {
  const pct = total ? Math.min(100, (100 * used) / total) : 0;
  return h('span', null,
    h('span', { class: 'bar' + (pct >= 95 ? ' full' : ''), title: `${Math.round(pct)}%` }, h('span', { style: `width:${pct}%` })),
    ' ', h('span', { class: 'muted' }, label));
}

const jobLink = (name) => h('a', { href: '#/job/' + encodeURIComponent(name) }, name);
const nodeLink = (name) => (name ? h('a', { href: '#/node/' + encodeURIComponent(name) }, name) : '');
const allocLink = (a) => h('a', { href: '#/alloc/' + encodeURIComponent(a.id), class: 'mono' }, a.name || a.id.slice(0, 8));

// ---------------------------------------------------------------- API

const TOKEN = 'drover-token';
class Unauthorized extends Error {}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers);
  const token = localStorage.getItem(TOKEN);
  if (token) headers.Authorization = 'Bearer ' + token;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) throw new Unauthorized((await r.text()).trim());
  if (!r.ok) {
    let why = r.status + ' ' + r.statusText;
    try { why = (await r.json()).error || why; } catch (_) { /* not JSON */ }
    const e = new Error(why);
    e.status = r.status;
    throw e;
  }
  return r;
}

const getJSON = async (path, signal) => (await api(path, { signal })).json();

// Server-sent events from `path`, each given to `on(type, data)`; a true
// answer ends the stream. With `resume`, a broken stream is opened again
// after the last event seen (its id), as EventSource would; a stream the
// peer ended as too slow, from where it said; one the peer no longer has,
// afresh (`on('reset')`: events were missed).
async function follow(path, on, signal, resume) {
  let last = null;
  let from = null;
  while (!signal.aborted) {
    try {
      const headers = last ? { 'Last-Event-ID': last } : {};
      const url = from ? `${path}${path.includes('?') ? '&' : '?'}from=${encodeURIComponent(from)}` : path;
      const r = await api(url, { signal, headers });
      if (resume) setLive(true);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let type = 'message', data = '', id = null;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const c = line.indexOf(':');
            const field = c < 0 ? line : line.slice(0, c);
            let v = c < 0 ? '' : line.slice(c + 1);
            if (v.startsWith(' ')) v = v.slice(1);
            if (field === 'event') type = v;
            else if (field === 'data') data += (data ? '\n' : '') + v;
            else if (field === 'id') id = v;
          }
          if (id) { last = id; from = null; }
          if (type === 'gone') {
            // Resume at its cursor (not after it), or afresh.
            from = JSON.parse(data).resume || null;
            last = null;
            if (!from) on('reset', {});
          }
          if (data && on(type, JSON.parse(data))) return;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof Unauthorized) { login(e.message); return; }
      if (e.status === 410) { last = null; from = null; on('reset', {}); }
      if (!resume) { on('error', { error: e.message }); return; }
    }
    if (!resume) return;
    setLive(false);
    await sleep(1000);
  }
}

function setLive(on) {
  const el = document.getElementById('live');
  el.className = 'live ' + (on ? 'on' : 'off');
  el.textContent = on ? 'live' : 'reconnecting';
}

// ---------------------------------------------------------------- pages

const view = () => document.getElementById('view');

// The page being shown: its streams and timers end when another is shown.
let page = null;

function route() {
  if (page) page.abort();
  const ctl = new AbortController();
  const timers = [];
  page = {
    signal: ctl.signal,
    every(ms, f) { timers.push(setInterval(f, ms)); },
    abort() { ctl.abort(); timers.forEach(clearInterval); },
  };
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [kind, ...rest] = hash.split('/');
  const arg = rest.join('/');
  const pages = { '': overview, job: jobPage, alloc: allocPage, node: nodePage };
  const show = pages[kind] || overview;
  show(page, arg).catch((e) => failed(e));
}

function failed(e) {
  if (e instanceof Unauthorized) return login(e.message);
  // A page left while it was loading.
  if (e && e.name === 'AbortError') return;
  replace(view(), h('section', { class: 'wide' }, h('p', { class: 'error' }, String(e.message || e))));
}

function login(why) {
  if (page) page.abort();
  const input = h('input', { type: 'password', placeholder: 'DRVT-…', autocomplete: 'off', id: 'token' });
  const form = h('form', {
    class: 'login',
    onsubmit: (ev) => {
      ev.preventDefault();
      localStorage.setItem(TOKEN, input.value.trim());
      showLogout();
      route();
    },
  },
  h('h1', null, 'Sign in'),
  h('p', null, 'This cluster has ACLs: paste a token that may read it (',
    h('code', null, 'drover acl token create --name ui --role read'), ').'),
  why ? h('p', { class: 'muted' }, why) : null,
  input, h('button', { type: 'submit' }, 'Use token'),
  h('p', { class: 'muted' }, 'The token stays in this browser (local storage) and goes to this peer only.'));
  replace(view(), h('section', { class: 'wide' }, form));
  input.focus();
}

function showLogout() {
  const b = document.getElementById('logout');
  b.hidden = !localStorage.getItem(TOKEN);
}

// Refreshes with `load` now, when events come (at most every 300 ms) and
// every `ms` regardless.
function live(p, load, eventsPath, ms, onEvent) {
  let queued = false;
  const again = () => {
    if (queued) return;
    queued = true;
    setTimeout(() => { queued = false; load().catch(failed); }, 300);
  };
  p.every(ms, () => load().catch(failed));
  follow(eventsPath, (type, e) => {
    if (type === 'event') { if (onEvent) onEvent(e); again(); }
    if (type === 'reset') again();
    return false;
  }, p.signal, true);
  // When the first page had its data (for the UI's benchmark).
  return load().then(() => {
    if (!document.body.dataset.loadedMs) document.body.dataset.loadedMs = Math.round(performance.now());
  });
}

function feedItem(e) {
  const subject = e.job ? jobLink(e.job) : e.node ? nodeLink(e.node) : 'cluster';
  return h('li', { 'data-type': e.type },
    h('span', { class: 'when', title: e.time + ' · index ' + e.index + '.' + e.seq }, clock(e.at_ms)),
    h('span', { class: 'type' }, e.type), subject, h('div', { class: 'muted' }, e.message));
}

function feed(list, e, keep) {
  list.prepend(feedItem(e));
  while (list.children.length > keep) list.lastChild.remove();
}

async function overview(p) {
  const cluster = h('section', { id: 'cluster' }, h('h2', null, 'Cluster'));
  const nodes = h('section', { id: 'nodes' }, h('h2', null, 'Nodes'));
  const jobs = h('section', { id: 'jobs' }, h('h2', null, 'Jobs'));
  const list = h('ul', { class: 'feed', id: 'feed' });
  const events = h('section', { id: 'events' }, h('h2', null, 'Events'), list);
  replace(view(), h('div', { class: 'col' }, cluster, jobs, nodes), events);

  const load = async () => {
    const [c, j, n] = await Promise.all([
      getJSON('/v1/cluster', p.signal), getJSON('/v1/jobs', p.signal), getJSON('/v1/nodes', p.signal),
    ]);
    if (p.signal.aborted) return;
    replace(cluster, h('h2', null, 'Cluster'),
      h('p', null, c.leader ? ['peer ', h('b', null, c.leader), ' leads'] : h('span', { class: 'error' }, 'no leader'),
        ` · term ${c.term} · applied ${c.applied_index} · ${c.jobs} jobs · ${c.running_allocations} replicas running · served by peer ${c.served_by}`),
      table(['Peer', 'Address', 'Role', 'Behind'], c.peers.map((m) => h('tr', null,
        h('td', null, m.id), h('td', { class: 'mono' }, m.address),
        h('td', null, badge(m.leader ? 'leader' : m.voter ? 'follower' : 'learner')),
        h('td', { class: 'num' }, m.behind === null || m.behind === undefined ? '' : m.behind)))));
    replace(jobs, h('h2', null, 'Jobs'), table(['Job', 'Type', 'Status', 'Replicas', 'Version', 'Rollout'],
      j.jobs.map((job) => h('tr', { 'data-job': job.name },
        h('td', null, jobLink(job.name)), h('td', null, job.type),
        h('td', null, badge(job.status)),
        h('td', { class: 'num' }, job.batch ? `${job.batch.succeeded}/${job.batch.completions} done` : `${job.running}/${job.desired}`),
        h('td', null, 'v' + job.version),
        h('td', null, job.rollout && !job.rollout.finished_at_ms
          ? [badge(job.rollout.state), ` v${job.rollout.version} ${job.rollout.healthy}/${job.rollout.desired}`] : ''))),
      'No jobs yet: drover job run examples/web.yaml'));
    replace(nodes, h('h2', null, 'Nodes'), table(['Node', 'Status', 'CPU', 'Memory', 'Replicas'],
      n.nodes.map((node) => h('tr', { 'data-node': node.name },
        h('td', null, nodeLink(node.name)),
        h('td', null, badge(node.status), node.draining ? [' ', badge('draining')] : !node.schedulable ? [' ', badge('cordoned')] : ''),
        h('td', null, bar(node.cpu_allocated_millis, node.cpu_millis, `${cpu(node.cpu_allocated_millis)} of ${cpu(node.cpu_millis)}`)),
        h('td', null, bar(node.memory_allocated_bytes, node.memory_bytes, `${bytes(node.memory_allocated_bytes)} of ${bytes(node.memory_bytes)}`)),
        h('td', { class: 'num' }, node.allocations))),
      'No nodes have registered.'));
  };
  return live(p, load, '/v1/events?recent=100', 5000, (e) => feed(list, e, 100));
}

// Replicas running per version over time, per job, kept while the page is
// open (like the rollout demo's timeline).
const history = new Map();
const COLOURS = ['#2f6fde', '#1f9d55', '#c98a00', '#8e44ad', '#d2383b', '#16a2b8', '#6b7585'];
const WINDOW_MS = 5 * 60 * 1000;

function sample(job) {
  const counts = {};
  for (const a of job.allocations) {
    if (a.state === 'running' && a.desired === 'run') counts[a.version] = (counts[a.version] || 0) + 1;
  }
  const samples = history.get(job.name) || [];
  samples.push({ t: Date.now(), counts });
  while (samples.length && samples[0].t < Date.now() - WINDOW_MS) samples.shift();
  history.set(job.name, samples);
  return samples;
}

function chart(samples) {
  const W = 600, H = 200, PAD = 28;
  const versions = [...new Set(samples.flatMap((s) => Object.keys(s.counts)))].sort((a, b) => a - b);
  const max = Math.max(1, ...samples.map((s) => Math.max(0, ...Object.values(s.counts))));
  const t0 = samples.length ? samples[0].t : Date.now();
  const span = Math.max(10000, Date.now() - t0);
  const x = (t) => PAD + ((t - t0) / span) * (W - PAD - 8);
  const y = (n) => H - PAD - (n / max) * (H - 2 * PAD);
  const lines = versions.map((v, i) => svg('polyline', {
    fill: 'none', stroke: COLOURS[i % COLOURS.length], 'stroke-width': 2, 'data-version': v,
    points: samples.map((s) => `${x(s.t).toFixed(1)},${y(s.counts[v] || 0).toFixed(1)}`).join(' '),
  }));
  return h('div', { class: 'chart' },
    svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'replicas running per version over time' },
      svg('line', { class: 'axis', x1: PAD, y1: H - PAD, x2: W, y2: H - PAD }),
      svg('line', { class: 'axis', x1: PAD, y1: 8, x2: PAD, y2: H - PAD }),
      svg('text', { x: 2, y: y(max) + 4 }, max), svg('text', { x: 2, y: H - PAD + 4 }, 0),
      svg('text', { x: PAD, y: H - 8 }, clock(t0)), svg('text', { x: W - 60, y: H - 8 }, clock(Date.now())),
      lines),
    h('div', { class: 'legend' }, versions.map((v, i) => h('span', null, h('i', { style: `background:${COLOURS[i % COLOURS.length]}` }, ''), 'v' + v))));
}

// What a replica uses now (from its agent, via the peer), as a cell.
function usageCell(u) {
  if (!u) return h('td', { class: 'muted' }, '');
  const mem = bytes(u.memory_bytes) + (u.memory_limit_bytes ? ' of ' + bytes(u.memory_limit_bytes) : '');
  return h('td', { class: 'usage' }, `${cpu(u.cpu_millis)} · ${mem}`, u.oom_kills ? [' ', badge('oom-killed ×' + u.oom_kills)] : '');
}

// What replicas use now, by allocation id, read from `path` now and every
// 5 s (it is asked of the agents: less often than the rest). The object
// is filled in place, so a page's renderer always sees the latest.
function usageOf(p, path) {
  const usage = {};
  const load = async () => {
    const u = (await getJSON(path, p.signal)).usage;
    for (const k of Object.keys(usage)) delete usage[k];
    Object.assign(usage, u);
  };
  load().catch(() => {});
  p.every(5000, () => load().catch(() => {}));
  return usage;
}

function allocRows(allocs, showJob, usage) {
  return allocs.map((a) => h('tr', { 'data-alloc': a.id },
    h('td', null, allocLink(a)),
    showJob ? h('td', null, jobLink(a.job)) : h('td', null, nodeLink(a.node)),
    h('td', null, 'v' + a.version, a.canary ? ' (canary)' : ''),
    h('td', null, badge(a.state), a.desired !== 'run' ? [' ', h('span', { class: 'muted' }, '→ ' + a.desired)] : ''),
    h('td', null, a.health && a.health !== 'unknown' ? badge(a.health) : ''),
    usage ? usageCell(a.state === 'running' ? usage[a.id] : null) : null,
    h('td', { class: 'num' }, a.restarts),
    h('td', { class: 'mono' }, a.ip || ''),
    h('td', { class: 'muted' }, [a.desired_reason, a.reason].filter(Boolean).join('; '))));
}

async function jobPage(p, name) {
  const head = h('section', { class: 'wide', id: 'job' }, h('h1', null, name));
  const rollout = h('section', { id: 'rollout' }, h('h2', null, 'Rollout'));
  const allocs = h('section', { id: 'allocations' }, h('h2', null, 'Allocations'));
  const versions = h('section', { id: 'versions' }, h('h2', null, 'Versions'));
  const list = h('ul', { class: 'feed', id: 'feed' });
  const events = h('section', { id: 'events' }, h('h2', null, 'Events'), list);
  replace(view(), head, h('div', { class: 'col' }, rollout, allocs, versions), events);

  const usage = usageOf(p, '/v1/job/' + encodeURIComponent(name) + '/usage');

  const load = async () => {
    const j = await getJSON('/v1/job/' + encodeURIComponent(name), p.signal);
    if (p.signal.aborted) return;
    const samples = sample(j);
    replace(head, h('h1', null, j.name, ' ', badge(j.status)),
      h('dl', null,
        h('dt', null, 'Type'), h('dd', null, j.type),
        h('dt', null, 'Version'), h('dd', null, 'v' + j.version, j.stable_version ? ` (stable v${j.stable_version})` : ''),
        h('dt', null, 'Replicas'), h('dd', null, j.batch ? `${j.batch.succeeded}/${j.batch.completions} succeeded, ${j.batch.failed} failed` : `${j.running} running of ${j.desired}`),
        h('dt', null, 'Image'), h('dd', { class: 'mono' }, j.spec && j.spec.image),
        h('dt', null, 'Submitted'), h('dd', null, ago(j.submitted_at_ms)),
        j.pending_reason ? [h('dt', null, 'Pending'), h('dd', { class: 'error' }, j.pending_reason)] : null));
    const r = j.rollout;
    replace(rollout, h('h2', null, 'Rollout'),
      r ? [h('p', null, badge(r.state), ` ${r.kind} to v${r.version}: ${r.updated} updated, ${r.healthy} healthy of ${r.desired}, ${r.old} old`,
        r.finished_at_ms ? ` · ended ${ago(r.finished_at_ms)}` : ` · started ${ago(r.started_at_ms)}`),
      h('div', { class: 'progress' }, h('span', { style: `width:${r.desired ? (100 * r.healthy) / r.desired : 0}%` })),
      r.reason ? h('p', { class: 'muted' }, r.reason) : null] : h('p', { class: 'muted' }, 'No rollout yet.'),
      chart(samples));
    replace(allocs, h('h2', null, 'Allocations'),
      table(['Allocation', 'Node', 'Version', 'State', 'Health', 'Usage', 'Restarts', 'IP', 'Reason'], allocRows(j.allocations, false, usage), 'No allocations.'));
    replace(versions, h('h2', null, 'Versions'), table(['Version', 'Submitted', 'Image', 'Outcome', 'Changes'],
      [...j.versions].reverse().map((v) => h('tr', null,
        h('td', null, 'v' + v.version), h('td', null, ago(v.submitted_at_ms)), h('td', { class: 'mono' }, v.image),
        h('td', null, v.outcome ? badge(v.outcome) : ''), h('td', { class: 'muted' }, (v.changes || []).join(', '))))));
  };
  return live(p, load, '/v1/events?recent=200&job=' + encodeURIComponent(name), 1000, (e) => feed(list, e, 100));
}

async function allocPage(p, id) {
  const head = h('section', { class: 'wide', id: 'alloc' }, h('h1', null, id));
  const logs = h('pre', { class: 'logs', id: 'logs' });
  const status = h('p', { class: 'muted' }, 'Reading logs…');
  replace(view(), head, h('section', { class: 'wide' }, h('h2', null, 'Logs'), status, logs));
  const load = async () => {
    const a = await getJSON('/v1/allocation/' + encodeURIComponent(id), p.signal);
    if (p.signal.aborted) return;
    replace(head, h('h1', null, a.name, ' ', badge(a.state)),
      h('dl', null,
        h('dt', null, 'Job'), h('dd', null, jobLink(a.job), ` v${a.version}`),
        h('dt', null, 'Node'), h('dd', null, nodeLink(a.node)),
        h('dt', null, 'Id'), h('dd', { class: 'mono' }, a.id),
        h('dt', null, 'Health'), h('dd', null, a.health, a.health_detail ? ` (${a.health_detail})` : ''),
        h('dt', null, 'Restarts'), h('dd', null, a.restarts),
        a.ip ? [h('dt', null, 'IP'), h('dd', { class: 'mono' }, a.ip)] : null,
        a.exit_code !== undefined ? [h('dt', null, 'Exit code'), h('dd', null, a.exit_code)] : null,
        h('dt', null, 'Reason'), h('dd', null, [a.desired_reason, a.reason].filter(Boolean).join('; ') || '—'),
        h('dt', null, 'Created'), h('dd', null, ago(a.created_at_ms))));
  };
  await load();
  follow('/v1/allocation/' + encodeURIComponent(id) + '/logs?tail=500', (type, d) => {
    if (type === 'log') {
      const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      for (const l of d.lines) {
        logs.append(l.stream === 'stderr' ? h('span', { class: 'stderr', title: 'stderr' }, l.text) : l.text);
      }
      if (atEnd) logs.scrollTop = logs.scrollHeight;
      status.textContent = 'Following the output.';
    } else if (type === 'end') {
      status.textContent = 'The output ended.';
      return true;
    } else if (type === 'error') {
      status.textContent = 'Logs: ' + d.error;
      status.className = 'error';
      return true;
    }
    return false;
  }, p.signal, false);
  if (!p.signal.aborted) p.every(2000, () => load().catch(failed));
}

async function nodePage(p, name) {
  const head = h('section', { class: 'wide', id: 'node' }, h('h1', null, name));
  const allocs = h('section', { class: 'wide', id: 'allocations' }, h('h2', null, 'Allocations'));
  replace(view(), head, allocs);
  const usage = usageOf(p, '/v1/node/' + encodeURIComponent(name) + '/usage');
  const load = async () => {
    const n = await getJSON('/v1/node/' + encodeURIComponent(name), p.signal);
    const used = Object.values(usage);
    const inUse = used.length
      ? `${cpu(used.reduce((t, u) => t + u.cpu_millis, 0))} and ${bytes(used.reduce((t, u) => t + u.memory_bytes, 0))} used now by ${used.length} replicas`
      : '—';
    if (p.signal.aborted) return;
    const pairs = (o) => Object.entries(o || {}).map(([k, v]) => `${k}=${v}`).join(', ') || '—';
    replace(head, h('h1', null, n.name, ' ', badge(n.status), n.draining ? [' ', badge('draining')] : !n.schedulable ? [' ', badge('cordoned')] : ''),
      h('dl', null,
        h('dt', null, 'Address'), h('dd', { class: 'mono' }, n.address),
        h('dt', null, 'CPU'), h('dd', null, bar(n.cpu_allocated_millis, n.cpu_millis, `${cpu(n.cpu_allocated_millis)} of ${cpu(n.cpu_millis)} reserved`)),
        h('dt', null, 'Memory'), h('dd', null, bar(n.memory_allocated_bytes, n.memory_bytes, `${bytes(n.memory_allocated_bytes)} of ${bytes(n.memory_bytes)} reserved`)),
        h('dt', null, 'In use'), h('dd', { id: 'in-use' }, inUse),
        h('dt', null, 'Subnet'), h('dd', { class: 'mono' }, n.subnet || '—'),
        n.network_error ? [h('dt', null, 'Network'), h('dd', { class: 'error' }, n.network_error)] : null,
        h('dt', null, 'Labels'), h('dd', null, pairs(n.labels)),
        h('dt', null, 'Facts'), h('dd', { class: 'muted' }, pairs(n.facts)),
        h('dt', null, 'Registered'), h('dd', null, ago(n.registered_at_ms))));
    replace(allocs, h('h2', null, 'Allocations'),
      table(['Allocation', 'Job', 'Version', 'State', 'Health', 'Usage', 'Restarts', 'IP', 'Reason'], allocRows(n.allocation_list, true, usage), 'Nothing runs here.'));
  };
  return live(p, load, '/v1/events?topic=alloc,node', 3000);
}

document.getElementById('logout').addEventListener('click', () => {
  localStorage.removeItem(TOKEN);
  showLogout();
  route();
});
window.addEventListener('hashchange', route);
// A page out of sight holds no stream: a browser opens at most six
// connections to one HTTP/1.1 server, and tabs in the background (or pages
// kept in the back-forward cache) would otherwise hold them all.
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) return route();
  if (page) page.abort();
  page = null;
});
window.addEventListener('pagehide', () => { if (page) page.abort(); page = null; });
window.addEventListener('pageshow', (e) => { if (e.persisted) route(); });
showLogout();
route();
