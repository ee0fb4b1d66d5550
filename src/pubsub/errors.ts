// Pub/sub errors: one table. Each code says how it is answered: an HTTP status
// (refused upgrades and REST calls), a WebSocket close code (an open client
// connection is ended), or an ack error name (a client request fails but the
// connection stays). Names of ack errors are the ones Azure Web PubSub uses
// (docs/protocols/web-pubsub.md, "Acks"); tests assert codes, not message text.
import { errorAnswers, type ErrorSpec } from '../http/error-answers.ts';

/** The connect handler refused with this 4xx: the code, and the status the client gets. */
export interface ConnectRefusal {
  code: 'ConnectBadRequest' | 'ConnectUnauthorized' | 'ConnectForbidden' | 'ConnectRefused';
  status: number;
}

const NAMED_REFUSALS: Record<number, ConnectRefusal['code']> = { 400: 'ConnectBadRequest', 401: 'ConnectUnauthorized', 403: 'ConnectForbidden' };

/**
 * How a connect handler's answer refuses the connection: any 4xx reaches the
 * client as that same status (Azure: "4xx: Error, the response from Upstream
 * will be returned as the response for the client request"); 400, 401 and
 * 403 have codes of their own, any other 4xx is `ConnectRefused`. Undefined
 * for a status that is not 4xx.
 */
export function connectRefusalFor(status: number): ConnectRefusal | undefined {
  if (!Number.isInteger(status) || status < 400 || status > 499) return undefined;
  return { code: NAMED_REFUSALS[status] ?? 'ConnectRefused', status };
}

export const PUBSUB_ERRORS = {
  BadRequest: { status: 400, message: 'Malformed request' },
  // The connect event handler refused the connection with this status; the message is its answer.
  ConnectBadRequest: { status: 400, message: 'The event handler refused the connection (400)' },
  ConnectUnauthorized: { status: 401, message: 'The event handler refused the connection (401)' },
  ConnectForbidden: { status: 403, message: 'The event handler refused the connection (403)' },
  // Any other 4xx: the client gets the handler's own status (400 is only this table's placeholder).
  ConnectRefused: { status: 400, message: 'The event handler refused the connection' },
  EventHandlerFailed: { status: 500, message: 'The connect event handler failed: unreachable, refused by abuse protection, or answered something else' },
  EventHandlerTimeout: { status: 504, message: 'The connect event handler did not answer in time (eventHandlers[].timeoutMs)' },
  TokenMissing: { status: 401, message: 'An access token is required (access_token query parameter or Bearer header)' },
  TokenInvalid: { status: 401, message: 'The access token is not valid for this hub' },
  TokenExpired: { status: 401, message: 'The access token has expired' },
  AudienceInvalid: { status: 401, message: 'The access token audience does not name this endpoint' },
  HubNotFound: { status: 404, message: 'No such hub' },
  NotFound: { status: 404, message: 'Not found' },
  MethodNotAllowed: { status: 405, message: 'Method not allowed on this path' },
  RequestTimeout: { status: 408, message: 'The request body stopped arriving (nothing for timeouts.headersMs)' },
  PayloadTooLarge: { status: 413, message: 'The message is larger than limits.pubsubMessageBytes' },
  // Within limits.pubsubMessageBytes, but not what the NATS servers carry with the envelope: nothing was sent anywhere.
  BusPayloadTooLarge: { status: 413, message: "The message is larger than the cluster bus carries (its NATS servers' max_payload, or a durable hub's history.maxBytes, envelope included): nothing was sent; raise that limit or lower limits.pubsubMessageBytes" },
  HubConnectionLimitReached: { status: 429, message: 'This hub holds as many connections on this node as limits.connectionsPerHub allows' },
  // A hub's connect event handler is slow or silent: its waiting upgrades may not take the node's WebSocket places.
  TooManyPendingConnects: { status: 503, message: "This hub has as many upgrades waiting for its connect event handler on this node as limits.connectsPendingPerHub allows; try again" },
  TooManyHistoryReads: { status: 429, message: 'This edge is reading as many history pages at once as it takes; try again in a moment' },
  UnsupportedMediaType: { status: 415, message: 'Use application/json, text/plain or application/octet-stream' },
  FilterInvalid: { status: 400, message: 'The filter is not one this relay understands (OData filter syntax of Azure Web PubSub: userId, connectionId, groups; eq, ne, gt, ge, lt, le, in, not, and, or; string and length functions; groups/any)' },
  // An open connection is ended with these close codes.
  SessionNotFound: { status: 404, closeCode: 1008, message: 'The session cannot be recovered' },
  InvalidMessage: { status: 400, closeCode: 1008, message: 'The frame is not a JSON object with a type' },
  BinaryFrame: { status: 400, closeCode: 1007, message: 'A binary frame on a JSON subprotocol must hold the message as UTF-8' },
  SlowConsumer: { status: 503, closeCode: 1008, message: 'The client did not read fast enough; its outbound buffer is full' },
  SessionBufferFull: { status: 503, closeCode: 1008, message: 'Too many unacknowledged messages; the session is closed' },
  StreamGap: { status: 503, closeCode: 1008, message: "This edge missed events of the hub's stream (its limits dropped them before it read them): reconnect for a new session" },
  ClosedByServer: { status: 200, closeCode: 1008, message: 'Closed by the server' },
  // A reconnect with the session's id and token took it to a new socket while its old one was still open: the old one
  // is closed, not dropped. 1001, not 1008 (after which @azure/web-pubsub-client does not recover): the old socket may
  // be the one its client is on, the new one a reconnect cut at once (a load balancer's retry) that took the session
  // all the same; that client then recovers it back. A client that did move reads its old socket no more.
  SessionMoved: { status: 409, closeCode: 1001, message: 'The session was recovered on another connection (a reconnect with its id and token): this one no longer carries it' },
  // A simple client's `message` event the handler did not accept: Azure drops the connection; 1011, the server cannot go on with it.
  MessageEventFailed: { status: 500, closeCode: 1011, message: 'The event handler did not accept the message (answered other than 2xx, or not at all)' },
  // A simple client in sendToGroup mode (webpubsub_mode=sendToGroup) has no acks: what it sent that was not published ends it.
  GroupSendForbidden: { status: 403, closeCode: 1008, message: 'The connection may not send to its group (webpubsub_mode=sendToGroup needs the role webpubsub.sendToGroup or webpubsub.sendToGroup.<group>); this frame and those after it were not sent' },
  GroupSendTooLarge: { status: 413, closeCode: 1009, message: "The frame is larger than the cluster bus carries (its NATS servers' max_payload, or a durable hub's history.maxBytes, envelope included): it was not sent, nor were the frames that came after it but those already on their way with it" },
  GroupSendFailed: { status: 503, closeCode: 1011, message: 'The frame could not be published to the group (the cluster bus or the event log did not take it, or did not say it had: then it may still be, later); nor were the frames that came after it but those already on their way with it: reconnect' },
  ShuttingDown: { status: 503, closeCode: 1012, message: 'The relay is restarting: reconnect, another node will serve you' },
  BusUnavailable: { status: 503, message: 'The cluster bus is unreachable: this node acted on its own connections only' },
  StoreUnavailable: { status: 503, message: 'The event log (JetStream) did not store, confirm or read this; try again' },
  ServerError: { status: 500, message: 'The relay failed to serve this call; its log says why (pubsub.rest_call_failed)' },
  HistoryUnavailable: { status: 404, message: 'This hub keeps no history (pubsub.hubs[].history)' },
  SessionUnavailable: { status: 503, closeCode: 1013, message: 'The session cannot be recovered right now; try again' },
} as const satisfies Record<string, ErrorSpec>;

export type PubSubErrorCode = keyof typeof PUBSUB_ERRORS;

/** Ack error names (the `error.name` of a failed ack). */
export const ACK_ERRORS = {
  Forbidden: 'The connection lacks the role this needs',
  Duplicate: 'This ackId was already processed',
  BadRequest: 'The message does not match the protocol',
  InternalServerError: 'The relay could not process the message; retry with the same ackId',
  NoUpstream: 'No event handler of the hub takes this event; it was not delivered',
  UpstreamFailed: 'The event handler did not accept the event',
  Unsupported: 'The relay does not implement this message type',
} as const;

export type AckErrorName = keyof typeof ACK_ERRORS;

/** The REST API's error header: Azure's SDKs (and HEAD calls, which have no body) read the code from it. */
export const ERROR_CODE_HEADER = 'x-ms-error-code';

export const { failUpgrade, failRequest } = errorAnswers<PubSubErrorCode>(PUBSUB_ERRORS, { codeHeader: ERROR_CODE_HEADER });

/**
 * A session cannot be taken over right now (JetStream away or slow, or the
 * edge holding it does not answer in time): the client is told to try again
 * (close 1013), not that the session is gone (1008).
 */
export class SessionUnavailable extends Error {}

/**
 * A durable hub's session that a REST close of it, or of its user's, group's or hub's connections, reached while no edge held
 * it (stored in the hub's stream after its checkpoint): the take ends it instead of resuming it, and the recovering
 * client is told the close's reason (close 1008 ClosedByServer), as a client the close found connected was.
 */
export class SessionClosedByServer extends Error {
  constructor(readonly reason: string | undefined) {
    super(reason ?? 'closed by the server');
  }
}

/**
 * A join on a durable hub that the stream applied past limits.groupsPerConnection (joins and leaves
 * stored before it counted first): acked `Forbidden`, as the same join on a hub in memory is.
 */
export class GroupLimitReached extends Error {
  override name = 'Forbidden';
}
