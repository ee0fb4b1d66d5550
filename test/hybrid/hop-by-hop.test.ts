// Headers a `Connection` header names are that hop's own (RFC 9110 7.6.1):
// the relay passes them on neither way, as it does not pass the fixed
// hop-by-hop headers (src/hybrid/http-exchange.ts). Before: only the fixed list.
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { forwardedRequestHeaders, responseHeadersForSender } from '../../src/hybrid/relayed-headers.ts';
import { confinedToEntity } from '../../src/hybrid/shared-origin.ts';

describe('proxy credentials', () => {
  it("concern the next hop only: a sender's Proxy-Authorization does not reach the listener, a listener's Proxy-Authenticate not the sender", () => {
    const req = { httpVersion: '1.1', headers: { host: 'relay', 'proxy-authorization': 'Basic cHJveHk6cHc=', 'x-kept': 'kept' } } as unknown as IncomingMessage;
    const out = forwardedRequestHeaders(req, [], 'relay');
    assert.equal(out['proxy-authorization'], undefined);
    assert.equal(out['x-kept'], 'kept');
    assert.deepEqual(responseHeadersForSender({ 'Proxy-Authenticate': 'Basic realm="corp"', 'X-Public': 'p' }), { 'X-Public': 'p' });
  });
});

describe("the relay's Via entry on a request", () => {
  it("names the protocol the sender used: 1.0 for an HTTP/1.0 request, after the sender's own entries (found by an audit of relayed HTTP: always 1.1)", () => {
    const old = { httpVersion: '1.0', headers: { host: 'relay', via: '1.0 corporate-proxy' } } as unknown as IncomingMessage;
    assert.equal(forwardedRequestHeaders(old, [], 'relay').via, '1.0 corporate-proxy, 1.0 relay');
    const current = { httpVersion: '1.1', headers: { host: 'relay' } } as unknown as IncomingMessage;
    assert.equal(forwardedRequestHeaders(current, [], 'relay').via, '1.1 relay');
  });
});

describe('headers named in Connection', () => {
  it("stay with the sender's hop: the listener does not see them", () => {
    const req = { httpVersion: '1.1', headers: { host: 'relay', connection: 'keep-alive, X-Hop', 'x-hop': 'private', 'x-kept': 'kept' } } as unknown as IncomingMessage;
    const out = forwardedRequestHeaders(req, [], 'relay');
    assert.equal(out['x-hop'], undefined);
    assert.equal(out.connection, undefined);
    assert.deepEqual([out['x-kept'], out.host], ['kept', 'relay']);
  });

  it("stay with the listener's hop: the sender does not see them, and a named Content-Length still frames the body", () => {
    const out = responseHeadersForSender({ Connection: 'close, X-Private, Content-Length', 'X-Private': 'secret', 'X-Public': 'p', 'Content-Length': '2' });
    assert.deepEqual(out, { 'X-Public': 'p', 'content-length': '2' });
  });
});

describe("a listener's header named __proto__", () => {
  it('is a header like any other on its way to the sender, not the prototype of the headers object (it was, and was lost)', () => {
    // As the control channel's JSON gives it: an own property.
    const sent = JSON.parse('{"__proto__": ["a", "b"], "X-Public": "p"}') as Record<string, string | string[]>;
    const out = responseHeadersForSender(sent)!;
    assert.deepEqual(Object.entries(out), [['__proto__', ['a', 'b']], ['X-Public', 'p']]);
    const confined = confinedToEntity(out, { url: '/e/', headers: {} });
    assert.deepEqual(Object.entries(confined), [['__proto__', ['a', 'b']], ['X-Public', 'p']]);
  });
});
