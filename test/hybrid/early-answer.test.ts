// A listener that answers before it has read the whole upload (413, say): the
// sender gets the answer, and its connection, whose body the relay will never
// read again, is closed with it rather than left open and unread; the
// listener's leg is closed with a close frame once what it was sent is out.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Agent, request, type ClientRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { maskedFrame } from '../helpers/raw-socket.ts';
import { openWebSocket } from '../helpers/raw-listener.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

describe('a listener answering before the upload ends', () => {
  it('closes the sender\'s connection with the answer once part of the body was relayed', async (t) => {
    // Bounds far past the check: before, the connection stayed until Node's keep-alive timeout.
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'up', requiresClientAuthorization: false }], timeouts: { headersMs: 30000 } });
    const listenUrl = wsUrl(relay.url, '/$hc/up?sb-hc-action=listen');
    const control = await openWebSocket(listenUrl, { headers: { ServiceBusAuthorization: tokenFor(listenUrl) } });
    cleanupFor(t).after(() => control.terminate());
    let rendezvous: Socket | undefined;
    let requestId = '';
    control.on('message', (data, isBinary) => {
      const notice = !isBinary && (JSON.parse(String(data)) as { request?: { id: string; address: string } }).request;
      if (!notice) return;
      requestId = notice.id;
      // The listener dials the rendezvous for the chunked body, then reads none of it.
      const address = new URL(notice.address);
      const socket = connect(relay.port, '127.0.0.1');
      cleanupFor(t).after(() => socket.destroy());
      socket.on('error', () => {});
      socket.write(`GET ${address.pathname}${address.search} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      socket.pause();
      rendezvous = socket;
    });
    let sent = 0;
    let closedAt = 0;
    let status = 0;
    const chunk = Buffer.alloc(65536, 1);
    // A keep-alive client, which leaves closing to the server.
    const agent = new Agent({ keepAlive: true });
    cleanupFor(t).after(() => agent.destroy());
    const upload: ClientRequest = request(`${relay.url}/up/file`, { method: 'POST', agent, headers: { 'transfer-encoding': 'chunked' } });
    cleanupFor(t).after(() => upload.destroy());
    upload.on('error', () => {});
    upload.on('socket', (s) => s.on('close', () => (closedAt = Date.now())));
    upload.on('response', (res) => {
      status = res.statusCode!;
      res.resume();
    });
    const pump = () => {
      while (sent < 256e6) {
        sent += chunk.length;
        if (!upload.write(chunk)) return;
      }
    };
    upload.on('drain', pump);
    pump();
    // The upload stalls: the relay stopped reading it for the listener that does not read.
    for (let last = -1, polls = 0; rendezvous === undefined || sent !== last; polls++) {
      if (polls > 40) throw new Error(`the upload never stalled (${sent} bytes sent)`);
      last = sent;
      await new Promise((r) => setTimeout(r, 250));
    }
    const answer = JSON.stringify({ response: { requestId, statusCode: 413, statusDescription: 'Too Large' } });
    rendezvous!.write(maskedFrame(0x1, answer));
    const answeredAt = Date.now();
    await until(() => status === 413, 3000, 'the answer');
    await until(() => closedAt !== 0, 10000, 'the sender connection to close');
    assert.ok(closedAt - answeredAt < 2000, `the connection closed ${closedAt - answeredAt} ms after the answer`);
    // The listener, which answered in full, gets its leg closed (1000) after the part of the body it was sent,
    // not cut: a cut leg is a failed read in Microsoft's listeners, for a request already answered.
    const leg = rendezvous!;
    let tail = Buffer.alloc(0);
    leg.on('data', (d: Buffer) => (tail = Buffer.concat([tail, d]).subarray(-4)));
    leg.resume();
    await withTimeout(new Promise((r) => leg.once('end', r)), 10000, "the end of the listener's leg");
    assert.deepEqual([...tail], [0x88, 0x02, 0x03, 0xe8]);
  });

  it('lets a client that reads only after sending its whole body read the answer: no reset for the bytes it sent after it', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'up', requiresClientAuthorization: false }] });
    // Refuses every upload at once, reading none of it (a size limit, an auth check).
    await startHycoHttpsListener(t, relay.url, (_req, res) => void ((res.statusCode = 413), res.end('too large\n')), 'up');
    const client = connect(relay.port, '127.0.0.1');
    cleanupFor(t).after(() => client.destroy());
    client.pause();
    const size = 5_000_000;
    const answer = new Promise<string>((resolve) => {
      let text = '';
      client.on('data', (d: Buffer) => (text += d.toString('latin1')));
      client.on('end', () => resolve(text));
      client.on('error', (err) => resolve(`${text}[${(err as NodeJS.ErrnoException).code}]`));
    });
    // Sends everything first (a blocking client: Python's http.client, many SDKs), then reads.
    await new Promise<void>((resolve) => {
      client.once('error', () => resolve());
      client.write(`POST /up/file HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${size}\r\n\r\n`);
      let sent = 0;
      const chunk = Buffer.alloc(65536);
      const more = () => {
        while (sent < size) {
          const piece = chunk.subarray(0, Math.min(chunk.length, size - sent));
          sent += piece.length;
          if (!client.write(piece)) return void client.once('drain', more);
        }
        resolve();
      };
      more();
    });
    client.resume();
    // Before: ECONNRESET, the 413 lost with the reset.
    const got = await withTimeout(answer, 10000, 'the answer');
    assert.match(got, /^HTTP\/1\.1 413 /);
    assert.ok(got.includes('too large') && !got.includes('[ECONNRESET]'), got);
  });
});
