// `edge-relay serve --workers N`: N edges in one command sharing the port, on
// the NATS bus. A listener's rendezvous leg that lands on the wrong worker is
// handed to the worker holding the rendezvous; pub/sub spans the workers.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { makePki } from '../helpers/certs.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { edgeOverrides } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoWsListener, hycoHttps, listenUrl } from '../helpers/hyco.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { startHaproxy } from '../helpers/proxy-protocol.ts';
import { accessUrl } from '../helpers/pubsub.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { configFile, startServeProcess, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { echoOnce } from '../helpers/workers.ts';

// Two tests at a time: each has a command and a nats-server of its own, and most of a test is waiting for processes.
describe('serve --workers', { concurrency: 2 }, () => {
  it('runs N edges on one port: rendezvous legs find their worker, pub/sub spans the workers, POST /$relay/reload reaches them all', async (t) => {
    const nats = await startNatsServer(t);
    const overrides = edgeOverrides('host', [nats.url]);
    const file = configFile(t, overrides);
    const relay = await startServeProcess(t, ['--config', file, '--port', '0', '--workers', '2']);
    // One listener, attached to one of the workers; senders land on either.
    const echoListener = await startHycoWsListener(t, relay.url, (ws) => ws.on('message', (m: Buffer) => ws.send(String(m))));
    for (let i = 0; i < 12; i++) assert.equal(await echoOnce(relay.url, `hello ${i}`), `hello ${i}`);
    assert.match(relay.stderr(), /"node":"host-w1"/);
    assert.match(relay.stderr(), /"node":"host-w2"/);

    // HTTP mode with a body too large for the control channel: the listener fetches it over a rendezvous leg.
    const url = listenUrl(relay.url, 'web');
    const server = hycoHttps.createRelayedServer({ server: url, token: () => tokenFor(url) }, (req, res) => {
      let size = 0;
      req.on('data', (c: Buffer) => (size += c.length));
      req.on('end', () => res.end(`got ${size}`));
    });
    server.on('error', () => {});
    cleanupFor(t).after(() => server.close());
    server.listen();
    await new Promise((r) => server.once('listening', r));
    const body = Buffer.alloc(200 * 1024, 1);
    for (let i = 0; i < 6; i++) {
      const res = await httpRequest(`${relay.url}/web/upload`, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(`${relay.url}/web`) }, body });
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), `got ${body.length}`);
    }

    // Pub/sub: a subscriber and REST calls on whichever workers the connections land.
    const subs = await Promise.all([1, 2, 3, 4].map(() => startClient(t, accessUrl(relay.url))));
    for (const sub of subs) await sub.client.joinGroup('g');
    const publisher = await startClient(t, accessUrl(relay.url));
    await publisher.client.sendToGroup('g', 'across', 'text');
    await until(() => subs.every((s) => s.groupData.some((m) => m.data === 'across')), 10000, 'every subscriber, on either worker');
    await serviceClient(relay).sendToAll('from REST', { contentType: 'text/plain' });
    await until(() => subs.every((s) => s.serverData.some((m) => m.data === 'from REST')), 10000, 'a REST send to every worker');

    // A reload through the API lands on one worker, which passes it on: both reload, and a
    // worker's node id (host-wN) is not taken for a change that needs a restart.
    writeFileSync(file, JSON.stringify(testConfig({ ...overrides, limits: { pendingPerEntity: 77 } })));
    const reloaded = await httpRequest(`${relay.url}/$relay/reload`, { method: 'POST', headers: { authorization: tokenFor(`${relay.url}/`) } });
    assert.equal(reloaded.status, 200, String(reloaded.body));
    const answer = JSON.parse(String(reloaded.body)) as { changed?: string[]; restartNeeded?: string[] };
    assert.ok(answer.changed?.includes('limits'), String(reloaded.body));
    assert.deepEqual(answer.restartNeeded ?? [], []);
    await until(() => ['host-w1', 'host-w2'].every((node) => new RegExp(`"node":"${node}"[^\n]*"event":"config.reloaded"`).test(relay.stderr())), 10000, 'both workers to reload');

    // SIGTERM to the command stops every worker. (The clients go first: an SDK
    // client that is reconnecting to a stopped relay does not stop, and hyco-ws
    // answers each refused reconnect with two more, at once.)
    for (const client of [...subs, publisher]) await client.client.stop();
    echoListener.close();
    server.close();
    await relay.stop();
    assert.notEqual(relay.child.exitCode ?? relay.child.signalCode, null);
  });

  it('over TLS: a leg that lands on the wrong worker is relayed to the right one (a TLS connection cannot change process)', async (t) => {
    const nats = await startNatsServer(t);
    const pki = makePki(t);
    const overrides = { ...edgeOverrides('tls', [nats.url]), listen: { host: '127.0.0.1', port: 0, tls: pki.server } };
    const relay = await startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2']);
    assert.match(relay.url, /^https:/);
    const wss = (path: string) => relay.url.replace(/^https/, 'wss') + path;
    const listenUri = wss('/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUri, tokenFor(wss('/$hc/echo')), { ca: pki.ca });
    t.after(() => listener.ws.terminate());
    // The listener accepts each connect by dialling the rendezvous address it is given, and echoes.
    listener.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const accept = (JSON.parse(String(data)) as { accept?: { address: string } }).accept;
      if (!accept) return;
      const leg = new WebSocket(accept.address, { ca: pki.ca });
      leg.on('message', (m) => leg.send(String(m)));
      leg.on('error', () => leg.terminate());
      t.after(() => leg.terminate());
    });
    for (let i = 0; i < 10; i++) {
      const sender = new WebSocket(wss('/$hc/echo?sb-hc-action=connect'), { ca: pki.ca, headers: { ServiceBusAuthorization: tokenFor(wss('/$hc/echo')) } });
      t.after(() => sender.terminate());
      await withTimeout(new Promise((resolve, reject) => (sender.once('open', resolve), sender.once('error', reject))), 10000, `sender ${i} open`).catch((err) => {
        throw new Error(`${err.message}\n${relay.stderr().split('\n').filter((l) => /connect|rendezvous|handoff|listener/.test(l)).slice(-15).join('\n')}`);
      });
      const reply = withTimeout(new Promise<string>((resolve) => sender.once('message', (m) => resolve(String(m)))), 10000, `echo ${i}`);
      sender.send(`over tls ${i}`);
      assert.equal(await reply, `over tls ${i}`);
      sender.close();
    }
    await relay.stop();
  });

  it('behind a balancer sending PROXY headers (listen.proxyProtocol): legs handed between workers need none again, senders are named', async (t) => {
    const nats = await startNatsServer(t);
    const overrides = { ...edgeOverrides('proxied', [nats.url]), listen: { host: '127.0.0.1', port: 0, trustProxy: ['127.0.0.1'], proxyProtocol: true } };
    // --dev: the test's short keys, behind a proxy (trustProxy), are refused without it.
    const relay = await startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2', '--dev']);
    const relayPort = new URL(relay.url).port;
    const { v2 } = await startHaproxy(t, Number(relayPort));
    const base = `http://127.0.0.1:${v2}`;
    const listener = await RawListener.connect(wsUrl(base, '/$hc/echo?sb-hc-action=listen'), tokenFor(wsUrl(base, '/$hc/echo')));
    t.after(() => listener.ws.terminate());
    const told: { address: string; port: number }[] = [];
    listener.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const accept = (JSON.parse(String(data)) as { accept?: { address: string; remoteEndpoint: { address: string; port: number } } }).accept;
      if (!accept) return;
      told.push(accept.remoteEndpoint);
      // Every connection to the relay's port goes through the balancer, the legs too.
      const leg = new WebSocket(accept.address.replace(`:${relayPort}/`, `:${v2}/`));
      leg.on('message', (m) => leg.send(String(m)));
      leg.on('error', () => leg.terminate());
      t.after(() => leg.terminate());
    });
    const senderPorts: number[] = [];
    for (let i = 0; i < 12; i++) {
      const sender = new WebSocket(wsUrl(base, '/$hc/echo?sb-hc-action=connect'), { headers: { ServiceBusAuthorization: tokenFor(wsUrl(base, '/$hc/echo')) } });
      t.after(() => sender.terminate());
      await withTimeout(new Promise((resolve, reject) => (sender.once('open', resolve), sender.once('error', reject))), 10000, `sender ${i} open`).catch((err) => {
        throw new Error(`${err.message}\n${relay.stderr().split('\n').filter((l) => /connect|rendezvous|proxy_protocol|listener/.test(l)).slice(-15).join('\n')}`);
      });
      senderPorts.push((sender as unknown as { _socket: { localPort: number } })._socket.localPort);
      const reply = withTimeout(new Promise<string>((resolve) => sender.once('message', (m) => resolve(String(m)))), 10000, `echo ${i}`);
      sender.send(`proxied ${i}`);
      assert.equal(await reply, `proxied ${i}`);
      sender.close();
    }
    assert.deepEqual(told, senderPorts.map((port) => ({ address: '127.0.0.1', port })));
    assert.match(relay.stderr(), /"node":"proxied-w1"/);
    assert.match(relay.stderr(), /"node":"proxied-w2"/);
    assert.doesNotMatch(relay.stderr(), /proxy_protocol\.refused/);
    await relay.stop();
  });

  it('ends with the code of a worker that cannot start, not a hang: a certificate it cannot use (78)', async (t) => {
    const nats = await startNatsServer(t);
    const file = configFile(t, {});
    const garbage = join(file, '..', 'not-a-certificate.pem');
    writeFileSync(garbage, 'not a certificate\n');
    const badTls = { ...edgeOverrides('badtls', [nats.url]), listen: { host: '127.0.0.1', port: 0, tls: { certFile: garbage, keyFile: garbage } } };
    // Before: both workers printed the error and stayed (their channel to the primary kept them), and so did the command.
    // (A port taken, exit 1, took the same path: every return of a worker's command ends it now.)
    await assert.rejects(startServeProcess(t, ['--config', configFile(t, badTls), '--port', '0', '--workers', '2']), /relay exited with 78/);
  });

  it('refuses a nodeId that --workers would make longer than the bus takes (exit 78, with the most it may be)', async (t) => {
    const nats = await startNatsServer(t);
    const file = configFile(t, edgeOverrides('x', [nats.url]));
    // Before: started, and each worker's messages were refused by the other as invalid (node ids on the bus: 64 at most).
    await assert.rejects(startServeProcess(t, ['--config', file, '--port', '0', '--workers', '2', '--node-id', 'n'.repeat(62)]), /relay exited with 78[^]*too long for --workers 2[^]*at most 61 characters/);
  });

  it('refuses several workers on the memory bus, with the reason', async (t) => {
    const file = configFile(t, {});
    await assert.rejects(startServeProcess(t, ['--config', file, '--port', '0', '--workers', '2']), /--workers needs the NATS bus/);
  });
});
