// The error code in a relay's refusal of a WebSocket handshake: this relay
// answers a refused upgrade with a JSON body `{"code": ..., "message": ...}`
// (src/websocket/handshake.ts). A bridge with credentials that never change
// tells by it a 403 no retry can heal (the token does not cover the entity, or
// lacks the Listen right) from one that may clear (the entity has the most
// listeners allowed). Another relay's body (Azure's) names none of these: the
// answer is then undefined, and the 403 is tried again as before.
import type { IncomingMessage } from 'node:http';

/** Read of a refusal's body at most: the relay's is one short JSON line. */
const MAX_BODY_BYTES = 4096;

/** The 403 codes of this relay that say the credentials themselves are refused (src/hybrid/errors.ts). */
export const CREDENTIALS_REFUSED_403 = new Set(['TokenScopeInvalid', 'RightMissing']);

/** The `code` of `res`'s JSON body, read for at most `waitMs`; undefined when it names none in that time. */
export function refusalCode(res: IncomingMessage, waitMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (code: string | undefined) => {
      clearTimeout(timer);
      res.removeAllListeners('data');
      res.resume();
      resolve(code);
    };
    const timer = setTimeout(() => done(undefined), waitMs);
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) return done(undefined);
      chunks.push(chunk);
    });
    res.once('end', () => done(codeOf(Buffer.concat(chunks).toString('utf8'))));
    res.once('error', () => done(undefined));
    res.once('close', () => done(codeOf(Buffer.concat(chunks).toString('utf8'))));
  });
}

function codeOf(body: string): string | undefined {
  try {
    const code = (JSON.parse(body) as { code?: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}
