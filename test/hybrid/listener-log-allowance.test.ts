// A listener that repeats a mistake in a loop (answers to requests it never
// got, answers failing their schema) writes a few log lines a minute, not
// one per message: past ten in a minute the lines are counted, and the count
// goes with the next line written or with the listener's last line.
import assert from 'node:assert/strict';
import { it, type TestContext } from 'node:test';
import { RawListener } from '../helpers/raw-listener.ts';
import { captureLogger, startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

/** A relay whose log the test reads, and a raw listener on `echo`. */
async function listenerWithLog(t: TestContext) {
  const logs = captureLogger('info');
  const relay = await startTestRelay(t, {}, { log: logs.log });
  const url = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
  const listener = await RawListener.connect(url, tokenFor(url));
  t.after(() => listener.close());
  /** Closes the listener and waits until the relay has seen it leave. */
  const leave = async () => {
    listener.ws.close(1000);
    await until(() => logs.events().includes('listener.disconnected'), 5000, 'the listener to leave');
  };
  return { logs, url, listener, leave };
}

it('a listener sending 60 answers to nothing and 20 malformed ones writes 10 complaints, and says how many it left out when it leaves', async (t) => {
  const { logs, listener, leave } = await listenerWithLog(t);
  for (let i = 0; i < 60; i++) listener.ws.send(JSON.stringify({ response: { requestId: `never-${i}`, statusCode: 200 } }));
  for (let i = 0; i < 20; i++) listener.ws.send(JSON.stringify({ response: { requestId: `bad-${i}`, statusCode: 'two hundred' } }));
  // Before: 80 lines, one per message.
  await leave();
  const complaints = logs.lines().filter((l) => l.event === 'listener.unknown_response' || l.event === 'listener.bad_response');
  assert.equal(complaints.length, 10);
  assert.equal(logs.lines().find((l) => l.event === 'listener.disconnected')?.suppressed, 70);
});

it('token renewals have an allowance of their own: 15 renewals after 20 mistakes write 10 lines, and the mistakes 10', async (t) => {
  const { logs, url, listener, leave } = await listenerWithLog(t);
  for (let i = 0; i < 20; i++) listener.ws.send(JSON.stringify({ response: { requestId: `never-${i}`, statusCode: 200 } }));
  for (let i = 0; i < 15; i++) listener.ws.send(JSON.stringify({ renewToken: { token: tokenFor(url) } }));
  await leave();
  const count = (event: string) => logs.events().filter((e) => e === event).length;
  assert.deepEqual([count('listener.unknown_response'), count('listener.token_renewed')], [10, 10]);
});
