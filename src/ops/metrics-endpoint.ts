// GET /$relay/metrics: the Prometheus text exposition, behind a Manage token
// when the config says so (metrics.requireManage).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { failEdgeRequest } from '../http/edge-errors.ts';
import { sendError } from '../http/respond.ts';
import type { ManageAuth } from './manage-auth.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';

export async function serveMetrics(req: IncomingMessage, res: ServerResponse, metrics: RelayMetrics, auth: ManageAuth | undefined): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    return failEdgeRequest(res, 'MethodNotAllowed', 'Use GET or HEAD');
  }
  const refused = auth?.check(req);
  if (refused) return sendError(res, refused.status, refused.code, refused.message);
  try {
    const { body, contentType } = await metrics.expose();
    res.writeHead(200, { 'content-type': contentType, 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  } catch (err) {
    failEdgeRequest(res, 'Internal', `metrics could not be collected: ${(err as Error).message}`);
  }
}
