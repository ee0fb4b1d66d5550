// Microsoft's hyco-ws 1.0.5, unmodified, as the listener; ws 8 as the sender.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Cleanup } from '../helpers/cleanup.ts';
import { startHycoWsListener, listenUrl, withTokenRenewal } from '../helpers/hyco.ts';
import { openWebSocket } from '../helpers/raw-listener.ts';
import { startRelayProcess, tokenFor, wsUrl, type RelayProcess } from '../helpers/relay.ts';
import { until, waitEvent, withTimeout } from '../helpers/wait.ts';

function senderUrl(relay: RelayProcess, entity = 'echo'): string {
  return wsUrl(relay.url, `/$hc/${entity}?sb-hc-action=connect`);
}

function echo(ws: any): void {
  ws.on('message', (data: unknown, flags: { binary?: boolean }) => ws.send(data, { binary: !!flags?.binary }));
}

describe('hyco-ws listener, WebSocket mode', () => {
  const cleanup = new Cleanup();
  let relay: RelayProcess;
  before(async () => {
    relay = await startRelayProcess(cleanup, { timeouts: { keepAliveIntervalMs: 200, idleMs: 5000 } });
  });
  after(() => cleanup.run());

  it('echoes text and binary frames up to several MB, in order, both ways', async (t) => {
    await startHycoWsListener(t, relay.url, echo);
    const url = senderUrl(relay);
    const sender = await openWebSocket(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
    t.after(() => sender.terminate());
    const sent: { data: Buffer | string; binary: boolean }[] = [];
    for (const size of [0, 1, 125, 126, 65535, 65536, 1 << 20, 4 << 20]) {
      sent.push({ data: randomBytes(size), binary: true });
      sent.push({ data: `text-${size}-` + 'é'.repeat(Math.min(size, 1000)), binary: false });
    }
    const received: { data: Buffer; binary: boolean }[] = [];
    const done = new Promise<void>((resolve) =>
      sender.on('message', (data: Buffer, binary: boolean) => {
        received.push({ data, binary });
        if (received.length === sent.length) resolve();
      }),
    );
    for (const m of sent) sender.send(m.data, { binary: m.binary });
    await withTimeout(done, 30000, 'echoes');
    received.forEach((r, i) => {
      assert.equal(r.binary, sent[i].binary, `message ${i} type`);
      assert.ok(r.data.equals(Buffer.from(sent[i].data as Buffer)), `message ${i} content`);
    });
  });

  it('echoes the subprotocol the sender offered, and mirrors close codes', async (t) => {
    let listenerSide: any;
    await startHycoWsListener(t, relay.url, (ws) => {
      listenerSide = ws;
      echo(ws);
    });
    const url = senderUrl(relay);
    const sender = await openWebSocket(url, { protocols: ['chat.v2', 'chat.v1'], headers: { ServiceBusAuthorization: tokenFor(url) } });
    assert.equal(sender.protocol, 'chat.v2');
    await until(() => listenerSide !== undefined, 5000, 'listener side');
    const closed = new Promise<number>((resolve) => listenerSide.on('close', (code: number) => resolve(code)));
    sender.close(4321, 'done');
    assert.equal(await withTimeout(closed, 5000, 'listener close'), 4321);
  });

  it('spreads connections over two listeners of one entity', async (t) => {
    const counts = [0, 0];
    await startHycoWsListener(t, relay.url, (ws) => { counts[0]++; echo(ws); });
    await startHycoWsListener(t, relay.url, (ws) => { counts[1]++; echo(ws); });
    const url = senderUrl(relay);
    for (let i = 0; i < 20; i++) {
      const s = await openWebSocket(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
      s.send(`ping ${i}`);
      const [reply] = await waitEvent<[Buffer]>(s, 'message', 5000);
      assert.equal(String(reply), `ping ${i}`);
      s.close();
    }
    assert.equal(counts[0] + counts[1], 20);
    assert.ok(counts[0] >= 5 && counts[1] >= 5, `both listeners served: ${counts}`);
  });
});

describe('hyco-ws listener, token renewal', () => {
  const cleanup = new Cleanup();
  let relay: RelayProcess;
  before(async () => {
    relay = await startRelayProcess(cleanup, { timeouts: { keepAliveIntervalMs: 200, idleMs: 5000, tokenGraceMs: 1000 } });
  });
  after(() => cleanup.run());

  /** A sender through the listener on `url` still gets its echo. */
  async function assertStillRelays(url: string, through: RelayProcess = relay): Promise<void> {
    const sender = await openWebSocket(wsUrl(through.url, '/$hc/echo?sb-hc-action=connect'), {
      headers: { ServiceBusAuthorization: tokenFor(url) },
    });
    sender.send('still here');
    const [reply] = await waitEvent<[Buffer]>(sender, 'message', 5000);
    assert.equal(String(reply), 'still here');
    sender.close();
  }

  /** A token function whose first token lives 2 s and later ones an hour. */
  function shortThenLong(url: string) {
    const state = { calls: 0, token: () => tokenFor(url, { ttl: ++state.calls === 1 ? 2 : 3600 }) };
    return state;
  }

  it('keeps the control channel open past the first token expiry when renewToken arrives', async (t) => {
    const url = listenUrl(relay.url);
    const state = shortThenLong(url);
    let listening = 0;
    // hyco-ws renews on an hourly setInterval, set as it connects: run it once now.
    const { started, renew } = withTokenRenewal(() => startHycoWsListener(t, relay.url, echo, 'echo', state.token));
    const server = await started;
    server.on('listening', () => listening++);
    renew();
    assert.equal(state.calls, 2, 'hyco-ws asked for a fresh token and sent renewToken');
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal(listening, 0, 'the control channel was never dropped and re-opened');
    await assertStillRelays(url);
  });

  it('keeps the control channel when renewToken comes just after the token expired, as hyco-ws\'s hourly renewal always does', async (t) => {
    // Its own relay, with a grace of 2.5 s: the renewal below is sent 0.5 s after the expiry by the
    // test's clock, so a loaded machine has 2 s to deliver it (with the 1 s grace above, 0.5 s).
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const graced = await startRelayProcess(cleanup, { timeouts: { keepAliveIntervalMs: 200, idleMs: 5000, tokenGraceMs: 2500 } });
    const url = listenUrl(graced.url);
    let listening = 0;
    // A token that expires 1 to 2 s from now, as hyco-ws's (its `se` rounded down to the second).
    const expiresAt = (Math.floor(Date.now() / 1000) + 2) * 1000;
    const server = await startHycoWsListener(t, graced.url, echo, 'echo', () => tokenFor(url, { ttl: 2 }));
    server.on('listening', () => listening++);
    // hyco-ws sends its renewal on an hourly interval, after the hour-long token expired: here
    // 0.5 s after (several of the relay's 200 ms sweeps), within its grace, on its control channel.
    await new Promise((r) => setTimeout(r, expiresAt + 500 - Date.now()));
    server.controlChannel.send(JSON.stringify({ renewToken: { token: tokenFor(url) } }));
    // Past the grace and a sweep: a channel dropped would have been re-opened by now (hyco-ws reconnects at once).
    await new Promise((r) => setTimeout(r, expiresAt + 2500 + 400 - Date.now()));
    assert.equal(listening, 0, 'the control channel was never dropped and re-opened');
    await assertStillRelays(url, graced);
  });

  it('closes the control channel when the token expires unrenewed past its grace (hyco-ws then reconnects)', async (t) => {
    const url = listenUrl(relay.url);
    const state = shortThenLong(url);
    const server = await startHycoWsListener(t, relay.url, echo, 'echo', state.token);
    await waitEvent(server, 'listening', 6000);
    assert.equal(state.calls, 2, 'reconnected with a fresh token');
  });
});

describe('hyco-ws listener, a draining relay', () => {
  it('is closed with a code hyco-ws accepts (1001), not one its ws 1.1 takes for a protocol error', async (t) => {
    // With 1012, hyco-ws's bundled ws 1.1 failed with 1002 "invalid error code",
    // emitted error and close, and reconnected twice, at once, for each: a storm.
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const relay = await startRelayProcess(cleanup);
    const server = await startHycoWsListener(cleanup, relay.url, echo);
    const errors: unknown[] = [];
    server.on('error', (err: unknown) => errors.push(err));
    const closed = new Promise<number>((resolve) =>
      server.controlChannel.once('close', (code: number) => {
        // Stop hyco-ws here: with the relay gone, each refused reconnect would start two more.
        server.close();
        resolve(code);
      }),
    );
    const stopping = relay.stop();
    assert.equal(await withTimeout(closed, 10000, 'the control channel closed by the draining relay'), 1001);
    assert.deepEqual(errors, [], 'hyco-ws saw no protocol error');
    await stopping;
  });
});
