// A request that offers an upgrade to another protocol than WebSocket
// (`Upgrade: h2c` from curl --http2 and Java's HttpClient on http://) is
// served as HTTP/1.1, its upgrade ignored, as node:http and most servers do
// (RFC 9110 7.8); the connection closes after the answer. Before: 404 for
// every such request, whatever its path.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { readToClose, tcp } from '../helpers/raw-socket.ts';
import { startTestRelay } from '../helpers/relay.ts';

const H2C = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n';

describe('an upgrade offered to another protocol than WebSocket', () => {
  it('is ignored: the request is relayed as HTTP/1.1 and the connection closes after the answer', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'web', requiresClientAuthorization: false }] });
    let seen: Record<string, unknown> = {};
    await startHycoHttpsListener(t, relay.url, (req, res) => void ((seen = req.headers), res.end('ok')), 'web');
    const socket = await tcp(t, relay.port);
    socket.write(`GET /web/x HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}\r\n`);
    const answer = (await readToClose(socket, 10000, 'the answer')).toString('latin1');
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    assert.ok(answer.includes('ok'), answer);
    // Hop-by-hop, and named in Connection: none of the upgrade's headers reach the listener.
    assert.deepEqual([seen.upgrade, seen['http2-settings'], seen.connection], [undefined, undefined, undefined]);
    // The relay's own endpoints too.
    const health = await tcp(t, relay.port);
    health.write(`GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}\r\n`);
    assert.match((await readToClose(health, 10000, 'the health answer')).toString('latin1'), /^HTTP\/1\.1 200 [^]*"up"/);
  });
});
