// Requests Node's parser does not take as HTTP for a server: a method it does
// not know (BREW), CONNECT (a proxy's tunnel), and a malformed header line.
// Each gets an answer and its connection closes: a method the relay does not
// implement is 501 (RFC 9110 15.6.2), not 400 naming the request target as
// malformed, and CONNECT, which node:http dropped without a word, is 501 too
// (found by an audit of relayed HTTP); a malformed head is 400 with the
// parser's reason.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readToClose, tcp } from '../helpers/raw-socket.ts';
import { startTestRelay } from '../helpers/relay.ts';

const CLOSED_WITHIN_MS = 5000;

const CASES = [
  { what: 'a method the parser does not know', head: 'BREW /echo/pot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', status: 501, code: 'MethodNotImplemented' },
  { what: 'CONNECT', head: 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n', status: 501, code: 'MethodNotImplemented' },
  { what: 'a header line without a colon', head: 'GET /echo/x HTTP/1.1\r\nHost: 127.0.0.1\r\nNot a header\r\n\r\n', status: 400, code: 'BadRequest' },
];

describe('requests the parser does not take', () => {
  for (const { what, head, status, code } of CASES) {
    it(`answers ${status} ${code} and closes: ${what}`, async (t) => {
      const relay = await startTestRelay(t);
      const socket = await tcp(t, relay.port);
      socket.write(head);
      const answer = (await readToClose(socket, CLOSED_WITHIN_MS, 'the connection closed after its answer')).toString('latin1');
      assert.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `));
      assert.match(answer, new RegExp(`"code":"${code}"`));
      if (code === 'BadRequest') assert.match(answer, /Malformed request: Invalid header token/);
    });
  }
});
