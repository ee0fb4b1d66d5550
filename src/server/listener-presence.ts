// Listener presence (hybridConnections[].presence) as JSON messages to a pub/sub
// hub group. A notice that cannot be sent (on a durable hub, while NATS or
// JetStream is away the send is refused) is kept, the latest per entity, hub
// and group, and sent again when the bus connects again and every few seconds
// until it goes through: a group that missed a listener coming or going would
// otherwise count it wrong until that entity's next change.
import type { Bus } from '../bus/bus.ts';
import type { ListenerPresenceNotice } from '../hybrid/hybrid-service.ts';
import type { Logger } from '../telemetry/logger.ts';

/** How often notices that could not be sent are tried again. */
export const PRESENCE_RETRY_MS = 2000;

type SendToGroup = (hub: string, group: string, data: unknown) => Promise<unknown>;

interface Slot {
  notice: ListenerPresenceNotice;
  /** A send is under way (the retry does not start another). */
  sending: boolean;
  failures: number;
}

export class ListenerPresence {
  /** The newest notice per entity, hub and group, until it is sent. */
  private readonly latest = new Map<string, Slot>();
  private readonly retry: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly send: SendToGroup,
    bus: Bus,
    private readonly log: Logger,
    retryMs = PRESENCE_RETRY_MS,
  ) {
    bus.onConnectionChange((connected) => {
      if (connected) this.sendUnsent();
    });
    this.retry = setInterval(() => this.sendUnsent(), retryMs);
    this.retry.unref();
  }

  /** A listener came or went: its notice goes out now (and again later if it cannot). */
  announce(notice: ListenerPresenceNotice): void {
    if (this.closed) return;
    const key = `${notice.hub}\u0000${notice.group}\u0000${notice.entity.toLowerCase()}`;
    const slot: Slot = { notice, sending: false, failures: 0 };
    this.latest.set(key, slot);
    this.deliver(key, slot);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.retry);
  }

  private sendUnsent(): void {
    if (this.closed) return;
    for (const [key, slot] of this.latest) this.deliver(key, slot);
  }

  private deliver(key: string, slot: Slot): void {
    if (slot.sending) return;
    slot.sending = true;
    const { hub, group, ...data } = slot.notice;
    this.send(hub, group, data).then(
      () => {
        // Sent: forgotten, unless a newer notice of its entity took its place meanwhile.
        if (this.latest.get(key) === slot) this.latest.delete(key);
      },
      (err: Error) => {
        slot.sending = false;
        if (this.latest.get(key) !== slot || slot.failures++ > 0) return;
        this.log.warn({ event: 'presence.unsent', entity: data.entity, hub, err: err.message, hint: `tried again every ${PRESENCE_RETRY_MS} ms` });
      },
    );
  }
}
