// Which control channels are attached to which entity, and which one gets the
// next connection or request (round robin, so every listener gets a share).
import type { ControlChannel } from './control-channel.ts';

export class ListenerRegistry {
  private readonly byEntity = new Map<string, { channels: ControlChannel[]; next: number }>();

  add(channel: ControlChannel): void {
    const slot = this.byEntity.get(channel.entity.key) ?? { channels: [], next: 0 };
    slot.channels.push(channel);
    this.byEntity.set(channel.entity.key, slot);
  }

  /** Removes the channel; returns how many listeners the entity still has. */
  remove(channel: ControlChannel): number {
    const slot = this.byEntity.get(channel.entity.key);
    if (!slot) return 0;
    const i = slot.channels.indexOf(channel);
    if (i >= 0) slot.channels.splice(i, 1);
    // The listeners after it moved up one: the one that was next still is (before, it was skipped once).
    if (i >= 0 && i < slot.next) slot.next--;
    if (slot.channels.length === 0) this.byEntity.delete(channel.entity.key);
    return slot.channels.length;
  }

  /** Listeners registered for the entity, closing ones too. */
  count(entityKey: string): number {
    return this.byEntity.get(entityKey)?.channels.length ?? 0;
  }

  /** Listeners for the entity that may be given a connect or request (not closing). */
  openCount(entityKey: string): number {
    let open = 0;
    for (const channel of this.byEntity.get(entityKey)?.channels ?? []) if (channel.isOpen) open++;
    return open;
  }

  /**
   * The next open listener for the entity, or undefined when none is. A channel
   * whose closing handshake has begun stays registered until its socket closes
   * but is skipped here.
   */
  pick(entityKey: string): ControlChannel | undefined {
    const slot = this.byEntity.get(entityKey);
    if (!slot) return undefined;
    for (let tried = 0; tried < slot.channels.length; tried++) {
      const channel = slot.channels[slot.next % slot.channels.length];
      slot.next = (slot.next + 1) % slot.channels.length;
      if (channel.isOpen) return channel;
    }
    return undefined;
  }

  /** Listeners per entity (by the entity's name as configured or first used). */
  counts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const slot of this.byEntity.values()) if (slot.channels.length > 0) out.set(slot.channels[0].entity.name, slot.channels.length);
    return out;
  }

  *all(): IterableIterator<ControlChannel> {
    for (const slot of this.byEntity.values()) yield* slot.channels;
  }
}
