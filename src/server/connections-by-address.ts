// Connections held now per client address, for the limits on how many one
// address may hold at once (limits.httpConnectionsPerAddress for plain HTTP,
// limits.connectionsPerAddress for WebSockets). Addresses are counted as the
// connection rate counts them (connection-rate.ts rateKey: an IPv6 client by
// its /64). An address holding none is forgotten, so the table holds only
// addresses with open connections.
import { rateKey } from './connection-rate.ts';

export class ConnectionsByAddress {
  private readonly held = new Map<string, number>();

  /**
   * One more connection of `address`, unless it holds `limit` already: the key to release it with, or how many
   * the address holds (refused).
   */
  take(address: string, limit: number): { key: string } | { refused: number } {
    const held = this.heldBy(address);
    return held >= limit ? { refused: held } : { key: this.add(address) };
  }

  /** One more connection of `address`, whatever it holds: the key to release it with. */
  add(address: string): string {
    const key = rateKey(address);
    this.held.set(key, (this.held.get(key) ?? 0) + 1);
    return key;
  }

  /** A connection counted under `key` closed. */
  release(key: string): void {
    const held = (this.held.get(key) ?? 1) - 1;
    if (held > 0) this.held.set(key, held);
    else this.held.delete(key);
  }

  /** How many connections `address`'s client holds now. */
  heldBy(address: string): number {
    return this.held.get(rateKey(address)) ?? 0;
  }
}
