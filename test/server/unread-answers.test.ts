// Answers a client never reads, whoever gives them (http/unread-answers.ts):
// pipelined requests are taken up one after the other, each once the answer
// before it is out, so a client that pipelines requests for a few answers
// larger than what the kernel holds for it, and reads none, stalls the
// connection's last answer in the relay's queue. Before, only a relayed
// response and a pub/sub REST answer were bounded (timeouts.senderStallMs):
// an ops answer (the dashboard's files, unauthenticated), an error answer or a
// refusal left the connection held for good, with no timer at all (not idle,
// its request heads all read), its place in httpConnectionsPerNode and the
// megabytes the kernel queued for it kept.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { kernelStates, tcp } from '../helpers/raw-socket.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const STALL_MS = 300;
/** A file of the dashboard's (32 KiB), served to anyone. */
const ASSET = '/$relay/dashboard/app.js';

describe('an answer its client does not read', () => {
  it('cuts the connection after timeouts.senderStallMs, for an ops answer as for a relayed one', async (t) => {
    const logs = captureLogger();
    const relay = await startTestRelay(t, { timeouts: { senderStallMs: STALL_MS } }, { log: logs.log });
    const socket = await tcp(t, relay.port);
    socket.pause();
    // A few hundred answers of 32 KiB: more than the kernel queues on loopback for a reader that reads nothing.
    socket.write(`GET ${ASSET} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`.repeat(400));
    await until(() => logs.events().includes('http.reader_stalled'), 10 * STALL_MS + 5000, 'the stall logged');
    // Cut with a reset: nothing of the relay's is left for it in the kernel (with a FIN, a socket in FIN-WAIT-1 behind
    // megabytes, for as long as TCP tries).
    await until(() => kernelStates(relay.port, socket.localPort!).length === 0, 3000, "the relay's socket gone from the kernel");
    // The client reads at last: the connection is gone, and with it what was queued for it (a paused socket does not
    // see its connection end until it reads).
    let answers = 0;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (answers += (chunk.match(/HTTP\/1\.1 200 /g) ?? []).length));
    socket.resume();
    await withTimeout(once(socket, 'close'), 3000, 'the connection closed');
    assert.ok(answers < 400, `cut before every answer went out (${answers} of 400)`);
  });

  it('lets a client that reads every answer have them all', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { senderStallMs: STALL_MS } });
    const socket = await tcp(t, relay.port);
    const requests = 50;
    socket.write(`GET ${ASSET} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`.repeat(requests));
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (text += chunk));
    const whole = () => {
      const last = text.lastIndexOf('HTTP/1.1 200 ');
      const head = text.indexOf('\r\n\r\n', last);
      const length = /\r\ncontent-length: (\d+)/i.exec(text.slice(last, head));
      return head > 0 && length !== null && text.length - head - 4 === Number(length[1]);
    };
    await until(() => (text.match(/HTTP\/1\.1 200 /g) ?? []).length === requests && whole(), 10000, 'every answer');
    assert.equal(socket.destroyed, false);
  });
});
