// One pull request to a JetStream pull consumer, as the server's API takes it
// (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with `batch`, `max_bytes`
// and `expires`): the server sends at most `batch` messages and, with a byte
// bound, no more bytes than it, then ends the request with a status (404 no
// messages, 408 expired, 409 the next message does not fit). nats.js's fetch
// takes a count or a byte bound, not both, and with bytes alone waits out its
// expiry after a full batch; a page read (stream-reader.ts `read`) needs both.
import { createInbox, nanos, type Msg, type NatsConnection } from 'nats';

export interface PulledMessage {
  seq: number;
  /** The consumer's delivery sequence (1, 2, ... for a new consumer): a jump means deliveries this side never saw. */
  delivered: number;
  subject: string;
  data: Uint8Array;
  /** Messages the consumer still holds after this one. */
  pending: number;
}

export interface PullRequest {
  batch: number;
  /** Bytes the server may send (subjects and headers count); none: by count alone. */
  maxBytes?: number;
  /** How long the server keeps the request open for messages not stored yet (at least 1 s). */
  expiresMs: number;
}

export interface PullResult {
  messages: PulledMessage[];
  /**
   * Why the server refused the request, when it did (a status other than the ends of a batch: 400 for a request
   * it cannot read, 409 for a consumer deleted, a leader changed, a server shutting down...): nothing more will
   * come of asking again the same way.
   */
  refused?: string;
  /**
   * True when this side ended the request, not the server: nothing came for END_GRACE_MS past its expiry, the
   * subscription closed, or a delivery could not be read. What the server sent for it after that is lost (deliveries
   * all the same), so the consumer may have delivered more than `messages` holds.
   */
  gaveUp?: true;
}

/** Past the request's expiry, how long to wait for the server's own end of it (a frozen server sends none). */
const END_GRACE_MS = 1000;

/**
 * The messages one pull request brings, in order; ends early once the consumer says nothing is pending.
 * A server that ends it with an error status, or that does not end it (nothing came for END_GRACE_MS past its
 * expiry: `gaveUp`), ends it with what came: what it sends after that is delivered all the same (the consumer does
 * not ask for acks), so a caller checks `delivered` follows on, and after `gaveUp` asks the consumer how many it
 * delivered (stream-reader.ts `read`).
 */
export function pullOnce(nc: NatsConnection, stream: string, consumer: string, request: PullRequest, apiPrefix = '$JS.API'): Promise<PullResult> {
  return new Promise((resolve) => {
    const messages: PulledMessage[] = [];
    const inbox = createInbox();
    let done = false;
    const finish = (refused?: string, gaveUp = false): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sub.unsubscribe();
      resolve({ messages, ...(refused !== undefined ? { refused } : {}), ...(gaveUp ? { gaveUp: true as const } : {}) });
    };
    const sub = nc.subscribe(inbox, {
      callback: (err, msg) => {
        if (done) return;
        if (err) return finish(err.message);
        if (isStatus(msg)) return finish(batchEnd(msg) ? undefined : `${msg.headers!.code} ${msg.headers!.description}`);
        const position = deliveryPosition(msg.reply);
        if (!position) return finish(undefined, true);
        messages.push({ seq: position.seq, delivered: position.delivered, subject: msg.subject, data: msg.data, pending: position.pending });
        lastMessageAt = performance.now();
        if (messages.length >= request.batch || position.pending === 0) finish();
      },
    });
    // Past the expiry and its grace the request is over, unless messages still come: a loaded edge reads a large
    // batch long after the server sent it, and ending it then would drop the rest (read again by the caller).
    let lastMessageAt = 0;
    const endIfQuiet = (): void => {
      const quietFor = performance.now() - lastMessageAt;
      if (quietFor >= END_GRACE_MS) return finish(undefined, true);
      timer = setTimeout(endIfQuiet, END_GRACE_MS - quietFor);
    };
    let timer = setTimeout(endIfQuiet, request.expiresMs + END_GRACE_MS);
    sub.closed.then(() => finish(undefined, true), () => finish(undefined, true));
    // Whole nanoseconds: the server reads `expires` as an integer (Go's time.Duration) and refuses a request with a
    // fraction in it (400, "cannot unmarshal number"); a deadline left in milliseconds from performance.now() made
    // one of most, and a page read then asked again and again until its last second (found by review).
    const expires = nanos(Math.ceil(Math.max(1000, request.expiresMs)));
    const ask = { batch: request.batch, expires, ...(request.maxBytes ? { max_bytes: request.maxBytes } : {}) };
    nc.publish(`${apiPrefix}.CONSUMER.MSG.NEXT.${stream}.${consumer}`, JSON.stringify(ask), { reply: inbox });
  });
}

/** A status from the server (no payload, a status code in the header line), not a stored message. */
function isStatus(msg: Msg): boolean {
  return msg.data.length === 0 && msg.headers !== undefined && msg.headers.code !== 0;
}

/**
 * Whether a status ends the batch as the request asked (404 no messages, 408 its expiry, 409 the next message
 * past its bytes) rather than refusing it.
 */
function batchEnd(msg: Msg): boolean {
  const { code, description } = msg.headers!;
  if (code === 408) return true;
  const text = description.toLowerCase();
  // (Not "Exceeded MaxRequestMaxBytes": a refusal of the request, which says MaxBytes too.)
  return (code === 404 && text.includes('no messages')) || (code === 409 && text.includes('message size exceeds maxbytes'));
}

/**
 * The stream sequence, delivery sequence and pending count in a delivered message's reply subject:
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<streamSeq>.<consumerSeq>.<nanos>.<pending>`,
 * or with `<domain>.<accountHash>` after `ACK` and a random token at the end (servers from 2.9 may send either).
 */
export function deliveryPosition(reply: string | undefined): { seq: number; delivered: number; pending: number } | undefined {
  if (!reply) return undefined;
  const t = reply.split('.');
  if (t[0] !== '$JS' || t[1] !== 'ACK') return undefined;
  const base = t.length === 9 ? 2 : t.length >= 11 ? 4 : -1;
  if (base < 0) return undefined;
  const seq = Number(t[base + 3]);
  const delivered = Number(t[base + 4]);
  const pending = Number(t[base + 6]);
  const valid = [seq, delivered].every((n) => Number.isSafeInteger(n) && n > 0) && Number.isSafeInteger(pending) && pending >= 0;
  return valid ? { seq, delivered, pending } : undefined;
}
