import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { route, stripProtocolParams } from '../../src/server/router.ts';

describe('routing by path', () => {
  it('sends /$hc/{entity} to hybrid WebSocket actions', () => {
    const r = route('/$hc/echo?sb-hc-action=listen&sb-hc-id=abc');
    assert.equal(r.kind, 'hybrid-ws');
    assert.equal(r.kind === 'hybrid-ws' && r.entity, 'echo');
    // A sender's suffix and query ride along to the listener (sb-hc-* pairs removed).
    const deeper = route('/$hc/echo/room/a%20b?tenant=42&sb-hc-action=connect&sb-hc-undefined');
    assert.deepEqual(deeper.kind === 'hybrid-ws' && [deeper.entity, deeper.below], ['echo', { subPath: ['room', 'a b'], rawPath: '/room/a%20b', rawQuery: 'tenant=42&sb-hc-undefined' }]);
    assert.equal(stripProtocolParams('sb-hc-undefined&sb-hc-id=1&x'), 'sb-hc-undefined&x');
  });
  it('sends /{entity}/... to the HTTP relay with sb-hc-* removed from the target', () => {
    const r = route('/echo/a/b?x=1&sb-hc-token=t&SB-HC-ID=2&y=%20');
    assert.deepEqual(r.kind === 'hybrid-http' && [r.entity, r.subPath, r.requestTarget], ['echo', ['a', 'b'], '/echo/a/b?x=1&y=%20']);
    assert.equal(stripProtocolParams('sb-hc-action=x'), '');
    // Empty segments (doubled and trailing slashes) as the path has them: the target as sent, none in subPath.
    const slashes = route('/echo//a///b/');
    assert.deepEqual(slashes.kind === 'hybrid-http' && [slashes.entity, slashes.subPath, slashes.requestTarget], ['echo', ['a', 'b'], '/echo//a///b/']);
    const api = route('/api/hubs/chat//groups/g/');
    assert.deepEqual(api.kind === 'pubsub-rest' && api.segments, ['', 'groups', 'g', '']);
  });
  it('passes a relayed request\'s path whose escapes are not UTF-8 as sent; names must be text', () => {
    // `caf%E9.txt`: Latin-1, a valid URI.
    const r = route('/echo/dir/caf%E9.txt?q=%E9');
    assert.deepEqual(r.kind === 'hybrid-http' && [r.entity, r.subPath.length, r.subPath[0], r.requestTarget], ['echo', 2, 'dir', '/echo/dir/caf%E9.txt?q=%E9']);
    for (const path of ['/echo/%ZZ', '/echo/caf%E9/%4', '/caf%E9/x', '/$hc/caf%E9', '/api/hubs/chat/groups/caf%E9', '/client/hubs/caf%E9', '/$relay/%E9', '/client/%E9', '/api/%E9']) {
      assert.equal(route(path).kind, 'bad-request', path);
    }
  });

  it('sends /client and /api to pub/sub, with names decoded per segment', () => {
    const client = route('/client/?hub=chat&access_token=t');
    assert.deepEqual(client.kind === 'pubsub-client' && [client.hub, client.path], ['chat', '/client/']);
    const rest = route('/api/hubs/chat/groups/a%2Fb.%2A%3E%20c/:send?api-version=2024-12-01');
    assert.deepEqual(rest.kind === 'pubsub-rest' && [rest.hub, rest.segments], ['chat', ['groups', 'a/b.*> c', ':send']]);
    assert.equal(route('/api/health').kind, 'ops');
  });

  it('keeps reserved names and odd targets away from entities', () => {
    assert.equal(route('/').kind, 'not-found');
    assert.equal(route('/client/hubs/x').kind, 'pubsub-client');
    assert.equal(route('/client/hubs/x/y').kind, 'not-found');
    assert.equal(route('/client/anything').kind, 'not-found');
    assert.equal(route('/api/hubs/x').kind, 'pubsub-rest');
    assert.equal(route('/api/other').kind, 'not-found');
    assert.equal(route('/$other/x').kind, 'not-found');
    assert.equal(route('/$relay/health').kind, 'ops');
    assert.equal(route('/%E0%A4%A').kind, 'bad-request');
    assert.equal(route('*').kind, 'bad-request');
    // A fragment in a request target: a URL parser and URLSearchParams read it apart (found by review).
    for (const target of ['/api/hubs/chat/:generateToken?userId=alice#&role=x', '/%61pi/hubs/chat/:send#', '/client/hubs/chat#x']) assert.equal(route(target).kind, 'bad-request', target);
    const abs = route('http://relay.example/echo/x');
    assert.equal(abs.kind === 'hybrid-http' && abs.entity, 'echo');
    // "//host/x" is a path with an empty first segment, never a host.
    assert.equal(route('//echo/x').kind, 'not-found');
  });
});
