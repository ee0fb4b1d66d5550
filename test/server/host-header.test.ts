// A request's Host lines (RFC 9112 3.2): more than one, or one that is not a
// host, is answered 400, on plain requests and on upgrades alike. Before, Node
// kept the first of several (a proxy before the relay may have routed on
// another) and `Host: a/b?c#d` was taken as it was. An HTTP/1.1 upgrade
// without one is 400 too, as node:http answers a plain request without one. A reg-name keeps what RFC
// 3986 allows (`my_service`, as container names have).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readToClose, tcp } from '../helpers/raw-socket.ts';
import { startTestRelay } from '../helpers/relay.ts';

describe('the Host header', () => {
  it('refuses two Host lines or one that is not a host with 400, and serves one that RFC 3986 allows', async (t) => {
    const relay = await startTestRelay(t);
    const answerTo = async (head: string) => {
      const socket = await tcp(t, relay.port);
      socket.write(`${head}Connection: close\r\n\r\n`);
      return (await readToClose(socket, 5000, head)).toString('latin1');
    };
    for (const hosts of ['Host: a\r\nHost: b\r\n', 'Host: 127.0.0.1\r\nhost: 127.0.0.1\r\n', 'Host: a/b?c#d\r\n', 'Host: user@relay\r\n', 'Host: relay:9400/x\r\n']) {
      assert.match(await answerTo(`GET /$relay/health HTTP/1.1\r\n${hosts}`), /^HTTP\/1\.1 400 /, hosts);
      const upgrade = `GET /$hc/echo?sb-hc-action=listen HTTP/1.1\r\n${hosts}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n`;
      assert.match(await answerTo(upgrade), /^HTTP\/1\.1 400 /, `upgrade, ${hosts}`);
    }
    for (const host of ['my_service:9400', 'relay.example.com', '[::1]:9400', '127.0.0.1', '[fe80::1%eth0]:9400', '[fe80::1%25eth0]', '[::1%lo]', '[v1.fe80::a+en1]:9400']) {
      assert.match(await answerTo(`GET /$relay/health HTTP/1.1\r\nHost: ${host}\r\n`), /^HTTP\/1\.1 200 /, host);
    }
    // HTTP/1.0 without one: served.
    assert.match(await answerTo('GET /$relay/health HTTP/1.0\r\n'), /^HTTP\/1\.1 200 /);
    // HTTP/1.1 without one: 400 (node:http's own for a plain request; the relay's for an upgrade, which node:http
    // handed on without one and was served).
    assert.match(await answerTo('GET /$relay/health HTTP/1.1\r\n'), /^HTTP\/1\.1 400 /);
    const hostless = 'GET /$hc/echo?sb-hc-action=listen HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';
    assert.match(await answerTo(hostless), /^HTTP\/1\.1 400 /, 'an upgrade without Host');
  });
});
