// What Microsoft's hyco-https 1.4.5 and hyco-ws 1.0.5 do on the wire, feature
// by feature, against a real relay (docs/protocols/hybrid-connections.md): the
// request methods, headers and queries a listener sees, the status lines,
// empty and streamed bodies it sends, its close and renewal; hyco-ws's sender
// (relayedConnect), its URI and token helpers, and its close. The packages run
// unmodified; senders are node:http and the ws each package bundles.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Agent, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import { Cleanup, cleanupFor } from '../helpers/cleanup.ts';
import { runClientScript } from '../helpers/client-process.ts';
import { hycoHttps, hycoWs as hycoWsBase, listenUrl, startHycoHttpsListener, startHycoWsListener, withTokenRenewal } from '../helpers/hyco.ts';
import { httpRequest } from '../helpers/http.ts';
import { openWebSocket } from '../helpers/raw-listener.ts';
import { readToClose, readUntil, tcp } from '../helpers/raw-socket.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startRelayProcess, startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, waitEvent, withTimeout } from '../helpers/wait.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';

const require = createRequire(import.meta.url);
/** hyco-ws with the helpers test/helpers/hyco.ts does not declare. */
const hycoWs = hycoWsBase as typeof hycoWsBase & {
  relayedConnect(address: string, token: string | null, onOpen?: (client: unknown) => void): unknown;
  createRelayListenUri(namespace: string, path: string, token?: string, id?: string): string;
  createRelaySendUri(namespace: string, path: string, token?: string, id?: string): string;
  appendRelayToken(uri: string, keyName: string, key: string, ttl?: number): string;
};
const moment = require('moment');

type Relay = RunningRelay;

/** Bytes i*7+3: a body whose every offset is known. */
function pattern(size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = (i * 7 + 3) & 0xff;
  return out;
}

/**
 * The listener app, by path:
 * /echo, /echo/inspect     answers what the listener saw: method, url, headers, body (base64), requestId
 * /echo/body               a 10-byte text body, whatever the method (as a naive app does for HEAD)
 * /echo/status/N?reason=R  status N (reason R when given), a short body unless N is 204 or 304
 * /echo/redirect           302 with a Location set before writeHead
 * /echo/empty?how=H        an empty body, ended as H: writeHead-end, end, end-string
 * /echo/stream?pieces=N&size=S&delay=D  N writes of S pattern bytes, D ms apart (0: setImmediate), then end()
 * /echo/size?n=N           N pattern bytes in one end()
 * /echo/typed              header values that are not strings
 */
function app(req: IncomingMessage, res: ServerResponse & { requestId?: string }): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(Buffer.from(c)));
  req.on('end', () => {
    const url = new URL(req.url!, 'http://x');
    const q = (k: string) => url.searchParams.get(k);
    switch (url.pathname) {
      case '/echo':
      case '/echo/inspect': {
        res.setHeader('content-type', 'application/json');
        const body = Buffer.concat(chunks).toString('base64');
        res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body, requestId: res.requestId }));
        return;
      }
      case '/echo/body':
        res.setHeader('content-type', 'text/plain');
        res.end('0123456789');
        return;
      case '/echo/redirect':
        res.setHeader('Location', '/echo/elsewhere');
        res.writeHead(302);
        res.end();
        return;
      case '/echo/empty':
        res.setHeader('x-empty', q('how')!);
        if (q('how') === 'writeHead-end') {
          res.writeHead(200, 'Nothing To Say');
          res.end();
        } else if (q('how') === 'end-string') res.end('');
        else res.end();
        return;
      case '/echo/size':
        res.setHeader('content-type', 'application/octet-stream');
        res.end(pattern(Number(q('n'))));
        return;
      case '/echo/flushed':
        // flushHeaders() first: hyco-https queues the head and an empty first fragment of the body.
        res.statusCode = Number(q('status') ?? 200);
        res.setHeader('x-flushed', 'yes');
        res.flushHeaders();
        if (q('write') !== null) res.write(q('write')!);
        res.end();
        return;
      case '/echo/late':
        // Answers a small body on the control channel, after the sender has gone.
        setTimeout(() => {
          res.setHeader('content-type', 'text/plain');
          if (q('pieces') !== null) res.write('first piece, ');
          res.end('late answer');
        }, Number(q('after')));
        return;
      case '/echo/typed':
        res.setHeader('x-count', 5 as unknown as string);
        res.setHeader('x-flag', true as unknown as string);
        res.setHeader('x-latin', 'caf\u00e9');
        res.end('typed');
        return;
      case '/echo/stream': {
        const pieces = Number(q('pieces'));
        const size = Number(q('size'));
        const delay = Number(q('delay'));
        const whole = pattern(pieces * size);
        res.setHeader('content-type', 'application/octet-stream');
        let i = 0;
        const next = () => {
          if (i === pieces) {
            res.end();
            return;
          }
          res.write(whole.subarray(i * size, (i + 1) * size));
          i++;
          if (delay > 0) setTimeout(next, delay);
          else setImmediate(next);
        };
        next();
        return;
      }
    }
    const status = /^\/echo\/status\/(\d{3})$/.exec(url.pathname);
    if (status) {
      const code = Number(status[1]);
      res.statusCode = code;
      if (q('reason') !== null) res.statusMessage = q('reason')!;
      if (code === 304) res.setHeader('ETag', '"v1"');
      if (code === 204 || code === 304) res.end();
      else res.end(`status ${code}`);
      return;
    }
    res.statusCode = 404;
    res.end('no such test path');
  });
}

interface Answer {
  status: number;
  statusMessage: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** The local port of the socket it came on (keep-alive: the same socket answers twice). */
  localPort: number;
}

/** A request through `agent` (keep-alive), headers given as arrays where repeated. */
function send(
  url: string,
  opts: { method?: string; headers?: Record<string, string | string[]>; body?: Buffer; agent?: Agent } = {},
): Promise<Answer> {
  return withTimeout(
    new Promise<Answer>((resolve, reject) => {
      const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: opts.agent ?? false }, (res) => {
        const chunks: Buffer[] = [];
        const localPort = res.socket.localPort!;
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, statusMessage: res.statusMessage!, headers: res.headers, body: Buffer.concat(chunks), localPort }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(opts.body);
    }),
    15000,
    `${opts.method ?? 'GET'} ${url.split('?')[0]}`,
  );
}

const auth = (url: string) => ({ ServiceBusAuthorization: tokenFor(url) });

/** A relay and a hyco-https listener running `app`, for the describe block this is called in: the relay, once started. */
function relayWithHycoHttps(): () => Relay {
  const cleanup = new Cleanup();
  let relay: Relay;
  before(async () => {
    relay = await startTestRelay(cleanup);
    await startHycoHttpsListener(cleanup, relay.url, app);
  });
  after(() => cleanup.run());
  return () => relay;
}

describe('hyco-https listener: what it sees of a request', () => {
  const relay = relayWithHycoHttps();

  async function inspect(path: string, opts: Parameters<typeof send>[1] = {}, withToken = true) {
    const r = await send(`${relay().url}${path}`, { ...opts, headers: { ...(withToken ? auth(`${relay().url}/echo`) : {}), ...opts.headers } });
    assert.equal(r.status, 200, String(r.body));
    return JSON.parse(String(r.body)) as { method: string; url: string; headers: Record<string, string | string[]>; body: string; requestId: string };
  }

  for (const [method, body] of [
    ['OPTIONS', undefined],
    ['DELETE', Buffer.from('delete with a body')],
    ['DELETE', undefined],
    ['PATCH', Buffer.from('{"op":"replace"}')],
    ['PUT', undefined],
  ] as const) {
    it(`${method} ${body ? 'with' : 'without'} a body reaches the listener as sent`, async () => {
      const seen = await inspect('/echo/inspect', { method, body, headers: body ? { 'content-length': String(body.length) } : {} });
      assert.equal(seen.method, method);
      assert.equal(Buffer.from(seen.body, 'base64').toString(), body ? String(body) : '');
    });
  }

  it('repeated headers arrive joined as node:http joins them (Cookie with "; "), names in lower case, credential removed, Via added', async () => {
    const seen = await inspect('/echo/inspect', {
      headers: {
        'X-Multi': ['a', 'b'],
        Cookie: ['a=1', 'b=2'],
        'X-Mixed-Case': 'Value Kept',
        'x-ms-client-request-id': 'req-42',
        Authorization: 'Basic dXNlcjpwYXNz',
        'X-Latin': 'caf\u00e9',
      },
    });
    assert.equal(seen.headers['x-latin'], 'caf\u00e9');
    assert.equal(seen.headers['x-multi'], 'a, b');
    assert.equal(seen.headers.cookie, 'a=1; b=2');
    assert.equal(seen.headers['x-mixed-case'], 'Value Kept');
    assert.equal(seen.headers['x-ms-client-request-id'], 'req-42');
    assert.equal(seen.headers.authorization, 'Basic dXNlcjpwYXNz', 'the app\'s own Authorization passes when ServiceBusAuthorization is the token');
    assert.equal(seen.headers.servicebusauthorization, undefined);
    assert.match(String(seen.headers.via), /\S/);
  });

  it('the query keeps every parameter but sb-hc-* ones, byte for byte and in order', async () => {
    const token = encodeURIComponent(tokenFor(`${relay().url}/echo/inspect`));
    const seen = await inspect(`/echo/inspect?a=1&sb-hc-token=${token}&a=2&b=%20x%2By&SB-HC-ID=z&sb-hc-other=1&c&d=`, {}, false);
    assert.equal(seen.url, '/echo/inspect?a=1&a=2&b=%20x%2By&c&d=');
  });

  it('the entity alone, with a query, is the request target', async () => {
    const seen = await inspect('/echo?only=entity', {}, true);
    assert.equal(seen.url, '/echo?only=entity');
  });

  for (const parts of [[], [Buffer.from('tiny')]]) {
    it(`a chunked body of ${parts.length ? 'a few bytes' : 'no bytes'} reaches the listener by rendezvous as sent`, async () => {
      const target = `${relay().url}/echo/inspect`;
      const r = await httpRequest(target, { method: 'POST', body: parts, headers: { ...auth(target), 'transfer-encoding': 'chunked' } });
      assert.equal(r.status, 200, String(r.body));
      const seen = JSON.parse(String(r.body));
      assert.equal(Buffer.from(seen.body, 'base64').toString(), parts.join(''));
    });
  }

  it('Expect: 100-continue gets its 100 and the body reaches the listener', async () => {
    const target = `${relay().url}/echo/inspect`;
    const body = randomBytes(2000);
    const answer = await withTimeout(
      new Promise<Answer>((resolve, reject) => {
        const req = request(target, { method: 'PUT', agent: false, headers: { ...auth(target), expect: '100-continue', 'content-length': String(body.length) } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode!, statusMessage: res.statusMessage!, headers: res.headers, body: Buffer.concat(chunks), localPort: 0 }));
        });
        req.on('continue', () => req.end(body));
        req.on('error', reject);
      }),
      10000,
      'the answer to an Expect: 100-continue PUT',
    );
    assert.equal(answer.status, 200);
    assert.ok(Buffer.from(JSON.parse(String(answer.body)).body, 'base64').equals(body));
  });

  it('hyco-https\'s own sender helpers: createRelayHttpsUri with token and id, appendRelayToken on a URL with a query', async () => {
    const https = hycoHttps as typeof hycoHttps & {
      createRelayToken(uri: string, keyName: string, key: string): string;
      createRelayHttpsUri(namespace: string, path: string, token?: string, id?: string): string;
      appendRelayToken(uri: string, keyName: string, key: string): string;
    };
    const token = https.createRelayToken(`${relay().url}/echo`, ROOT_KEY_NAME, ROOT_KEY);
    const built = https.createRelayHttpsUri('127.0.0.1', 'echo/inspect?a=1', token, 'corr-9').replace('https://127.0.0.1', relay().url);
    const one = JSON.parse(String((await send(built)).body));
    assert.equal(one.url, '/echo/inspect?a=1');
    const appended = https.appendRelayToken(`${relay().url}/echo/inspect?b=2`, ROOT_KEY_NAME, ROOT_KEY);
    const two = await send(appended);
    assert.equal(two.status, 200, String(two.body));
    assert.equal(JSON.parse(String(two.body)).url, '/echo/inspect?b=2');
  });

  it('concurrent requests with bodies of every size, on the control channel and by rendezvous, each get their own answer', async () => {
    const sizes = [0, 1, 500, 4096, 65535, 65536, 65537, 100000];
    const bodies = Array.from({ length: 24 }, (_, i) => randomBytes(sizes[i % sizes.length]));
    const answers = await Promise.all(
      bodies.map((body, i) =>
        send(`${relay().url}/echo/inspect?n=${i}`, { method: 'POST', body, headers: { ...auth(`${relay().url}/echo/inspect`), 'content-length': String(body.length) } }),
      ),
    );
    answers.forEach((r, i) => {
      assert.equal(r.status, 200, `request ${i}`);
      const seen = JSON.parse(String(r.body));
      assert.equal(seen.url, `/echo/inspect?n=${i}`);
      assert.ok(Buffer.from(seen.body, 'base64').equals(bodies[i]), `request ${i} body (${bodies[i].length} B)`);
    });
    const ids = answers.map((r) => JSON.parse(String(r.body)).requestId);
    assert.ok(ids.every((id) => typeof id === 'string' && id.length > 0), 'hyco-https read a requestId from every request');
    assert.equal(new Set(ids).size, ids.length, 'each request its own id');
  });

  it('two senders using one sb-hc-id at once (createRelayHttpsUri with a fixed id) are still told apart', async () => {
    const target = `${relay().url}/echo/inspect`;
    const answers = await Promise.all(
      [0, 1, 2, 3].map((i) => send(`${target}?n=${i}&sb-hc-id=same-id`, { method: 'POST', body: Buffer.from(`body ${i}`), headers: auth(target) })),
    );
    answers.forEach((r, i) => {
      assert.equal(r.status, 200);
      const seen = JSON.parse(String(r.body));
      assert.equal(seen.url, `/echo/inspect?n=${i}`);
      assert.equal(Buffer.from(seen.body, 'base64').toString(), `body ${i}`);
    });
  });
});

describe('hyco-https listener: status lines and bodies it answers with', () => {
  const relay = relayWithHycoHttps();

  const get = (path: string, opts: Parameters<typeof send>[1] = {}) =>
    send(`${relay().url}${path}`, { ...opts, headers: { ...auth(`${relay().url}/echo`), ...opts.headers } });

  for (const [code, reason, expected] of [
    [201, undefined, 'Created'],
    [202, 'Queued For Later', 'Queued For Later'],
    [400, undefined, 'Bad Request'],
    [404, 'Nothing Here', 'Nothing Here'],
    [418, undefined, "I'm a teapot"],
    [500, undefined, 'Internal Server Error'],
    [503, 'Down For Maintenance', 'Down For Maintenance'],
  ] as const) {
    it(`${code}${reason ? ` "${reason}"` : ''} reaches the sender with its reason phrase and body`, async () => {
      const r = await get(`/echo/status/${code}${reason ? `?reason=${encodeURIComponent(reason)}` : ''}`);
      assert.deepEqual([r.status, r.statusMessage, String(r.body)], [code, expected, `status ${code}`]);
    });
  }

  it('a 302 keeps its Location', async () => {
    const r = await get('/echo/redirect');
    assert.deepEqual([r.status, r.headers.location, r.body.length], [302, '/echo/elsewhere', 0]);
  });

  it('204 and 304 come without a body, and the kept-alive connection answers the next request', async (t) => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    const noContent = await get('/echo/status/204', { agent });
    assert.deepEqual([noContent.status, noContent.body.length], [204, 0]);
    const notModified = await get('/echo/status/304', { agent });
    assert.deepEqual([notModified.status, notModified.headers.etag, notModified.body.length], [304, '"v1"', 0]);
    const next = await get('/echo/body', { agent });
    assert.deepEqual([next.status, String(next.body)], [200, '0123456789']);
    assert.equal(next.localPort, noContent.localPort, 'one connection throughout');
  });

  it('HEAD gets the head of a GET without its body, though the app wrote one, and the connection goes on', async (t) => {
    const head = await get('/echo/body', { method: 'HEAD' });
    assert.deepEqual([head.status, head.headers['content-type'], head.body.length], [200, 'text/plain', 0]);
    // node:http's agent does not reuse a socket after HEAD: a raw one sends HEAD and GET back to back.
    const socket = await tcp(t, relay().port);
    const token = tokenFor(`${relay().url}/echo`);
    socket.write(['HEAD', 'GET'].map((m) => `${m} /echo/body HTTP/1.1\r\nHost: x\r\nServiceBusAuthorization: ${token}\r\n\r\n`).join(''));
    const bytes = String(await readUntil(socket, (b) => String(b).endsWith('0\r\n\r\n'), 5000, 'both answers'));
    assert.equal(bytes.match(/^HTTP\/1\.1 200 /gm)?.length, 2, bytes);
    assert.equal(bytes.split('0123456789').length, 2, `one body, the GET's: ${bytes}`);
  });

  it('an HTTP/1.0 sender gets the whole body of an answer hyco-https gives no length (framed by the close)', async (t) => {
    const socket = await tcp(t, relay().port);
    socket.write(`GET /echo/size?n=3000 HTTP/1.0\r\nHost: x\r\nServiceBusAuthorization: ${tokenFor(`${relay().url}/echo`)}\r\n\r\n`);
    const bytes = await readToClose(socket, 5000, 'the HTTP/1.0 answer');
    const split = bytes.indexOf('\r\n\r\n');
    assert.match(String(bytes.subarray(0, split)), /^HTTP\/1\.[01] 200 /);
    assert.ok(bytes.subarray(split + 4).equals(pattern(3000)), String(bytes.subarray(0, split)));
  });

  it('pipelined requests are answered in order, a slow answer before a fast one', async (t) => {
    const socket = await tcp(t, relay().port);
    const token = tokenFor(`${relay().url}/echo`);
    socket.write(['/echo/stream?pieces=10&size=3&delay=30', '/echo/body'].map((p) => `GET ${p} HTTP/1.1\r\nHost: x\r\nServiceBusAuthorization: ${token}\r\n\r\n`).join(''));
    const bytes = String(await readUntil(socket, (b) => String(b).includes('0123456789'), 5000, 'both answers'));
    assert.equal(bytes.match(/^HTTP\/1\.1 200 /gm)?.length, 2, bytes);
    const second = bytes.indexOf('text/plain');
    assert.ok(bytes.indexOf('application/octet-stream') < second, `the slow answer first: ${bytes}`);
    assert.ok(bytes.indexOf('\r\n0\r\n\r\n') < second, `and whole before the next: ${bytes}`);
  });

  it('HEAD of a large answer (its body sent by rendezvous) gets the head alone, and the connection goes on', async (t) => {
    const socket = await tcp(t, relay().port);
    const token = tokenFor(`${relay().url}/echo`);
    socket.write(['HEAD', 'GET'].map((m) => `${m} /echo/${m === 'HEAD' ? 'size?n=200000' : 'body'} HTTP/1.1\r\nHost: x\r\nServiceBusAuthorization: ${token}\r\n\r\n`).join(''));
    const bytes = String(await readUntil(socket, (b) => String(b).endsWith('0\r\n\r\n'), 5000, 'both answers'));
    assert.equal(bytes.match(/^HTTP\/1\.1 200 /gm)?.length, 2, bytes.slice(0, 500));
    assert.ok(bytes.length < 2000, `no body for HEAD: ${bytes.length} bytes`);
    assert.ok(bytes.includes('0123456789'), bytes);
  });

  for (const how of ['writeHead-end', 'end', 'end-string']) {
    it(`an empty body ended with ${how} is answered at once, with its headers`, async () => {
      const r = await get(`/echo/empty?how=${how}`);
      assert.deepEqual([r.status, r.headers['x-empty'], r.body.length], [200, how, 0]);
      if (how === 'writeHead-end') assert.equal(r.statusMessage, 'Nothing To Say');
    });
  }

  for (const [status, write] of [[200, 'streamed after flushHeaders'], [200, null], [204, null]] as const) {
    it(`flushHeaders() then ${write ? 'a write' : 'nothing'} and end(), status ${status}: answered whole`, async () => {
      const r = await get(`/echo/flushed?status=${status}${write ? `&write=${encodeURIComponent(write)}` : ''}`);
      assert.deepEqual([r.status, r.headers['x-flushed'], String(r.body)], [status, 'yes', write ?? '']);
    });
  }

  for (const pieces of [false, true]) {
    it(`a small answer${pieces ? ' written in pieces' : ''} to a sender that has gone is dropped, and the channel serves on`, async (t) => {
      const socket = await tcp(t, relay().port);
      socket.write(`GET /echo/late?after=300${pieces ? '&pieces' : ''} HTTP/1.1\r\nHost: x\r\nServiceBusAuthorization: ${tokenFor(`${relay().url}/echo`)}\r\n\r\n`);
      await new Promise((r) => setTimeout(r, 50));
      socket.destroy();
      // Past the late answer: the next request needs the same (only) control channel.
      await new Promise((r) => setTimeout(r, 600));
      const before = relay().hybrid.listeners.counts().get('echo');
      const r = await get('/echo/body');
      assert.deepEqual([r.status, String(r.body)], [200, '0123456789']);
      assert.equal(before, 1, 'the listener still online');
    });
  }

  it('header values that are numbers or booleans arrive as text', async () => {
    const r = await get('/echo/typed');
    assert.deepEqual([r.status, r.headers['x-count'], r.headers['x-flag'], String(r.body)], [200, '5', 'true', 'typed']);
    assert.equal(r.headers['x-latin'], 'caf\u00e9', 'a Latin-1 letter, as node:http writes and reads it');
  });

  for (const n of [65535, 65536, 65537, 200000]) {
    it(`a ${n} B body in one end() arrives whole (${n > 65536 ? 'by rendezvous' : 'on the control channel'})`, async () => {
      const r = await get(`/echo/size?n=${n}`);
      assert.equal(r.status, 200);
      assert.ok(r.body.equals(pattern(n)), `got ${r.body.length} B`);
    });
  }

  for (const [pieces, size, delay] of [
    [20, 100, 10],
    [100, 1024, 0],
    [300, 1024, 0],
    [40, 4096, 5],
    // Past one part per 64 B of controlMessageBytes (1,024): rows of NDJSON, a byte or three at a time.
    [1100, 14, 0],
    [20000, 3, 0],
  ]) {
    it(`a body written in ${pieces} pieces of ${size} B${delay ? ` ${delay} ms apart` : ''} arrives whole and in order`, async () => {
      const r = await get(`/echo/stream?pieces=${pieces}&size=${size}&delay=${delay}`);
      assert.equal(r.status, 200);
      assert.ok(r.body.equals(pattern(pieces * size)), `got ${r.body.length} of ${pieces * size} B`);
    });
  }
});

describe('hyco-https listener: its control channel', () => {
  it('server.close() takes it off the entity: the next request is answered 404 at once', async (t) => {
    const relay = await startTestRelay(t);
    const listener = await startHycoHttpsListener(t, relay.url, app);
    const url = `${relay.url}/echo/body`;
    assert.equal((await httpRequest(url, { headers: auth(url) })).status, 200);
    const closed = waitEvent(listener, 'close', 5000);
    listener.close();
    await closed;
    await until(() => (relay.hybrid.listeners.counts().get('echo') ?? 0) === 0, 5000, 'the relay to drop the listener');
    const r = await httpRequest(url, { headers: auth(url), timeoutMs: 5000 });
    assert.equal(r.status, 404);
  });

  it('tolerates the unsolicited pongs hyco-https sends with keepAliveTimeout', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { keepAliveIntervalMs: 200, idleMs: 1000 } });
    const url = listenUrl(relay.url);
    const server = hycoHttps.createRelayedServer({ server: url, token: () => tokenFor(url), keepAliveTimeout: moment.duration(50, 'ms') } as never, app);
    server.on('error', () => {});
    let listening = 0;
    server.on('listening', () => listening++);
    server.listen();
    // Closed before the relay (last added, first run): a relay closed first has hyco-https reconnect, after 0 s and
    // then 1 s, and that timer, which its close() does not clear, fired in the next test.
    cleanupFor(t).after(() => server.close());
    await until(() => listening === 1, 5000, 'listening');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(listening, 1, 'never dropped and re-opened');
    const target = `${relay.url}/echo/body`;
    assert.equal((await httpRequest(target, { headers: auth(target) })).status, 200);
  });

  it('keeps the channel past the first token expiry when its hourly renewToken arrives', async (t) => {
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const relay = await startRelayProcess(cleanup, { timeouts: { keepAliveIntervalMs: 200, idleMs: 5000, tokenGraceMs: 1000 } });
    const url = listenUrl(relay.url);
    let calls = 0;
    const server = hycoHttps.createRelayedServer({ server: url, token: () => tokenFor(url, { ttl: ++calls === 1 ? 2 : 3600 }) }, app);
    server.on('error', () => {});
    let listening = 0;
    server.on('listening', () => listening++);
    // The hour is skipped: hyco-https's hourly renewal runs now.
    const { renew } = withTokenRenewal(() => server.listen());
    cleanup.after(() => server.close());
    await until(() => listening === 1, 5000, 'listening');
    renew();
    assert.equal(calls, 2, 'hyco-https asked for a fresh token and sent renewToken');
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal(listening, 1, 'never dropped and re-opened');
    const target = `${relay.url}/echo/body`;
    assert.equal((await httpRequest(target, { headers: auth(target) })).status, 200);
  });
});

function echo(ws: any): void {
  ws.on('message', (data: unknown, flags: { binary?: boolean }) => ws.send(data, { binary: !!flags?.binary }));
}

/** The relay's control messages to a hyco-ws listener, read beside hyco-ws's own handler. */
function controlMessages(server: { controlChannel: { on(e: string, f: (d: string) => void): void } }): any[] {
  const seen: any[] = [];
  server.controlChannel.on('message', (data: string) => seen.push(JSON.parse(String(data))));
  return seen;
}

/** A hyco-ws sender (its bundled ws 1.1 through relayedConnect); resolves when open. */
function relayedConnect(address: string, token: string | null): Promise<any> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const client = hycoWs.relayedConnect(address, token, () => resolve(client)) as any;
      client.on('error', reject);
    }),
    5000,
    'relayedConnect to open',
  );
}

describe('hyco-ws: its sender, URI and token helpers', () => {
  const cleanup = new Cleanup();
  let relay: Relay;
  before(async () => {
    relay = await startTestRelay(cleanup);
  });
  after(() => cleanup.run());

  /** A helper's wss://host:443 URI, pointed at the test relay. */
  const rebase = (uri: string) => uri.replace('wss://127.0.0.1:443', wsUrl(relay.url, ''));

  it('relayedConnect with a createRelayToken token relays text and binary both ways, in order, with no extension negotiated', async (t) => {
    const listen = listenUrl(relay.url);
    await startHycoWsListener(t, relay.url, echo, 'echo', () => hycoWs.createRelayToken(listen, ROOT_KEY_NAME, ROOT_KEY));
    const address = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const sender = await relayedConnect(address, hycoWs.createRelayToken(address, ROOT_KEY_NAME, ROOT_KEY));
    t.after(() => sender.terminate());
    assert.equal(sender.extensions && Object.keys(sender.extensions).length, 0, 'no permessage-deflate: the relay splices frames as they are');
    const sent = [Buffer.from('text one'), randomBytes(70000), Buffer.from('text two'), randomBytes(3)];
    const binary = [false, true, false, true];
    const got: { data: Buffer; binary: boolean }[] = [];
    const done = new Promise<void>((resolve) =>
      sender.on('message', (data: Buffer | string, flags: { binary?: boolean }) => {
        got.push({ data: Buffer.from(data as Buffer), binary: !!flags?.binary });
        if (got.length === sent.length) resolve();
      }),
    );
    sent.forEach((d, i) => sender.send(binary[i] ? d : String(d), { binary: binary[i] }));
    await withTimeout(done, 10000, 'echoes');
    got.forEach((g, i) => {
      assert.equal(g.binary, binary[i], `message ${i} type`);
      assert.ok(g.data.equals(sent[i]), `message ${i}`);
    });
  });

  it('createRelayListenUri and createRelaySendUri with tokens and ids: the listener opens on its query token alone; the accept carries the id and neither token', async (t) => {
    const listenToken = hycoWs.createRelayToken(listenUrl(relay.url), ROOT_KEY_NAME, ROOT_KEY);
    const listen = rebase(hycoWs.createRelayListenUri('127.0.0.1', 'echo', listenToken, 'listener-7'));
    assert.match(listen, /\?sb-hc-action=listen&sb-hc-token=.+&sb-hc-id=listener-7$/);
    // token '' (hyco-ws wants the option): no ServiceBusAuthorization header, only the query's token.
    const server = hycoWs.createRelayedServer({ server: listen, token: '' }, echo) as any;
    server.on('error', () => {});
    t.after(() => server.close());
    await waitEvent(server, 'listening', 5000);
    const messages = controlMessages(server);
    const sendToken = hycoWs.createRelayToken(wsUrl(relay.url, '/$hc/echo'), ROOT_KEY_NAME, ROOT_KEY);
    const address = rebase(hycoWs.createRelaySendUri('127.0.0.1', 'echo', sendToken, 'corr-1234'));
    const sender = await relayedConnect(address, null);
    t.after(() => sender.terminate());
    sender.send('hello');
    const [reply] = await waitEvent<[string]>(sender, 'message', 5000);
    assert.equal(String(reply), 'hello');
    const accept = messages.find((m) => m.accept)?.accept;
    assert.ok(accept, 'an accept was seen');
    assert.equal(accept.id, 'corr-1234');
    assert.doesNotMatch(accept.address, /sb-hc-token/i);
    assert.doesNotMatch(JSON.stringify(accept.connectHeaders), /SharedAccessSignature/);
    assert.equal(accept.remoteEndpoint.address, '127.0.0.1');
    assert.equal(accept.remoteEndpoint.port, sender._socket?.localPort ?? accept.remoteEndpoint.port);
  });

  it('appendRelayToken puts the token in the connect URL\'s query, which the relay reads', async (t) => {
    await startHycoWsListener(t, relay.url, echo);
    const address = hycoWs.appendRelayToken(wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect'), ROOT_KEY_NAME, ROOT_KEY);
    const sender = await relayedConnect(address, null);
    t.after(() => sender.terminate());
    sender.send('appended');
    const [reply] = await waitEvent<[string]>(sender, 'message', 5000);
    assert.equal(String(reply), 'appended');
  });

  it('a sender\'s path below the entity and its query reach the listener in the accept address, which hyco-ws dials', async (t) => {
    const server = await startHycoWsListener(t, relay.url, echo);
    const messages = controlMessages(server);
    const address = wsUrl(relay.url, '/$hc/echo/room/7?tenant=42&sb-hc-action=connect');
    const sender = await openWebSocket(address, { headers: { ...auth(address), 'X-Custom': 'kept' } });
    t.after(() => sender.terminate());
    sender.send('room');
    const [reply] = await waitEvent<[Buffer]>(sender, 'message', 5000);
    assert.equal(String(reply), 'room');
    const accept = messages.find((m) => m.accept)?.accept;
    assert.match(accept.address, /\/\$hc\/echo\/room\/7\?/);
    assert.match(accept.address, /[?&]tenant=42(&|$)/);
    assert.equal(accept.connectHeaders['x-custom'], 'kept');
  });

  it('a close code and reason from the listener reach the sender', async (t) => {
    let listenerSide: any;
    await startHycoWsListener(t, relay.url, (ws) => {
      listenerSide = ws;
      echo(ws);
    });
    const address = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const sender = await openWebSocket(address, { headers: auth(address) });
    t.after(() => sender.terminate());
    await until(() => listenerSide !== undefined && listenerSide.readyState === 1, 5000, 'the listener side open');
    const closed = waitEvent<[number, Buffer]>(sender, 'close', 5000);
    listenerSide.close(4001, 'listener done');
    const [code, reason] = await closed;
    assert.deepEqual([code, String(reason)], [4001, 'listener done']);
  });

  it('server.close() closes its relayed connections and takes it off the entity (next connect 404)', async (t) => {
    let listenerSides = 0;
    const server = await startHycoWsListener(t, relay.url, (ws) => {
      listenerSides++;
      echo(ws);
    });
    const address = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const sender = await openWebSocket(address, { headers: auth(address) });
    t.after(() => sender.terminate());
    sender.send('before');
    await waitEvent(sender, 'message', 5000);
    assert.equal(listenerSides, 1);
    const senderClosed = waitEvent<[number]>(sender, 'close', 5000);
    server.close();
    assert.equal((await senderClosed)[0], 1000, 'hyco-ws closes its connections with 1000');
    await until(() => (relay.hybrid.listeners.counts().get('echo') ?? 0) === 0, 5000, 'the relay to drop the listener');
    await assert.rejects(openWebSocket(address, { headers: auth(address) }), (err: { status?: number }) => err.status === 404);
  });
});

describe('hyco-ws listener: a sender\'s extension offer', () => {
  // In a process of its own: the defect ended that process (hyco-ws threw outside any handler).
  const LISTENER = `
    import ws from 'hyco-ws';
    const server = ws.createRelayedServer({ server: process.env.LISTEN_URL, token: () => process.env.TOKEN }, (socket) => {
      socket.on('message', (data) => socket.send(data));
    });
    server.on('error', () => {});
    server.on('listening', () => console.log(JSON.stringify({ listening: true })));
    setTimeout(() => { console.log(JSON.stringify({ alive: true })); server.close(); process.exit(0); }, Number(process.env.LIVE_MS));
  `;

  it('an offer a server must decline (permessage-deflate with an unknown, empty or repeated parameter) does not end a hyco-ws listener; its connect is relayed', async (t) => {
    const relay = await startTestRelay(t);
    const listen = listenUrl(relay.url);
    const script = runClientScript(t, LISTENER, { LISTEN_URL: listen, TOKEN: tokenFor(listen), LIVE_MS: '4000' }, 20000);
    await until(() => (relay.hybrid.listeners.counts().get('echo') ?? 0) > 0, 10000, 'the listener online');
    const address = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    for (const offer of ['permessage-deflate; x', 'permessage-deflate;', 'permessage-deflate; client_max_window_bits; client_max_window_bits', 'permessage-deflate; server_max_window_bits=99']) {
      // perMessageDeflate off: the offer is the header given here, as a sender of any make may write it.
      const sender = await openWebSocket(address, { perMessageDeflate: false, headers: { ...auth(address), 'Sec-WebSocket-Extensions': offer } });
      t.after(() => sender.terminate());
      sender.send(offer);
      const [reply] = await waitEvent<[Buffer]>(sender, 'message', 5000);
      assert.equal(String(reply), offer);
      sender.close();
    }
    const result = await script;
    // Before: exit code 1, "ReferenceError: WebSocketClient is not defined" on its stderr, the connect unanswered.
    assert.deepEqual([result.code, result.lines], [0, [{ listening: true }, { alive: true }]], result.stderr);
  });

  it('a well-formed offer still reaches the listener in connectHeaders (no extension is negotiated)', async (t) => {
    const relay = await startTestRelay(t);
    const server = await startHycoWsListener(t, relay.url, echo);
    const messages = controlMessages(server);
    const address = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const offer = 'permessage-deflate; client_max_window_bits, permessage-deflate; x, x-webkit-deflate-frame';
    const sender = await openWebSocket(address, { perMessageDeflate: false, headers: { ...auth(address), 'Sec-WebSocket-Extensions': offer } });
    t.after(() => sender.terminate());
    assert.equal(sender.extensions, '');
    sender.send('hi');
    await waitEvent(sender, 'message', 5000);
    const accept = messages.find((m) => m.accept)?.accept;
    assert.equal(accept.connectHeaders['sec-websocket-extensions'], 'permessage-deflate; client_max_window_bits, x-webkit-deflate-frame');
  });
});
