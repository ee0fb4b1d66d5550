// A GET of a JSON document for the command line (node:http or node:https by
// the URL's scheme), given up after `timeoutMs` without a byte (an idle
// bound: a large history page may take longer in all), with the CA and client certificate of
// --ca/--tls-cert: fetch in Node 20 takes no CA of its own.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { ClientTls } from './tls-options.ts';

/** Largest answer read (a history page is at most 1,000 messages of limits.pubsubMessageBytes, base64 aside). */
const MAX_BODY_BYTES = 1 << 30;

export function getJson(url: string, headers: Record<string, string>, tls: ClientTls | undefined, timeoutMs: number): Promise<{ status: number; body: unknown }> {
  const send = url.startsWith('https:') ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { headers, ...tls, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES) req.destroy(new Error('answer too large'));
        else chunks.push(c);
      });
      res.on('end', () => {
        let body: unknown = {};
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          // Not JSON: the caller reports the status.
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`nothing from the relay for ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
