// The catalog of messages between edges: every op has a schema definition, a
// well-formed example of each decodes to itself, and what does not match its
// definition is dropped.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EDGE_OPS, decodeEdgeMessage, encodeEdgeMessage, type EdgeMessage, type EdgeOp } from '../../src/bus/messages.ts';

const ID = '0c9f5a38-6a35-4b8e-9b0e-5f4c1b7d2a10';
const PERMS = { any: false, exact: ['g'], patterns: ['a.*'] };

/** One valid example per op, typed by the union: the compiler checks the shapes, the schema the wire. */
const EXAMPLES: { [Op in EdgeOp]: Extract<EdgeMessage, { op: Op }> } = {
  'hc.accept': { op: 'hc.accept', entity: 'e', accept: { address: 'ws://x/$hc/e', id: ID, connectHeaders: { a: 'b' }, remoteEndpoint: { address: '127.0.0.1', port: 1 } } },
  'hc.request': { op: 'hc.request', entity: 'e', node: 'n1', request: { address: 'ws://x', id: ID, requestTarget: '/e/x', method: 'GET', body: false } },
  'hc.routed': { op: 'hc.routed', ok: false, code: 'NoListener' },
  'hc.response': { op: 'hc.response', id: ID, response: { requestId: ID, statusCode: 200, body: true } },
  'hc.failed': { op: 'hc.failed', id: ID, code: 'ListenerGone' },
  'hc.done': { op: 'hc.done', id: ID },
  'hc.alive': { op: 'hc.alive', ids: [ID], gone: [ID] },
  'ps.send': { op: 'ps.send', origin: 'n1', hub: 'chat', mid: 'n1.ab:1', at: 1, target: { kind: 'group', name: 'g' }, message: { from: 'group', group: 'g', fromUserId: null, dataType: 'json' } },
  'ps.close': { op: 'ps.close', origin: 'n1', hub: 'chat', target: { kind: 'all' }, excluded: ['c1'], reason: 'bye' },
  'ps.groups': { op: 'ps.groups', origin: 'n1', hub: 'chat', target: { kind: 'all' }, action: 'add', groups: ['g'], terms: [{ field: 'userId', value: 'u' }] },
  'ps.here': { op: 'ps.here', origin: 'n1', hub: 'chat', state: 'hello' },
  'ps.exists': { op: 'ps.exists', origin: 'n1', hub: 'chat', target: { kind: 'user', name: 'u' } },
  'ps.list': { op: 'ps.list', origin: 'n1', hub: 'chat', group: 'g', top: 10, after: 'c1' },
  'ps.permission': { op: 'ps.permission', origin: 'n1', hub: 'chat', connectionId: 'c1', method: 'PUT', permission: 'sendToGroup', group: 'g' },
  'ps.done': { op: 'ps.done', count: 1, members: [{ connectionId: 'c1', userId: 'u' }], edge: 'n2' },
  'ps.handover': { op: 'ps.handover', origin: 'n1', hub: 'chat', connectionId: 'c1', stage: 'page', token: 't', after: 3 },
  'ps.session': { op: 'ps.session', ok: true, userId: null, permissions: { joinLeaveGroup: PERMS, sendToGroup: PERMS }, groups: ['g'], ackIds: [1], firstSeq: 1, lastSeq: 2, seen: { 'n1.ab': 3 }, missingSince: 1796230000000 },
  'ps.entries': { op: 'ps.entries', entries: [{ seq: 1, mid: 'n1.ab:1', length: 3 }] },
  'ps.replay': { op: 'ps.replay', origin: 'n1.ab', since: { 'n2.cd': 4 }, after: 0 },
  'ps.replayed': { op: 'ps.replayed', edge: 'n2', entries: [{ length: 3 }], truncated: false },
  'ps.member': { op: 'ps.member', origin: 'n1', hub: 'chat', target: { kind: 'connection', name: 'c1' }, action: 'add', groups: ['g'] },
  'ps.claim': { op: 'ps.claim', origin: 'n2', hub: 'chat', connectionId: 'c1' },
  'ps.checkpoint': {
    op: 'ps.checkpoint', hub: 'chat', connectionId: 'c1', userId: 'u', protocol: 'json.reliable.webpubsub.azure.v1',
    tokenHash: 'n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg', permissions: { joinLeaveGroup: PERMS, sendToGroup: PERMS },
    owner: 'n1', sequenceId: 7, position: 42, groups: ['g'], at: 1,
  },
  'ops.status': { op: 'ops.status', origin: 'n1' },
  'ops.node': { op: 'ops.node', nodeId: 'n1', startedAt: new Date(0).toISOString(), shuttingDown: false, bus: { kind: 'nats', connected: true }, entities: [{ name: 'e', listeners: 1 }], hubs: [{ name: 'chat', connections: 1, groups: 1, sessionsRetained: 0 }] },
  'ops.stats': { op: 'ops.stats', origin: 'n1', top: 10 },
  'ops.edge': {
    op: 'ops.edge', nodeId: 'n1', publicUrl: 'http://127.0.0.1:1', startedAt: new Date(0).toISOString(), at: 1, shuttingDown: false,
    bus: { kind: 'nats', connected: true }, rss: 1000, connections: { listener: 1, relayed_websocket: 0, http_request: 0, pubsub: 2 },
    hybrid: { requests: 3, connects: 1, bytes: 10, failures: { NoListener: 1 }, entityCount: 1, entities: [{ name: 'e', listeners: 1, senders: 0, requests: 3, connects: 1, failures: 1, bytes: 10 }] },
    hubs: [{ name: 'chat', plain: 1, reliable: 1, retained: 0, groups: 1, topGroups: [{ name: 'g', members: 2 }], published: 4, received: 1, deliveries: 8, slowConsumerCloses: 0 }],
    limitRefusals: 0, traceDropped: 0,
  },
  'ops.trace.watch': { op: 'ops.trace.watch', origin: 'n1', ttlMs: 6000 },
  'ops.trace': {
    op: 'ops.trace', origin: 'n2', dropped: 0,
    events: [{ at: 1, node: 'n2', kind: 'http.request', entity: 'e', method: 'GET', path: '/e/x', status: 200, ms: 1.5, bytes: 3 }],
  },
};

describe('messages between edges', () => {
  it('lists every op once', () => {
    assert.equal(new Set(EDGE_OPS).size, EDGE_OPS.length);
    assert.deepEqual([...EDGE_OPS].sort(), Object.keys(EXAMPLES).sort());
  });

  for (const op of EDGE_OPS) {
    it(`${op}: a valid message decodes to itself, body intact`, () => {
      const body = Buffer.from('body');
      const decoded = decodeEdgeMessage(encodeEdgeMessage(EXAMPLES[op], body));
      assert.ok(decoded, `${op} example does not match its schema`);
      assert.deepEqual(decoded.message, EXAMPLES[op]);
      assert.deepEqual(decoded.body, body);
    });
  }

  it('drops unknown ops and wrong types', () => {
    const bad = [
      { op: 'ps.nope' },
      { ...EXAMPLES['ps.list'], top: 0 },
      { ...EXAMPLES['hc.failed'], code: 'Whatever' },
      { ...EXAMPLES['ps.send'], hub: 'not a hub!' },
      { ...EXAMPLES['ops.stats'], top: 51 },
      // A time past what a Date holds: the dashboard's trace threw on it, and dropped its stream for every viewer.
      { ...EXAMPLES['ops.trace'], events: [{ at: 1e20, node: 'n2', kind: 'http.request' }] },
    ];
    for (const m of bad) assert.equal(decodeEdgeMessage(encodeEdgeMessage(m as EdgeMessage)), undefined, JSON.stringify(m));
  });

  it('takes a message with members its schema does not name, without them (a newer edge on the bus)', () => {
    const newer: unknown = {
      ...EXAMPLES['ps.send'],
      comingSoon: { nested: true },
      message: { ...(EXAMPLES['ps.send'] as { message: object }).message, alsoNew: 1 },
    };
    const decoded = decodeEdgeMessage(encodeEdgeMessage(newer as EdgeMessage), 'ps.send');
    assert.ok(decoded, 'refused a message with unknown members');
    assert.deepEqual(decoded.message, EXAMPLES['ps.send']);
    // A trace event never carries a payload to another edge, whoever wrote it.
    const traced = decodeEdgeMessage(
      encodeEdgeMessage({ ...EXAMPLES['ops.trace'], events: [{ at: 1, node: 'n2', kind: 'http.request', body: 'a payload' }] } as unknown as EdgeMessage),
    );
    assert.deepEqual(traced?.message, { ...EXAMPLES['ops.trace'], events: [{ at: 1, node: 'n2', kind: 'http.request' }] });
    // A member the schema names is still checked: a wrong one refuses the message.
    assert.equal(decodeEdgeMessage(encodeEdgeMessage({ ...(newer as object), hub: 'not a hub!' } as EdgeMessage)), undefined);
  });

  it('takes a ps.list answer of 1001 members, the page of 1000 and one more that a ps.list asks for (before: refused, and that edge left out of the listing)', () => {
    const members = Array.from({ length: 1001 }, (_, i) => ({ connectionId: `c${i}` }));
    assert.equal(decodeEdgeMessage(encodeEdgeMessage({ op: 'ps.done', count: 0, edge: 'n2', members, cut: true }), 'ps.done')?.message.members?.length, 1001);
    assert.equal(decodeEdgeMessage(encodeEdgeMessage({ op: 'ps.done', count: 0, edge: 'n2', members: [...members, { connectionId: 'c1001' }] }), 'ps.done'), undefined);
  });

  it('returns a message only when its op is one asked for', () => {
    const data = encodeEdgeMessage(EXAMPLES['ps.done']);
    assert.equal(decodeEdgeMessage(data, 'ps.session'), undefined);
    assert.equal(decodeEdgeMessage(data, 'ps.session', 'ps.done')?.message.op, 'ps.done');
  });
});
