// Limits an open pub/sub connection reads from the config's `limits` each
// time it uses them, so a reload (which changes that object in place) bounds
// connections already open. Classes, not object literals with getters: V8
// keeps an object literal with getters in slow dictionary mode, and these are
// read for every message (a reliable session's for every delivery: made per
// connection that way, they cost reliable fan-out to 10,000 about a quarter
// of its rate; test/pubsub/live-limits.test.ts).
import type { MessageSocketOptions } from '../websocket/message-socket.ts';
import type { SessionLimits } from './reliable-session.ts';

/** A reliable session's buffer limits: limits.sessionBufferMessages and sessionBufferBytes. */
export class LiveSessionLimits implements SessionLimits {
  constructor(private readonly limits: { readonly sessionBufferMessages: number; readonly sessionBufferBytes: number }) {}

  get maxMessages(): number {
    return this.limits.sessionBufferMessages;
  }

  get maxBytes(): number {
    return this.limits.sessionBufferBytes;
  }
}

/** A client socket's options: limits.pubsubMessageBytes and outboundBufferBytes, and a close handshake's wait. */
export class LiveSocketOptions implements MessageSocketOptions {
  constructor(
    private readonly limits: { readonly pubsubMessageBytes: number; readonly outboundBufferBytes: number },
    readonly closeHandshakeMs: number,
  ) {}

  get maxMessageBytes(): number {
    return this.limits.pubsubMessageBytes;
  }

  get outboundHighWaterMark(): number {
    return this.limits.outboundBufferBytes;
  }
}
