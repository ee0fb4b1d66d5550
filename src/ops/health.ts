// /$relay/health (the process is up) and /$relay/ready (it takes new work).
import type { ServerResponse } from 'node:http';

export interface Readiness {
  ready(): boolean;
}

function json(res: ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** Answers an ops path; returns false when the name is not one. */
export function handleOps(name: string, res: ServerResponse, readiness: Readiness): boolean {
  if (name === 'health') {
    json(res, 200, { status: 'up' });
    return true;
  }
  if (name === 'ready') {
    const ready = readiness.ready();
    json(res, ready ? 200 : 503, { ready });
    return true;
  }
  return false;
}
