// edge-relay pub and sub as users run them, against a real relay.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { describe, it, type TestContext } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { EDGE_RELAY_BIN } from '../helpers/cli-process.ts';
import { exitedWithOutput } from '../helpers/exit.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const HUB = { name: 'chat', accessKey: 'chat-hub-key-0123456789abcdef' };

function startSub(t: TestContext, args: string[]) {
  const child = spawn(EDGE_RELAY_BIN, ['sub', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanupFor(t).after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (err += d));
  const exited = exitedWithOutput(child);
  return { child, out: () => out, err: () => err, exited };
}

/** Runs `edge-relay pub` (asynchronously: the relay under test lives in this process). */
async function runPub(t: TestContext, args: string[], input?: string): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(EDGE_RELAY_BIN, ['pub', ...args], { cwd: ROOT, stdio: ['pipe', 'ignore', 'pipe'] });
  cleanupFor(t).after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  child.stdin!.end(input ?? '');
  const status = await withTimeout(exitedWithOutput(child), 20000, `pub ${args.join(' ')}`);
  return { status, stderr };
}

describe('edge-relay pub and sub', () => {
  it('sub prints what pub publishes to the group, from arguments and from stdin', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [HUB] } });
    const common = ['--url', relay.url, '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room'];
    const watcher = startSub(t, [...common, '--count', '4']);
    await until(() => /watching group room in hub chat/.test(watcher.err()), 10000, 'sub watching');

    const fromArgs = await runPub(t, [...common, 'hello, room', 'second']);
    assert.equal(fromArgs.status, 0, fromArgs.stderr);
    const fromStdin = await runPub(t, [...common, '--data-type', 'json'], '{"n":1}\n[true]\n');
    assert.equal(fromStdin.status, 0, fromStdin.stderr);

    assert.equal(await withTimeout(watcher.exited, 10000, 'sub to exit after 4 messages'), 0);
    assert.deepEqual(watcher.out().trim().split('\n'), ['hello, room', 'second', '{"n":1}', '[true]']);
  });

  it('sub stops, 0, once the reader of its output is gone (sub | head): before, it ended as crashed with a stack trace', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [HUB] } });
    const common = ['--url', relay.url, '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room'];
    const watcher = startSub(t, common);
    await until(() => /watching group room in hub chat/.test(watcher.err()), 10000, 'sub watching');
    assert.equal((await runPub(t, [...common, 'first'])).status, 0);
    await until(() => watcher.out().includes('first'), 10000, 'the first line');
    // As `head -1` does once it has its line.
    watcher.child.stdout!.destroy();
    for (let i = 0; i < 3 && watcher.child.exitCode === null; i++) await runPub(t, [...common, `more ${i}`]);
    assert.equal(await withTimeout(watcher.exited, 10000, 'sub to stop'), 0, watcher.err());
    assert.doesNotMatch(watcher.err(), /EPIPE|Error/);
  });

  it('pub goes on once the reader of its stderr is gone: before, its first line (a skipped message) ended it as crashed, and nothing after was sent', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [HUB] } });
    const common = ['--url', relay.url, '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room'];
    const watcher = startSub(t, [...common, '--count', '3']);
    await until(() => /watching group room in hub chat/.test(watcher.err()), 10000, 'sub watching');
    const child = spawn(EDGE_RELAY_BIN, ['pub', ...common, '--data-type', 'json'], { cwd: ROOT, stdio: ['pipe', 'ignore', 'pipe'] });
    cleanupFor(t).after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    child.stderr!.destroy();
    // Written to a pub that ended meanwhile, stdin fails: the assertions below say so.
    child.stdin!.on('error', () => {});
    child.stdin!.write('{"n":1}\nnot json\n');
    await until(() => watcher.out().includes('{"n":1}'), 10000, 'the first message');
    child.stdin!.end('{"n":2}\n{"n":3}\n');
    // 1: one message was skipped (said on the stderr nobody reads).
    assert.equal(await withTimeout(exitedWithOutput(child), 20000, 'pub to exit'), 1);
    assert.equal(await withTimeout(watcher.exited, 10000, 'sub to exit after 3 messages'), 0, watcher.err());
    assert.deepEqual(watcher.out().trim().split('\n'), ['{"n":1}', '{"n":2}', '{"n":3}']);
  });

  it('sub --from-start and --after print the history, then live messages: no gap and nothing twice at the seam', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ ...HUB, history: { maxMessages: 10000 } }] } });
    const hub = relay.pubsub.hub('chat')!;
    const send = (n: number) => hub.send({ kind: 'group', name: 'room' }, { from: 'group', group: 'room', fromUserId: null, dataType: 'json', dataJson: String(n) });
    for (let n = 1; n <= 200; n++) await send(n);
    const common = ['--url', relay.url, '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room'];
    const all = startSub(t, [...common, '--from-start', '--count', '400']);
    const tail = startSub(t, [...common, '--after', '150', '--count', '250']);
    // Live messages keep coming while both read the history: the seam falls somewhere in here.
    for (let n = 201; n <= 400; n++) {
      await send(n);
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.equal(await withTimeout(all.exited, 20000, 'sub --from-start to print 400'), 0, all.err());
    assert.deepEqual(all.out().trim().split('\n').map(Number), Array.from({ length: 400 }, (_, i) => i + 1));
    assert.equal(await withTimeout(tail.exited, 20000, 'sub --after to print 250'), 0, tail.err());
    assert.deepEqual(tail.out().trim().split('\n').map(Number), Array.from({ length: 250 }, (_, i) => i + 151));
  });

  it('sub --after on a hub without history says so and stops', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [HUB] } });
    const watcher = startSub(t, ['--url', relay.url, '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room', '--from-start']);
    assert.equal(await withTimeout(watcher.exited, 10000, 'sub to give up'), 1);
    assert.match(watcher.err(), /404 HistoryUnavailable/);
  });

  it('refuses bad input and bad credentials with a reason', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [HUB] } });
    const bad = await runPub(t, ['--url', relay.url, '--hub', 'chat', '--key', 'wrong-key', '--group', 'room', 'x']);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /refused the connection: 401/);
    const notJson = await runPub(t, ['--url', relay.url, '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room', '--data-type', 'json', '{oops']);
    assert.equal(notJson.status, 2);
    assert.match(notJson.stderr, /not JSON/);
    assert.equal((await runPub(t, ['--hub', 'chat'])).status, 2);
    // A --url no URL parser reads (a port past 65535): said, with no token. Before, the error quoted the whole
    // client URL with its access token (a day long, sending to the group) on stderr, and sub ended with a stack trace.
    for (const command of ['pub', 'sub']) {
      const wrong = command === 'pub'
        ? await runPub(t, ['--url', 'http://127.0.0.1:94000', '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room', 'x'])
        : await (async () => {
          const s = startSub(t, ['--url', 'http://127.0.0.1:94000', '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room']);
          return { status: await withTimeout(s.exited, 10000, 'sub'), stderr: s.err() };
        })();
      assert.equal(wrong.status, 2, wrong.stderr);
      assert.match(wrong.stderr, /--url/);
      assert.doesNotMatch(wrong.stderr, /access_token|eyJ/);
    }
    const watcher = startSub(t, ['--url', relay.url, '--hub', 'chat', '--key', 'wrong-key', '--group', 'room']);
    assert.equal(await withTimeout(watcher.exited, 10000, 'sub to give up'), 1);
    assert.match(watcher.err(), /401/);
  });

  it('sub --after and --count take whole numbers in digits only: anything else is exit 2 before connecting (before: Number() took 1e3, 0x10, " 5" and "")', async (t) => {
    // No relay: a value taken would have sub connect to a port nothing listens on and retry until killed.
    const common = ['--url', 'http://127.0.0.1:9', '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room'];
    const cases: [string, string, RegExp][] = [
      ...['1e3', '0x10', ' 5', '', '5.0', '-0'].map((v): [string, string, RegExp] => ['--after', v, /^edge-relay sub: --after must be a history sequence: a whole number in digits/]),
      // Past what a JSON number holds exactly (Number() read this one as 2^53, the next sequence up).
      ['--after', '9007199254740993', /^edge-relay sub: --after 9007199254740993 is past the largest history sequence, 9007199254740991/],
      ['--after', '18446744073709551615', /^edge-relay sub: --after 18446744073709551615 is past the largest history sequence/],
      ...['1e3', '0x10', '', '0', 'Infinity'].map((v): [string, string, RegExp] => ['--count', v, /^edge-relay sub: --count must be a positive whole number in digits/]),
    ];
    // `--after=VALUE`: parseArgs takes a value starting with a dash only so.
    const runs = cases.map(([option, value]) => startSub(t, [...common, `${option}=${value}`]));
    for (const [i, [option, value, said]] of cases.entries()) {
      // Thirteen processes start at once: on a loaded machine (the suite's other files, 2 cores) the first to be
      // waited for took past 10 s to start and exit once. The bound catches one that connects and retries for good.
      const status = await withTimeout(runs[i].exited, 30000, `sub ${option} "${value}" to exit`);
      assert.equal(status, 2, `${option} "${value}": ${runs[i].err()}`);
      assert.match(runs[i].err(), said, `${option} "${value}"`);
      assert.equal(runs[i].out(), '');
    }
  });

  it('names the message that got no ack, with the close code and reason of the relay', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [HUB] }, limits: { pubsubMessageBytes: 1024 } });
    const big = 'b'.repeat(2000);
    const run = await runPub(t, ['--url', relay.url, '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room', big]);
    assert.equal(run.status, 1);
    // Before: "refused: connection closed before the ack", saying neither which message nor why.
    assert.match(run.stderr, /message 1 \(b{40}\.\.\.\) not acknowledged: the relay closed the connection \(1009 [^)]+\)/);
    // From a stdin that goes on (a pipe from a program that keeps writing): once the connection is gone it says
    // so and ends, 1 (before: each later line failed alone, "refused: WebSocket is not open", until stdin ended).
    const piped = spawn(EDGE_RELAY_BIN, ['pub', '--url', relay.url, '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room'], { cwd: ROOT, stdio: ['pipe', 'ignore', 'pipe'] });
    cleanupFor(t).after(() => {
      if (piped.exitCode === null && piped.signalCode === null) piped.kill('SIGKILL');
    });
    let stderr = '';
    piped.stderr!.on('data', (d: Buffer) => (stderr += d));
    const exited = exitedWithOutput(piped);
    piped.stdin!.on('error', () => undefined);
    piped.stdin!.write(`${big}\n`);
    // Nothing more is written: it ends while it waits for a line.
    assert.equal(await withTimeout(exited, 10000, 'pub to end with its stdin still open'), 1);
    assert.match(stderr, /the connection closed \(1009 [^)]*\) after message 1: nothing after it is sent/);
    assert.doesNotMatch(stderr, /not open/);
  });

  it('explain themselves with --help', () => {
    for (const command of ['pub', 'sub']) {
      const help = spawnSync(EDGE_RELAY_BIN, [command, '--help'], { cwd: ROOT, encoding: 'utf8', timeout: 20000 });
      assert.equal(help.status, 0);
      assert.match(help.stdout, /--group GROUP/);
      assert.match(help.stdout, /Example/);
    }
  });
});
