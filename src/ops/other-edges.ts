// Asks every other edge over the bus and collects their answers of one op:
// what /$relay/status and /$relay/stats both do. An answer that fails its
// schema is logged and left out; this edge's own answer (the bus may echo it)
// is dropped, and so is a second answer of one edge (one edge listed twice
// doubled every total of /$relay/status in a chaos soak); the rest come
// sorted by node id. When the bus cannot be asked, `problem` says so and the
// list is empty.
import { BusError, type Bus } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type EdgeMessage, type EdgeMessageOf, type EdgeOp } from '../bus/messages.ts';
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';

export interface OtherEdgesAnswer<T> {
  answers: T[];
  problem?: string;
}

/** The ops an edge answers with, each carrying the answering edge's node id. */
type EdgeAnswerOp = { [Op in EdgeOp]: EdgeMessageOf<Op> extends { nodeId: string } ? Op : never }[EdgeOp];

/** `T` is what `answerOp` carries besides its op (NodeStatus for ops.node, EdgeStats for ops.edge). */
export async function askOtherEdges<T extends { nodeId: string }>(
  deps: { bus: Bus; config: RelayConfig; log: Logger },
  subject: string,
  question: EdgeMessage,
  answerOp: EdgeAnswerOp,
  selfId: string,
): Promise<OtherEdgesAnswer<T>> {
  const { bus, config, log } = deps;
  let raw: Uint8Array[];
  try {
    raw = await bus.gather(subject, encodeEdgeMessage(question), { maxWaitMs: config.bus.requestTimeoutMs, stallMs: config.bus.gatherStallMs });
  } catch (err) {
    return { answers: [], problem: err instanceof BusError ? `the ${bus.kind} bus is unreachable: other nodes are not listed` : String(err) };
  }
  const answers: T[] = [];
  const answered = new Set<string>([selfId]);
  for (const data of raw) {
    const answer = decodeEdgeMessage(data, answerOp)?.message as ({ op: string } & T) | undefined;
    if (!answer) {
      log.warn({ event: 'bus.invalid_message', op: answerOp });
      continue;
    }
    const { op: _op, ...rest } = answer;
    if (answered.has(rest.nodeId)) continue;
    answered.add(rest.nodeId);
    answers.push(rest as unknown as T);
  }
  answers.sort((a, b) => a.nodeId.localeCompare(b.nodeId));
  return { answers };
}
