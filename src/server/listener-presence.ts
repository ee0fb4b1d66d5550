// Listener presence (hybridConnections[].presence) as JSON messages to a pub/sub
// hub group. A notice that cannot be sent (on a durable hub, while NATS or
// JetStream is away the send is refused) is kept, the latest per entity, hub
// and group, and sent again when the bus connects again and every few seconds
// until it goes through: a group that missed a listener coming or going would
// otherwise count it wrong until that entity's next change.
import type { Bus } from '../bus/bus.ts';
import type { ListenerPresenceNotice } from '../hybrid/hybrid-service.ts';
import type { Logger } from '../telemetry/logger.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

/** How often notices that could not be sent are tried again. */
export const PRESENCE_RETRY_MS = 2000;

type SendToGroup = (hub: string, group: string, data: unknown) => Promise<unknown>;

/** One entity's notices to one group: the newest, and whether a send is under way. */
interface Slot {
  latest: ListenerPresenceNotice;
  /** One send at a time per slot, so an older notice never lands after a newer one. */
  sending: boolean;
  failures: number;
}

export class ListenerPresence {
  /** Per entity, hub and group: until its newest notice is sent. */
  private readonly slots = new Map<string, Slot>();
  private readonly retry: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly send: SendToGroup,
    bus: Pick<Bus, 'onConnectionChange'>,
    private readonly log: Logger,
    private readonly retryMs = PRESENCE_RETRY_MS,
  ) {
    bus.onConnectionChange((connected) => {
      if (connected) this.sendUnsent();
    });
    this.retry = setInterval(() => this.sendUnsent(), retryMs);
    this.retry.unref();
  }

  /** A listener came or went: its notice goes out now, after one under way for the same entity (and again later if it cannot). */
  announce(notice: ListenerPresenceNotice): void {
    if (this.closed) return;
    const key = `${notice.hub}\u0000${notice.group}\u0000${asciiLowerCase(notice.entity)}`;
    const slot = this.slots.get(key);
    if (slot) {
      slot.latest = notice;
      slot.failures = 0;
    } else this.slots.set(key, { latest: notice, sending: false, failures: 0 });
    this.deliver(key);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.retry);
  }

  private sendUnsent(): void {
    if (this.closed) return;
    for (const key of this.slots.keys()) this.deliver(key);
  }

  private deliver(key: string): void {
    const slot = this.slots.get(key);
    if (!slot || slot.sending || this.closed) return;
    slot.sending = true;
    const notice = slot.latest;
    const { hub, group, ...data } = notice;
    this.send(hub, group, data).then(
      () => {
        slot.sending = false;
        // Sent: forgotten, unless a newer notice came meanwhile, which goes now.
        if (slot.latest === notice) this.slots.delete(key);
        else this.deliver(key);
      },
      (err: Error) => {
        slot.sending = false;
        if (slot.latest !== notice) return this.deliver(key);
        if (slot.failures++ > 0) return;
        this.log.warn({ event: 'presence.unsent', entity: data.entity, hub, err: err.message, hint: `tried again every ${this.retryMs} ms` });
      },
    );
  }
}
