// Property-based fuzzing of HTTP-mode control messages: what a listener says
// on its control channel (any text, JSON of any shape, renewals, responses
// with any status, reason and headers, bodies that do or do not match their
// Content-Length) never throws out of the relay, closes the channel only
// with the codes the protocol names (1008, 1009), and reaches the sender as
// at most one well-formed response: the listener's own when it is valid,
// 502 when it is not, never bytes that read as a second response.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { responseHeadersForSender } from '../../src/hybrid/relayed-headers.ts';
import { contentLengthOf } from '../../src/hybrid/response-body.ts';
import { httpRequest } from '../helpers/http.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { readToClose, tcp } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';
import { fuzzOptions } from './fuzz.ts';

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade'];
const headerName = fc.oneof(fc.constantFrom('content-length', 'Content-Length', 'CONTENT-LENGTH', 'x-a', 'Transfer-Encoding', 'connection', 'set-cookie', 'bad name', 'x\r\ny', ''), fc.string({ maxLength: 8 }));
const headerValue = fc.oneof(
  fc.constantFrom('2', '0', '1000', '-1', '1e3', ' 5 ', '5, 5', 'a\r\nInjected: 1', 'ok\0', '€', 'chunked'),
  fc.string({ maxLength: 12 }),
  fc.integer({ min: -5, max: 5000 }),
  fc.array(fc.constantFrom('2', '50', '5', 'x'), { maxLength: 3 }),
);
const headers = fc.dictionary(headerName.filter((n) => n !== '__proto__'), headerValue, { maxKeys: 4 });

/**
 * One HTTP/1.1 response off the front of `bytes`, framed as its head says
 * (chunked, Content-Length, or none for HEAD, 204 and 304); undefined when it
 * is incomplete (the relay cut the connection).
 */
function splitResponse(bytes: string, head: boolean): { head: string; rest: string } | undefined {
  const end = bytes.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const top = bytes.slice(0, end);
  let at = end + 4;
  const status = Number(top.slice(9, 12));
  if (head || status === 204 || status === 304) return { head: top, rest: bytes.slice(at) };
  if (/\r\ntransfer-encoding: chunked/i.test(top)) {
    for (;;) {
      const line = bytes.indexOf('\r\n', at);
      if (line < 0) return undefined;
      const size = parseInt(bytes.slice(at, line), 16);
      if (Number.isNaN(size)) return undefined;
      at = line + 2 + size + 2;
      if (at > bytes.length) return undefined;
      if (size === 0) return { head: top, rest: bytes.slice(at) };
    }
  }
  const length = /\r\ncontent-length: (\d+)/i.exec(top);
  if (!length) return { head: top, rest: '' };
  at += Number(length[1]);
  return at > bytes.length ? undefined : { head: top, rest: bytes.slice(at) };
}

describe('listener response headers (fuzzed)', () => {
  it('pass to the sender without CR, LF or NUL, hop-by-hop headers, or more than one numeric Content-Length', () => {
    fc.assert(
      fc.property(headers, (h) => {
        const out = responseHeadersForSender(h as never);
        if (!out) return;
        const lengths = Object.keys(out).filter((n) => n.toLowerCase() === 'content-length');
        assert.ok(lengths.length <= 1);
        if (lengths.length === 1) assert.match(String(out[lengths[0]]), /^\d+$/);
        for (const [name, value] of Object.entries(out)) {
          assert.ok(!HOP_BY_HOP.includes(name.toLowerCase()), name);
          for (const v of Array.isArray(value) ? value : [value]) assert.doesNotMatch(String(v), /[\r\n\0]/);
        }
      }),
      fuzzOptions(3000),
    );
  });

  it('read one Content-Length from any set of values, or none', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.nat(1e6).map(String), fc.string({ maxLength: 6 })), { maxLength: 3 }), (values) => {
        const length = contentLengthOf(values);
        if (length !== undefined) {
          assert.ok(Number.isSafeInteger(length) && length >= 0);
          assert.ok(values.every((v) => Number(v.trim()) === length));
        }
      }),
      fuzzOptions(2000),
    );
  });
});

describe('the control channel and the sender (fuzzed)', () => {
  it('closes a channel only with 1008 or 1009, whatever text or binary a listener sends', async (t) => {
    // A listener per case: with FUZZ_RUNS, faster than connectRatePerAddress allows (the 429 failed the property).
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'open', requiresClientAuthorization: false }], limits: { controlMessageBytes: 4096, connectRatePerAddress: 0 } });
    const url = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const message = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
      fc.record({ renewToken: fc.oneof(fc.record({ token: fc.string({ maxLength: 40 }) }), fc.jsonValue({ maxDepth: 2 })) }).map((v) => JSON.stringify(v)),
      fc.record({ response: fc.record({ requestId: fc.oneof(fc.uuid(), fc.string({ maxLength: 10 })), statusCode: fc.oneof(fc.integer({ min: 0, max: 999 }), fc.string()), responseHeaders: fc.oneof(headers, fc.constant(null)), body: fc.boolean() }, { requiredKeys: [] }) }).map((v) => JSON.stringify(v)),
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      fc.nat(2).map((n) => 'x'.repeat(4097 + n)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(message, { minLength: 1, maxLength: 5 }), async (messages) => {
        const listener = await RawListener.connect(url, tokenFor(url));
        try {
          for (const m of messages) if (listener.ws.readyState === listener.ws.OPEN) listener.ws.send(m);
          const closed = await Promise.race([listener.closed, new Promise<undefined>((r) => setTimeout(r, 50))]);
          if (closed) assert.ok([1008, 1009].includes(closed.code), `closed with ${closed.code}`);
        } finally {
          listener.close();
        }
      }),
      fuzzOptions(60, 6000),
    );
    assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
  });

  it('gives the sender one well-formed response for any response a listener sends', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'open', requiresClientAuthorization: false }], timeouts: { httpResponseMs: 1000 } });
    const url = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(url, tokenFor(url));
    t.after(() => listener.close());
    const response = fc.record({
      statusCode: fc.oneof(fc.integer({ min: 100, max: 700 }), fc.constantFrom(200, 204, 304, 404, 502)),
      statusDescription: fc.option(fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('OK\r\nX-Injected: 1', 'ünï')), { nil: undefined }),
      responseHeaders: headers,
      body: fc.option(fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('okHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\ninjected')), { nil: undefined }),
      method: fc.constantFrom('GET', 'HEAD', 'POST'),
    });
    await fc.assert(
      fc.asyncProperty(response, async (r) => {
        const sender = await tcp(t, relay.port);
        sender.write(`${r.method} /open/fuzz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
        const { request } = await listener.next();
        listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: r.statusCode, statusDescription: r.statusDescription, responseHeaders: r.responseHeaders, body: r.body !== undefined } }));
        if (r.body !== undefined) listener.ws.send(Buffer.from(r.body));
        const seen = (await withTimeout(readToClose(sender, 5000, 'the answer'), 6000, 'the answer')).toString('latin1');
        // A cut connection may carry nothing, or a head and part of a body; a whole response must be all there is.
        const framed = splitResponse(seen, r.method === 'HEAD');
        if (!framed) return;
        assert.equal(framed.rest, '', `bytes after the response: ${JSON.stringify(seen)}`);
        const headerLines = framed.head.split('\r\n').slice(1);
        assert.ok(!headerLines.some((l) => /^(x-)?injected:/i.test(l)), `an injected header: ${JSON.stringify(framed.head)}`);
        const status = Number(framed.head.slice(9, 12));
        assert.ok(status === r.statusCode || status === 502 || status === 504, `status ${status} for ${r.statusCode}`);
      }),
      fuzzOptions(60, 8000),
    );
    assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
  });
});
