// Errors of the edge itself, before or beside any domain: requests that match
// no surface or that Node could not take (too slow, too large), admission of
// new connections (limits.connectionsPerNode, limits.connectRatePerAddress,
// limits.httpConnectionsPerNode), operator endpoints, and the unexpected. The
// domains keep their own tables (hybrid/errors.ts, pubsub/errors.ts); the
// README's error tables list every code of all of them (a test checks).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorAnswers, type ErrorSpec } from './error-answers.ts';

export const EDGE_ERRORS = {
  BadRequest: { status: 400, message: 'Malformed request target' },
  NotWebSocket: { status: 400, message: 'A WebSocket upgrade is required for this address' },
  NotFound: { status: 404, message: 'No such endpoint' },
  MethodNotAllowed: { status: 405, message: 'Method not allowed on this path' },
  RequestTimeout: { status: 408, message: 'The request head did not arrive in time' },
  LengthRequired: { status: 411, message: 'A request offering an upgrade other than WebSocket needs a Content-Length for its body' },
  ExpectationFailed: { status: 417, message: 'The only expectation this relay meets is 100-continue' },
  WebSocketVersionUnsupported: { status: 426, message: 'Only WebSocket version 13 is supported' },
  TooManyConnectionAttempts: { status: 429, message: 'Too many new connections from this address; retry later' },
  AddressHttpConnectionLimitReached: { status: 429, message: 'This address holds as many HTTP connections to this relay node as limits.httpConnectionsPerAddress allows; close one or retry later' },
  AddressConnectionLimitReached: { status: 429, message: 'This address holds as many WebSocket connections to this relay node as limits.connectionsPerAddress allows; close one or retry later' },
  ConfigInvalid: { status: 422, message: 'The configuration on disk does not load; nothing was changed' },
  HeaderFieldsTooLarge: { status: 431, message: 'The request head is larger than the relay accepts' },
  Internal: { status: 500, message: 'Internal error' },
  MethodNotImplemented: { status: 501, message: 'The relay does not implement this request method' },
  ConnectionLimitReached: { status: 503, message: 'This relay node holds as many connections as limits.connectionsPerNode allows' },
  TooManyTraceViewers: { status: 503, message: 'This relay node serves as many live trace viewers as it allows (10); close one or use another node' },
  HttpConnectionLimitReached: { status: 503, message: 'This relay node holds as many HTTP connections as limits.httpConnectionsPerNode allows' },
  ShuttingDown: { status: 503, message: 'The relay is shutting down' },
} as const satisfies Record<string, ErrorSpec>;

export type EdgeErrorCode = keyof typeof EDGE_ERRORS;

/** Why admission refused a new WebSocket connection. */
export type AdmissionRefusal = 'ConnectionLimitReached' | 'AddressConnectionLimitReached' | 'TooManyConnectionAttempts';

export const { failUpgrade: failEdgeUpgrade, failRequest: failEdgeRequest } = errorAnswers<EdgeErrorCode>(EDGE_ERRORS);

/**
 * Answers 405 `MethodNotAllowed` with `Allow` when the request's method is not one of `allowed` (an operator
 * endpoint's), and says whether it did.
 */
export function refuseOtherMethods(req: IncomingMessage, res: ServerResponse, allowed: readonly string[]): boolean {
  if (allowed.includes(req.method ?? '')) return false;
  res.setHeader('allow', allowed.join(', '));
  failEdgeRequest(res, 'MethodNotAllowed', `Use ${allowed.join(' or ')}`);
  return true;
}
