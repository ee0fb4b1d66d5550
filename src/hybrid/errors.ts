// Hybrid connections errors: one table, each code with the HTTP status a
// sender or listener handshake fails with, or the WebSocket close code an open
// control channel is closed with (docs/protocols/hybrid-connections.md), and the
// two ways a code is answered: on an upgrade socket, or on an HTTP response.
// Tests assert codes and statuses, not message text.
import { errorAnswers, type ErrorSpec } from '../http/error-answers.ts';

export const HYBRID_ERRORS = {
  BadRequest: { status: 400, message: 'Malformed request' },
  InvalidEntityName: { status: 400, message: 'Invalid hybrid connection name' },
  TokenMissing: { status: 401, message: 'A Shared Access Signature token is required' },
  TokenMalformed: { status: 401, message: 'The token is not a valid Shared Access Signature' },
  SignatureInvalid: { status: 401, message: 'The token signature is not valid' },
  TokenExpired: { status: 401, closeCode: 1008, message: 'The token has expired' },
  TokenScopeInvalid: { status: 403, message: 'The token does not cover this hybrid connection' },
  RightMissing: { status: 403, message: 'The token does not grant the needed right' },
  ClientCertificateRequired: { status: 403, message: 'Listeners must present a client certificate signed by the CA of listen.tls.caFile' },
  ListenerLimitReached: { status: 403, message: 'The hybrid connection has the most listeners allowed' },
  EntityNotFound: { status: 404, message: 'No such hybrid connection' },
  NoListener: { status: 404, message: 'No listener is connected to this hybrid connection' },
  RendezvousNotFound: { status: 404, message: 'No pending rendezvous has this id' },
  // hybridConnections[].accepts: refused before any listener hears of it.
  WebSocketNotAccepted: { status: 404, message: "This hybrid connection's listeners take HTTP requests only" },
  HttpNotAccepted: { status: 404, message: "This hybrid connection's listeners take relayed WebSockets only" },
  RendezvousRejected: { status: 410, message: 'Rejected as the listener asked' },
  SenderGone: { status: 410, message: 'The sender has gone' },
  RequestTimeout: { status: 408, message: 'The request body stopped arriving' },
  ListenerGone: { status: 502, message: 'The listener disconnected before answering' },
  BadListenerResponse: { status: 502, message: 'The listener sent an invalid response' },
  BusUnavailable: { status: 503, message: 'The cluster bus is unreachable: only listeners on this node can be reached' },
  TooManyPending: { status: 503, message: 'Too many requests are waiting for this hybrid connection' },
  // 1001 (going away), not 1012: Microsoft's hyco-ws bundles ws 1.1, which takes
  // any code above 1011 for a protocol error and then reconnects twice at once.
  ShuttingDown: { status: 503, closeCode: 1001, message: 'The relay is restarting: reconnect, another node will serve you' },
  AcceptTimeout: { status: 504, message: 'The listener did not accept in time' },
  RouteTimeout: { status: 504, message: 'The node holding the listener did not answer in time' },
  ResponseTimeout: { status: 504, message: 'The listener did not respond in time' },
  ControlMessageInvalid: { status: 400, closeCode: 1008, message: 'Malformed control channel message' },
  RenewTokenInvalid: { status: 401, closeCode: 1008, message: 'The renewed token is not valid' },
  AccessRevoked: { status: 401, closeCode: 1008, message: 'The SAS rule that authorized this listener was removed or changed' },
  ClientCertificateRevoked: { status: 403, closeCode: 1008, message: 'The client certificate of this listener is not signed by the CAs of listen.tls.caFile any more' },
  // 1001, as Azure closes a listener whose hybrid connection was deleted or disabled (1008 is its expired or invalid token).
  EntityRemoved: { status: 404, closeCode: 1001, message: 'The hybrid connection was removed from the configuration' },
} as const satisfies Record<string, ErrorSpec>;

export type HybridErrorCode = keyof typeof HYBRID_ERRORS;

export const { failUpgrade, failRequest } = errorAnswers<HybridErrorCode>(HYBRID_ERRORS);
