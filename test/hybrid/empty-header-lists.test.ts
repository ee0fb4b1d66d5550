// A listener's answer may give a header as an empty list (schemas/hc-response.schema.json allows it): that is no
// header. Found by review of 4c54832, which had `"Content-Length": []` fail the answer (502) and `"Via": []` write
// `via: ", 1.1 relay"`.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { responseHeadersForSender } from '../../src/hybrid/relayed-headers.ts';

describe("a listener's answer headers given as empty lists", () => {
  it('take Content-Length: [] as no Content-Length', () => {
    assert.deepEqual(responseHeadersForSender({ 'Content-Length': [] }), {});
    assert.deepEqual(responseHeadersForSender({ 'Content-Length': [], a: 'b' }, 'relay'), { a: 'b', via: '1.1 relay' });
  });

  it('take Via: [] as no Via: the relay is the only entry', () => {
    assert.deepEqual(responseHeadersForSender({ Via: [] }, 'relay'), { via: '1.1 relay' });
    assert.deepEqual(responseHeadersForSender({ Via: ['1.0 a'], via: [] }, 'relay'), { via: '1.0 a, 1.1 relay' });
  });
});
