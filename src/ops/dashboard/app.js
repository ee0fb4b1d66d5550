// The dashboard page (docs/dashboard.md): signs in with a Manage key or
// token kept in memory, reads GET /$relay/stats every second (every edge's
// counters, gathered over the bus by the edge serving this page), turns two
// snapshots of an edge into rates with that edge's own clock, keeps 15
// minutes of cluster-wide samples for the charts, and reads the live trace
// (GET /$relay/trace, Server-Sent Events) while its view is open. Everything
// on screen is built with DOM calls (textContent), never from HTML strings.
import { LineChart, Samples } from './charts.js';
import { byteRate, bytes, clock, compact, count, duration, millis, rate, timeZone } from './format.js';
import { parseSas, sasToken } from './sas.js';

const POLL_MS = 1000;
const TOP = 20;
const TRACE_LINES = 500;
const PAUSE_HOLD = 5000;
const TOKEN_TTL_S = 3600;
const RENEW_BEFORE_S = 300;
/**
 * The longest a token in a #token= link may still be valid: the browser keeps
 * the link, token and all, in its history on disk (replaceState rewrites only
 * the entry on screen), so a Manage token there must expire soon.
 */
const LINK_TOKEN_MAX_S = 900;

const REFUSALS = {
  TokenMissing: 'no token was sent',
  TokenMalformed: 'that is not a Shared Access Signature token',
  SignatureInvalid: 'no rule with that key name signs it so: check the key name and the key',
  TokenExpired: 'the token has expired',
  TokenScopeInvalid: "the token names another host or path than this relay's root or its /$relay",
  RightMissing: 'this key does not have the Manage right',
};

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'title') el.title = shown(String(value));
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(shown(String(child))));
  }
  return el;
}

/** Control and format characters (zero-width, bidi overrides), and line and paragraph separators. */
const UNSEEN = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;

/**
 * Text as the page shows it: characters that draw nothing or reorder what follows are written out
 * (`⟨U+202E⟩`). Group names, user ids and paths come from clients: `room\u200B` looked exactly like `room`,
 * and a user id ending in a right-to-left override drew the rest of its cell backwards (found by review).
 */
function shown(text) {
  return text.replace(UNSEEN, (c) => `⟨U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}⟩`);
}

// --- signing in ------------------------------------------------------------------

// Tokens the page signs name the relay's own endpoints, not its root: the root would also give Listen and Send on
// every entity (Manage implies both), to whoever got hold of one.
const resource = `${location.origin}/$relay`;

/**
 * Why the page takes no key or token here, or undefined. Pages listeners serve come from this origin, and a
 * browser keeps them out of a dashboard they open only in a secure context (https, or localhost): over plain
 * http to another host, a listener's page read the key and tokens (found by review).
 */
function unsafeHere() {
  if (window.isSecureContext) return undefined;
  return (
    'Not signed in: this page is not served over https (nor on localhost), so pages that listeners serve on this ' +
    'host could read a key or token typed here. Open the dashboard over https, or on localhost (through an SSH tunnel).'
  );
}
const auth = { token: undefined, keyName: undefined, key: undefined, expiresAt: 0 };

async function currentToken() {
  if (auth.key !== undefined && auth.expiresAt - Date.now() / 1000 < RENEW_BEFORE_S) {
    auth.token = await sasToken(resource, auth.keyName, auth.key, TOKEN_TTL_S);
    auth.expiresAt = Math.floor(Date.now() / 1000) + TOKEN_TTL_S;
  }
  return auth.token;
}

function forget() {
  auth.token = auth.keyName = auth.key = undefined;
  auth.expiresAt = 0;
}

/** The refusal's words, from the relay's `{code, message}` answer. */
async function refusalOf(res) {
  let code = `HTTP ${res.status}`;
  try {
    code = (await res.json()).code ?? code;
  } catch {
    // not JSON: keep the status
  }
  return { code, words: REFUSALS[code] ?? 'the relay refused it' };
}

function showLogin(error) {
  stopTrace();
  clearTimeout(poller.timer);
  poller.running = false;
  $('login').hidden = false;
  $('tabs').hidden = true;
  $('session').hidden = true;
  for (const view of document.querySelectorAll('.view')) view.hidden = true;
  $('banner').hidden = true;
  const box = $('login-error');
  box.hidden = !error;
  box.textContent = error ?? '';
  // Both: a refused key (a Listen key typed by mistake) stayed in its field after the refusal (found by review).
  $('token').value = '';
  $('key').value = '';
}

async function signIn(event) {
  event?.preventDefault();
  const refusal = unsafeHere();
  if (refusal) return showLogin(refusal);
  const mode = new FormData($('login-form')).get('mode');
  const button = $('sign-in');
  button.disabled = true;
  try {
    if (mode === 'token') {
      const token = $('token').value.trim();
      if (!parseSas(token)) return showLogin('That is not a SAS token: it starts with "SharedAccessSignature sr=".');
      Object.assign(auth, { token, keyName: undefined, key: undefined, expiresAt: parseSas(token).expiresAt });
    } else {
      const keyName = $('key-name').value.trim();
      const key = $('key').value;
      if (!keyName || !key) return showLogin('Enter the key name and the key of a rule with the Manage right.');
      Object.assign(auth, { keyName, key, expiresAt: 0 });
    }
    await start();
  } catch (err) {
    showLogin(`Could not sign in: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

async function start() {
  const res = await fetchStats();
  if (!res) return;
  $('login').hidden = true;
  $('login-error').hidden = true;
  $('key').value = '';
  $('token').value = '';
  $('tabs').hidden = false;
  $('session').hidden = false;
  show(currentView);
  poller.running = true;
  await accept(res);
  schedulePoll();
}

// --- reading the cluster -----------------------------------------------------------

const poller = { timer: undefined, running: false, failingSince: undefined };

/** GET /$relay/stats; undefined (and back to the sign-in form) when the token is refused. */
async function fetchStats() {
  const token = await currentToken();
  const res = await fetch(`/$relay/stats?top=${TOP}`, { headers: { authorization: token }, cache: 'no-store' });
  if (res.status === 401 || res.status === 403) {
    const { code, words } = await refusalOf(res);
    const what = auth.key !== undefined ? 'key' : 'token';
    forget();
    showLogin(`The relay refused the ${what}: ${words} (${code}).`);
    return undefined;
  }
  if (!res.ok) throw new Error(`the relay answered ${res.status}`);
  return res;
}

function schedulePoll() {
  clearTimeout(poller.timer);
  poller.timer = setTimeout(poll, POLL_MS);
}

async function poll() {
  if (!poller.running) return;
  try {
    const res = await fetchStats();
    if (!res) return;
    // Hidden before the snapshot is drawn, which shows it again while only this edge is listed (the bus away).
    // Before, hidden after: that banner never showed, and the page looked like a whole cluster of one edge.
    poller.failingSince = undefined;
    $('banner').hidden = true;
    await accept(res);
  } catch (err) {
    poller.failingSince ??= Date.now();
    banner(`The relay does not answer (${err.message}) since ${clock(poller.failingSince)}; the figures below are from before.`);
  }
  if (poller.running) schedulePoll();
}

function banner(text) {
  $('banner').textContent = text;
  $('banner').hidden = false;
}

/** The previous snapshot of each edge, for rates. */
const previous = new Map();
let latest;

const sum = (list, f) => list.reduce((n, x) => n + (f(x) ?? 0), 0);

async function accept(res) {
  const snapshot = await res.json();
  const nodes = snapshot.nodes.map((cur) => {
    const prev = previous.get(cur.nodeId);
    // Seconds between two snapshots of the same run of this edge, by its own clock; 0 when there is no such pair.
    const dt = prev && prev.startedAt === cur.startedAt && cur.at > prev.at ? (cur.at - prev.at) / 1000 : 0;
    const per = (now, before) => (dt > 0 && before !== undefined ? Math.max(0, (now - before) / dt) : null);
    const failures = (s) => Object.values(s.hybrid.failures).reduce((a, b) => a + b, 0);
    const entityRates = new Map(
      cur.hybrid.entities.map((e) => {
        const before = prev?.hybrid.entities.find((p) => p.name === e.name);
        return [e.name, { requests: per(e.requests, before?.requests), connects: per(e.connects, before?.connects), bytes: per(e.bytes, before?.bytes) }];
      }),
    );
    const hubRates = new Map(
      cur.hubs.map((hub) => {
        const before = prev?.hubs.find((p) => p.name === hub.name);
        return [hub.name, { published: per(hub.published, before?.published), deliveries: per(hub.deliveries, before?.deliveries) }];
      }),
    );
    const published = (s) => sum(s.hubs, (x) => x.published);
    const deliveries = (s) => sum(s.hubs, (x) => x.deliveries);
    return {
      ...cur,
      rates: {
        requests: per(cur.hybrid.requests, prev?.hybrid.requests),
        connects: per(cur.hybrid.connects, prev?.hybrid.connects),
        bytes: per(cur.hybrid.bytes, prev?.hybrid.bytes),
        failures: per(failures(cur), prev && failures(prev)),
        published: per(published(cur), prev && published(prev)),
        deliveries: per(deliveries(cur), prev && deliveries(prev)),
        failureReasons: new Map(Object.entries(cur.hybrid.failures).map(([reason, n]) => [reason, per(n, prev ? prev.hybrid.failures[reason] ?? 0 : undefined)])),
      },
      entityRates,
      hubRates,
    };
  });
  // Only edges in this snapshot are kept: node ids change with every restart (hostname-pid by default), and a page
  // left open through rolling restarts kept each departed edge's last snapshot (found by review). An edge silent for
  // a moment shows no rates at its first snapshot back.
  const answered = new Set(snapshot.nodes.map((node) => node.nodeId));
  for (const nodeId of previous.keys()) if (!answered.has(nodeId)) previous.delete(nodeId);
  for (const node of snapshot.nodes) previous.set(node.nodeId, node);
  latest = { ...snapshot, nodes };
  record(latest);
  render();
}

// --- the charts ----------------------------------------------------------------------

const COLORS = ['#1f6feb', '#2da44e', '#bf8700', '#cf222e'];
const samples = {
  connections: new Samples(['Listeners', 'Relayed WebSockets', 'Pub/sub clients', 'HTTP in flight']),
  events: new Samples(['Published (in)', 'Delivered (out)']),
  requests: new Samples(['HTTP requests', 'WebSocket connects', 'Failures']),
  bytes: new Samples(['Relayed bytes']),
};
const countFormat = (v) => compact(v);
const charts = {
  connections: new LineChart($('chart-connections'), $('legend-connections'), { samples: samples.connections, colors: COLORS, format: countFormat }),
  events: new LineChart($('chart-events'), $('legend-events'), { samples: samples.events, colors: COLORS, format: rate }),
  requests: new LineChart($('chart-requests'), $('legend-requests'), { samples: samples.requests, colors: [COLORS[0], COLORS[1], COLORS[3]], format: rate }),
  bytes: new LineChart($('chart-bytes'), $('legend-bytes'), { samples: samples.bytes, colors: [COLORS[0]], format: byteRate, binary: true }),
};

/** Sum of a rate over the edges that have one; null when none has (first snapshot). */
function clusterRate(nodes, key) {
  const known = nodes.filter((n) => n.rates[key] !== null);
  return known.length === 0 ? null : sum(known, (n) => n.rates[key]);
}

function record(snapshot) {
  const now = Date.now();
  const nodes = snapshot.nodes;
  const c = (kind) => sum(nodes, (n) => n.connections[kind]);
  samples.connections.push(now, [c('listener'), c('relayed_websocket'), c('pubsub'), c('http_request')]);
  samples.events.push(now, [clusterRate(nodes, 'published'), clusterRate(nodes, 'deliveries')]);
  samples.requests.push(now, [clusterRate(nodes, 'requests'), clusterRate(nodes, 'connects'), clusterRate(nodes, 'failures')]);
  samples.bytes.push(now, [clusterRate(nodes, 'bytes')]);
}

// --- views ---------------------------------------------------------------------------

let currentView = 'overview';

function show(view) {
  currentView = view;
  for (const tab of document.querySelectorAll('#tabs [role=tab]')) {
    const selected = tab.dataset.view === view;
    tab.setAttribute('aria-selected', String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${view}`;
  if (view === 'trace') startTrace();
  else stopTrace();
  render();
}

function render() {
  if (!latest || !$('login').hidden) return;
  $('updated').textContent = `Updated ${clock(Date.now())}`;
  $('brand-sub').textContent = `${latest.nodes.length} of ${latest.nodes.length + latest.silent.length} edges answering`;
  if (!latest.complete) banner(`Only this edge is listed: ${latest.problem}.`);
  if (currentView === 'overview') renderOverview();
  if (currentView === 'hybrid') renderHybrid();
  if (currentView === 'hubs') renderHubs();
}

function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren(...(rows.length > 0 ? rows : [h('tr', { class: 'empty' }, h('td', { colspan: columns }, empty))]));
}

const num = (text, extra = {}) => h('td', { class: 'num', ...extra }, text);
const rateCell = (v) => num(v === null || v === undefined ? '–' : rate(v));

function renderOverview() {
  const nodes = latest.nodes;
  const c = (kind) => sum(nodes, (n) => n.connections[kind]);
  const tiles = [
    ['Edges', `${nodes.length}`, latest.silent.length > 0 ? `${latest.silent.length} not answering` : 'all answering', latest.silent.length > 0 ? 'warn' : 'ok'],
    ['Listeners', count(c('listener')), `${count(c('relayed_websocket'))} relayed WebSockets`],
    ['Pub/sub clients', count(c('pubsub')), `${count(sum(nodes, (n) => sum(n.hubs, (x) => x.retained)))} sessions retained`],
    ['Events', rate(clusterRate(nodes, 'published') ?? 0), `${rate(clusterRate(nodes, 'deliveries') ?? 0)} delivered`],
    ['HTTP requests', rate(clusterRate(nodes, 'requests') ?? 0), `${rate(clusterRate(nodes, 'connects') ?? 0)} WebSocket connects`],
    ['Relayed', byteRate(clusterRate(nodes, 'bytes') ?? 0), `${bytes(sum(nodes, (n) => n.hybrid.bytes))} since start`],
  ];
  $('tiles').replaceChildren(
    ...tiles.map(([label, value, sub, tone]) =>
      h('div', { class: `tile${tone ? ` ${tone}` : ''}`, 'data-tile': label }, h('div', { class: 'tile-label' }, label), h('div', { class: 'tile-value' }, value), h('div', { class: 'tile-sub' }, sub)),
    ),
  );
  const now = Date.now();
  for (const chart of Object.values(charts)) chart.draw(now);
  const rows = nodes.map((n) => {
    const state = n.shuttingDown ? ['draining', 'warn'] : !n.bus.connected ? ['bus down', 'bad'] : ['up', 'ok'];
    const uptime = (n.at - Date.parse(n.startedAt)) / 1000;
    return h(
      'tr',
      { 'data-node': n.nodeId },
      h('th', { scope: 'row' }, n.nodeId, n.nodeId === latest.node ? h('span', { class: 'tag' }, 'this page') : null, h('div', { class: 'url' }, n.publicUrl)),
      h('td', {}, h('span', { class: `badge ${state[1]}` }, state[0])),
      h('td', { title: `since ${new Date(n.startedAt).toLocaleString()}` }, duration(uptime)),
      h('td', {}, `${n.bus.kind}${n.bus.kind === 'nats' ? (n.bus.connected ? ' · connected' : ' · disconnected') : ''}`),
      num(count(n.connections.listener), { class: 'num listeners' }),
      num(count(n.connections.relayed_websocket)),
      num(count(n.connections.pubsub), { class: 'num pubsub' }),
      num(count(n.connections.http_request)),
      rateCell(n.rates.requests),
      rateCell(n.rates.deliveries),
      num(bytes(n.rss)),
    );
  });
  for (const s of latest.silent) {
    rows.push(
      h(
        'tr',
        { 'data-node': s.nodeId, class: 'silent' },
        h('th', { scope: 'row' }, s.nodeId, h('div', { class: 'url' }, s.publicUrl)),
        h('td', {}, h('span', { class: 'badge bad' }, 'not answering')),
        h('td', { colspan: 9, class: 'muted' }, `last answered at ${clock(s.lastSeen)} (${duration((now - s.lastSeen) / 1000)} ago)`),
      ),
    );
  }
  fill($('edges').tBodies[0], rows, 'No edge answered.', 11);
}

function renderHybrid() {
  const byName = new Map();
  let listed = 0;
  let total = 0;
  for (const n of latest.nodes) {
    listed += n.hybrid.entities.length;
    total += n.hybrid.entityCount;
    for (const e of n.hybrid.entities) {
      const key = e.name.toLowerCase();
      const row = byName.get(key) ?? { name: e.name, listeners: 0, perEdge: [], senders: 0, requests: null, connects: null, bytes: null, failures: 0 };
      row.listeners += e.listeners;
      if (e.listeners > 0) row.perEdge.push([n.nodeId, e.listeners]);
      row.senders += e.senders;
      row.failures += e.failures;
      const r = n.entityRates.get(e.name);
      for (const k of ['requests', 'connects', 'bytes']) if (r?.[k] !== null && r?.[k] !== undefined) row[k] = (row[k] ?? 0) + r[k];
      byName.set(key, row);
    }
  }
  $('hybrid-note').textContent =
    total > listed
      ? `The ${TOP} busiest hybrid connections of each edge (${count(total)} in all). Rates are per second over the last second.`
      : 'Every hybrid connection with a listener or traffic since the edges started. Rates are per second over the last second.';
  const rows = [...byName.values()]
    .sort((a, b) => b.listeners + b.senders - (a.listeners + a.senders) || a.name.localeCompare(b.name))
    .map((e) =>
      h(
        'tr',
        { 'data-entity': e.name },
        h('th', { scope: 'row' }, e.name),
        num(count(e.listeners), { class: 'num listeners' }),
        h('td', {}, e.perEdge.length === 0 ? h('span', { class: 'muted' }, 'none') : e.perEdge.map(([node, n]) => h('span', { class: 'chip' }, `${node} × ${n}`))),
        num(count(e.senders)),
        rateCell(e.requests),
        rateCell(e.connects),
        num(e.bytes === null ? '–' : byteRate(e.bytes)),
        num(count(e.failures), { class: e.failures > 0 ? 'num bad-text' : 'num' }),
      ),
    );
  fill($('entities').tBodies[0], rows, 'No hybrid connection has a listener or traffic yet.', 8);

  const reasons = new Map();
  for (const n of latest.nodes) {
    for (const [reason, total] of Object.entries(n.hybrid.failures)) {
      const row = reasons.get(reason) ?? { total: 0, rate: null, nodes: [] };
      row.total += total;
      const r = n.rates.failureReasons.get(reason);
      if (r !== null && r !== undefined) row.rate = (row.rate ?? 0) + r;
      row.nodes.push(n.nodeId);
      reasons.set(reason, row);
    }
  }
  const failureRows = [...reasons.entries()]
    .sort((a, b) => b[1].total - a[1].total)
    .map(([reason, r]) => h('tr', { 'data-reason': reason }, h('th', { scope: 'row' }, h('code', {}, reason)), num(count(r.total)), rateCell(r.rate), h('td', {}, r.nodes.join(', '))));
  fill($('failures').tBodies[0], failureRows, 'No connect or request has failed.', 4);
}

function renderHubs() {
  const hubs = new Map();
  const groups = new Map();
  for (const n of latest.nodes) {
    for (const hub of n.hubs) {
      const row = hubs.get(hub.name) ?? { name: hub.name, plain: 0, reliable: 0, retained: 0, groups: 0, published: null, deliveries: null, slow: 0 };
      row.plain += hub.plain;
      row.reliable += hub.reliable;
      row.retained += hub.retained;
      row.groups = Math.max(row.groups, hub.groups);
      row.slow += hub.slowConsumerCloses;
      const r = n.hubRates.get(hub.name);
      for (const k of ['published', 'deliveries']) if (r?.[k] !== null && r?.[k] !== undefined) row[k] = (row[k] ?? 0) + r[k];
      hubs.set(hub.name, row);
      for (const g of hub.topGroups) {
        const key = `${hub.name}\u0000${g.name}`;
        const gr = groups.get(key) ?? { hub: hub.name, name: g.name, members: 0, nodes: [] };
        gr.members += g.members;
        gr.nodes.push(n.nodeId);
        groups.set(key, gr);
      }
    }
  }
  const rows = [...hubs.values()].map((hub) =>
    h(
      'tr',
      { 'data-hub': hub.name },
      h('th', { scope: 'row' }, hub.name),
      num(count(hub.plain + hub.reliable), { class: 'num connections' }),
      num(count(hub.plain)),
      num(count(hub.reliable)),
      num(count(hub.retained)),
      num(count(hub.groups), { title: 'groups on the edge with the most' }),
      rateCell(hub.published),
      rateCell(hub.deliveries),
      num(count(hub.slow), { class: hub.slow > 0 ? 'num bad-text' : 'num' }),
    ),
  );
  fill($('hubs').tBodies[0], rows, 'No hub is configured.', 9);
  const groupRows = [...groups.values()]
    .sort((a, b) => b.members - a.members || a.name.localeCompare(b.name))
    .slice(0, 50)
    .map((g) => h('tr', { 'data-group': g.name }, h('td', {}, g.hub), h('th', { scope: 'row' }, g.name), num(count(g.members)), h('td', {}, g.nodes.join(', '))));
  fill($('groups').tBodies[0], groupRows, 'No group has members.', 4);
}

// --- the live trace ------------------------------------------------------------------

const trace = { controller: undefined, paused: false, held: [], missed: 0, edges: undefined, retry: undefined, filter: {} };

const KINDS = {
  'listener.connected': ['listener connected', 'ok'],
  'listener.disconnected': ['listener disconnected', 'neutral'],
  'listener.refused': ['listener refused', 'bad'],
  'connect.accepted': ['connect accepted', 'ok'],
  'connect.rejected': ['connect rejected', 'warn'],
  'connect.timeout': ['connect timed out', 'bad'],
  'connect.failed': ['connect failed', 'bad'],
  'connect.closed': ['relayed WebSocket closed', 'neutral'],
  'http.request': ['HTTP request', 'ok'],
  'pubsub.connected': ['client connected', 'ok'],
  'pubsub.refused': ['client refused', 'bad'],
  'pubsub.detached': ['client dropped (session kept)', 'warn'],
  'pubsub.recovered': ['session recovered', 'ok'],
  'pubsub.disconnected': ['client disconnected', 'neutral'],
  'pubsub.join': ['join group', 'info'],
  'pubsub.leave': ['leave group', 'info'],
  'pubsub.publish': ['publish', 'info'],
  'pubsub.rest': ['REST call', 'info'],
  'handler.failed': ['event handler failed', 'bad'],
  'limit.refused': ['limit reached', 'bad'],
};

function stopTrace() {
  clearTimeout(trace.retry);
  trace.controller?.abort();
  trace.controller = undefined;
}

async function startTrace() {
  stopTrace();
  if (!auth.token && auth.key === undefined) return;
  const controller = new AbortController();
  trace.controller = controller;
  const query = new URLSearchParams(Object.entries(trace.filter).filter(([, v]) => v));
  traceStatus('Connecting…');
  try {
    const token = await currentToken();
    const res = await fetch(`/$relay/trace${query.size > 0 ? `?${query}` : ''}`, { headers: { authorization: token }, signal: controller.signal, cache: 'no-store' });
    if (res.status === 401 || res.status === 403) {
      const { code, words } = await refusalOf(res);
      forget();
      return showLogin(`The relay refused the token for the live trace: ${words} (${code}).`);
    }
    if (!res.ok) {
      const { code } = await refusalOf(res);
      throw new Error(code === 'TooManyTraceViewers' ? 'this edge has as many trace viewers as it allows' : `the relay answered ${res.status} ${code}`);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        onTraceBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
    throw new Error('the stream ended');
  } catch (err) {
    if (controller.signal.aborted) return;
    traceStatus(`Disconnected (${err.message}); trying again in 3 s.`, 'bad');
    trace.retry = setTimeout(() => {
      if (trace.controller === controller && currentView === 'trace') startTrace();
    }, 3000);
  }
}

function onTraceBlock(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
  }
  if (data.length === 0) return;
  const payload = JSON.parse(data.join('\n'));
  if (event === 'hello') {
    trace.edges = payload.cluster ? 'every edge' : 'this edge';
    traceStatus(`Streaming from ${trace.edges}, through ${payload.node}.`);
  } else if (event === 'dropped') {
    trace.missed = payload.missed;
    traceStatus();
  } else if (event === 'message') {
    if (trace.paused) {
      trace.held.push(payload);
      if (trace.held.length > PAUSE_HOLD) trace.held.shift();
      traceStatus();
    } else {
      addTraceLines([payload]);
    }
  }
}

function traceStatus(text, tone) {
  if (text !== undefined) trace.statusText = text;
  const parts = [trace.statusText];
  if (trace.paused) parts.push(`Paused: ${count(trace.held.length)} new events held${trace.held.length >= PAUSE_HOLD ? ' (the oldest dropped)' : ''}.`);
  if (trace.missed > 0) parts.push(`${count(trace.missed)} events dropped (over an edge's rate cap, or not read in time).`);
  const el = $('trace-status');
  el.textContent = parts.filter(Boolean).join(' ');
  el.className = `trace-status${tone ? ` ${tone}` : ''}`;
}

function where(e) {
  if (e.entity) return h('span', {}, h('span', { class: 'muted' }, 'hc '), e.entity);
  if (e.hub) return h('span', {}, h('span', { class: 'muted' }, 'hub '), e.hub, e.group ? h('span', {}, h('span', { class: 'muted' }, ' · group '), e.group) : null);
  return h('span', { class: 'muted' }, '–');
}

function details(e) {
  const parts = [];
  if (e.method || e.path) parts.push(h('span', { class: 'mono' }, `${e.method ?? ''} ${e.path ?? ''}`.trim()));
  if (e.status !== undefined) parts.push(h('span', { class: `status s${String(e.status)[0]}` }, String(e.status)));
  if (e.code !== undefined && e.code !== 'success') parts.push(h('code', { class: 'code' }, e.code));
  if (e.code === 'success') parts.push(h('span', { class: 'status s2' }, 'ack ok'));
  if (e.ms !== undefined) parts.push(h('span', {}, millis(e.ms)));
  if (e.bytes !== undefined) parts.push(h('span', {}, bytes(e.bytes)));
  if (e.userId) parts.push(h('span', {}, h('span', { class: 'muted' }, 'user '), e.userId));
  if (e.connectionId) parts.push(h('span', { class: 'mono', title: e.connectionId }, h('span', { class: 'muted' }, 'conn '), e.connectionId.length > 12 ? `${e.connectionId.slice(0, 10)}…` : e.connectionId));
  if (e.detail) parts.push(h('span', { class: 'muted' }, e.detail));
  return parts.flatMap((p, i) => (i === 0 ? [p] : [h('span', { class: 'sep' }, ' · '), p]));
}

function addTraceLines(events) {
  const body = $('trace').tBodies[0];
  body.querySelector('tr.empty')?.remove();
  const rows = events.map((e) => {
    const [label, tone0] = KINDS[e.kind] ?? [e.kind, 'neutral'];
    const tone = e.kind === 'http.request' || e.kind === 'pubsub.rest' ? (e.status >= 500 || e.code ? 'bad' : e.status >= 400 ? 'warn' : tone0) : e.code && e.code !== 'success' && tone0 === 'info' ? 'bad' : tone0;
    return h(
      'tr',
      { 'data-kind': e.kind },
      h('td', { class: 'time' }, h('time', { datetime: new Date(e.at).toISOString() }, clock(e.at, true))),
      h('td', {}, e.node),
      h('td', {}, h('span', { class: `badge ${tone}` }, label)),
      h('td', {}, where(e)),
      h('td', { class: 'details' }, details(e)),
    );
  });
  body.prepend(...rows.reverse());
  while (body.rows.length > TRACE_LINES) body.lastElementChild.remove();
}

function clearTraceLines() {
  fill($('trace').tBodies[0], [], 'Waiting for events… Connect a listener, send a request or publish to see them here.', 5);
}

// --- wiring --------------------------------------------------------------------------

/**
 * The token after #token=: best URL-encoded whole (encodeURIComponent), as
 * `&` inside a token would otherwise end it; a token with only its space
 * encoded (as a browser writes a pasted one) is taken as it is.
 */
function tokenInFragment(hash) {
  const raw = hash.replace(/^#/, '');
  if (!raw.startsWith('token=')) return undefined;
  const value = raw.slice('token='.length);
  try {
    if (/^SharedAccessSignature%20sr%3D/i.test(value)) return decodeURIComponent(value);
  } catch {
    return undefined;
  }
  return value.replace(/^SharedAccessSignature(%20|\+)/, 'SharedAccessSignature ');
}

function init() {
  $('resource').textContent = resource;
  $('footer').textContent = `Times are in ${timeZone()}. Figures refresh every second from /$relay/stats; charts keep the last 15 minutes while this page is open.`;
  $('login-form').addEventListener('submit', signIn);
  for (const radio of document.querySelectorAll('input[name=mode]')) {
    radio.addEventListener('change', () => {
      const token = radio.value === 'token' && radio.checked;
      $('token-fields').hidden = !token;
      $('key-fields').hidden = token;
    });
  }
  $('sign-out').addEventListener('click', () => {
    forget();
    showLogin();
  });
  const tabs = [...document.querySelectorAll('#tabs [role=tab]')];
  for (const tab of tabs) {
    tab.addEventListener('click', () => show(tab.dataset.view));
    tab.addEventListener('keydown', (e) => {
      const i = tabs.indexOf(tab);
      const next = e.key === 'ArrowRight' ? tabs[(i + 1) % tabs.length] : e.key === 'ArrowLeft' ? tabs[(i + tabs.length - 1) % tabs.length] : undefined;
      if (next) {
        next.focus();
        show(next.dataset.view);
      }
    });
  }
  $('trace-filters').addEventListener('submit', (e) => {
    e.preventDefault();
    trace.filter = Object.fromEntries([...new FormData(e.target).entries()].map(([k, v]) => [k, String(v).trim()]));
    clearTraceLines();
    startTrace();
  });
  $('trace-reset').addEventListener('click', () => {
    $('trace-filters').reset();
    trace.filter = {};
    clearTraceLines();
    startTrace();
  });
  $('trace-pause').addEventListener('click', () => {
    trace.paused = !trace.paused;
    $('trace-pause').textContent = trace.paused ? 'Resume' : 'Pause';
    $('trace-pause').setAttribute('aria-pressed', String(trace.paused));
    if (!trace.paused) {
      addTraceLines(trace.held.slice(-TRACE_LINES));
      trace.held = [];
    }
    traceStatus();
  });
  $('trace-clear').addEventListener('click', clearTraceLines);
  clearTraceLines();
  window.addEventListener('resize', () => render());

  // A token after #token= signs in at once and leaves the address bar (the browser's history keeps
  // the link: one valid for longer than LINK_TOKEN_MAX_S is refused, with the reason).
  const token = tokenInFragment(location.hash);
  if (token) {
    history.replaceState(null, '', location.pathname + location.search);
    document.querySelector('input[name=mode][value=token]').click();
    const parsed = parseSas(token);
    if (parsed && parsed.expiresAt - Date.now() / 1000 > LINK_TOKEN_MAX_S) {
      showLogin(
        `Not signed in: a token in a link stays in this browser's history, so it must expire within ${LINK_TOKEN_MAX_S / 60} minutes ` +
          `(edge-relay token sas ... --ttl ${LINK_TOKEN_MAX_S} or less). Paste a longer-lived token instead.`,
      );
      $('token').focus();
    } else {
      $('token').value = token;
      void signIn();
    }
  } else {
    showLogin(unsafeHere());
    $('key').focus();
  }
}

init();
