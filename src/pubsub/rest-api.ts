// The pub/sub REST surface for publishers that are servers, with the paths,
// methods and status codes of Azure Web PubSub's data-plane API (the ones
// `@azure/web-pubsub` calls) under /api/hubs/{hub}/. Auth: a bearer JWT signed
// with the hub's access key whose `aud` is the request URL. Bodies are capped
// at limits.pubsubMessageBytes; messages arrive at clients as from "server".
import type { IncomingMessage, ServerResponse } from 'node:http';
import { bearerToken, verifyAccessToken } from '../auth/access-token.ts';
import { signJwt } from '../auth/jwt.ts';
import { sendJson } from '../server/respond.ts';
import {
  validateConnectionId,
  validateGroupName,
  validateRestGroupsBody,
  validateUserId,
} from '../validation/schemas.ts';
import type { DataMessage } from './downstream.ts';
import { failRequest, type PubSubErrorCode } from './errors.ts';
import type { Hub } from './hub.ts';
import type { Permission } from './permissions.ts';
import type { PubSubConnection } from './pubsub-connection.ts';
import type { PubSubService } from './pubsub-service.ts';

type Answer = { status: number; body?: object } | PubSubErrorCode;

interface RestCall {
  service: PubSubService;
  hub: Hub;
  method: string;
  segments: string[];
  params: URLSearchParams;
  req: IncomingMessage;
}

const OK: Answer = { status: 200 };
const ACCEPTED: Answer = { status: 202 };
const NO_CONTENT: Answer = { status: 204 };
const MAX_TOKEN_MINUTES = 60 * 24 * 365;

export function handleRestRequest(
  service: PubSubService,
  req: IncomingMessage,
  res: ServerResponse,
  hubName: string,
  segments: string[],
  params: URLSearchParams,
  path: string,
): void {
  req.on('error', () => res.destroy());
  const hub = service.hub(hubName);
  if (!hub) return drainThen(req, () => failRequest(res, 'HubNotFound'));
  const token = bearerToken(req.headers.authorization);
  const verdict = verifyAccessToken(token, hub.config.accessKey, [path], service.hostsFor(req));
  if (!verdict.ok) return drainThen(req, () => failRequest(res, verdict.code));
  const call: RestCall = { service, hub, method: req.method ?? 'GET', segments, params, req };
  dispatch(call).then(
    (answer) => respond(res, answer, call.method),
    () => respond(res, 'BadRequest', call.method),
  );
}

function respond(res: ServerResponse, answer: Answer, method: string): void {
  if (res.headersSent || res.destroyed) return;
  if (typeof answer === 'string') {
    if (method === 'HEAD') {
      res.writeHead(answer === 'NotFound' ? 404 : 400).end();
      return;
    }
    return failRequest(res, answer);
  }
  if (answer.body) return sendJson(res, answer.status, answer.body);
  res.writeHead(answer.status, { 'content-length': '0' }).end();
}

/** Reads and discards a body we will not use, then answers (so keep-alive stays usable). */
function drainThen(req: IncomingMessage, answer: () => void): void {
  req.resume();
  if (req.readableEnded) answer();
  else req.once('end', answer);
}

async function dispatch(call: RestCall): Promise<Answer> {
  const { method, segments } = call;
  const [first, second, third, fourth] = segments;
  const route = `${method} ${segments.length}`;
  if (first === ':send' && route === 'POST 1') return sendToAll(call);
  if (first === ':closeConnections' && route === 'POST 1') return closeAll(call);
  if ((first === ':addToGroups' || first === ':removeFromGroups') && route === 'POST 1') return changeGroups(call, first);
  if (first === ':generateToken' && route === 'POST 1') return generateToken(call);
  if (first === 'connections' && segments.length >= 2) {
    if (!validateConnectionId(second)) return 'BadRequest';
    const connection = call.hub.connections.get(second);
    if (route === 'HEAD 2') return connection && !connection.ended ? OK : 'NotFound';
    if (route === 'DELETE 2') return closeConnections(call, connection ? [connection] : []);
    if (third === ':send' && route === 'POST 3') return send(call, (m) => call.hub.sendToConnection(second, m));
    if (third === 'groups' && route === 'DELETE 3') {
      if (connection) for (const g of [...connection.groups]) call.hub.leave(connection, g);
      return NO_CONTENT;
    }
  }
  if (first === 'groups' && segments.length >= 2) {
    if (!validateGroupName(second)) return 'BadRequest';
    if (route === 'HEAD 2') return call.hub.hasGroup(second) ? OK : 'NotFound';
    if (third === ':send' && route === 'POST 3') {
      return send(call, (m) => call.hub.sendToGroup(second, m, excludedOf(call.params)));
    }
    if (third === ':closeConnections' && route === 'POST 3') return closeConnections(call, call.hub.groupMembers(second));
    if (third === 'connections' && route === 'GET 3') return listGroup(call, second);
    if (third === 'connections' && segments.length === 4) {
      if (!validateConnectionId(fourth)) return 'BadRequest';
      const connection = call.hub.connections.get(fourth);
      if (method === 'PUT') {
        if (!connection || connection.ended) return 'NotFound';
        call.hub.join(connection, second);
        return OK;
      }
      if (method === 'DELETE') {
        if (connection) call.hub.leave(connection, second);
        return NO_CONTENT;
      }
    }
  }
  if (first === 'users' && segments.length >= 2) {
    if (!validateUserId(second)) return 'BadRequest';
    if (route === 'HEAD 2') return call.hub.hasUser(second) ? OK : 'NotFound';
    if (third === ':send' && route === 'POST 3') return send(call, (m) => call.hub.sendToUser(second, m));
    if (third === ':closeConnections' && route === 'POST 3') return closeConnections(call, call.hub.userConnections(second));
    if (third === 'groups' && route === 'DELETE 3') {
      for (const c of [...call.hub.userConnections(second)]) for (const g of [...c.groups]) call.hub.leave(c, g);
      return NO_CONTENT;
    }
    if (third === 'groups' && segments.length === 4) {
      if (!validateGroupName(fourth)) return 'BadRequest';
      const connections = [...call.hub.userConnections(second)];
      if (method === 'PUT') {
        for (const c of connections) call.hub.join(c, fourth);
        return OK;
      }
      if (method === 'DELETE') {
        for (const c of connections) call.hub.leave(c, fourth);
        return NO_CONTENT;
      }
    }
  }
  if (first === 'permissions' && third === 'connections' && segments.length === 4) return permission(call, second, fourth);
  return 'NotFound';
}

// --- bodies -------------------------------------------------------------------

async function readBody(call: RestCall): Promise<Buffer | 'PayloadTooLarge'> {
  const limit = call.service.config.limits.pubsubMessageBytes;
  const declared = Number(call.req.headers['content-length'] ?? 0);
  if (declared > limit) {
    call.req.resume();
    return 'PayloadTooLarge';
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of call.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      call.req.resume();
      return 'PayloadTooLarge';
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/** The message a REST send carries, typed by its Content-Type. */
async function readMessage(call: RestCall): Promise<DataMessage | PubSubErrorCode> {
  const type = (call.req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  const body = await readBody(call);
  if (typeof body === 'string') return body;
  if (type === 'application/json') {
    try {
      return { from: 'server', dataType: 'json', dataJson: JSON.stringify(JSON.parse(body.toString('utf8'))) };
    } catch {
      return 'BadRequest';
    }
  }
  if (type === 'text/plain') return { from: 'server', dataType: 'text', dataJson: JSON.stringify(body.toString('utf8')) };
  if (type === 'application/octet-stream') {
    return { from: 'server', dataType: 'binary', dataJson: JSON.stringify(body.toString('base64')) };
  }
  return 'UnsupportedMediaType';
}

async function send(call: RestCall, deliver: (m: DataMessage) => number): Promise<Answer> {
  if (call.params.has('filter')) return 'FilterUnsupported';
  const message = await readMessage(call);
  if (typeof message === 'string') return message;
  deliver(message);
  return ACCEPTED;
}

function excludedOf(params: URLSearchParams): Set<string> | undefined {
  const ids = params.getAll('excluded');
  return ids.length > 0 ? new Set(ids) : undefined;
}

function sendToAll(call: RestCall): Promise<Answer> {
  return send(call, (m) => call.hub.sendToAll(m, excludedOf(call.params)));
}

// --- connections and groups ----------------------------------------------------

function closeConnections(call: RestCall, targets: Iterable<PubSubConnection>): Answer {
  const excluded = excludedOf(call.params);
  const reason = call.params.get('reason')?.slice(0, 120) || undefined;
  for (const connection of [...targets]) {
    if (!excluded?.has(connection.id)) call.service.endConnection(connection, 'ClosedByServer', reason);
  }
  return NO_CONTENT;
}

function closeAll(call: RestCall): Answer {
  return closeConnections(call, call.hub.connections.values());
}

function listGroup(call: RestCall, group: string): Answer {
  const top = Math.max(1, Math.min(Number(call.params.get('top') ?? call.params.get('maxpagesize') ?? 1000) || 1000, 1000));
  const value = [];
  for (const c of call.hub.groupMembers(group)) {
    if (value.length >= top) break;
    value.push({ connectionId: c.id, userId: c.userId ?? undefined });
  }
  return { status: 200, body: { value } };
}

/**
 * The filters :addToGroups and :removeFromGroups accept: comparisons
 * `connectionId eq '...'` / `userId eq '...'` joined with `or` (OData string
 * literals, '' for a quote). Anything else is refused rather than guessed at.
 */
export function parseConnectionFilter(filter: string): ((c: PubSubConnection) => boolean) | undefined {
  const term = /^\s*(connectionId|userId)\s+eq\s+'((?:[^']|'')*)'\s*(?:or\b|$)/;
  const tests: ((c: PubSubConnection) => boolean)[] = [];
  let rest = filter;
  while (rest.trim() !== '') {
    const match = term.exec(rest);
    if (!match) return undefined;
    const value = match[2].replace(/''/g, "'");
    tests.push(match[1] === 'connectionId' ? (c) => c.id === value : (c) => c.userId === value);
    rest = rest.slice(match[0].length);
  }
  return tests.length > 0 ? (c) => tests.some((t) => t(c)) : undefined;
}

async function changeGroups(call: RestCall, action: ':addToGroups' | ':removeFromGroups'): Promise<Answer> {
  const body = await readBody(call);
  if (typeof body === 'string') return body;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return 'BadRequest';
  }
  if (!validateRestGroupsBody(parsed)) return 'BadRequest';
  const { groups, filter } = parsed as { groups: string[]; filter: string };
  const matches = parseConnectionFilter(filter);
  if (!matches) return 'FilterUnsupported';
  for (const connection of [...call.hub.connections.values()]) {
    if (connection.ended || !matches(connection)) continue;
    for (const g of groups) {
      if (action === ':addToGroups') call.hub.join(connection, g);
      else call.hub.leave(connection, g);
    }
  }
  return OK;
}

function permission(call: RestCall, name: string, connectionId: string): Answer {
  if (name !== 'joinLeaveGroup' && name !== 'sendToGroup') return 'BadRequest';
  const target = call.params.get('targetName') ?? undefined;
  if (target !== undefined && !validateGroupName(target)) return 'BadRequest';
  const connection = call.hub.connections.get(connectionId);
  if (!connection || connection.ended) return 'NotFound';
  const perm = name as Permission;
  switch (call.method) {
    case 'PUT':
      connection.permissions.grant(perm, target);
      return OK;
    case 'DELETE':
      connection.permissions.revoke(perm, target);
      return NO_CONTENT;
    case 'HEAD':
      return target === undefined || connection.permissions.allows(perm, target) ? OK : 'NotFound';
    default:
      return 'MethodNotAllowed';
  }
}

function generateToken(call: RestCall): Answer {
  const minutes = Number(call.params.get('minutesToExpire') ?? 60);
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > MAX_TOKEN_MINUTES) return 'BadRequest';
  const userId = call.params.get('userId');
  if (userId !== null && !validateUserId(userId)) return 'BadRequest';
  const groups = call.params.getAll('group');
  if (!groups.every((g) => validateGroupName(g))) return 'BadRequest';
  const origin = `http://${call.req.headers.host ?? 'localhost'}`;
  const claims: Record<string, unknown> = {
    aud: `${origin}/client/hubs/${call.hub.name}`,
    role: call.params.getAll('role'),
    'webpubsub.group': groups,
  };
  if (userId) claims.sub = userId;
  return { status: 200, body: { token: signJwt(claims, call.hub.config.accessKey, minutes * 60) } };
}
