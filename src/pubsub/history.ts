// A hub's history of group messages (pubsub.hubs[].history), read by REST
// `GET /api/hubs/{hub}/groups/{group}/messages?after=&limit=` and by
// `edge-relay sub --after` (docs/durability.md, "History"). On the memory bus
// it is a bounded ring in this process (lost on restart); on the NATS bus it
// is the hub's JetStream stream, read by subject (stream-events.ts). A
// message's sequence is the same in history and on the live frame
// (`"sequence"`), so a reader can join the two without a gap or a repeat.
import { randomBytes } from 'node:crypto';
import type { HubHistoryConfig } from '../config/types.ts';
import type { DataMessage } from './downstream.ts';

/** One message as REST returns it; `dataJson` is its `data` already as JSON text. */
export interface HistoryEntry {
  sequence: number;
  dataType: DataMessage['dataType'];
  dataJson: string;
  fromUserId: string | null;
  /** When the relay accepted it (ms since epoch). */
  at: number;
}

export interface HistoryPage {
  messages: HistoryEntry[];
  /** The last sequence returned (`after` itself when none was): the next page starts after it. */
  next: number;
  /**
   * Names the history's numbering where it can start over: an in-memory history (a restart, a reload that
   * made the hub again) has a new id then, so a reader holding a sequence from before knows it means nothing now.
   */
  historyId?: string;
  /** The last sequence the history has given out (of any group): an `after` past it names a position this history never had. */
  last: number;
}

export interface HubHistory {
  /** Messages of `group` with a sequence above `after`, oldest first, at most `limit`, and none more once HISTORY_PAGE_BYTES of data are read. */
  read(group: string, after: number, limit: number): Promise<HistoryPage>;
}

/** A page ends after the message that passes this much data (at least one message): 1,000 messages of 1 MiB were read whole for one call. */
export const HISTORY_PAGE_BYTES = 8 * 1024 * 1024;

/** In-process history caps, whatever the hub asks for (it lives in the relay's heap). */
export const MEMORY_HISTORY_MAX_MESSAGES = 100_000;
export const MEMORY_HISTORY_MAX_BYTES = 64 * 1024 * 1024;

interface Kept extends HistoryEntry {
  group: string;
  bytes: number;
}

/** The memory bus's history: a ring of group messages bounded by count, bytes and age. */
export class MemoryHistory implements HubHistory {
  private entries: Kept[] = [];
  /** Sequences start at 1 in each instance: a new id says so to readers. */
  private readonly id = randomBytes(9).toString('base64url');
  private head = 0;
  private bytes = 0;
  private sequence = 0;
  private readonly maxMessages: number;
  private readonly maxBytes: number;
  private readonly maxAgeMs: number;

  constructor(config: HubHistoryConfig) {
    this.maxMessages = Math.min(config.maxMessages ?? MEMORY_HISTORY_MAX_MESSAGES, MEMORY_HISTORY_MAX_MESSAGES);
    this.maxBytes = Math.min(config.maxBytes ?? MEMORY_HISTORY_MAX_BYTES, MEMORY_HISTORY_MAX_BYTES);
    this.maxAgeMs = config.maxAgeSeconds === undefined ? Infinity : config.maxAgeSeconds * 1000;
  }

  /** Keeps a group message; returns its sequence. */
  append(group: string, message: DataMessage, at: number): number {
    const sequence = ++this.sequence;
    // UTF-8 bytes, as JetStream stores them (a length in UTF-16 units counted non-Latin-1 text at a third).
    const bytes = Buffer.byteLength(message.dataJson) + group.length + 64;
    this.entries.push({ sequence, group, dataType: message.dataType, dataJson: message.dataJson, fromUserId: message.fromUserId ?? null, at, bytes });
    this.bytes += bytes;
    this.trim(at);
    return sequence;
  }

  private trim(now: number): void {
    while (this.head < this.entries.length) {
      const oldest = this.entries[this.head];
      const live = this.entries.length - this.head;
      if (live <= this.maxMessages && this.bytes <= this.maxBytes && now - oldest.at <= this.maxAgeMs) break;
      this.bytes -= oldest.bytes;
      // Let go of its text now: the slot stays until the ring is compacted (after 1,024 at least), and with it
      // the message (1,024 messages of 1 MiB held past a 1 MiB maxBytes).
      oldest.dataJson = '';
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  async read(group: string, after: number, limit: number): Promise<HistoryPage> {
    this.trim(Date.now());
    const messages: HistoryEntry[] = [];
    // Sequences are dense in the ring: the first one past `after` is found by arithmetic.
    const first = this.head < this.entries.length ? this.entries[this.head].sequence : this.sequence + 1;
    let bytes = 0;
    for (let i = this.head + Math.max(0, after - first + 1); i < this.entries.length && messages.length < limit && bytes < HISTORY_PAGE_BYTES; i++) {
      const e = this.entries[i];
      if (e.group !== group) continue;
      messages.push({ sequence: e.sequence, dataType: e.dataType, dataJson: e.dataJson, fromUserId: e.fromUserId, at: e.at });
      bytes += e.bytes;
    }
    return { messages, next: messages.length > 0 ? messages[messages.length - 1].sequence : after, historyId: this.id, last: this.sequence };
  }
}

/** The REST body of a page, built around each message's JSON text (never parsed again). */
export function historyPageJson(page: HistoryPage): string {
  const items = page.messages.map(
    (m) =>
      `{"sequence":${m.sequence},"dataType":"${m.dataType}","data":${m.dataJson},"fromUserId":${JSON.stringify(m.fromUserId)},"time":"${new Date(m.at).toISOString()}"}`,
  );
  const id = page.historyId === undefined ? '' : `,"historyId":${JSON.stringify(page.historyId)}`;
  return `{"messages":[${items.join(',')}],"next":${page.next}${id},"last":${page.last}}\n`;
}
