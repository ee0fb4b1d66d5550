// A hub's history on the memory bus (a bounded ring) and its REST page.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HISTORY_PAGE_BYTES, MEMORY_HISTORY_MAX_MESSAGES, MemoryHistory, historyPageJson } from '../../src/pubsub/history.ts';
import type { DataMessage } from '../../src/pubsub/downstream.ts';
import { startPubSubRelay, HUB, HUB_KEY, PLAIN, RawPubSubClient, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { tcp } from '../helpers/raw-socket.ts';
import { until } from '../helpers/wait.ts';
import { httpRequest } from '../helpers/http.ts';
import { signJwt } from '../../src/auth/jwt.ts';
import { gc } from '../helpers/gc.ts';

const text = (s: string): DataMessage => ({ from: 'group', group: 'g', fromUserId: 'u', dataType: 'text', dataJson: JSON.stringify(s) });

describe('history on the memory bus', () => {
  it('reads a group after a sequence, exclusive, oldest first, within the limit', async () => {
    const history = new MemoryHistory({ maxMessages: 100 });
    for (let i = 1; i <= 10; i++) history.append(i % 2 ? 'odd' : 'even', text(String(i)), 1000 + i);
    const first = await history.read('odd', 0, 3);
    assert.deepEqual(first.messages.map((m) => [m.sequence, JSON.parse(m.dataJson)]), [[1, '1'], [3, '3'], [5, '5']]);
    assert.equal(first.next, 5);
    const rest = await history.read('odd', first.next, 3);
    assert.deepEqual(rest.messages.map((m) => m.sequence), [7, 9]);
    const end = await history.read('odd', 9, 3);
    assert.deepEqual(end, { messages: [], next: 9, historyId: first.historyId, last: 10 });
    // Each history numbers from 1: another one (a restart, a hub made again) has another id, which readers compare.
    assert.match(first.historyId!, /^[A-Za-z0-9_-]{12}$/);
    assert.notEqual((await new MemoryHistory({ maxMessages: 1 }).read('odd', 0, 1)).historyId, first.historyId);
    assert.deepEqual((await history.read('none', 0, 3)).messages, []);
  });

  it('drops the oldest past its message, byte and age bounds, and caps what it may hold', async () => {
    const counted = new MemoryHistory({ maxMessages: 3 });
    for (let i = 1; i <= 5; i++) counted.append('g', text(String(i)), Date.now());
    assert.deepEqual((await counted.read('g', 0, 10)).messages.map((m) => m.sequence), [3, 4, 5]);
    const aged = new MemoryHistory({ maxAgeSeconds: 1 });
    aged.append('g', text('old'), Date.now() - 5000);
    aged.append('g', text('new'), Date.now());
    assert.deepEqual((await aged.read('g', 0, 10)).messages.map((m) => JSON.parse(m.dataJson)), ['new']);
    const sized = new MemoryHistory({ maxBytes: 2048 });
    for (let i = 0; i < 10; i++) sized.append('g', text('x'.repeat(500)), Date.now());
    assert.ok((await sized.read('g', 0, 10)).messages.length <= 4);
    const huge = new MemoryHistory({ maxMessages: 10 * MEMORY_HISTORY_MAX_MESSAGES });
    for (let i = 0; i < MEMORY_HISTORY_MAX_MESSAGES + 10; i++) huge.append('g', text(''), Date.now());
    assert.equal((await huge.read('g', 0, 1)).messages[0].sequence, 11);
  });

  it('lets go of the messages it dropped, not when the ring is next compacted', async () => {
    const heap = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    const history = new MemoryHistory({ maxBytes: 1024 * 1024 });
    const before = heap();
    // 400 messages of 100 KB (each its own string) past a 1 MiB bound: ~10 kept. Before, the 390 dropped
    // stayed in the ring's slots until 1,024 had gone: ~40 MB held.
    for (let i = 0; i < 400; i++) history.append('g', text(`${i} ${'x'.repeat(100_000)}`), Date.now());
    const held = heap() - before;
    assert.ok(held < 8 * 1024 * 1024, `${(held / 1048576).toFixed(1)} MiB held for a 1 MiB history`);
    assert.equal((await history.read('g', 0, 1000)).messages.length, 10);
    // Counted in UTF-8 bytes, as JetStream stores them: three-byte characters fill the bound three times sooner.
    const wide = new MemoryHistory({ maxBytes: 64 * 1024 });
    for (let i = 0; i < 10; i++) wide.append('g', text('\u20ac'.repeat(10_000)), Date.now());
    assert.equal((await wide.read('g', 0, 100)).messages.length, 2);
  });

  it('ends a page after the message that passes its byte bound, and goes on from there', async () => {
    const history = new MemoryHistory({});
    const mib = 'x'.repeat(1024 * 1024);
    for (let i = 1; i <= 20; i++) history.append('big', text(mib), Date.now());
    const perPage = Math.ceil(HISTORY_PAGE_BYTES / JSON.stringify(mib).length);
    const first = await history.read('big', 0, 1000);
    assert.equal(first.messages.length, perPage);
    const second = await history.read('big', first.next, 1000);
    assert.deepEqual(second.messages.map((m) => m.sequence), Array.from({ length: perPage }, (_, i) => first.next + 1 + i));
  });

  it('writes a page around the stored JSON text', () => {
    const json = historyPageJson({ messages: [{ sequence: 4, dataType: 'json', dataJson: '{"a":[1]}', fromUserId: null, at: 0 }], next: 4, last: 9 });
    assert.deepEqual(JSON.parse(json), { messages: [{ sequence: 4, dataType: 'json', data: { a: [1] }, fromUserId: null, time: '1970-01-01T00:00:00.000Z' }], next: 4, last: 9 });
  });

  it('is served by REST for a hub that keeps it, and refused with 404 HistoryUnavailable for one that does not', async (t) => {
    const relay = await startPubSubRelay(t, { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, history: { maxMessages: 10 } }, { name: 'other', accessKey: HUB_KEY }] } });
    await relay.pubsub.hub(HUB)!.send({ kind: 'group', name: 'g' }, text('kept'));
    const get = async (hub: string, query: string) => {
      const path = `/api/hubs/${hub}/groups/g/messages`;
      const res = await fetch(`${relay.url}${path}${query}`, { headers: { authorization: `Bearer ${signJwt({ aud: `${relay.url}${path}` }, HUB_KEY, 60)}` } });
      return { status: res.status, body: (await res.json()) as any };
    };
    const page = await get(HUB, '');
    assert.equal(page.status, 200);
    assert.deepEqual(page.body.messages.map((m: any) => [m.sequence, m.dataType, m.data, m.fromUserId]), [[1, 'text', 'kept', 'u']]);
    assert.equal((await get('other', '')).body.code, 'HistoryUnavailable');
    // Plain decimal digits only (before: Number() took hexadecimal, exponents, blanks and an empty value).
    for (const bad of ['?after=-1', '?after=x', '?limit=0', '?limit=1001', '?after=0x2', '?after=1e1', '?after=', '?after=%201%20', '?limit=0x10', '?limit=1e3', '?limit=', '?after=99999999999999999']) {
      assert.equal((await get(HUB, bad)).status, 400, bad);
    }
    // Where the history ends, whatever the group: a reader past it knows its position is not one of this history's.
    await relay.pubsub.hub(HUB)!.send({ kind: 'group', name: 'elsewhere' }, text('elsewhere'));
    assert.equal(page.body.last, 1);
    assert.deepEqual((await get(HUB, '?after=100')).body, { messages: [], next: 100, historyId: page.body.historyId, last: 2 });
  });
});

describe('a history page its client does not read', () => {
  it('cuts the connection after timeouts.senderStallMs, and a call pipelined behind it waits for it (before: held for good, each pipelined page built at once)', async (t) => {
    const logs = captureLogger('info');
    const relay = await startTestRelay(
      t,
      pubsubOverrides({ timeouts: { senderStallMs: 1000 }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, history: { maxMessages: 100 } }] } }),
      { log: logs.log },
    );
    const rest = (method: string, path: string, body?: string) => {
      const url = `${relay.url}/api/hubs/${HUB}/${path}`;
      const headers: Record<string, string> = { authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 60)}` };
      if (body !== undefined) headers['content-type'] = 'text/plain';
      return { url, headers, send: () => httpRequest(url, { method, headers, body: body === undefined ? undefined : Buffer.from(body) }) };
    };
    // About 10 MiB kept: a page of 8 MiB, more than loopback's socket buffers take from a reader that reads nothing.
    const big = 'x'.repeat(512 * 1024);
    for (let i = 0; i < 20; i++) assert.equal((await rest('POST', 'groups/g/:send', big).send()).status, 202);
    const watcher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    assert.equal((await watcher.request({ type: 'joinGroup', group: 'h' })).success, true);
    const read = rest('GET', 'groups/g/messages?limit=1000');
    const after = rest('POST', 'groups/h/:send', 'after the page');
    const reader = await tcp(t, relay.port);
    reader.pause();
    const head = (method: string, call: { url: string; headers: Record<string, string> }, extra = '') =>
      `${method} ${new URL(call.url).pathname}${new URL(call.url).search} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${call.headers.authorization}\r\n${extra}\r\n`;
    reader.write(head('GET', read) + head('POST', after, 'Content-Type: text/plain\r\nContent-Length: 14\r\n') + 'after the page');
    await until(() => logs.events().includes('pubsub.rest_reader_stalled'), 10000, 'the unread page cut');
    // The send pipelined behind the page was not dispatched before the page went out, and the page never did.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(watcher.dataMessages().length, 0);
    assert.equal((await rest('GET', 'groups/g/messages?limit=1').send()).status, 200, 'still serving');
  });
});
