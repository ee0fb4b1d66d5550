// POST /$relay/reload: reads the config again, as SIGHUP does
// (server/reload.ts), for an operator with a Manage token. Answers what
// changed, or 422 ConfigInvalid with the key that failed (nothing changed), or
// 503 ShuttingDown while the edge drains. Under serve --workers the worker that
// answers reloads, and the primary passes the reload on to the other workers.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { failEdgeRequest, refuseOtherMethods } from '../http/edge-errors.ts';
import { sendError, sendJson } from '../http/respond.ts';
import type { ManageAuth } from './manage-auth.ts';

/** What a reload did: the changes, or why none were made. */
export type ReloadOutcome = { ok: true; changes: Record<string, unknown> } | { ok: false; problem: string; shuttingDown?: boolean };

export function serveReload(req: IncomingMessage, res: ServerResponse, auth: ManageAuth, reload: (() => ReloadOutcome) | undefined): void {
  req.resume();
  if (refuseOtherMethods(req, res, ['POST'])) return;
  const refused = auth.check(req);
  if (refused) return sendError(res, refused.status, refused.code, refused.message);
  if (!reload) return failEdgeRequest(res, 'NotFound', 'This relay was not started from a config file: there is nothing to reload');
  const outcome = reload();
  if (!outcome.ok) return failEdgeRequest(res, outcome.shuttingDown ? 'ShuttingDown' : 'ConfigInvalid', outcome.problem);
  sendJson(res, 200, { reloaded: true, ...outcome.changes }, { 'cache-control': 'no-store' });
}
