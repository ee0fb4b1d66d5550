// /$relay/health (the process is up) and /$relay/ready (it takes new work:
// not shutting down and, with the NATS bus, connected to it and, with
// durable hubs, JetStream ready, storing, and the hubs reading their streams).
// Not-ready says why, so an operator reading the probe knows what to fix.
import type { ServerResponse } from 'node:http';
import { sendJson } from '../http/respond.ts';

export interface Readiness {
  shuttingDown(): boolean;
  bus(): { kind: string; connected: boolean };
  /** With durable hubs: JetStream's state and, when not ready, why; `storeFailure` while it is there but stores nothing. */
  jetstream?(): { state: string; problem?: string; storeFailure?: string };
  /** With durable hubs: whether those it started with read their streams yet. */
  followsStreams?(): boolean;
}

const NO_STORE = { 'cache-control': 'no-store' };

/** Answers an ops path; returns false when the name is not one. */
export function handleOps(name: string, res: ServerResponse, readiness: Readiness): boolean {
  if (name === 'health') {
    sendJson(res, 200, { status: 'up' }, NO_STORE);
    return true;
  }
  if (name === 'ready') {
    const bus = readiness.bus();
    const reasons: string[] = [];
    if (readiness.shuttingDown()) reasons.push('shutting down');
    if (!bus.connected) reasons.push(`no connection to the ${bus.kind} bus`);
    const jetstream = readiness.jetstream?.();
    if (jetstream && jetstream.state !== 'ready' && bus.connected) reasons.push(jetstream.problem ?? 'JetStream is not ready');
    else if (jetstream?.storeFailure !== undefined && bus.connected) reasons.push(`JetStream stores nothing: ${jetstream.storeFailure}`);
    else if (jetstream && bus.connected && readiness.followsStreams?.() === false) reasons.push('the durable hubs do not read their streams yet');
    const ready = reasons.length === 0;
    const body = {
      ready,
      bus: { kind: bus.kind, connected: bus.connected },
      ...(jetstream ? { jetstream: { state: jetstream.state, storing: jetstream.state === 'ready' && jetstream.storeFailure === undefined } } : {}),
      reasons,
    };
    sendJson(res, ready ? 200 : 503, body, NO_STORE);
    return true;
  }
  return false;
}
