// GetRuntimeInformationAsync() of Microsoft's .NET SDK (HybridConnectionClient
// and HybridConnectionListener): `GET /{entity}?api-version=...` with
// `X-PROCESS-AT: ServiceBus` and a SAS token in `Authorization`. Azure answers
// it from its management plane with an Atom entry holding a
// HybridConnectionDescription, whose ListenerCount callers use to see whether
// anyone listens. The relay answers it itself, with the listeners of every
// edge, and never hands it to a listener as a relayed request
// (docs/protocols/hybrid-connections.md, "Runtime information").
import type { IncomingMessage, ServerResponse } from 'node:http';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import type { HybridEntity } from './entity-catalog.ts';

/** The namespace .NET's DataContractSerializer reads a HybridConnectionDescription in. */
const CONNECT_NAMESPACE = 'http://schemas.microsoft.com/netservices/2010/10/servicebus/connect';

/**
 * A runtime information request: a GET of the entity itself (nothing below it) that names an api-version and
 * says it is for the service (`X-PROCESS-AT: ServiceBus`, which only Microsoft's management clients send).
 */
export function isRuntimeInformationRequest(req: IncomingMessage, subPath: readonly string[], params: URLSearchParams): boolean {
  const processAt = req.headers['x-process-at'];
  return (
    req.method === 'GET' &&
    typeof processAt === 'string' &&
    asciiLowerCase(processAt.trim()) === 'servicebus' &&
    params.has('api-version') &&
    subPath.every((segment) => segment === '')
  );
}

function xmlText(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The Atom entry Azure answers with. Its fields in the order the SDK's data contract reads them; CreatedAt and
 * UpdatedAt are left out (the relay does not know when a configured entity was made: the SDK then says
 * DateTime.MinValue), as is UserMetadata (the relay has none).
 */
export function runtimeInformationEntry(selfUrl: string, entity: HybridEntity, listeners: number, now = new Date()): string {
  return (
    '<entry xmlns="http://www.w3.org/2005/Atom">' +
    `<id>${xmlText(selfUrl)}</id>` +
    `<title type="text">${xmlText(entity.name)}</title>` +
    `<updated>${now.toISOString()}</updated>` +
    `<link rel="self" href="${xmlText(selfUrl)}"/>` +
    '<content type="application/xml">' +
    `<HybridConnectionDescription xmlns="${CONNECT_NAMESPACE}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">` +
    `<RequiresClientAuthorization>${entity.requiresClientAuthorization}</RequiresClientAuthorization>` +
    `<ListenerCount>${listeners}</ListenerCount>` +
    '</HybridConnectionDescription>' +
    '</content>' +
    '</entry>'
  );
}

/** Answers the entry (200, `application/atom+xml;type=entry`). */
export function sendRuntimeInformation(res: ServerResponse, entry: string): void {
  sendXml(res, 200, 'application/atom+xml;type=entry;charset=utf-8', entry);
}

/**
 * A refusal as Azure's management plane words it: `<Error><Code>` and `<Detail>`, which the SDK puts in the
 * exception it throws (401 AuthorizationFailedException, 404 EndpointNotFoundException, 503 ServerBusyException).
 */
export function sendManagementError(res: ServerResponse, status: number, code: string, detail: string): void {
  sendXml(res, status, 'application/xml;charset=utf-8', `<Error><Code>${status}</Code><Detail>${xmlText(`${code}: ${detail}`)}</Detail></Error>`);
}

function sendXml(res: ServerResponse, status: number, contentType: string, text: string): void {
  const body = Buffer.from(text, 'utf8');
  res.writeHead(status, { 'content-type': contentType, 'content-length': body.length, 'cache-control': 'no-store' });
  res.end(body);
}
