// Every bus subject the relay uses, built in one place (docs/architecture.md,
// "Names on the bus"). A user-chosen name becomes one subject token by
// encodeSubjectToken: letters, digits and `-` stay, every other byte of its
// UTF-8 form becomes `_XX` (upper-case hex), so `.`, `*`, `>`, spaces and
// control bytes can never split a token or act as a wildcard, and decoding is
// exact. A lone surrogate (JSON can carry one; UTF-8 cannot, and would write
// U+FFFD's bytes for it, so `"\ud800"` and `"\ufffd"` would share a token)
// becomes `_U` and its four hex digits. A name whose encoding would pass MAX_TOKEN_LENGTH (NATS caps a
// protocol line at 4 KiB) becomes `_h` + its SHA-256 instead: receivers always
// compare the exact name carried in the payload, so even a collision reaches
// nobody it should not.
import { createHash } from 'node:crypto';

const KEEP = /^[A-Za-z0-9-]$/;
export const MAX_TOKEN_LENGTH = 200;
const HEX = '0123456789ABCDEF';

export function encodeSubjectToken(name: string): string {
  if (name === '') return '_e';
  let out = '';
  for (const ch of name) {
    if (KEEP.test(ch)) {
      out += ch;
      continue;
    }
    const unit = ch.charCodeAt(0);
    if (ch.length === 1 && unit >= 0xd800 && unit <= 0xdfff) {
      out += `_U${unit.toString(16).toUpperCase()}`;
      continue;
    }
    for (const byte of Buffer.from(ch, 'utf8')) out += `_${HEX[byte >> 4]}${HEX[byte & 15]}`;
    if (out.length > MAX_TOKEN_LENGTH) break;
  }
  if (out.length > MAX_TOKEN_LENGTH) return `_h${createHash('sha256').update(name, 'utf8').digest('base64url')}`;
  return out;
}

/** The name a token encodes, or undefined for a hashed or malformed token. */
export function decodeSubjectToken(token: string): string | undefined {
  if (token === '_e') return '';
  if (token.startsWith('_h')) return undefined;
  let text = '';
  let bytes: number[] = [];
  for (let i = 0; i < token.length; i++) {
    const c = token[i];
    if (c !== '_') {
      if (!KEEP.test(c)) return undefined;
      bytes.push(c.charCodeAt(0));
      continue;
    }
    if (token[i + 1] === 'U') {
      const unit = token.slice(i + 2, i + 6);
      if (!/^D[89A-F][0-9A-F]{2}$/.test(unit)) return undefined;
      text += Buffer.from(bytes).toString('utf8') + String.fromCharCode(parseInt(unit, 16));
      bytes = [];
      i += 5;
      continue;
    }
    const hex = token.slice(i + 1, i + 3);
    if (!/^[0-9A-F]{2}$/.test(hex)) return undefined;
    bytes.push(parseInt(hex, 16));
    i += 2;
  }
  text += Buffer.from(bytes).toString('utf8');
  return encodeSubjectToken(text) === token ? text : undefined;
}

/** Subjects under one prefix (config `bus.subjectPrefix`, default `relay`). */
export class Subjects {
  constructor(readonly prefix: string) {}

  /** Nodes holding listeners for a hybrid connection subscribe here (queue group). */
  hybridEntity(entityKey: string): string {
    return `${this.prefix}.hc.${encodeSubjectToken(entityKey)}`;
  }

  /** Messages addressed to one edge node. */
  node(nodeId: string): string {
    return `${this.prefix}.node.${encodeSubjectToken(nodeId)}`;
  }

  /** One edge node's hybrid-connection messages (hc.response, hc.failed, hc.done, hc.alive). */
  nodeHybrid(nodeId: string): string {
    return `${this.node(nodeId)}.hc`;
  }

  /** Every node, for one hub (send to all, close all, membership by filter). */
  hubAll(hubKey: string): string {
    return `${this.prefix}.ps.${encodeSubjectToken(hubKey)}.all`;
  }

  /** Every node: an edge back on NATS asks here for events it may have missed (pubsub/replaying-feed.ts). */
  replay(): string {
    return `${this.prefix}.replay`;
  }

  /** Every node: the status API gathers each edge's status here. */
  status(): string {
    return `${this.prefix}.ops.status`;
  }

  /** Every node: the dashboard's counters are gathered here (ops.stats). */
  stats(): string {
    return `${this.prefix}.ops.stats`;
  }

  /** Every node: edges with live trace viewers announce their interest here (ops.trace.watch). */
  traceWatch(): string {
    return `${this.prefix}.ops.trace.watch`;
  }

  /** Edges with live trace viewers, while they have some: the other edges' trace events (ops.trace). */
  traceEvents(): string {
    return `${this.prefix}.ops.trace.events`;
  }

  /** Every subject of a hub's durable events: its JetStream stream holds these (docs/durability.md). */
  hubEvents(hubKey: string): string {
    return `${this.prefix}.ev.${encodeSubjectToken(hubKey)}.>`;
  }

  /** Where a durable event for a target is stored: `.g.{group}`, `.u.{user}`, `.c.{connection}` or `.all`. */
  hubEvent(hubKey: string, kind: 'all' | 'group' | 'user' | 'connection', name = ''): string {
    const base = `${this.prefix}.ev.${encodeSubjectToken(hubKey)}`;
    if (kind === 'all') return `${base}.all`;
    return `${base}.${kind[0]}.${encodeSubjectToken(name)}`;
  }

  /** Where membership changes and session claims of a durable hub are stored. */
  hubControl(hubKey: string): string {
    return `${this.prefix}.ev.${encodeSubjectToken(hubKey)}.ctl`;
  }

  group(hubKey: string, group: string): string {
    return `${this.prefix}.ps.${encodeSubjectToken(hubKey)}.g.${encodeSubjectToken(group)}`;
  }

  user(hubKey: string, userId: string): string {
    return `${this.prefix}.ps.${encodeSubjectToken(hubKey)}.u.${encodeSubjectToken(userId)}`;
  }

  connection(hubKey: string, connectionId: string): string {
    return `${this.prefix}.ps.${encodeSubjectToken(hubKey)}.c.${encodeSubjectToken(connectionId)}`;
  }
}

/** An unguessable reply subject. */
export function inboxSubject(prefix: string, id: string): string {
  return `_INBOX.${encodeSubjectToken(prefix)}.${id}`;
}
