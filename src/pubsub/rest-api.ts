// The pub/sub REST surface for publishers that are servers, with the paths,
// methods and status codes of Azure Web PubSub's data-plane API (the ones
// `@azure/web-pubsub` calls) under /api/hubs/{hub}/. Auth: a bearer JWT signed
// with the hub's access key whose `aud` is the request URL. Bodies are capped
// at limits.pubsubMessageBytes; messages arrive at clients as from "server",
// or, sent to a group, as from "group" with that group and `fromUserId: null`.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { bearerToken, verifyAccessToken } from '../auth/access-token.ts';
import { BusError } from '../bus/bus.ts';
import { StoreError } from '../bus/jetstream-errors.ts';
import { signJwt } from '../auth/jwt.ts';
import { sendJson } from '../http/respond.ts';
import {
  validateConnectionId,
  validateRestGroupName,
  validateRestGroupsBody,
  validateUserId,
} from '../validation/schemas.ts';
import { parseJson } from '../validation/bounded-json.ts';
import { jsonTextOf } from '../validation/json-text.ts';
import { ConnectionFilter, FilterSyntaxError } from './connection-filter.ts';
import type { DataMessage } from './downstream.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { ERROR_CODE_HEADER, PUBSUB_ERRORS, failRequest, type PubSubErrorCode } from './errors.ts';
import { historyPageJson } from './history.ts';
import type { ClusterHub, GroupAction } from './hub-cluster.ts';
import type { Target } from './hub.ts';
import type { Permission } from './permissions.ts';
import { isHostAuthority } from '../http/host-header.ts';
import { cutWhenUnread } from '../http/unread-answers.ts';
import type { CallLimit } from './call-limit.ts';

/** A status (and body), an error code, or an error code with a message of its own. */
type Answer = { status: number; body?: object } | PubSubErrorCode | { code: PubSubErrorCode; detail: string };

/** What the REST surface needs of the pub/sub service. */
export interface RestContext {
  hub(name: string): ClusterHub | undefined;
  hostsFor(req: IncomingMessage): string[];
  /** The keys the hub's tokens may be signed with: its access key, its secondary key, and keys a rotation replaced. */
  accessKeys(hub: ClusterHub): string[];
  /** Largest body (limits.pubsubMessageBytes). */
  maxBodyBytes: number;
  /** How long a body may stop arriving (timeouts.headersMs): then 408 RequestTimeout and the connection closed. */
  bodyIdleMs: number;
  /** How long an answer may wait for a client that reads none of it (timeouts.senderStallMs): then the connection is cut. */
  answerStallMs: number;
  /** Says that a client's connection was cut for not reading its answer. */
  answerStalled(hub: string): void;
  /** Counts and logs a body refused 413 (limits.pubsubMessageBytes), as a WebSocket frame past it is. */
  bodyTooLarge(hub: string): void;
  /** Logs a call that failed for a reason of the relay's own (answered 500 ServerError). */
  restCallFailed(hub: string, err: unknown): void;
  /** Places for history pages read at once on this edge (MAX_HISTORY_READS, none waiting: each holds up to 8 MiB and more while JetStream sends it). */
  historyReads: CallLimit;
}

/** History pages an edge reads at once: past it, 429 TooManyHistoryReads (a page of JetStream's held ~16-20 MiB while read). */
export const MAX_HISTORY_READS = 8;

interface RestCall {
  service: RestContext;
  hub: ClusterHub;
  method: string;
  segments: string[];
  params: URLSearchParams;
  req: IncomingMessage;
  /** Its change went to the hub (act): answered as it comes out, even when a reload removed the hub since. */
  acted?: boolean;
}

const OK: Answer = { status: 200 };
const ACCEPTED: Answer = { status: 202 };
const NO_CONTENT: Answer = { status: 204 };
const MAX_TOKEN_MINUTES = 60 * 24 * 365;

export function handleRestRequest(
  service: RestContext,
  req: IncomingMessage,
  res: ServerResponse,
  hubName: string,
  segments: string[],
  params: URLSearchParams,
  path: string,
  query: string,
): void {
  req.on('error', () => res.destroy());
  const hub = service.hub(hubName);
  if (!hub) return refuse(req, res, 'HubNotFound');
  const token = bearerToken(req.headers.authorization);
  // The path as sent and, when the token names one, the query: a token signed for one call is no other's.
  const verdict = verifyAccessToken(token, service.accessKeys(hub), [path], service.hostsFor(req), { exactCase: true, query });
  if (!verdict.ok) return refuse(req, res, verdict.code);
  const call: RestCall = { service, hub, method: req.method ?? 'GET', segments, params, req };
  if (hub.trace.on) traceRest(call, res);
  // A cluster-wide operation whose other nodes the bus cannot reach has
  // acted on this node's connections only: 503 says so.
  // Calls come one at a time per connection (the front takes a pipelined one up once the answer before it is out:
  // connection-close.ts); each answer is bounded in how long it may go unread (http/unread-answers.ts).
  const socket = req.socket;
  const stalled = () => service.answerStalled(hub.name);
  void dispatch(call)
    .then(
      (answer) => {
        if (answer === 'PayloadTooLarge') service.bodyTooLarge(hub.name);
        // A reload removed the hub while the call was under way (its body still arriving): answered as a call to a hub
        // this edge does not serve is (before: 202 for a send that reached nobody). One whose change had gone out
        // (a send being stored) is answered as it came out: stored, the edges still serving the hub deliver it.
        if (!call.acted && hubGone(call)) return respond(res, 'HubNotFound', call.method);
        return typeof answer === 'object' && 'raw' in answer ? sendRaw(res, answer.raw) : respond(res, answer, call.method);
      },
      (err) => {
        if (!call.acted && hubGone(call)) return respond(res, 'HubNotFound', call.method);
        const code = restErrorCode(err);
        if (code === 'ServerError') service.restCallFailed(hub.name, err);
        respond(res, code, call.method, err);
      },
    )
    .then(() => cutWhenUnread(res, socket, service.answerStallMs, stalled));
}

/**
 * True once a reload removed the call's hub (or replaced it with a new hub of the same name): what the call does
 * from then on would act on a hub that left the bus, and its answer is 404 HubNotFound. A shutdown leaves the bus
 * too, but keeps its hubs: a call under way then is answered as it comes out.
 */
function hubGone(call: RestCall): boolean {
  return call.service.hub(call.hub.name) !== call.hub;
}

/**
 * Makes the call's change (`change`) unless a reload removed its hub (false: nothing done, answered 404
 * HubNotFound). Once made, the call is answered as the change comes out, whatever a reload does meanwhile: before,
 * a reload landing while a durable hub stored the change answered 404 for what was stored, which the edges
 * still serving the hub delivered (a caller told 404 sends it again, elsewhere).
 */
async function act(call: RestCall, change: () => Promise<unknown>): Promise<boolean> {
  if (hubGone(call)) return false;
  call.acted = true;
  await change();
  return true;
}

/** Traces a REST call once answered: method, path, status, duration and request size (never its body or token). */
function traceRest(call: RestCall, res: ServerResponse): void {
  const started = performance.now();
  const length = Number(call.req.headers['content-length'] ?? 0);
  const group = call.segments[0] === 'groups' ? call.segments[1] : undefined;
  res.once('finish', () =>
    call.hub.trace.emit('pubsub.rest', {
      hub: call.hub.name,
      group,
      method: call.method,
      path: `/api/hubs/${call.hub.name}/${call.segments.join('/')}`,
      status: res.statusCode,
      ms: performance.now() - started,
      bytes: Number.isSafeInteger(length) && length > 0 ? length : undefined,
    }),
  );
}

/** A JSON body built as text (history pages carry each message's JSON as stored). */
function sendRaw(res: ServerResponse, text: string): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), 'cache-control': 'no-store' });
  res.end(text);
}

/**
 * How a REST call that failed is answered: the bus or the store away (503), a message the bus cannot carry (413),
 * else a failure of the relay's own (500, logged). Before, anything else was 400 BadRequest "Malformed request":
 * a history read NATS did not answer in time told the caller its request was wrong (and `sub` gave up on it).
 */
function restErrorCode(err: unknown): PubSubErrorCode {
  if (err instanceof BusError) return err.code === 'TooLarge' ? 'BusPayloadTooLarge' : 'BusUnavailable';
  // The caller's doing (it hung up mid-body): answered as a bad request, if at all, and not logged as the relay's.
  if (err instanceof BodyCut) return 'BadRequest';
  return err instanceof StoreError ? 'StoreUnavailable' : 'ServerError';
}

/** A REST body that did not come whole: its connection closed or failed before its end. */
class BodyCut extends Error {}

function respond(res: ServerResponse, answer: Answer, method: string, err?: Error): void {
  if (res.headersSent || res.destroyed) return;
  const code = typeof answer === 'string' ? answer : 'code' in answer ? answer.code : undefined;
  // A HEAD answer has no body: its code travels in the header alone.
  if (code !== undefined && method === 'HEAD') return void res.writeHead(PUBSUB_ERRORS[code].status, { [ERROR_CODE_HEADER]: code }).end();
  if (typeof answer === 'object' && 'code' in answer) return failRequest(res, answer.code, answer.detail);
  if (typeof answer === 'string') {
    // A store refusal says why (the reason JetStream gave); a message too large for the bus, how large each is.
    const why = (answer === 'StoreUnavailable' || answer === 'BusPayloadTooLarge') && err ? `${PUBSUB_ERRORS[answer].message} (${err.message})` : undefined;
    return failRequest(res, answer, why);
  }
  if (answer.body) return sendJson(res, answer.status, answer.body);
  res.writeHead(answer.status, { 'content-length': '0' }).end();
}

/**
 * Answers a call refused before its body is read, at once: its body is read and dropped after, so the connection
 * stays usable when it ends, and is closed when it does not within timeouts.headersMs (boundUnreadBody in
 * relay-server.ts). Before, the answer waited for the body's end: a caller with no token that trickled one held
 * its connection for good.
 */
function refuse(req: IncomingMessage, res: ServerResponse, code: PubSubErrorCode): void {
  failRequest(res, code);
  req.resume();
}

async function dispatch(call: RestCall): Promise<Answer | { raw: string }> {
  const { method, segments, hub } = call;
  const [first, second, third, fourth] = segments;
  const route = `${method} ${segments.length}`;
  if (first === ':send' && route === 'POST 1') return send(call, { kind: 'all' }, excludedOf(call.params));
  if (first === ':closeConnections' && route === 'POST 1') return closeConnections(call, { kind: 'all' });
  if ((first === ':addToGroups' || first === ':removeFromGroups') && route === 'POST 1') return changeGroups(call, first);
  if (first === ':generateToken' && route === 'POST 1') return generateToken(call);
  if (first === 'connections' && segments.length >= 2) {
    if (!validateConnectionId(second)) return 'BadRequest';
    const connection: Target = { kind: 'connection', name: second };
    if (route === 'HEAD 2') return (await hub.exists(connection)) ? OK : 'NotFound';
    if (route === 'DELETE 2') return closeConnections(call, connection);
    if (third === ':send' && route === 'POST 3') return send(call, connection);
    if (third === 'groups' && route === 'DELETE 3') return membership(call, connection, 'removeAll', []);
  }
  if (first === 'groups' && segments.length >= 2) {
    if (!validateRestGroupName(second)) return 'BadRequest';
    const group: Target = { kind: 'group', name: second };
    if (route === 'HEAD 2') return (await hub.exists(group)) ? OK : 'NotFound';
    if (third === ':send' && route === 'POST 3') return send(call, group, excludedOf(call.params));
    if (third === ':closeConnections' && route === 'POST 3') return closeConnections(call, group);
    if (third === 'connections' && route === 'GET 3') return listGroup(call, second);
    if (third === 'messages' && route === 'GET 3') return readHistory(call, second);
    if (third === 'connections' && segments.length === 4) {
      if (!validateConnectionId(fourth)) return 'BadRequest';
      const connection: Target = { kind: 'connection', name: fourth };
      if (method === 'PUT') {
        if (!(await hub.exists(connection))) return 'NotFound';
        return membership(call, connection, 'add', [second]);
      }
      if (method === 'DELETE') return membership(call, connection, 'remove', [second], NO_CONTENT);
    }
  }
  if (first === 'users' && segments.length >= 2) {
    if (!validateUserId(second)) return 'BadRequest';
    const user: Target = { kind: 'user', name: second };
    if (route === 'HEAD 2') return (await hub.exists(user)) ? OK : 'NotFound';
    if (third === ':send' && route === 'POST 3') return send(call, user);
    if (third === ':closeConnections' && route === 'POST 3') return closeConnections(call, user);
    if (third === 'groups' && route === 'DELETE 3') return membership(call, user, 'removeAll', []);
    if (third === 'groups' && segments.length === 4) {
      if (!validateRestGroupName(fourth)) return 'BadRequest';
      if (method === 'PUT') return membership(call, user, 'add', [fourth]);
      if (method === 'DELETE') return membership(call, user, 'remove', [fourth], NO_CONTENT);
    }
  }
  if (first === 'permissions' && third === 'connections' && segments.length === 4) return permission(call, second, fourth);
  return 'NotFound';
}

// --- bodies -------------------------------------------------------------------

async function readBody(call: RestCall): Promise<Buffer | 'PayloadTooLarge' | 'RequestTimeout'> {
  const limit = call.service.maxBodyBytes;
  const declared = Number(call.req.headers['content-length'] ?? 0);
  if (declared > limit) {
    call.req.resume();
    return 'PayloadTooLarge';
  }
  // Read by events, not `for await`: leaving that loop early destroys the request (and its socket) before the 413 is out.
  const req = call.req;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // A body that stops arriving would hold the call (and its connection) for good: 408 (the rest of the
    // body is then bounded as any unread one: boundUnreadBody in relay-server.ts closes the connection).
    const idle = setTimeout(() => {
      settle();
      req.resume();
      resolve('RequestTimeout');
    }, call.service.bodyIdleMs);
    const settle = () => {
      clearTimeout(idle);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      idle.refresh();
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      settle();
      // The rest is read and dropped (bounded once the answer is out: boundUnreadBody in relay-server.ts).
      req.resume();
      resolve('PayloadTooLarge');
    };
    const onEnd = () => {
      settle();
      resolve(Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      settle();
      reject(new BodyCut(err.message));
    };
    const onClose = () => onError(new Error('the request ended before its body'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/**
 * The message a REST send carries, typed by its Content-Type. A JSON body is
 * sent on as written (Azure publishes json data "as what it is"): parsed only
 * to check it, since re-encoding the parsed value changes numbers.
 */
async function readMessage(call: RestCall): Promise<DataMessage | PubSubErrorCode> {
  const type = (call.req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  const body = await readBody(call);
  if (typeof body === 'string') return body;
  if (type === 'application/json') {
    const dataJson = jsonTextOf(body.toString('utf8'));
    return dataJson === undefined ? 'BadRequest' : { from: 'server', dataType: 'json', dataJson };
  }
  if (type === 'text/plain') return { from: 'server', dataType: 'text', dataJson: JSON.stringify(body.toString('utf8')) };
  if (type === 'application/octet-stream') {
    return { from: 'server', dataType: 'binary', dataJson: JSON.stringify(body.toString('base64')) };
  }
  return 'UnsupportedMediaType';
}

/** A parsed `filter`, or the 400 that names where it went wrong. */
function parseFilter(text: string): ConnectionFilter | Answer {
  try {
    return ConnectionFilter.parse(text);
  } catch (err) {
    if (!(err instanceof FilterSyntaxError)) throw err;
    return { code: 'FilterInvalid', detail: `filter: ${err.message}` };
  }
}

/** The largest `messageTtlSeconds` Azure takes. */
const MAX_MESSAGE_TTL_SECONDS = 300;

async function send(call: RestCall, target: Target, excluded?: ReadonlySet<string>): Promise<Answer> {
  // A time to live (0: none) for the message where it waits: at an edge that gets it late, in a reliable session.
  const ttl = call.params.get('messageTtlSeconds');
  if (ttl !== null && !(/^[0-9]{1,3}$/.test(ttl) && Number(ttl) <= MAX_MESSAGE_TTL_SECONDS)) {
    call.req.resume();
    return { code: 'BadRequest', detail: `messageTtlSeconds must be a whole number from 0 to ${MAX_MESSAGE_TTL_SECONDS}` };
  }
  // An empty filter is none, as in Microsoft's emulator.
  const filterText = call.params.get('filter');
  const filter = filterText === null || filterText === '' ? undefined : parseFilter(filterText);
  if (filter !== undefined && !(filter instanceof ConnectionFilter)) {
    call.req.resume();
    return filter;
  }
  const read = await readMessage(call);
  if (typeof read === 'string') return read;
  // A send to a group arrives as a group message from nobody, as Azure delivers it
  // (the SDK raises it as `group-message`); sends to all, a user or a connection come from the server.
  const message: DataMessage = target.kind === 'group' ? { ...read, from: 'group', group: target.name, fromUserId: null } : read;
  const ttlSeconds = Number(ttl ?? 0);
  if (ttlSeconds > 0) message.expiresAt = Date.now() + ttlSeconds * 1000;
  // Removed while the body came: not sent at all (a durable hub's stream would still store it, and the other edges
  // still serving the hub deliver it, for a caller told 404; a hub of the same name added since is another hub).
  // Accepted only once sent (stored, on a durable hub: a StoreError answers 503).
  if (!(await act(call, () => call.hub.send(target, message, excluded, undefined, filter)))) return 'HubNotFound';
  return ACCEPTED;
}

/** Largest page of history one call returns. */
const MAX_HISTORY_PAGE = 1000;
const DEFAULT_HISTORY_PAGE = 100;

/** GET groups/{group}/messages?after=&limit=: the group's kept messages after a sequence, oldest first. */
async function readHistory(call: RestCall, group: string): Promise<Answer | { raw: string }> {
  const history = call.hub.history;
  if (!history) return 'HistoryUnavailable';
  // Plain decimal digits only (before: Number() took `0x10`, `1e3`, ` 1 ` and an empty value as numbers).
  const after = wholeNumber(call.params.get('after') ?? '0');
  const limit = wholeNumber(call.params.get('limit') ?? String(DEFAULT_HISTORY_PAGE));
  if (after === undefined || limit === undefined || limit < 1 || limit > MAX_HISTORY_PAGE) return 'BadRequest';
  // Bounded at once per edge (found by review: 20 readers of large pages took an edge from 174 MiB to 570 MiB).
  const reads = call.service.historyReads;
  if (!(await reads.acquire())) return 'TooManyHistoryReads';
  try {
    return { raw: historyPageJson(await history.read(group, after, limit)) };
  } finally {
    reads.release();
  }
}

/** A query value of decimal digits naming a safe integer, or undefined. */
function wholeNumber(text: string): number | undefined {
  if (!/^[0-9]{1,16}$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * The connections a send or close leaves out. An id no connection can have (empty, too long, other characters)
 * excludes nobody, as on Azure (before: the whole call was refused 400); only valid ones travel on the bus, whose
 * messages are checked against the same rule on every edge.
 */
function excludedOf(params: URLSearchParams): Set<string> | undefined {
  const ids = params.getAll('excluded').filter((id) => validateConnectionId(id));
  return ids.length > 0 ? new Set(ids) : undefined;
}

// --- connections and groups ----------------------------------------------------

/** The longest close reason passed on, in UTF-16 code units (a bus message carries no more: schemas/bus-message.schema.json). */
const MAX_CLOSE_REASON = 120;

/**
 * The `reason` a close tells its connections, cut to MAX_CLOSE_REASON, never between the two halves of a character
 * (before: a cut through an emoji ended the client's `disconnected` message, and the event handler's `reason`, with
 * a lone surrogate).
 */
function closeReason(reason: string | null): string | undefined {
  if (!reason) return undefined;
  const cut = reason.slice(0, MAX_CLOSE_REASON);
  const last = cut.charCodeAt(cut.length - 1);
  return cut.length < reason.length && last >= 0xd800 && last <= 0xdbff ? cut.slice(0, -1) : cut;
}

async function closeConnections(call: RestCall, target: Target): Promise<Answer> {
  const reason = closeReason(call.params.get('reason'));
  if (!(await act(call, () => call.hub.close(target, excludedOf(call.params), reason)))) return 'HubNotFound';
  return NO_CONTENT;
}

async function membership(call: RestCall, target: Target, action: GroupAction, groups: string[], answer: Answer = OK): Promise<Answer> {
  if (!(await act(call, () => call.hub.changeGroups(target, action, groups)))) return 'HubNotFound';
  return action === 'removeAll' ? NO_CONTENT : answer;
}

/** Largest page of a group's members. */
const MAX_MEMBER_PAGE = 1000;
/** What a continuation token names: the last connection id of the page before. */
const CONTINUATION = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * GET groups/{group}/connections: pages of the group's members in connection
 * id order, `maxpagesize` each (at most 1000), `top` in all (default: all),
 * each page but the last with a `nextLink` whose `continuationToken` is the
 * page's last id, as @azure/web-pubsub follows them.
 */
async function listGroup(call: RestCall, group: string): Promise<Answer> {
  const count = (name: string): number | undefined | null => {
    const text = call.params.get(name);
    if (text === null) return undefined;
    const n = Number(text);
    return Number.isSafeInteger(n) && n >= 1 ? n : null;
  };
  const top = count('top');
  const pageSize = count('maxpagesize');
  const after = call.params.get('continuationToken') ?? undefined;
  if (top === null || pageSize === null || (after !== undefined && !CONTINUATION.test(after))) return 'BadRequest';
  const page = Math.min(pageSize ?? MAX_MEMBER_PAGE, MAX_MEMBER_PAGE, top ?? Infinity);
  // One more than the page: whether there is a next one.
  const { members, cut } = await call.hub.listGroup(group, page + 1, after);
  // More follow when one more than the page came, or when an edge's answer was cut to fit the bus (its page ends early).
  const value = members.slice(0, page);
  const more = members.length > page || (cut && value.length > 0);
  if (!more || (top !== undefined && top <= value.length)) return { status: 200, body: { value } };
  const next = new URLSearchParams();
  const apiVersion = call.params.get('api-version');
  if (apiVersion !== null) next.set('api-version', apiVersion);
  if (pageSize !== undefined) next.set('maxpagesize', String(pageSize));
  if (top !== undefined) next.set('top', String(top - value.length));
  next.set('continuationToken', value[value.length - 1].connectionId);
  const path = `/api/hubs/${encodeURIComponent(call.hub.name)}/groups/${encodeURIComponent(group)}/connections`;
  return { status: 200, body: { value, nextLink: `${path}?${next}` } };
}

async function changeGroups(call: RestCall, action: ':addToGroups' | ':removeFromGroups'): Promise<Answer> {
  const body = await readBody(call);
  if (typeof body === 'string') return body;
  let parsed: unknown;
  try {
    parsed = parseJson(body.toString('utf8'));
  } catch {
    return 'BadRequest';
  }
  if (!validateRestGroupsBody(parsed)) return 'BadRequest';
  const { groups, filter: text } = parsed as { groups: string[]; filter?: string | null };
  // No filter (absent, null or empty): every connection of the hub, as on Azure. The .NET SDK's RemoveConnectionsFromGroups
  // takes its filter as optional and sends none by default (before: 400 for that call); an empty one is none in
  // Microsoft's emulator, and how a caller of @azure/web-pubsub's addConnectionsToGroups(groups, filter) passes none.
  const filter = text === undefined || text === null || text === '' ? undefined : parseFilter(text);
  if (filter !== undefined && !(filter instanceof ConnectionFilter)) return filter;
  // Removed while the body came: changes nothing anywhere (as a send then sends nothing).
  if (!(await act(call, () => call.hub.changeGroups({ kind: 'all' }, action === ':addToGroups' ? 'add' : 'remove', groups, filter)))) return 'HubNotFound';
  return OK;
}

async function permission(call: RestCall, name: string, connectionId: string): Promise<Answer> {
  if (name !== 'joinLeaveGroup' && name !== 'sendToGroup') return 'BadRequest';
  if (!validateConnectionId(connectionId)) return 'BadRequest';
  const target = call.params.get('targetName') ?? undefined;
  if (target !== undefined && !validateRestGroupName(target)) return 'BadRequest';
  const method = call.method;
  if (method !== 'PUT' && method !== 'DELETE' && method !== 'HEAD') return 'MethodNotAllowed';
  const outcome = await call.hub.permission(connectionId, method, name as Permission, target);
  // A revoke does not check that the connection exists, as on Azure (whose live SDK tests revoke for an invalid id
  // with no error): it holds nothing to revoke. A grant or a check of one that does not exist is 404.
  if (outcome === 'absent') return method === 'DELETE' ? NO_CONTENT : 'NotFound';
  if (outcome === 'unstored') return { code: 'StoreUnavailable', detail: `${PUBSUB_ERRORS.StoreUnavailable.message} (the session's checkpoint with the change)` };
  if (outcome === 'unheld') {
    return {
      code: 'SessionUnavailable',
      detail: `the connection's reliable session is held by no edge right now (its edge went away, its client has not recovered it yet): ${method === 'HEAD' ? 'whether it holds the permission cannot be told' : 'nothing was changed'}; try again`,
    };
  }
  if (outcome === 'full') {
    return { code: 'BadRequest', detail: `the connection names as many groups for ${name} as limits.groupsPerConnection allows: grant or revoke it for every group instead` };
  }
  return method === 'DELETE' ? NO_CONTENT : OK;
}

function generateToken(call: RestCall): Answer {
  // Azure's MQTT and Socket.IO clients connect elsewhere, with protocols this relay does not speak: a token for them would open nothing.
  const clientType = call.params.get('clientType');
  if (clientType !== null && asciiLowerCase(clientType) !== 'default') {
    return { code: 'BadRequest', detail: `clientType ${clientType.slice(0, 40)} is not supported: this relay serves Web PubSub clients only (clientType Default)` };
  }
  const minutes = Number(call.params.get('minutesToExpire') ?? 60);
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > MAX_TOKEN_MINUTES) return 'BadRequest';
  const userId = call.params.get('userId');
  if (userId !== null && !validateUserId(userId)) return 'BadRequest';
  const groups = call.params.getAll('group');
  if (!groups.every((g) => validateRestGroupName(g))) return 'BadRequest';
  // The audience names the host the call was addressed to, and only a host: a Host header
  // carrying a path or fragment would make a client token a REST token for another endpoint.
  const host = call.req.headers.host ?? 'localhost';
  if (!isHostAuthority(host)) return 'BadRequest';
  // The scheme of the connection the call came on (the relay's checks ignore it; a reader of the token may not).
  const origin = `${(call.req.socket as Partial<TLSSocket>).encrypted ? 'https' : 'http'}://${host}`;
  const claims: Record<string, unknown> = {
    aud: `${origin}/client/hubs/${call.hub.name}`,
    role: call.params.getAll('role'),
    'webpubsub.group': groups,
  };
  if (userId) claims.sub = userId;
  return { status: 200, body: { token: signJwt(claims, call.hub.config.accessKey, minutes * 60) } };
}
