// What JetStream's failures are to the relay: the errors its callers are given
// (a store that failed, a conditional write that lost, a stream name taken by
// another deployment, a stream sealed), and the API error codes jetstream.ts,
// stream-setup.ts and stream-reader.ts tell apart.
import type { NatsError } from 'nats';

/** Why an event was not stored, in words a client can be given. */
export class StoreError extends Error {}

/** A conditional key-value delete found another revision than the one it was made against. */
export class StoreConflict extends Error {}

/** A stream of the name a durable hub needs exists and holds other subjects: left as it is, the hub not served. */
export class StreamTaken extends Error {
  constructor(
    readonly stream: string,
    readonly subjects: string[],
  ) {
    super(
      `stream ${stream} exists and holds other subjects (${subjects.join(', ')}): another deployment's (give each deployment its own ` +
        'bus.jetstream.streamPrefix) or this one\'s under an earlier bus.subjectPrefix (delete the stream, or go back to that prefix)',
    );
  }
}

/**
 * A hub's stream found sealed (`sealed: true`, set by hand): it takes no new message, and JetStream lets no one
 * unseal it. Left as it is, the durable hubs not served, until it is deleted (an edge then makes it again).
 */
export class StreamSealed extends Error {
  constructor(readonly stream: string) {
    super(`stream ${stream} is sealed: it stores no new event, and JetStream lets no one unseal it; delete it (an edge makes it again, empty)`);
  }
}

/**
 * A file-stored stream this edge had found, found gone: it is made again only once it has stayed gone for a while
 * (StreamSetup.foundOrSettled), since its delete may still be under way. `settleMs`: how long yet.
 */
export class StreamDeleting extends Error {
  constructor(
    readonly stream: string,
    readonly settleMs: number,
  ) {
    super(`stream ${stream} was deleted a moment ago: it is made again once JetStream has surely removed the old one's files`);
  }
}

export const JS_NOT_ENABLED_FOR_ACCOUNT = 10039;
export const STREAM_CONFIG_DIFFERS = 10058;
export const STREAM_NOT_FOUND = 10059;
export const NO_MESSAGE_FOUND = 10037;
export const NOT_CLUSTERED = 10074;
/** "maximum consumers limit reached": the stream's max_consumers, or the account's. */
export const MAXIMUM_CONSUMERS = 10026;
/** "invalid operation on sealed stream": a publish to a stream sealed by hand. */
export const STREAM_SEALED = 10109;
/**
 * "stream store failed" (503): the server failed to write the stream, its description the store's own error ("error
 * opening msg block file ...: no such file or directory", "no space left on device", "store is closed").
 */
export const STREAM_STORE_FAILED = 10077;
/** "wrong last sequence": a delete expecting a key's revision found another. */
export const WRONG_LAST_SEQUENCE = 10071;

/** nats.js's error code and, for a JetStream API refusal, JetStream's own. */
export function errorCode(err: unknown): { code?: string; apiCode?: number } {
  const e = err as NatsError & { api_error?: { err_code?: number } };
  return { code: e?.code, apiCode: e?.api_error?.err_code };
}
