// Delivers a client's `event` message to the hub's upstream as a CloudEvents
// HTTP POST in binary mode, the way Azure Web PubSub calls its event handlers
// (ce-type azure.webpubsub.user.<event>, ce-signature = sha256=hex(HMAC-SHA256
// (accessKey, connectionId))). A 2xx answer acks the event; a non-empty body
// goes back to the client as a message from the server.
import { createHmac, randomUUID } from 'node:crypto';
import type { HubConfig } from '../config/types.ts';
import { parseJson } from '../validation/bounded-json.ts';
import type { DataMessage, DataType } from './downstream.ts';

export interface UserEvent {
  hub: HubConfig;
  connectionId: string;
  userId: string | null;
  subprotocol: string;
  event: string;
  dataType: DataType;
  data: unknown;
}

export type UpstreamResult =
  | { ok: true; reply?: DataMessage }
  | { ok: false; code: 'NoUpstream' | 'UpstreamFailed'; detail: string };

const CONTENT_TYPES: Record<DataType, string> = {
  json: 'application/json',
  text: 'text/plain; charset=utf-8',
  binary: 'application/octet-stream',
};

/** Header values must be visible ASCII; anything else is percent-encoded. */
function headerSafe(value: string): string {
  return /^[\x20-\x7e]*$/.test(value) ? value : encodeURIComponent(value);
}

function bodyOf(dataType: DataType, data: unknown): Buffer {
  if (dataType === 'binary') return Buffer.from(String(data), 'base64');
  if (dataType === 'text') return Buffer.from(String(data), 'utf8');
  return Buffer.from(JSON.stringify(data ?? null), 'utf8');
}

function replyOf(contentType: string, body: Buffer): DataMessage {
  const type = contentType.split(';')[0].trim().toLowerCase();
  if (type === 'application/json') {
    try {
      return { from: 'server', dataType: 'json', dataJson: JSON.stringify(parseJson(body.toString('utf8'))) };
    } catch {
      // Not JSON after all (or nested too deep to re-serialize): hand it on as text.
    }
  }
  if (type === 'application/json' || type.startsWith('text/')) {
    return { from: 'server', dataType: 'text', dataJson: JSON.stringify(body.toString('utf8')) };
  }
  return { from: 'server', dataType: 'binary', dataJson: JSON.stringify(body.toString('base64')) };
}

export async function postUserEvent(e: UserEvent, origin: string, maxReplyBytes: number): Promise<UpstreamResult> {
  const upstream = e.hub.upstream;
  if (!upstream) return { ok: false, code: 'NoUpstream', detail: `hub '${e.hub.name}' has no upstream configured` };
  const headers: Record<string, string> = {
    'content-type': CONTENT_TYPES[e.dataType],
    'webhook-request-origin': origin,
    'ce-specversion': '1.0',
    'ce-type': `azure.webpubsub.user.${e.event}`,
    'ce-source': `/hubs/${e.hub.name}/client/${e.connectionId}`,
    'ce-id': randomUUID(),
    'ce-time': new Date().toISOString(),
    'ce-awpsversion': '1.0',
    'ce-hub': e.hub.name,
    'ce-eventname': e.event,
    'ce-connectionid': e.connectionId,
    'ce-subprotocol': e.subprotocol,
    'ce-signature': `sha256=${createHmac('sha256', e.hub.accessKey).update(e.connectionId).digest('hex')}`,
  };
  if (e.userId !== null) headers['ce-userid'] = headerSafe(e.userId);
  let response: Response;
  let body: Buffer;
  try {
    response = await fetch(upstream.url, {
      method: 'POST',
      headers,
      body: new Uint8Array(bodyOf(e.dataType, e.data)),
      signal: AbortSignal.timeout(upstream.timeoutMs),
      redirect: 'manual',
    });
    if (Number(response.headers.get('content-length') ?? 0) > maxReplyBytes) {
      await response.body?.cancel();
      return { ok: false, code: 'UpstreamFailed', detail: 'upstream reply too large' };
    }
    body = Buffer.from(await response.arrayBuffer());
  } catch (err) {
    return { ok: false, code: 'UpstreamFailed', detail: `upstream unreachable: ${(err as Error).name}` };
  }
  if (response.status < 200 || response.status > 299) {
    return { ok: false, code: 'UpstreamFailed', detail: `upstream answered ${response.status}` };
  }
  if (body.length === 0) return { ok: true };
  if (body.length > maxReplyBytes) return { ok: false, code: 'UpstreamFailed', detail: 'upstream reply too large' };
  return { ok: true, reply: replyOf(response.headers.get('content-type') ?? 'application/octet-stream', body) };
}
