// Every message one edge node sends another, in one place: a discriminated
// union with one member per `op`, the list of ops, and how a message is
// encoded, decoded and checked against its definition in
// schemas/bus-message.schema.json (docs/architecture.md, "Messages between
// edges"). A message travels as an envelope (envelope.ts): this header as
// JSON, then raw body bytes where the op carries a body. The bus is a network
// too: decodeEdgeMessage returns only messages that match their schema.
import type { TraceEvent } from '../telemetry/trace.ts';
import { busMessageValidator } from '../validation/schemas.ts';
import { decodeEnvelope, encodeEnvelope } from './envelope.ts';

// --- shapes shared by several messages ----------------------------------------------

/** Who a pub/sub message or operation is for. */
export type Target = { kind: 'all' } | { kind: 'group' | 'user' | 'connection'; name: string };

/**
 * How a message's data is typed (Azure Web PubSub's dataType): json travels as its JSON text, text as a JSON
 * string, binary and protobuf (the bytes of a google.protobuf.Any, as @azure/web-pubsub-client sends it with
 * dataType 'protobuf') as base64 in a JSON string.
 */
export type DataType = 'json' | 'text' | 'binary' | 'protobuf';

/** Every DataType, for checks of a value not typed yet. */
export const DATA_TYPES: readonly DataType[] = ['json', 'text', 'binary', 'protobuf'];

/** A pub/sub data message without its data (which travels as the body, already JSON). */
export interface DataMessageHead {
  from: 'group' | 'server';
  group?: string;
  /** Set for messages a client sent to a group; null when the sender had no user id. */
  fromUserId?: string | null;
  dataType: DataType;
  /**
   * A REST send's `messageTtlSeconds` as a time (ms since epoch, the accepting
   * edge's clock): past it, the message is not sent to anyone who does not
   * have it yet (not delivered, not re-sent from a reliable session).
   */
  expiresAt?: number;
}

/**
 * Membership filter terms of :addToGroups / :removeFromGroups as edges before
 * OData filters wrote them (still read from stored streams); edges now send
 * the filter's text (`filter`), which each edge parses (pubsub/connection-filter.ts).
 */
export interface FilterTerm {
  field: 'connectionId' | 'userId';
  value: string;
}

export type GroupAction = 'add' | 'remove' | 'removeAll';

export type Permission = 'joinLeaveGroup' | 'sendToGroup';

/** A connection's permissions for one right, as plain data. */
export interface PermissionSnapshot {
  any: boolean;
  exact: string[];
  /** Group patterns as written in the role. */
  patterns: string[];
  /** Groups revoked one by one out of `any` or a pattern. */
  denied?: string[];
}

export interface GroupMember {
  connectionId: string;
  userId?: string;
}

/** A listener's answer to a relayed HTTP request (hc-response.schema.json). */
export interface HttpResponseHead {
  requestId: string;
  statusCode: number;
  statusDescription?: string | null;
  responseHeaders?: Record<string, string | number | boolean | (string | number | boolean)[]> | null;
  body?: boolean;
}

export interface Endpoint {
  address: string;
  port: number;
}

/** One edge's state, as GET /$relay/status lists it. */
export interface NodeStatus {
  nodeId: string;
  startedAt: string;
  shuttingDown: boolean;
  bus: { kind: 'memory' | 'nats'; connected: boolean };
  entities: { name: string; listeners: number }[];
  /** Entities with listeners left out of `entities` so the answer fits NATS's max_payload (those with the fewest). */
  entitiesOmitted?: number;
  hubs: { name: string; connections: number; groups: number; sessionsRetained: number }[];
}

/** Open connections on one edge, by kind (as the edge_relay_connections gauge). */
export interface ConnectionCounts {
  listener: number;
  relayed_websocket: number;
  http_request: number;
  pubsub: number;
}

/** One hybrid connection's traffic on one edge (counters since the edge started). */
export interface EntityStats {
  name: string;
  listeners: number;
  /** Relayed WebSockets open now (each a sender spliced to a listener). */
  senders: number;
  requests: number;
  connects: number;
  failures: number;
  bytes: number;
}

/** One hub on one edge: connections now, and counters since the edge started. */
export interface HubStats {
  name: string;
  /** Attached connections without a reliable session. */
  plain: number;
  /** Attached connections with a reliable session. */
  reliable: number;
  /** Reliable sessions held for a client that dropped its socket. */
  retained: number;
  groups: number;
  /** The largest groups on this edge (members here), largest first. */
  topGroups: { name: string; members: number }[];
  /** Events accepted on this edge (clients and REST). */
  published: number;
  /** Events that came from other edges for members here. */
  received: number;
  /** Events handed to clients here (one per recipient). */
  deliveries: number;
  slowConsumerCloses: number;
}

/** One edge's state and counters, as GET /$relay/stats lists it (the dashboard reads it). */
export interface EdgeStats {
  nodeId: string;
  publicUrl: string;
  startedAt: string;
  /** When the edge took this snapshot (ms since the epoch, its own clock). */
  at: number;
  shuttingDown: boolean;
  bus: { kind: 'memory' | 'nats'; connected: boolean };
  /** Resident set size of the edge's process, bytes. */
  rss: number;
  connections: ConnectionCounts;
  hybrid: {
    requests: number;
    connects: number;
    bytes: number;
    /** Failed connects and requests by error code. */
    failures: Record<string, number>;
    /** Entities with listeners or traffic on this edge. */
    entityCount: number;
    /** The busiest `top` of them. */
    entities: EntityStats[];
  };
  hubs: HubStats[];
  limitRefusals: number;
  traceDropped: number;
  /** Cut to fit NATS's max_payload: the hubs' largest groups, then the least busy hubs and entities, left out. */
  trimmed?: true;
}

// --- hybrid connections: a sender's edge and the edge holding a listener ------------

/** Sender's edge -> a listener's edge (queue group): push this accept down a control channel. */
export interface HcAccept {
  op: 'hc.accept';
  entity: string;
  /** The sender's edge, told (hc.failed) when the listener drops its control channel before dialing; older edges leave it out. */
  node?: string;
  /** The last moment (ms since epoch, the sender's edge's clock) a listener may be told: its edge drops a notice arriving later, as the sender's edge gives up on `hc.routed` soon after. */
  expiresAt?: number;
  /** `trackingId`: the sender's sb-hc-id, which the listener is told as the accept's id (the relay's `id` is in the address). */
  accept: { address: string; id: string; trackingId?: string; connectHeaders: Record<string, string>; remoteEndpoint: Endpoint };
}

/** Sender's edge -> a listener's edge: push this request (its small body follows) or a notice to fetch it. */
export interface HcRequest {
  op: 'hc.request';
  entity: string;
  /** The sender's edge, where answers go. */
  node: string;
  /** As in HcAccept. */
  expiresAt?: number;
  request: {
    address: string;
    id: string;
    requestTarget?: string;
    method?: string;
    requestHeaders?: Record<string, string>;
    remoteEndpoint?: Endpoint;
    body?: boolean;
  };
}

/** Answer to hc.accept / hc.request: whether a listener took it. */
export interface HcRouted {
  op: 'hc.routed';
  ok: boolean;
  code?: 'NoListener' | 'TooManyPending' | 'ListenerGone';
  /** The listener's edge (the sender's edge checks it is still there while it waits: hc.alive). */
  node?: string;
  /** It watches the listener for the sender (a connect, a request fetched by rendezvous) until told `hc.done`. */
  watching?: boolean;
}

/** Listener's edge -> sender's edge: the listener answered on its control channel (body follows). */
export interface HcResponse {
  op: 'hc.response';
  id: string;
  response: HttpResponseHead;
}

/** Listener's edge -> sender's edge: the request will not be answered, or the connect not accepted. */
export interface HcFailed {
  op: 'hc.failed';
  id: string;
  code: 'ListenerGone' | 'BadListenerResponse';
}

/** Sender's edge -> listener's edge: a connect or a request fetched by rendezvous no longer waits for its listener (it dialed, or the sender left). */
export interface HcDone {
  op: 'hc.done';
  id: string;
}

/**
 * Sender's edge -> a listener's edge it waits on, every second: are you there? Answered in kind; no responders means
 * the edge is gone. `ids`: what the sender's edge has waited on there a while, all of it at every check, 1,000 to a
 * question (hybrid/cluster-link.ts); the answer's `gone` names those the listener's edge no longer watches, whose
 * hc.response or hc.failed NATS lost (an edge without these fields ignores them, and its answer says nothing of them).
 */
export interface HcAlive {
  op: 'hc.alive';
  ids?: string[];
  gone?: string[];
}

// --- publish/subscribe: every edge of a hub ----------------------------------------

/** A pub/sub event for the target's members on other edges; its data (JSON text) is the body. */
export interface PsSend {
  op: 'ps.send';
  origin: string;
  hub: string;
  /** Cluster-wide event id `origin:counter`. */
  mid: string;
  /** When the publishing edge accepted it (ms since epoch). */
  at?: number;
  target: Target;
  excluded?: string[];
  /** A REST send's OData filter, as text: every edge applies it to its own connections. */
  filter?: string;
  message: DataMessageHead;
}

/**
 * REST close: end the target's connections. Answered with ps.done. A durable hub also stores one of a user's, a
 * group's or the hub's connections in its stream (without `at`), and one of a connection that no edge answered
 * holding while its session is kept: every edge ends the connections it names as it reads it, and a take of a
 * session whose replay passes it ends the session (session-take.ts).
 */
export interface PsClose {
  op: 'ps.close';
  origin: string;
  hub: string;
  target: Target;
  excluded?: string[];
  reason?: string;
  /** Durable hub, group target (a close of a user's, group's or the hub's: the close's own sequence): answer once the stream is applied up to this sequence. */
  at?: number;
}

/** REST membership change. Answered with ps.done. */
export interface PsGroups {
  op: 'ps.groups';
  origin: string;
  hub: string;
  target: Target;
  action: GroupAction;
  groups: string[];
  /** The OData filter over connections, as text. */
  filter?: string;
  /** The filter as older edges sent it. */
  terms?: FilterTerm[];
}

/** An edge serving a hub (on a durable hub, reading its stream) says so (pubsub/hub-roster.ts). */
export interface PsHere {
  op: 'ps.here';
  origin: string;
  /** The edge process (a restarted edge keeps its node id, not this): see PsClaim.boot. */
  boot?: string;
  hub: string;
  state: 'hello' | 'here' | 'leaving';
}

/** REST HEAD: does the target have connections? Answered with ps.done. */
export interface PsExists {
  op: 'ps.exists';
  origin: string;
  hub: string;
  target: Target;
  /** Durable hub, group target: answer once the stream is applied up to this sequence. */
  at?: number;
}

/** REST list of a group's members. Answered with ps.done carrying members. */
export interface PsList {
  op: 'ps.list';
  origin: string;
  hub: string;
  group: string;
  /** The members with the lowest connection ids (after `after`, when given), at most this many. */
  top: number;
  after?: string;
  /** Durable hub: answer once the stream is applied up to this sequence. */
  at?: number;
}

/** REST permission grant, revoke or check. Answered with ps.done. */
export interface PsPermission {
  op: 'ps.permission';
  origin: string;
  hub: string;
  connectionId: string;
  method: 'PUT' | 'DELETE' | 'HEAD';
  permission: Permission;
  group?: string;
}

/** One edge's answer to a cluster-wide REST operation: how many of its connections it touched. */
export interface PsDone {
  op: 'ps.done';
  count: number;
  members?: GroupMember[];
  /** The answering edge (the asker counts answers off its roster). */
  edge?: string;
  /** ps.permission: refused, the connection names limits.groupsPerConnection groups for that permission already. */
  full?: boolean;
  /** ps.permission on a durable hub: changed, but the session's checkpoint could not be stored (try again). */
  unstored?: boolean;
  /** ps.list: cut to fit the bus's max_payload; the edge has members after the last one named. */
  cut?: boolean;
  /** ps.exists, ps.list asked at a stream position: the edge had not applied the stream that far in time (its answer may miss changes). */
  behind?: boolean;
}

/** Taking edge -> holding edge: one stage of moving a reliable session (session-handover.ts). */
export interface PsHandover {
  op: 'ps.handover';
  origin: string;
  hub: string;
  connectionId: string;
  stage: 'begin' | 'commit' | 'page' | 'abort';
  token?: string;
  protocol?: string;
  after?: number;
}

/** Holding edge's answer to ps.handover begin, commit or abort. */
export interface PsSession {
  op: 'ps.session';
  ok: boolean;
  busy?: boolean;
  userId?: string | null;
  permissions?: Record<Permission, PermissionSnapshot>;
  groups?: string[];
  ackIds?: number[];
  reconnectionToken?: string;
  /** The connection state an event handler set (ce-connectionState). */
  states?: string;
  firstSeq?: number;
  lastSeq?: number;
  /** Per event origin, the highest counter the holder delivered. */
  seen?: Record<string, number>;
  /** With commit, while the holder replays after an outage: since when (its clock) it may still miss events. */
  missingSince?: number;
}

/** Holding edge's answer to ps.handover page: unacknowledged events, their bodies concatenated after the header. */
export interface PsEntries {
  op: 'ps.entries';
  entries: { seq: number; mid?: string; length: number; expiresAt?: number }[];
}

/** An edge back on NATS (or taking a session) asks every edge for the events it published. */
export interface PsReplay {
  op: 'ps.replay';
  origin: string;
  /** Per origin, the counter already delivered: send what comes after. */
  since: Record<string, number>;
  /** For origins not in `since`: send what was published after this time (ms since epoch). */
  after: number;
  /** Per origin, the first counter the asker holds already: send what comes before it only. */
  until?: Record<string, number>;
}

/** Answer to ps.replay: ps.send envelopes, concatenated after the header. */
export interface PsReplayed {
  op: 'ps.replayed';
  /** The answering edge's node id: the asker waits for each edge it has had events from. */
  edge: string;
  truncated?: boolean;
  entries: { length: number }[];
}

// --- publish/subscribe: what a hub's JetStream stream and session bucket hold ------------

/**
 * A membership change, stored in the hub's stream so that every edge applies
 * it at the same place in the order of events (docs/durability.md): a client's
 * joinGroup/leaveGroup, or a REST membership call.
 */
export interface PsMember {
  op: 'ps.member';
  origin: string;
  hub: string;
  target: Target;
  action: GroupAction;
  groups: string[];
  /** The OData filter over connections, as text: applied by every edge in stream order. */
  filter?: string;
  /** The filter as older edges stored it. */
  terms?: FilterTerm[];
}

/**
 * An edge takes a reliable session over: stored in the hub's stream, so the
 * latest claim in stream order owns the session and every other edge lets go
 * when it reads it.
 */
export interface PsClaim {
  op: 'ps.claim';
  /** The edge taking the session. */
  origin: string;
  /**
   * The edge process taking it: an edge that takes a session over waits for
   * the last write of the process holding it only while that process is on
   * the roster, not a successor restarted under the same node id.
   */
  boot?: string;
  hub: string;
  connectionId: string;
}

/**
 * A reliable session's state in the session bucket: enough for any edge to
 * rebuild it and re-derive its sequence ids from the hub's stream: the last
 * sequence id its client acknowledged, the stream position that id maps to,
 * and the groups the connection was in at that position.
 */
export interface PsCheckpoint {
  op: 'ps.checkpoint';
  hub: string;
  connectionId: string;
  userId: string | null;
  protocol: string;
  /** SHA-256 of the reconnection token, base64url: the token itself is never stored. */
  tokenHash: string;
  permissions: Record<Permission, PermissionSnapshot>;
  /** The edge that wrote it. */
  owner: string;
  /** The edge process that wrote it (PsClaim.boot). */
  ownerBoot?: string;
  /**
   * The stream sequence of the claim by which `owner` holds the session (0 or
   * absent: it opened there). A later claim wins: an edge that finds a higher
   * one stored no longer writes (session-checkpoints.ts).
   */
  claim?: number;
  /** Set in the owner's last write when a claim made it let go: that claim's stream sequence. */
  releasedBy?: number;
  /** In that last write: the ackIds whose requests it processed, the latest 1,000, so the next edge answers a retry Duplicate. */
  ackIds?: number[];
  /** The session ended for good (closed, expired): no edge takes it again (stream-sessions.ts, ended). */
  ended?: true;
  /** Every sequence id up to this one is acknowledged. */
  sequenceId: number;
  /** The stream sequence whose event had `sequenceId` (or, with nothing unacknowledged, the last one read). */
  position: number;
  /** The id (PsSend.mid) of the event at `position` when it had `sequenceId`: found by it where another server numbers the stream otherwise. */
  mid?: string;
  groups: string[];
  /** The connection state an event handler set (ce-connectionState). */
  states?: string;
  /** When it was written (ms since epoch). */
  at: number;
}

// --- operations --------------------------------------------------------------------

/** Asks every edge for its status (GET /$relay/status). */
export interface OpsStatus {
  op: 'ops.status';
  origin: string;
  /** Only this entity's listeners (its key): a runtime information request's count. */
  entity?: string;
}

/** One edge's status, answering ops.status. */
export interface OpsNode extends NodeStatus {
  op: 'ops.node';
}

/** Asks every edge for its counters (GET /$relay/stats, the dashboard). */
export interface OpsStats {
  op: 'ops.stats';
  origin: string;
  /** How many entities and groups per hub each edge lists at most. */
  top: number;
}

/** One edge's counters, answering ops.stats. */
export interface OpsEdge extends EdgeStats {
  op: 'ops.edge';
}

/**
 * An edge with live trace viewers wants every edge's trace events for
 * `ttlMs` (announced again before it ends); 0 withdraws. Edges that heard
 * no unexpired interest publish nothing (docs/dashboard.md, "Live trace").
 */
export interface OpsTraceWatch {
  op: 'ops.trace.watch';
  origin: string;
  ttlMs: number;
}

/** A batch of one edge's trace events, for the edges with viewers. */
export interface OpsTrace {
  op: 'ops.trace';
  origin: string;
  events: TraceEvent[];
  /** Events this edge dropped since its last batch (over its rate cap, or a full batch). */
  dropped?: number;
}

/** Every message between edges. */
export type EdgeMessage =
  | HcAccept
  | HcRequest
  | HcRouted
  | HcResponse
  | HcFailed
  | HcDone
  | HcAlive
  | PsSend
  | PsClose
  | PsGroups
  | PsHere
  | PsExists
  | PsList
  | PsPermission
  | PsDone
  | PsHandover
  | PsSession
  | PsEntries
  | PsReplay
  | PsReplayed
  | PsMember
  | PsClaim
  | PsCheckpoint
  | OpsStatus
  | OpsNode
  | OpsStats
  | OpsEdge
  | OpsTraceWatch
  | OpsTrace;

export type EdgeOp = EdgeMessage['op'];
export type EdgeMessageOf<Op extends EdgeOp> = Extract<EdgeMessage, { op: Op }>;

/** Every op, each with its schema definition of the same name. */
export const EDGE_OPS = [
  'hc.accept', 'hc.request', 'hc.routed', 'hc.response', 'hc.failed', 'hc.done', 'hc.alive',
  'ps.send', 'ps.close', 'ps.groups', 'ps.here', 'ps.exists', 'ps.list', 'ps.permission', 'ps.done',
  'ps.handover', 'ps.session', 'ps.entries', 'ps.replay', 'ps.replayed',
  'ps.member', 'ps.claim', 'ps.checkpoint',
  'ops.status', 'ops.node', 'ops.stats', 'ops.edge', 'ops.trace.watch', 'ops.trace',
] as const satisfies readonly EdgeOp[];

// A compile-time check that the list names every member of the union.
type Missing = Exclude<EdgeOp, (typeof EDGE_OPS)[number]>;
const everyOpListed: Missing extends never ? true : Missing = true;
void everyOpListed;

const validators = new Map(EDGE_OPS.map((op) => [op as string, busMessageValidator(op)]));

/** True when `header` is a valid message (any op). */
export function isEdgeMessage(header: unknown): header is EdgeMessage {
  const op = (header as { op?: unknown } | null)?.op;
  if (typeof op !== 'string') return false;
  const validate = validators.get(op);
  return validate !== undefined && validate(header);
}

export function encodeEdgeMessage(message: EdgeMessage, body?: Uint8Array): Uint8Array {
  return encodeEnvelope(message, body);
}

export interface DecodedEdgeMessage<M extends EdgeMessage = EdgeMessage> {
  message: M;
  /** Raw bytes after the header. */
  body: Buffer;
}

/** The message in `data` when it is a valid one of `ops` (any op when none is named); undefined otherwise. */
export function decodeEdgeMessage<Op extends EdgeOp = EdgeOp>(data: Uint8Array, ...ops: Op[]): DecodedEdgeMessage<EdgeMessageOf<Op>> | undefined {
  const envelope = decodeEnvelope(data);
  if (!envelope || !isEdgeMessage(envelope.header)) return undefined;
  if (ops.length > 0 && !(ops as string[]).includes(envelope.header.op)) return undefined;
  return { message: envelope.header as EdgeMessageOf<Op>, body: envelope.body };
}
