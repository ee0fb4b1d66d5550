// Which nats-server versions the relay trusts with replicated streams
// (src/bus/nats-server-version.ts): below 2.10.14, a stream's copies can
// disagree on numbering, and every edge warns at start.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { REPLICATED_STREAMS_SINCE, versionBelow } from '../../src/bus/nats-server-version.ts';

describe('nats-server versions', () => {
  it('compares versions by their numbers, pre-releases by their release', () => {
    assert.equal(REPLICATED_STREAMS_SINCE, '2.10.14');
    for (const old of ['2.9.10', '2.9.25', '2.10.9', '2.10.13', 'v2.2.0', '1.99.99']) assert.equal(versionBelow(old, REPLICATED_STREAMS_SINCE), true, old);
    for (const good of ['2.10.14', '2.10.27', '2.11.0-RC.1', '2.12.1', '3.0.0', 'v2.10.14']) assert.equal(versionBelow(good, REPLICATED_STREAMS_SINCE), false, good);
    assert.equal(versionBelow('unknown', REPLICATED_STREAMS_SINCE), false, 'an unreadable version is not taken for an old one');
  });
});
