// Gathering the other edges' answers (src/ops/other-edges.ts), on the memory
// bus with real subscribers: an edge whose answer comes twice is listed once.
// Before, a chaos soak saw one edge listed twice in /$relay/status after its
// NATS node was killed, every cluster total of connections doubled for it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { respond } from '../../src/bus/bus.ts';
import { MemoryBus } from '../../src/bus/memory.ts';
import { encodeEdgeMessage, type EdgeMessage } from '../../src/bus/messages.ts';
import { buildConfig } from '../../src/config/load.ts';
import { askOtherEdges } from '../../src/ops/other-edges.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { testConfig } from '../helpers/relay.ts';

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
});
