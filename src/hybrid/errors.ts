// Hybrid connections errors: one table, each code with the HTTP status a
// sender or listener handshake fails with, or the WebSocket close code an open
// control channel is closed with (protocols/hybrid-connections.md), and the
// two ways a code is answered: on an upgrade socket, or on an HTTP response.
// Tests assert codes and statuses, not message text.
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { sendError } from '../server/respond.ts';
import { writeUpgradeError } from '../websocket/handshake.ts';

export interface HybridErrorSpec {
  status: number;
  closeCode?: number;
  message: string;
}

export const HYBRID_ERRORS = {
  BadRequest: { status: 400, message: 'Malformed request' },
  NotWebSocket: { status: 400, message: 'A WebSocket upgrade is required for this address' },
  InvalidEntityName: { status: 400, message: 'Invalid hybrid connection name' },
  TokenMissing: { status: 401, message: 'A Shared Access Signature token is required' },
  TokenMalformed: { status: 401, message: 'The token is not a valid Shared Access Signature' },
  SignatureInvalid: { status: 401, message: 'The token signature is not valid' },
  TokenExpired: { status: 401, closeCode: 1008, message: 'The token has expired' },
  TokenScopeInvalid: { status: 403, message: 'The token does not cover this hybrid connection' },
  RightMissing: { status: 403, message: 'The token does not grant the needed right' },
  ListenerLimitReached: { status: 403, message: 'The hybrid connection has the most listeners allowed' },
  EntityNotFound: { status: 404, message: 'No such hybrid connection' },
  NoListener: { status: 404, message: 'No listener is connected to this hybrid connection' },
  RendezvousNotFound: { status: 404, message: 'No pending rendezvous has this id' },
  RendezvousRejected: { status: 410, message: 'Rejected as the listener asked' },
  SenderGone: { status: 410, message: 'The sender has gone' },
  ListenerGone: { status: 502, message: 'The listener disconnected before answering' },
  BadListenerResponse: { status: 502, message: 'The listener sent an invalid response' },
  TooManyPending: { status: 503, message: 'Too many requests are waiting for this hybrid connection' },
  ShuttingDown: { status: 503, closeCode: 1001, message: 'The relay is shutting down' },
  AcceptTimeout: { status: 504, message: 'The listener did not accept in time' },
  ResponseTimeout: { status: 504, message: 'The listener did not respond in time' },
  Internal: { status: 500, closeCode: 1011, message: 'Internal error' },
  ControlMessageInvalid: { status: 400, closeCode: 1008, message: 'Malformed control channel message' },
  RenewTokenInvalid: { status: 401, closeCode: 1008, message: 'The renewed token is not valid' },
} as const satisfies Record<string, HybridErrorSpec>;

export type HybridErrorCode = keyof typeof HYBRID_ERRORS;

/** Fails a WebSocket upgrade with the code's status; `detail` replaces the message. */
export function failUpgrade(socket: Duplex, code: HybridErrorCode, detail?: string): void {
  const spec = HYBRID_ERRORS[code];
  writeUpgradeError(socket, spec.status, detail ?? spec.message, code);
}

/** Answers an HTTP request with the code's status and a JSON body. */
export function failRequest(res: ServerResponse, code: HybridErrorCode): void {
  sendError(res, HYBRID_ERRORS[code].status, code, HYBRID_ERRORS[code].message);
}
