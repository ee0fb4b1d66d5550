// Property-based fuzzing of a simple WebSocket client's upgrade query
// (src/pubsub/simple-client-mode.ts, webpubsub_mode and group) against a
// running relay: any query, written byte by byte on a raw socket (modes in any
// case and misspelled, groups repeated, empty, long or escaped, escapes broken,
// characters no request line may hold) is answered 101 or 400 promptly, never
// a crash or a hang; a query node:http takes is answered 101 exactly when the
// mode it asks for can be had.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { simpleClientModeOf } from '../../src/pubsub/simple-client-mode.ts';
import { httpRequest } from '../helpers/http.ts';
import { accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { rawUpgrade } from '../helpers/raw-socket.ts';
import { withTimeout } from '../helpers/wait.ts';
import { fuzzOptions } from './fuzz.ts';

const piece = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('webpubsub_mode', 'WEBPUBSUB_MODE', 'webpubsub_mode=', 'group', 'group=', '=', '&', '&&', 'sendToGroup', 'SENDTOGROUP', 'sendevent', 'sendEvent ', 'sendToGroupX', 'g') },
  { weight: 2, arbitrary: fc.constantFrom('%', '%2', '%zz', '%00', '%26', '%3D', '%20', '%C3%A9', '%E9', '%C5%BFendToGroup', '%E2%84%AA', '+', ';', '?', '/', '%ED%A0%80') },
  { weight: 1, arbitrary: fc.constantFrom('x'.repeat(1024), 'x'.repeat(1025), '%C3%A9'.repeat(600)) },
  { weight: 2, arbitrary: fc.string({ unit: fc.constantFrom(...'abcAZ09-._~!$\'()*,:@[]{}|^`"<>'.split('')), maxLength: 8 }) },
  // What no request line may hold: node:http refuses it (400), the relay is not asked.
  { weight: 1, arbitrary: fc.constantFrom('#', ' ', '\t', 'é', '\u0000', '\u007f') },
);
/** A query: mostly the mode and group parameters, valid or nearly. */
const query = fc.oneof(
  fc.array(piece, { maxLength: 10 }).map((parts) => parts.join('')),
  fc
    .tuple(fc.array(fc.constantFrom('sendToGroup', 'SendToGroup', 'sendEvent', 'sendtogroup', '', 'x'), { maxLength: 2 }), fc.array(fc.oneof(fc.constantFrom('g', '', '%20', 'a%26b', 'x'.repeat(1024)), fc.string({ maxLength: 6 }).map(encodeURIComponent)), { maxLength: 2 }))
    .map(([modes, groups]) => [...modes.map((m) => `webpubsub_mode=${m}`), ...groups.map((g) => `group=${g}`)].join('&')),
);

describe('a simple client\'s upgrade query (fuzzed)', () => {
  it('answers any query 101 or 400 promptly, 101 exactly when the mode it asks for can be had', async (t) => {
    // Hundreds of connections from one address: not refused 429 for their rate, which is not what is tested here.
    const relay = await startPubSubRelay(t, { limits: { connectRatePerAddress: 1_000_000, connectBurstPerAddress: 1_000_000 } });
    const url = new URL(accessUrl(relay.url));
    const port = Number(url.port);
    await fc.assert(
      fc.asyncProperty(query, async (q) => {
        const target = `${url.pathname}${url.search}&${q}`;
        const answer = await withTimeout(rawUpgrade(t, port, target), 5000, `the answer to ?${q}`);
        answer.socket.destroy();
        assert.ok(answer.status === 101 || answer.status === 400, `${answer.status} for ?${q}`);
        // A request line of visible ASCII (no fragment) within the router's bound on a target (8 KiB) reaches the relay,
        // which reads its query as URLSearchParams does.
        if (/^[\x21-\x7e]*$/.test(q) && !q.includes('#') && target.length <= 8192) {
          const verdict = simpleClientModeOf(new URLSearchParams(`${url.search}&${q}`));
          assert.equal(answer.status, verdict.ok ? 101 : 400, `?${q}: ${JSON.stringify(verdict)}`);
        }
      }),
      fuzzOptions(300, 6000),
    );
    assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
  });
});
