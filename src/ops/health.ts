// /$relay/health (the process is up) and /$relay/ready (it takes new work:
// not shutting down and, with the NATS bus, connected to it and, with
// durable hubs, JetStream ready and the hubs reading their streams).
// Not-ready says why, so an operator reading the probe knows what to fix.
// What the edge cannot do while it serves the rest is `degraded`, not a
// reason to be taken out: a stream without its leader fails on every edge
// alike, and a load balancer that dropped them all would end the hybrid
// connections and the other hubs too. Both answer GET and HEAD (a probe's
// methods, and Azure's `HEAD /api/health`); any other method is 405.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { refuseOtherMethods } from '../http/edge-errors.ts';
import { sendJson } from '../http/respond.ts';

export interface Readiness {
  shuttingDown(): boolean;
  bus(): { kind: string; connected: boolean; backlogged?: boolean };
  /** With durable hubs: JetStream's state and, when not ready, why; `storeFailures`, the streams it stores nothing in now. */
  jetstream?(): { state: string; problem?: string; storeFailures: string[]; unreadStreams?: string[] };
  /** With durable hubs: whether those it started with read their streams yet. */
  followsStreams?(): boolean;
  /** Other things the edge cannot do while it serves the rest (another edge under its node id). */
  degraded?(): string[];
}

const NO_STORE = { 'cache-control': 'no-store' };

/** Answers an ops path; returns false when the name is not one. */
export function handleOps(name: string, req: IncomingMessage, res: ServerResponse, readiness: Readiness): boolean {
  if (name !== 'health' && name !== 'ready') return false;
  // Before: a POST or DELETE was answered as a GET, so a mistyped call looked like it had done something.
  if (refuseOtherMethods(req, res, ['GET', 'HEAD'])) return true;
  if (name === 'health') {
    sendJson(res, 200, { status: 'up' }, NO_STORE);
    return true;
  }
  // ready
  const bus = readiness.bus();
  const reasons: string[] = [];
  const degraded: string[] = [];
  if (readiness.shuttingDown()) reasons.push('shutting down');
  if (!bus.connected) reasons.push(`no connection to the ${bus.kind} bus`);
  // Connected, but its server has taken nothing for a while: what the edge publishes is dropped until it does.
  else if (bus.backlogged) reasons.push(`the ${bus.kind} bus takes nothing this edge sends`);
  const jetstream = readiness.jetstream?.();
  const storeFailures = jetstream?.state === 'ready' && bus.connected ? jetstream.storeFailures : [];
  if (jetstream && jetstream.state !== 'ready' && bus.connected) reasons.push(jetstream.problem ?? 'JetStream is not ready');
  else if (jetstream && bus.connected && readiness.followsStreams?.() === false) reasons.push('the durable hubs do not read their streams yet');
  // Refused a consumer by a limit (max_consumers), this edge delivers nothing of that hub, where others may.
  else if (jetstream && bus.connected) for (const unread of jetstream.unreadStreams ?? []) reasons.push(`this edge reads nothing of stream ${unread}`);
  for (const failure of storeFailures) degraded.push(`JetStream stores nothing in stream ${failure}`);
  degraded.push(...(readiness.degraded?.() ?? []));
  const ready = reasons.length === 0;
  const body = {
    ready,
    bus: { kind: bus.kind, connected: bus.connected },
    ...(jetstream ? { jetstream: { state: jetstream.state, storing: jetstream.state === 'ready' && bus.connected && storeFailures.length === 0 } } : {}),
    reasons,
    degraded,
  };
  sendJson(res, ready ? 200 : 503, body, NO_STORE);
  return true;
}
