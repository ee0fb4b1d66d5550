import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDirFor } from '../helpers/cleanup.ts';
import { EDGE_RELAY_BIN } from '../helpers/cli-process.ts';
import { ConfigError, buildConfig, loadConfig, overridesFromEnv } from '../../src/config/load.ts';
import { captureLogger, startTestRelay, testConfig, tokenFor } from '../helpers/relay.ts';
import { RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';

describe('configuration', () => {
  it('accepts the shipped development config and fills defaults', () => {
    const config = loadConfig('config/dev.json', {}, {});
    assert.equal(config.listen.port, 9400);
    assert.equal(config.limits.listenersPerEntity, 25);
    assert.equal(config.limits.controlMessageBytes, 65536);
    assert.equal(config.timeouts.acceptMs, 30000);
    assert.equal(config.bus.kind, 'memory');
    assert.equal(config.hybridConnections[0].requiresClientAuthorization, false);
    assert.equal(config.bus.jetstream.unsureRetryMs, 60000);
  });

  it('says where a file is not valid JSON, and quotes none of it (a key written in single quotes stays out of logs and answers)', (t) => {
    const dir = tempDirFor(t, 'edge-relay-json-');
    const key = 'Zx9qP3sLmQ1w2e3r4t5y6u7i8o9p0asdfghjkl';
    const cases: [string, RegExp][] = [
      [`{\n  "sas": [\n    { "keyName": "Root",\n      "key": '${key}' }\n  ]\n}\n`, /an unexpected character at line 4 column 14/],
      [`{\n  "sas": [{ "keyName": "Root", "key": ${key} }]\n}\n`, /an unexpected character at line 2 column 39/],
      [`{"key": '${key.slice(0, 4)}'}`, /an unexpected character$/],
      // The token among the first 10 characters: V8 quotes from the start (before: one column short).
      [`{"a": x${key}}`, /an unexpected character at line 1 column 7/],
      [`{"nodeId": "edge"} ${key}`, /Unexpected non-whitespace character at line 1 column 20/],
      [`{\n  "log": { "level": "info" }\n  "nodeId": "${key}"\n}\n`, /Expected ',' or '}' after property value at line 3 column 3/],
      [`{ "nodeId": "${key}"`, /at line 1 column \d+/],
    ];
    for (const [i, [text, expected]] of cases.entries()) {
      const file = join(dir, `bad-${i}.json`);
      writeFileSync(file, text);
      assert.throws(
        () => loadConfig(file, {}, {}),
        (err: Error) => {
          assert.ok(err instanceof ConfigError);
          assert.match(err.message, expected, `case ${i}`);
          for (let at = 0; at + 4 <= key.length; at++) assert.ok(!err.message.includes(key.slice(at, at + 4)), `case ${i} quotes the key: ${err.message}`);
          return true;
        },
      );
    }
  });

  it('says which environment variable or flag a refused value came from (before: it read as the file\'s; found by review)', (t) => {
    const file = join(tempDirFor(t, 'edge-relay-origin-'), 'relay.json');
    writeFileSync(file, JSON.stringify({ log: { level: 'info' } }));
    const cases: [NodeJS.ProcessEnv, Record<string, string>, RegExp][] = [
      [{ EDGE_RELAY_LOG_LEVEL: 'loud' }, {}, /: config: \/log\/level: .* \(from environment variable EDGE_RELAY_LOG_LEVEL\)$/],
      [{}, { 'log.level': 'loud' }, /: config: \/log\/level: .* \(from --log-level\)$/],
      // The flag wins over the variable, and is named.
      [{ EDGE_RELAY_NODE_ID: 'edge-a' }, { nodeId: 'bad id' }, /: config: \/nodeId: .* \(from --node-id\)$/],
      [{ EDGE_RELAY_PORT: '99999' }, {}, /: config: \/listen\/port: .* \(from environment variable EDGE_RELAY_PORT\)$/],
      [{}, { 'bus.servers': 'http://x' }, /: config: \/bus\/servers\/0: .* \(from --nats\)$/],
      [{}, { publicUrl: 'ftp://x' }, /: config: \/publicUrl: .* \(from --public-url\)$/],
    ];
    for (const [env, flags, expected] of cases) assert.throws(() => loadConfig(file, env, flags), expected);
    // A value of the file's own is named as before.
    writeFileSync(file, JSON.stringify({ log: { level: 'loud' } }));
    assert.throws(() => loadConfig(file, {}, {}), (err: Error) => /^config: \/log\/level: /.test(err.message) && !err.message.includes('(from'));
  });

  it('names the key and the problem', () => {
    const cases: [unknown, RegExp][] = [
      [{ listen: { port: 70000 } }, /\/listen\/port: must be <= 65535/],
      [{ listen: { prot: 1 } }, /\/listen: unknown key "prot"/],
      [{ sas: [{ keyName: 'k', key: 'short', rights: ['Listen'] }] }, /\/sas\/0\/key/],
      [{ sas: [{ keyName: 'k', key: 'long-enough-key-123', rights: ['Read'] }] }, /\/sas\/0\/rights\/0: must be one of/],
      [{ bus: { kind: 'kafka' } }, /\/bus\/kind: must be one of/],
      // Before: taken as the memory bus, the servers ignored (a single edge, silently).
      [{ bus: { servers: ['nats://127.0.0.1:4222'] } }, /\/bus\/servers: only with bus.kind "nats"/],
      [{ bus: { kind: 'memory', servers: ['nats://127.0.0.1:4222'] } }, /\/bus\/servers: only with bus.kind "nats"/],
      [{ hybridConnections: [{ name: 'a' }, { name: 'A' }] }, /listed twice/],
      [{ hybridConnections: [{ name: 'client' }] }, /reserved/],
      [{ hybridConnections: [{ name: '$x' }] }, /\/hybridConnections\/0\/name/],
      [[], /must be a JSON object/],
      // Past Node's timer range (2^31 - 1 ms) a timer fires at once: pings every millisecond, requests timing out at once.
      [{ bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222'], pingIntervalMs: 3000000000 } }, /\/bus\/pingIntervalMs: must be <= 600000/],
      [{ bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222'], requestTimeoutMs: 3000000000 } }, /\/bus\/requestTimeoutMs: must be <= 600000/],
      [{ bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222'], replayWindowMs: 3000000000 } }, /\/bus\/replayWindowMs: must be <= 3600000/],
      // Past the streams' 120 s duplicate window a late store of an unanswered try would be a second message.
      [{ bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222'], jetstream: { enabled: true, unsureRetryMs: 120000 } } }, /\/bus\/jetstream\/unsureRetryMs: must be <= 110000/],
      // URLs of the right shape that no URL parser reads: before, exit 1 "Invalid URL" after binding the port, or a NATS client retrying forever.
      [{ publicUrl: 'https://relay.example.com:70000' }, /\/publicUrl: "https:\/\/relay.example.com:70000" is not a URL/],
      [{ publicUrl: 'http://[' }, /\/publicUrl: .* is not a URL/],
      [{ bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222', 'nats://127.0.0.1:notaport'] } }, /\/bus\/servers\/1: "nats:\/\/127.0.0.1:notaport" is not a URL/],
      // A client's event name in the host would choose where the relay posts its events: another host or port, another
      // hybrid connection's listener (found by review).
      ...['http://{event}/api', 'http://127.0.0.1:{event}/', 'hc://{event}/events', 'https://a.{event}.example.com/x'].map(
        (urlTemplate): [unknown, RegExp] => [{ pubsub: { hubs: [{ name: 'chat', accessKey: 'long-enough-key-123', eventHandlers: [{ urlTemplate }] }] } }, /\/pubsub\/hubs\/0\/eventHandlers\/0\/urlTemplate/],
      ),
    ];
    for (const [raw, pattern] of cases) {
      assert.throws(() => buildConfig(raw), (err: Error) => err instanceof ConfigError && pattern.test(err.message), JSON.stringify(raw));
    }
    // In the path and the query it is what it is for.
    for (const urlTemplate of ['http://127.0.0.1:8080/api/{hub}/{event}', 'hc://handlers/{event}?hub={hub}', 'https://{hub}.internal/events']) {
      const config = buildConfig({ pubsub: { hubs: [{ name: 'chat', accessKey: 'long-enough-key-123', eventHandlers: [{ urlTemplate }] }] } });
      assert.equal(config.pubsub.hubs[0].eventHandlers![0].urlTemplate, urlTemplate);
    }
  });

  it('refuses a namespaceHosts entry that is no host name: with a port, a scheme or a path it matched no token, Manage ones too (found by review)', async (t) => {
    for (const entry of ['relay.example.com:443', 'https://relay.example.com', 'relay.example.com/', '127.0.0.1:9400', '[10.0.0.1]', 'relay example']) {
      assert.throws(
        () => buildConfig({ namespaceHosts: ['relay.example.com', entry] }),
        (err: Error) => err instanceof ConfigError && err.message.startsWith(`config: /namespaceHosts/1: "${entry}" is not a host name`),
        entry,
      );
    }
    // Host names and addresses as tokens name them are taken.
    const hosts = ['relay.example.com', 'localhost', '127.0.0.1', '::1', '[::1]', 'relay_1.internal'];
    assert.deepEqual(buildConfig({ namespaceHosts: hosts }).namespaceHosts, hosts);
    // What such an entry did: a reload that took it closed every listener and refused every token, that of the
    // reload endpoint too, so the operator could not undo it through the API.
    const file = join(tempDirFor(t, 'edge-relay-hosts-'), 'relay.json');
    writeFileSync(file, JSON.stringify(testConfig()));
    const relay = await startTestRelay(t, {}, { loadConfig: () => loadConfig(file, {}, {}) });
    writeFileSync(file, JSON.stringify(testConfig({ namespaceHosts: [`127.0.0.1:${relay.port}`] })));
    const reload = () => fetch(`${relay.url}/$relay/reload`, { method: 'POST', headers: { authorization: tokenFor(`${relay.url}/`) } });
    const refused = await reload();
    assert.equal(refused.status, 422, await refused.text());
    writeFileSync(file, JSON.stringify(testConfig({ namespaceHosts: ['127.0.0.1'] })));
    const taken = await reload();
    assert.equal(taken.status, 200, await taken.text());
    assert.equal((await reload()).status, 200);
  });

  it('refuses an event handler URL with a user:password@, and quotes none of it (found by review)', async (t) => {
    const hub = (handler: Record<string, unknown>) => ({ pubsub: { hubs: [{ name: 'chat', accessKey: 'long-enough-key-123', ...handler }] } });
    const cases: [unknown, string][] = [
      [hub({ eventHandlers: [{ urlTemplate: 'https://svc:hunter2-secret@handler.example.com/api/{event}?code=FUNCKEY' }] }), '/pubsub/hubs/0/eventHandlers/0/urlTemplate'],
      [hub({ eventHandlers: [{ urlTemplate: 'http://127.0.0.1/a' }, { urlTemplate: 'hc://hunter2-secret@handlers/{event}' }] }), '/pubsub/hubs/0/eventHandlers/1/urlTemplate'],
      [hub({ upstream: { url: 'http://svc:hunter2-secret@127.0.0.1:8080/events' } }), '/pubsub/hubs/0/upstream/url'],
    ];
    for (const [raw, where] of cases) {
      assert.throws(
        () => buildConfig(raw),
        (err: Error) => err instanceof ConfigError && err.message.startsWith(`config: ${where}: credentials in the URL`) && !/hunter2|FUNCKEY/.test(err.message),
        where,
      );
    }
    // An @ in the path or the query is what it is.
    assert.equal(buildConfig(hub({ eventHandlers: [{ urlTemplate: 'https://handler.example.com/users/@{event}?by=a@b' }] })).pubsub.hubs[0].eventHandlers![0].urlTemplate, 'https://handler.example.com/users/@{event}?by=a@b');
    // What such a handler did once taken: every connect failed 500, and the log quoted the URL whole, password and ?code= key.
    const handler = createServer((_req, res) => res.writeHead(200, { 'webhook-allowed-origin': '*' }).end());
    await new Promise<void>((resolve) => handler.listen(0, '127.0.0.1', resolve));
    t.after(() => handler.close());
    const { port } = handler.address() as AddressInfo;
    const urlTemplate = `http://svc:hunter2-secret@127.0.0.1:${port}/api/{event}?code=FUNCKEY`;
    const captured = captureLogger('info');
    const started = await startTestRelay(t, hub({ eventHandlers: [{ urlTemplate, systemEvents: ['connect'] }] }), { log: captured.log }).catch((err: Error) => err);
    // (Before: it started, a client's connect was refused 500, and both warnings quoted the credentials.)
    if (!(started instanceof Error)) await RawPubSubClient.connect(accessUrl(started.url, { key: 'long-enough-key-123' })).catch(() => undefined);
    assert.deepEqual(captured.lines().filter((line) => /hunter2|FUNCKEY/.test(JSON.stringify(line))), []);
    assert.ok(started instanceof ConfigError, 'the relay started');
  });

  it('quotes a NATS server URL or publicUrl that does not parse without what is before its @, a password (found by the secrets review)', async (t) => {
    // A password with # or ? ends a NATS URL's authority early, a mistyped port fails alone: such a URL matches the
    // schema's pattern and fails to parse, and the message quoted it whole, password and all.
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ bus: { kind: 'nats', servers: ['nats://edge:hunter2#secret@nats-1:4222'] } }, '/bus/servers/0', /"nats:\/\/…@nats-1:4222" is not a URL/],
      [{ bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222', 'tls://edge:hunter2@secret@nats-2:99999'] } }, '/bus/servers/1', /"tls:\/\/…@nats-2:99999" is not a URL/],
      [{ publicUrl: 'https://edge:hunter2-secret@relay.example.com:70000' }, '/publicUrl', /"https:\/\/…@relay.example.com:70000" is not a URL/],
    ];
    for (const [raw, where, quoted] of cases) {
      assert.throws(
        () => buildConfig(raw),
        (err: Error) => err instanceof ConfigError && err.message.startsWith(`config: ${where}: `) && quoted.test(err.message) && !/hunter2|secret/.test(err.message),
        where,
      );
    }
    // One without credentials is quoted as it was written.
    assert.throws(() => buildConfig({ bus: { kind: 'nats', servers: ['nats://127.0.0.1:notaport'] } }), /"nats:\/\/127.0.0.1:notaport" is not a URL/);
    // From --nats (EDGE_RELAY_NATS), and on a reload: the log line and POST /$relay/reload's answer carry the same text.
    const file = join(tempDirFor(t, 'edge-relay-quoted-url-'), 'relay.json');
    writeFileSync(file, JSON.stringify(testConfig()));
    assert.throws(() => loadConfig(file, {}, { 'bus.servers': 'nats://edge:hunter2#secret@nats-1:4222' }), (err: Error) => /\/bus\/servers\/0: "nats:\/\/…@nats-1:4222"/.test(err.message) && !/hunter2|secret/.test(err.message));
    const captured = captureLogger('info');
    const relay = await startTestRelay(t, {}, { log: captured.log, loadConfig: () => loadConfig(file, {}, {}) });
    writeFileSync(file, JSON.stringify(testConfig({ bus: { kind: 'nats', servers: ['nats://edge:hunter2#secret@nats-1:4222'] } })));
    const reload = `${relay.url}/$relay/reload`;
    const answer = await fetch(reload, { method: 'POST', headers: { authorization: tokenFor(`${relay.url}/`) } });
    const body = await answer.text();
    assert.equal(answer.status, 422);
    assert.match(body, /\/bus\/servers\/0: \\?"nats:\/\/…@nats-1:4222\\?" is not a URL/);
    assert.ok(captured.events().includes('config.reload_refused'));
    assert.deepEqual(captured.lines().filter((line) => /hunter2|secret/.test(JSON.stringify(line))), []);
    assert.doesNotMatch(body, /hunter2|secret/);
  });

  it('refuses a NATS server URL with credentials, which the NATS client does not send (before: every connect refused, retried for ever), and quotes none of it', () => {
    for (const server of ['nats://edge:hunter2-secret@nats-1:4222', 'tls://hunter2-secret@nats-2:4222']) {
      assert.throws(
        () => buildConfig({ bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222', server] } }),
        (err: Error) => err instanceof ConfigError && err.message.startsWith('config: /bus/servers/1: credentials in the URL') && /bus\.user and bus\.pass/.test(err.message) && !/hunter2|secret/.test(err.message),
        server,
      );
    }
    assert.deepEqual(buildConfig({ bus: { kind: 'nats', servers: ['nats://nats-1:4222'], user: 'edge', pass: 'hunter2-secret' } }).bus.servers, ['nats://nats-1:4222']);
  });

  it("refuses an event handler timeoutMs past 300 s, where Node's fetch gives up on an http handler whatever it says (found by the event handler review)", () => {
    const hub = (handler: Record<string, unknown>) => ({ pubsub: { hubs: [{ name: 'chat', accessKey: 'long-enough-key-123', ...handler }] } });
    // (Before: 600000 was taken, and a handler answering after 300 s failed then, 'unreachable: fetch failed', a connect 500.)
    for (const [raw, where] of [
      [hub({ eventHandlers: [{ urlTemplate: 'http://127.0.0.1/{event}', timeoutMs: 300001 }] }), '/pubsub/hubs/0/eventHandlers/0/timeoutMs'],
      [hub({ upstream: { url: 'http://127.0.0.1/events', timeoutMs: 600000 } }), '/pubsub/hubs/0/upstream/timeoutMs'],
    ] as const) {
      assert.throws(() => buildConfig(raw), (err: Error) => err instanceof ConfigError && err.message.includes(where), where);
    }
    assert.equal(buildConfig(hub({ eventHandlers: [{ urlTemplate: 'http://127.0.0.1/{event}', timeoutMs: 300000 }] })).pubsub.hubs[0].eventHandlers![0].timeoutMs, 300000);
  });

  it('lets environment override the file and flags override both', () => {
    const env = overridesFromEnv({ EDGE_RELAY_PORT: '1234', EDGE_RELAY_HOST: '0.0.0.0' });
    const config = buildConfig({ listen: { port: 1 } }, env, { 'listen.port': '5678' });
    assert.equal(config.listen.port, 5678);
    assert.equal(config.listen.host, '0.0.0.0');
    assert.throws(() => buildConfig({}, { 'listen.port': 'abc' }), /listen.port/);
  });

  it('switches the bus to NATS from the environment or a flag, keeping the file\'s other bus keys', () => {
    const env = overridesFromEnv({ EDGE_RELAY_NATS: 'nats://127.0.0.1:4222, nats://127.0.0.1:4223' });
    const config = buildConfig({ bus: { kind: 'memory', subjectPrefix: 'edge' } }, env);
    assert.equal(config.bus.kind, 'nats');
    assert.deepEqual(config.bus.servers, ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4223']);
    assert.equal(config.bus.subjectPrefix, 'edge');
    assert.throws(() => buildConfig({}, { 'bus.servers': 'http://not-nats' }), /\/bus\/servers\/0/);
    assert.throws(() => buildConfig({ bus: { kind: 'nats' } }), /\/bus: must have required property 'servers'/);
  });

  it('stops `serve` with exit code 78 and the key named', (t) => {
    const dir = tempDirFor(t, 'edge-relay-config-');
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ listen: { port: -1 } }));
    const r = spawnSync(EDGE_RELAY_BIN, ['serve', '--config', file], { encoding: 'utf8', timeout: 20000 });
    assert.equal(r.status, 78);
    assert.match(r.stderr, /\/listen\/port: must be >= 0/);
  });

  it('stops `serve` with 78 and listen.host named for a host that is none, or none of this machine (before: exit 1 with getaddrinfo\'s words)', (t) => {
    const dir = tempDirFor(t, 'edge-relay-config-');
    const file = join(dir, 'relay.json');
    writeFileSync(file, JSON.stringify({ listen: { host: '127.0.0.1', port: 0 } }));
    const serve = (...flags: string[]) => spawnSync(EDGE_RELAY_BIN, ['serve', '--config', file, ...flags], { encoding: 'utf8', timeout: 20000 });
    const notAHost = serve('--host', 'not a host!');
    assert.equal(notAHost.status, 78, notAHost.stderr);
    assert.match(notAHost.stderr, /listen\/host/);
    // A name no resolver knows (RFC 6761's .invalid) or an address this machine does not have.
    for (const host of ['no-such-host.invalid', '192.0.2.1']) {
      const r = serve('--host', host);
      assert.equal(r.status, 78, `${host}: ${r.stderr}`);
      assert.match(r.stderr, /config: listen\.host: .* is no address of this machine to listen on/, host);
    }
    const port = serve('--port', 'abc');
    assert.equal(port.status, 78);
    assert.match(port.stderr, /from --port or EDGE_RELAY_PORT/);
  });

  it("stops `serve` with 78 naming the bus's file it cannot read (TLS files, credentials, NKey seed), before it listens (found by the TLS review: before, it started and logged the bus unreachable for ever)", async (t) => {
    const dir = tempDirFor(t, 'edge-relay-config-');
    const missing = join(dir, 'missing.pem');
    const bus = { kind: 'nats', servers: ['nats://127.0.0.1:1'] };
    const file = join(dir, 'relay.json');
    writeFileSync(file, JSON.stringify({ listen: { host: '127.0.0.1', port: 0 }, bus: { ...bus, tls: { caFile: missing } } }));
    const r = spawnSync(EDGE_RELAY_BIN, ['serve', '--config', file], { encoding: 'utf8', timeout: 20000 });
    assert.equal(r.status, 78, r.stderr);
    assert.match(r.stderr, /bus\.tls\.caFile: cannot read .*missing\.pem: ENOENT/);
    assert.doesNotMatch(r.stdout + r.stderr, /relay\.listening/);
    // Each file, in a relay started in this process (which refuses before it binds anything): the same check.
    for (const [key, busConfig, why] of [
      ['bus.tls.certFile', { ...bus, tls: { certFile: missing, keyFile: missing } }, 'ENOENT'],
      ['bus.credsFile', { ...bus, credsFile: missing }, 'ENOENT'],
      ['bus.nkeyFile', { ...bus, nkeyFile: missing }, 'ENOENT'],
      ['bus.tls.caFile', { ...bus, tls: { caFile: dir } }, 'EISDIR'],
    ] as const) {
      await assert.rejects(startTestRelay(t, { bus: busConfig }), (err: Error) => err instanceof ConfigError && err.message.startsWith(`${key}: cannot read `) && err.message.endsWith(why), key);
    }
  });
});
