// A simple WebSocket client's mode (docs/event-handlers.md, "sendToGroup
// mode"), read from its upgrade's query once and fixed for the
// connection's life, as Azure has it: `webpubsub_mode=sendEvent` (also no
// mode at all: each frame is a `message` event) or
// `webpubsub_mode=sendToGroup&group=g` (each frame is published to group g).
// The mode is named in any ASCII case; `group` must be given once, and be a
// group name the JSON protocol takes. A client on a Web PubSub subprotocol has
// no mode: it says what each message is itself.
import { validateGroupName } from '../validation/schemas.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

export type SimpleClientMode = { kind: 'sendEvent' } | { kind: 'sendToGroup'; group: string };

export type SimpleModeVerdict = { ok: true; mode: SimpleClientMode } | { ok: false; detail: string };

const SEND_EVENT: SimpleModeVerdict = { ok: true, mode: { kind: 'sendEvent' } };

/** The mode a simple client's upgrade query asks for, or why it cannot be had (answered 400). */
export function simpleClientModeOf(params: URLSearchParams): SimpleModeVerdict {
  const modes = params.getAll('webpubsub_mode');
  if (modes.length === 0) return SEND_EVENT;
  if (modes.length > 1) return { ok: false, detail: 'webpubsub_mode is given more than once' };
  const mode = asciiLowerCase(modes[0]);
  if (mode === 'sendevent') return SEND_EVENT;
  if (mode !== 'sendtogroup') return { ok: false, detail: 'webpubsub_mode must be sendEvent or sendToGroup' };
  const groups = params.getAll('group');
  if (groups.length !== 1) return { ok: false, detail: 'webpubsub_mode=sendToGroup needs the group query parameter exactly once' };
  if (!validateGroupName(groups[0])) return { ok: false, detail: 'the group of webpubsub_mode=sendToGroup must be 1 to 1024 characters' };
  return { ok: true, mode: { kind: 'sendToGroup', group: groups[0] } };
}
