// Writes to a socket for the rest of the current turn of the event loop in one
// writev (as TurnCork does), and copies small writes into one buffer together
// first. A peer sending tiny frames (an empty data frame, an empty ping) would
// otherwise queue a Buffer and a write entry, ~250 bytes of memory, per 2 to 6
// bytes it sent, which a cap counted in bytes (spliceBufferBytes) does not see:
// 64 MiB of empty frames to a listener that did not read grew the relay by
// 124 MB. Staged, the queue costs what it holds. A larger write that is a
// small part of the buffer it lives in (a frame's payload is a view of the
// read it came in) is copied too: queued as a view, it kept the whole read
// alive while the cap counted its own bytes, and a sender packing each 64 KiB
// read with empty pongs and one 513-byte frame held ~127 MiB towards a
// listener that did not read, for a 1 MiB spliceBufferBytes.
import type { Writable } from 'node:stream';
import { holdsMoreThanItself, ownedPiece } from './buffer-views.ts';
import { TurnCork } from './turn-cork.ts';

/** Writes up to this size, and larger ones that are less than half of their buffer, are copied into the stage. */
const SMALL_WRITE = 512;
const STAGE_BYTES = 16384;

export class TurnWriter {
  private readonly cork: TurnCork;
  private stage: Buffer | undefined;
  /** The stage holds bytes from `start` to `used` not yet handed to the socket. */
  private start = 0;
  private used = 0;

  constructor(private readonly socket: Writable) {
    this.cork = new TurnCork(socket, () => this.flush());
  }

  /** Writes `buf` after everything written before it. */
  write(buf: Buffer): void {
    // Past SMALL_WRITE, half its buffer or more: queued as is, it holds at most twice what it counts.
    if (buf.length > SMALL_WRITE && (!holdsMoreThanItself(buf) || buf.length > STAGE_BYTES)) {
      this.flush();
      this.socket.write(ownedPiece(buf));
      return;
    }
    this.hold();
    if (!this.stage || this.used + buf.length > this.stage.length) {
      this.flush();
      this.stage = Buffer.allocUnsafe(STAGE_BYTES);
      this.start = this.used = 0;
    }
    buf.copy(this.stage, this.used);
    this.used += buf.length;
  }

  /** Hands the staged bytes to the socket: before anything else writes to it, or ends it. */
  flush(): void {
    if (this.used === this.start) return;
    const staged = this.stage!.subarray(this.start, this.used);
    this.start = this.used;
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.write(staged);
  }

  /** Corks the socket unless it already is for this turn; the stage goes out before the uncork. */
  hold(): void {
    this.cork.hold();
  }
}
