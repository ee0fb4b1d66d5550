// An HTTP client for tests (node:http, node:https for https:// URLs with the
// given TLS options), with a bounded wait.
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { withTimeout } from './wait.ts';

export interface HttpResult {
  status: number;
  statusMessage: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export function httpRequest(
  url: string,
  opts: {
    method?: string;
    headers?: Record<string, string>;
    body?: Buffer | Buffer[];
    timeoutMs?: number;
    /** For https:// URLs: the CA to trust, and a client certificate. */
    tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  } = {},
): Promise<HttpResult> {
  return withTimeout(
    new Promise<HttpResult>((resolve, reject) => {
      const send = url.startsWith('https:') ? httpsRequest : request;
      const req = send(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false, ...opts.tls }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, statusMessage: res.statusMessage!, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      });
      req.on('error', reject);
      if (Array.isArray(opts.body)) {
        for (const part of opts.body) req.write(part);
        req.end();
      } else {
        req.end(opts.body);
      }
    }),
    opts.timeoutMs ?? 15000,
    `${opts.method ?? 'GET'} ${url.split('?')[0]}`,
  );
}
