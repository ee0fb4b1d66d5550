// Reads a group's history through the relay's REST API
// (GET /api/hubs/{hub}/groups/{group}/messages), for `edge-relay sub --after`.
// Each page is asked with a bearer token signed with the hub's key, whose
// audience is the page's URL, as @azure/web-pubsub signs its REST calls.
import { signJwt } from '../auth/jwt.ts';
import type { HubAccess } from './hub-access.ts';
import type { HubMessage } from './hub-client.ts';
import { getJson } from './http-get.ts';
import type { ClientTls } from './tls-options.ts';

/** A group message as the relay keeps it; `sequence` orders history and live messages alike. */
export interface SequencedMessage extends HubMessage {
  sequence: number;
}

const PAGE = 1000;
const REQUEST_TIMEOUT_MS = 10_000;

/** What a reader knows of the history it reads: the id of its numbering (a new one means it started over). */
export interface HistoryNumbering {
  historyId?: string;
}

/**
 * Messages of `group` after `after`, oldest first, as live messages look; calls `each` for every one, page by
 * page; the last sequence read. `restarted` when the relay's history is another than `known` says (its
 * numbering started over: an in-memory history after a restart; `known` is the new one), or ends before `after`
 * (`behind`): nothing is read then.
 */
export async function readGroupHistory(
  baseUrl: string,
  access: HubAccess,
  group: string,
  after: number,
  each: (m: SequencedMessage) => boolean,
  tls?: ClientTls,
  known: HistoryNumbering = {},
): Promise<{ last: number; restarted?: 'renumbered' | 'behind' }> {
  const base = baseUrl.replace(/\/+$/, '').replace(/^ws(s?):/i, 'http$1:');
  const path = `/api/hubs/${encodeURIComponent(access.hub)}/groups/${encodeURIComponent(group)}/messages`;
  let cursor = after;
  for (;;) {
    const token = signJwt({ aud: `${base}${path}` }, access.key, 300);
    const res = await getJson(`${base}${path}?after=${cursor}&limit=${PAGE}`, { authorization: `Bearer ${token}` }, tls, REQUEST_TIMEOUT_MS);
    const body = (typeof res.body === 'object' && res.body !== null ? res.body : {}) as {
      code?: string;
      message?: string;
      messages?: { sequence: number; dataType: string; data: unknown; fromUserId: string | null; time: string }[];
      next?: number;
      historyId?: unknown;
      last?: unknown;
    };
    if (res.status !== 200 || !Array.isArray(body.messages) || typeof body.next !== 'number') {
      throw Object.assign(new Error(`history of ${group}: ${res.status} ${body.code ?? ''} ${body.message ?? ''}`.trim()), { status: res.status });
    }
    if (typeof body.historyId === 'string') {
      const restarted = known.historyId !== undefined && known.historyId !== body.historyId;
      known.historyId = body.historyId;
      if (restarted) return { last: after, restarted: 'renumbered' };
    }
    // A position past what the history ever gave out: it started over under the same id as far as this reader can
    // tell (a first read after a restart), or never had it. Read from its start, said so (before: every live message
    // numbered up to the position was dropped as printed already, without a word; found by review).
    if (typeof body.last === 'number' && cursor > body.last) return { last: after, restarted: 'behind' };
    for (const m of body.messages) {
      const message: SequencedMessage = { type: 'message', from: 'group', group, dataType: m.dataType, data: m.data, sequence: m.sequence };
      if (!each(message)) return { last: m.sequence };
    }
    // A page may come back short (messages of another group sharing a hashed subject are skipped): the end is a page that moves nothing.
    if (body.next === cursor) return { last: cursor };
    cursor = body.next;
  }
}
