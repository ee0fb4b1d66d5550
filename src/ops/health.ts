// /$relay/health (the process is up) and /$relay/ready (it takes new work).
import type { ServerResponse } from 'node:http';
import { sendJson } from '../server/respond.ts';

export interface Readiness {
  ready(): boolean;
}

const NO_STORE = { 'cache-control': 'no-store' };

/** Answers an ops path; returns false when the name is not one. */
export function handleOps(name: string, res: ServerResponse, readiness: Readiness): boolean {
  if (name === 'health') {
    sendJson(res, 200, { status: 'up' }, NO_STORE);
    return true;
  }
  if (name === 'ready') {
    const ready = readiness.ready();
    sendJson(res, ready ? 200 : 503, { ready }, NO_STORE);
    return true;
  }
  return false;
}
