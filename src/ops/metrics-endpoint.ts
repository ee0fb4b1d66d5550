// GET /$relay/metrics: the Prometheus text exposition. Open to anyone when
// metrics.requireManage is false; otherwise it needs a Manage SAS token, or
// the static bearer token of metrics.bearerTokenFile, which is what a stock
// Prometheus sends with `authorization: { credentials_file: ... }` (Bearer is
// its default type). A SAS token works there too, with type
// SharedAccessSignature: Prometheus sends "<type> <credentials>", which is the
// token's own text (docs/security.md, "Prometheus").
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { failEdgeRequest, refuseOtherMethods } from '../http/edge-errors.ts';
import { sendError } from '../http/respond.ts';
import type { ManageAuth } from './manage-auth.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';

export interface MetricsAccess {
  requireManage: boolean;
  /** Read from metrics.bearerTokenFile (at start and on reload). */
  bearerToken?: string;
}

/** True when the request carries `Authorization: Bearer <token>`, compared in constant time. */
function bearerMatches(req: IncomingMessage, token: string): boolean {
  const header = req.headers.authorization;
  const given = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1];
  if (given === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function serveMetrics(req: IncomingMessage, res: ServerResponse, metrics: RelayMetrics, auth: ManageAuth, access: MetricsAccess): Promise<void> {
  if (refuseOtherMethods(req, res, ['GET', 'HEAD'])) return;
  if (access.requireManage && !(access.bearerToken !== undefined && bearerMatches(req, access.bearerToken))) {
    const refused = auth.check(req);
    if (refused) return sendError(res, refused.status, refused.code, refused.message);
  }
  try {
    const { body, contentType } = await metrics.expose();
    res.writeHead(200, { 'content-type': contentType, 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  } catch (err) {
    failEdgeRequest(res, 'Internal', `metrics could not be collected: ${(err as Error).message}`);
  }
}
