// Gathering the other edges' answers (src/ops/other-edges.ts), on the memory
// bus with real subscribers: an edge whose answer comes twice is listed once.
// Before, a chaos soak saw one edge listed twice in /$relay/status after its
// NATS node was killed, every cluster total of connections doubled for it.
// An answer after the question ended is remembered, so the next question
// waits for its edge (test/ops/late-answers.test.ts: with edge processes).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { respond } from '../../src/bus/bus.ts';
import { MemoryBus } from '../../src/bus/memory.ts';
import { encodeEdgeMessage, type EdgeMessage } from '../../src/bus/messages.ts';
import { buildConfig } from '../../src/config/load.ts';
import { EdgesSeen, MAX_LISTENING_LATE, askOtherEdges } from '../../src/ops/other-edges.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { testConfig } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const nodeAnswer = (nodeId: string): EdgeMessage =>
  ({
    op: 'ops.node',
    nodeId,
    startedAt: new Date(0).toISOString(),
    shuttingDown: false,
    bus: { kind: 'nats', connected: true },
    entities: [],
    hubs: [{ name: 'chat', connections: 3, groups: 1, sessionsRetained: 0 }],
  }) as EdgeMessage;

describe('asking the other edges', () => {
  it('lists each edge once, whatever answers twice, and never this one', async () => {
    const bus = new MemoryBus();
    const answerAs = (nodeId: string) => bus.subscribe('status', (m) => respond(bus, m, encodeEdgeMessage(nodeAnswer(nodeId))));
    for (const id of ['edge-b', 'edge-b', 'edge-c', 'edge-a']) answerAs(id);
    const config = buildConfig(testConfig({ nodeId: 'edge-a' }));
    const { answers, problem } = await askOtherEdges<{ nodeId: string }>(
      { bus, config, log: createLogger('silent', 'test') },
      'status',
      { op: 'ops.status', origin: 'edge-a' } as EdgeMessage,
      'ops.node',
      'edge-a',
    );
    assert.equal(problem, undefined);
    assert.deepEqual(
      answers.map((a) => a.nodeId),
      ['edge-b', 'edge-c'],
    );
  });
  it('remembers an edge whose answer came after the question ended, and waits for it the next time', async () => {
    const bus = new MemoryBus();
    const config = buildConfig(testConfig({ nodeId: 'edge-a', bus: { requestTimeoutMs: 2000, gatherStallMs: 50 } }));
    bus.subscribe('status', (m) => respond(bus, m, encodeEdgeMessage(nodeAnswer('edge-a'))));
    // edge-b answers 300 ms late: past the stall after edge-a's own answer, within requestTimeoutMs.
    bus.subscribe('status', (m) => void setTimeout(() => respond(bus, m, encodeEdgeMessage(nodeAnswer('edge-b'))), 300));
    const seen = new EdgesSeen<{ nodeId: string }>();
    const ask = async () => {
      const started = Date.now();
      const { answers } = await askOtherEdges<{ nodeId: string }>(
        { bus, config, log: createLogger('silent', 'test') },
        'status',
        { op: 'ops.status', origin: 'edge-a' } as EdgeMessage,
        'ops.node',
        'edge-a',
        seen,
      );
      return { nodes: answers.map((a) => a.nodeId), ms: Date.now() - started };
    };
    const first = await ask();
    assert.deepEqual(first.nodes, []);
    assert.ok(first.ms < 250, `not slowed down by the late edge (${first.ms} ms)`);
    await until(() => seen.expected().has('edge-b'), 3000, 'edge-b remembered from its late answer');
    const second = await ask();
    assert.deepEqual(second.nodes, ['edge-b']);
    assert.ok(second.ms >= 250, `waited for edge-b (${second.ms} ms)`);
  });

  it("takes no late answer older than the edge's last (before: a late 'running' undid a later 'shutting down', and the next question waited for the leaving edge)", () => {
    const seen = new EdgesSeen<{ nodeId: string; shuttingDown?: boolean }>();
    seen.asked([{ nodeId: 'edge-b', shuttingDown: false }], new Set(), 1000, 900);
    // A second question, asked at 2000, hears in time that edge-b is shutting down; the first one's late answer comes after.
    seen.asked([{ nodeId: 'edge-b', shuttingDown: true }], new Set(['edge-b']), 2100, 2000);
    assert.equal(seen.expected(2200).has('edge-b'), false);
    seen.answeredLate({ nodeId: 'edge-b', shuttingDown: false }, 1500, 2300);
    assert.equal(seen.expected(2400).has('edge-b'), false, 'the older answer is not taken');
    // A late answer to a later question still counts.
    seen.answeredLate({ nodeId: 'edge-b', shuttingDown: false }, 2500, 2700);
    assert.equal(seen.expected(2800).has('edge-b'), true);
  });

  it('has at most MAX_LISTENING_LATE questions listening for late answers at once', () => {
    const seen = new EdgesSeen();
    for (let i = 0; i < MAX_LISTENING_LATE; i++) assert.equal(seen.listenLate(2000, 1000), true);
    assert.equal(seen.listenLate(2000, 2999), false, 'past the bound, a question listens no longer than it waits');
    assert.equal(seen.listenLate(2000, 3000), true, 'a place is free once a question stopped listening');
  });
});
