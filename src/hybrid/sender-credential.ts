// Where a hybrid connections client's SAS token travels, and which of a
// sender's headers were its credential (those never reach the listener).
// Azure reads the token from the ServiceBusAuthorization header (what hyco-ws
// and hyco-https send), the sb-hc-token query parameter (browsers, which
// cannot set headers on a WebSocket), or the Authorization header. The last is
// the credential only when neither of the others is there and the hybrid
// connection wants sender tokens: otherwise it is the sender's business with
// the listener, and passes through.
import type { IncomingMessage } from 'node:http';
import { paramInAnyCase } from '../http/query-params.ts';
import type { HybridEntity } from './entity-catalog.ts';

/** Header names, lower case, a listener never sees. */
export type CredentialHeaders = readonly string[];

/** Only the ServiceBusAuthorization header (the relay's own requests, whose Authorization is the handler's). */
export const SERVICE_BUS_HEADER_ONLY: CredentialHeaders = ['servicebusauthorization'];
const WITH_AUTHORIZATION: CredentialHeaders = ['servicebusauthorization', 'authorization'];

function firstOf(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The SAS token a request presents, wherever it is. */
export function sasTokenOf(req: IncomingMessage, params: URLSearchParams): string | undefined {
  return firstOf(req.headers['servicebusauthorization']) ?? paramInAnyCase(params, 'sb-hc-token') ?? req.headers.authorization;
}

/**
 * A sender's headers as a listener sees them: lower case, a repeated one
 * joined by `, `, less its credential and any named in `leftOut`.
 */
export function senderHeaders(req: IncomingMessage, credential: CredentialHeaders, leftOut?: ReadonlySet<string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || credential.includes(name) || leftOut?.has(name)) continue;
    out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/** The headers that were a sender's credential for `entity`. */
export function senderCredentialIn(req: IncomingMessage, params: URLSearchParams, entity: HybridEntity): CredentialHeaders {
  const authorizationIsToken =
    entity.requiresClientAuthorization && req.headers['servicebusauthorization'] === undefined && paramInAnyCase(params, 'sb-hc-token') === null;
  return authorizationIsToken ? WITH_AUTHORIZATION : SERVICE_BUS_HEADER_ONLY;
}
