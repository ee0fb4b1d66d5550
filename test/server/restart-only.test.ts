// What `serve --workers`' primary passes each worker it starts (src/server/reload.ts, RestartOnlyValues): the
// keys that wait for a restart, as the command started with them, and no secret (they travel in the
// worker's environment, which /proc shows and children inherit).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildConfig } from '../../src/config/load.ts';
import { restartOnlyChanges, restartOnlyValues, withRestartOnlyValues } from '../../src/server/reload.ts';
import { testConfig } from '../helpers/relay.ts';

const bus = (servers: string[], pass: string) => ({ kind: 'nats', servers, user: 'edge', pass });

describe("a worker's restart-only values", () => {
  it('pin the listen address and the bus of the command, and carry neither its password nor its token', () => {
    const atStart = buildConfig(testConfig({ listen: { host: '127.0.0.1', port: 24300 }, bus: bus(['nats://127.0.0.1:4222'], 'password-at-start') }));
    const values = restartOnlyValues(atStart);
    assert.doesNotMatch(JSON.stringify(values), /password-at-start/);
    // The file since: another port and NATS server, and a rotated password.
    const now = buildConfig(testConfig({ listen: { host: '127.0.0.1', port: 24320 }, bus: bus(['nats://127.0.0.1:5222'], 'password-now') }));
    const worker = withRestartOnlyValues(now, JSON.parse(JSON.stringify(values)));
    assert.equal(worker.listen.port, 24300);
    assert.deepEqual(worker.bus.servers, ['nats://127.0.0.1:4222']);
    // Its own secret, resolved from the file and environment as any edge's.
    assert.equal(worker.bus.pass, 'password-now');
  });

  it('read again from an unchanged file, need no restart (the bus with its secret put back is the same bus)', () => {
    const file = () => buildConfig(testConfig({ listen: { host: '127.0.0.1', port: 24300 }, bus: bus(['nats://127.0.0.1:4222'], 'secret') }));
    const worker = withRestartOnlyValues(file(), JSON.parse(JSON.stringify(restartOnlyValues(file()))));
    assert.deepEqual(restartOnlyChanges(worker, withRestartOnlyValues(file(), restartOnlyValues(file()))), []);
    assert.deepEqual(restartOnlyChanges(worker, file()), [], 'the file as read, keys in its own order');
    const tokenFile = buildConfig(testConfig({ bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222'], token: 't0ken' } }));
    assert.deepEqual(restartOnlyChanges(withRestartOnlyValues(tokenFile, restartOnlyValues(tokenFile)), tokenFile), []);
    // A real change still shows.
    const moved = buildConfig(testConfig({ listen: { host: '127.0.0.1', port: 24300 }, bus: bus(['nats://127.0.0.1:5222'], 'secret') }));
    assert.deepEqual(restartOnlyChanges(worker, moved), ['bus']);
  });
});
