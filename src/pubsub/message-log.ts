// The messages reliable sessions are holding, kept once per edge rather than
// once per session. A group message delivered to 1,000 reliable members used
// to become 1,000 buffered entries, each an object pointing at the shared
// body that lived until its client acknowledged it (about a second with the
// SDK): at a million deliveries a second, the garbage collector's work on
// those entries was most of the cost of reliable fan-out (measured: with the
// entries not kept at all, 2.07M deliveries/s instead of 0.9M). Here the
// message goes into the log once, each session keeps only its index (a number
// in a typed array, nothing for the collector to trace), and the log counts how
// many sessions hold each message: the message is let go when the count drops
// to zero. Indices grow without bound (a float64 holds them exactly for 2^53
// messages); the log is cut into chunks that are dropped when nothing in them
// is held. A chunk is 256 slots (~4 KiB): a session that never acknowledges
// and is sent one message among many others' keeps a chunk per message it
// holds, so at its cap of 1,000 held messages ~4 MiB (with 4,096 slots, 48 KiB
// each: ~47 MiB against a sessionBufferBytes of 16 MiB).

/** What every reliable copy of a message shares: its payload is head + the recipient's sequence id + tail (downstream.ts, sequencedParts). */
export interface SequencedParts {
  readonly head: Buffer;
  readonly tail: Buffer;
}

/** What every protobuf recipient's copy of a message shares (protobuf-protocol.ts): the DataMessage's fields but the sequence id. */
export interface ProtobufParts {
  fields: Buffer;
  /** The whole frame of a DownstreamMessage without a sequence id (plain clients), built on first use. */
  plain?: Buffer;
  /** A reliable client was written a numbered frame of these fields: a session holding the message re-sends from them. */
  numbered?: boolean;
}

/** A message as sessions buffer it. `logIndex` is where the log last put it (so a message delivered to many sessions is added once). */
export interface LoggedMessage {
  readonly body: Buffer;
  /** The event's cluster-wide id (see SharedMessage). */
  readonly mid: string;
  /** On a JetStream hub: the event's position in the hub's stream (0 elsewhere). */
  readonly position: number;
  logIndex?: number;
  /** What its sequenced copies share, once a reliable recipient got it (downstream.ts, sequencedParts). */
  sequenced?: SequencedParts;
  /** Its DataMessage for protobuf clients, once one got it (protobuf-protocol.ts). */
  protobuf?: ProtobufParts;
  /** Past this time (ms since epoch) it is not sent again: a REST send's messageTtlSeconds. */
  readonly expiresAt?: number;
  /** Called when the log first holds it: what it keeps is copied out of memory it shares (collections/own-bytes.ts). */
  keepOwnBytes?(): void;
}

/** True when a message has a time to live and it has passed (the clock is read only for a message that has one). */
export function hasExpired(message: { readonly expiresAt?: number }, now?: number): boolean {
  return message.expiresAt !== undefined && message.expiresAt <= (now ?? Date.now());
}

const CHUNK_SLOTS = 256;

/** The chunk an index is in. Indices are float64 (typed arrays of them), so `%` would be a floating-point remainder, several times dearer than this. */
function chunkNumber(index: number): number {
  return Math.floor(index / CHUNK_SLOTS);
}

/** An index's slot in its chunk. */
function slotOf(index: number, chunk: number): number {
  return index - chunk * CHUNK_SLOTS;
}

class Chunk {
  readonly messages: (LoggedMessage | undefined)[] = new Array<LoggedMessage | undefined>(CHUNK_SLOTS).fill(undefined);
  /** Sessions holding each slot's message. */
  readonly holders = new Uint32Array(CHUNK_SLOTS);
  /** Each slot's message's body length: a session letting go of a run of messages counts its bytes without reading each message (releaseRun). */
  readonly lengths = new Uint32Array(CHUNK_SLOTS);
  /** Slots with at least one holder. */
  held = 0;
}

export class MessageLog {
  private readonly chunks = new Map<number, Chunk>();
  private nextIndex = 0;
  /** The chunk being filled, and its number. */
  private current: Chunk | undefined;
  private currentNumber = -1;
  /** The other chunk looked up last: a session acknowledging releases a run of indices, most in one chunk. */
  private recent: Chunk | undefined;
  private recentNumber = -1;

  /** Chunks kept (for tests and metrics: a log with nothing held keeps at most the one being filled). */
  get chunkCount(): number {
    return this.chunks.size;
  }

  /** Holds `message` for one more session and returns its index. */
  hold(message: LoggedMessage): number {
    let index = message.logIndex;
    let chunk: Chunk | undefined;
    let slot = 0;
    if (index !== undefined) {
      const number = chunkNumber(index);
      chunk = this.chunkNumbered(number);
      slot = slotOf(index, number);
    }
    if (index === undefined || chunk?.messages[slot] !== message) {
      index = this.append(message);
      message.logIndex = index;
      chunk = this.current;
      slot = slotOf(index, this.currentNumber);
    }
    if (chunk!.holders[slot]++ === 0) chunk!.held++;
    return index;
  }

  /** The message at `index` (undefined once no session holds it). */
  at(index: number): LoggedMessage | undefined {
    const number = chunkNumber(index);
    return this.chunkNumbered(number)?.messages[slotOf(index, number)];
  }

  /** One session lets go of the message at `index` (nothing when it is not held): one chunk lookup. */
  release(index: number): void {
    const number = chunkNumber(index);
    const chunk = this.chunkNumbered(number);
    if (!chunk) return;
    const slot = slotOf(index, number);
    if (chunk.holders[slot] === 0 || --chunk.holders[slot] > 0) return;
    chunk.messages[slot] = undefined;
    if (--chunk.held === 0 && chunk !== this.current) this.drop(number);
  }

  /** The last message releaseRun let go of (undefined when it held none of them). */
  lastReleased: LoggedMessage | undefined;

  /**
   * One session lets go of the messages at `indices[from]` to `indices[to - 1]` (an acknowledgement): returns their
   * bodies' bytes, of those it held, and leaves the last of them in lastReleased. A session's indices rise, most of a
   * run in one chunk: the chunk is looked up when the run enters it, and no message is read but the last (a lookup per
   * index that read each message's body for its length: ~100 instructions per message acknowledged, callgrind).
   */
  releaseRun(indices: Float64Array, from: number, to: number): number {
    this.lastReleased = undefined;
    let bytes = 0;
    let lastChunk: Chunk | undefined;
    let lastSlot = 0;
    let number = -1;
    /** The first index of chunk `number` (an index's slot is found by a subtraction while the run stays in it). */
    let base = -CHUNK_SLOTS;
    let chunk: Chunk | undefined;
    for (let i = from; i < to; i++) {
      const index = indices[i];
      let slot = index - base;
      if (slot < 0 || slot >= CHUNK_SLOTS) {
        number = chunkNumber(index);
        base = number * CHUNK_SLOTS;
        slot = index - base;
        chunk = this.chunkNumbered(number);
      }
      if (chunk === undefined) continue;
      const holders = chunk.holders[slot];
      // Not held (its slot already let go of): nothing to count.
      if (holders === 0) continue;
      bytes += chunk.lengths[slot];
      if (holders > 1) {
        chunk.holders[slot] = holders - 1;
        lastChunk = chunk;
        lastSlot = slot;
        continue;
      }
      chunk.holders[slot] = 0;
      lastChunk = undefined;
      this.lastReleased = chunk.messages[slot];
      chunk.messages[slot] = undefined;
      if (--chunk.held === 0 && chunk !== this.current) {
        this.drop(number);
        chunk = undefined;
      }
    }
    if (lastChunk !== undefined) this.lastReleased = lastChunk.messages[lastSlot];
    return bytes;
  }

  private chunkNumbered(number: number): Chunk | undefined {
    if (number === this.currentNumber) return this.current;
    if (number !== this.recentNumber) {
      this.recent = this.chunks.get(number);
      this.recentNumber = this.recent ? number : -1;
    }
    return this.recent;
  }

  private drop(number: number): void {
    this.chunks.delete(number);
    if (number === this.recentNumber) {
      this.recent = undefined;
      this.recentNumber = -1;
    }
  }

  private append(message: LoggedMessage): number {
    const index = this.nextIndex++;
    const number = chunkNumber(index);
    if (number !== this.currentNumber) {
      // The chunk just filled goes when nothing in it is held (now, or at its last release).
      const filled = this.current;
      if (filled && filled.held === 0) this.drop(this.currentNumber);
      this.current = new Chunk();
      this.currentNumber = number;
      this.chunks.set(number, this.current);
    }
    message.keepOwnBytes?.();
    const slot = slotOf(index, number);
    this.current!.messages[slot] = message;
    this.current!.lengths[slot] = message.body.length;
    return index;
  }
}
