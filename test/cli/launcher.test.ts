// The launcher (bin/edge-relay.js with bin/bundle.mjs): it runs the bundled
// CLI made from the sources on disk, makes it when a source changed, runs
// the TypeScript through tsx when it cannot be made, and never runs a bundle
// of other sources. Tried on a copy of the project, whose sources the test
// edits.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { until, withTimeout } from '../helpers/wait.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const USAGE = 'Usage: edge-relay COMMAND [options]';

/** `edge-relay ARGS` in `dir`'s copy, as users run it (bin/edge-relay), bounded: its exit code and output. */
function runIn(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return withTimeout(
    new Promise((resolve, reject) => {
      // EDGE_RELAY_FROM_SOURCE only as the test sets it, not as its caller's environment may.
      const child = spawn(join(dir, 'bin', 'edge-relay'), args, { cwd: dir, env: { ...process.env, EDGE_RELAY_FROM_SOURCE: '', ...env }, timeout: 30000 });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.once('error', reject);
      child.once('close', (status) => resolve({ status, stdout, stderr }));
    }),
    35000,
    `edge-relay ${args.join(' ')}`,
  );
}

/** What the copy's build/ holds: bundles named by the digest of their sources, each with its source map. */
function builtFiles(dir: string): string[] {
  return readdirSync(join(dir, 'build')).sort();
}

function edit(dir: string, file: string, from: string, to: string): void {
  const path = join(dir, file);
  const text = readFileSync(path, 'utf8');
  assert.ok(text.includes(from), `${file} holds ${from}`);
  writeFileSync(path, text.replace(from, to));
}

describe('the launcher', () => {
  it('runs the bundle made from the sources on disk, makes one when a source changes, and runs them through tsx when it cannot', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-launcher-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    for (const part of ['bin', 'src', 'schemas', 'config', 'package.json', 'tsconfig.json']) cpSync(join(ROOT, part), join(dir, part), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    // The copy's launcher module, reading the copy's sources.
    const bundle = (await import(pathToFileURL(join(dir, 'bin', 'bundle.mjs')).href)) as typeof import('../../bin/bundle.mjs');
    /** The files in build/ for the bundle of `state`: it and its source map. */
    const named = (state: { digest: string }) => {
      const file = basename(bundle.bundlePath(state.digest));
      return [file, `${file}.map`];
    };

    // No bundle yet: made at the first start, named by the digest of these sources, with its source map linked.
    const first = await runIn(dir, ['--help']);
    assert.equal(first.status, 0, first.stderr);
    assert.ok(first.stdout.startsWith(USAGE), first.stdout);
    assert.equal(first.stderr, '');
    const original = bundle.sourceState();
    assert.deepEqual(builtFiles(dir), named(original));
    const code = readFileSync(bundle.bundlePath(original.digest), 'utf8');
    assert.ok(code.trimEnd().endsWith(`//# sourceMappingURL=${named(original)[1]}`), code.slice(-200));

    // The bundle is what runs while it is the sources' (marked here in the bundle alone), unless EDGE_RELAY_FROM_SOURCE=1;
    // an editor's lock file (a dot file, a link to nowhere) in src/ changes nothing.
    edit(dir, `build/${named(original)[0]}`, USAGE, 'Usage: from the bundle');
    symlinkSync('nobody@host.1234:1700000000', join(dir, 'src', 'cli', '.#token.ts'));
    const fromBundle = await runIn(dir, ['--help']);
    assert.ok(fromBundle.stdout.startsWith('Usage: from the bundle'), fromBundle.stdout);
    assert.ok((await runIn(dir, ['--help'], { EDGE_RELAY_FROM_SOURCE: '1' })).stdout.startsWith(USAGE));

    // A source edited: made before it runs, by the first of several processes starting at once or by each.
    edit(dir, 'src/cli/main.ts', USAGE, 'Usage: edited');
    const several = await Promise.all([1, 2, 3, 4].map(() => runIn(dir, ['--help'])));
    for (const run of several) assert.ok(run.stdout.startsWith('Usage: edited') && run.stderr === '', run.stdout + run.stderr);
    const edited = bundle.sourceState();
    assert.ok(readFileSync(bundle.bundlePath(edited.digest), 'utf8').includes('Usage: edited'));
    assert.deepEqual(builtFiles(dir), [...named(original), ...named(edited)].sort(), 'no half-made file left');

    // A source saved while a bundle is made: the bundle is not kept under the digest read before.
    const before = bundle.sourceState();
    edit(dir, 'src/cli/main.ts', 'Usage: edited', 'Usage: saved meanwhile');
    assert.throws(() => bundle.build(before), /src\/cli\/main\.ts changed while the bundle was made/);
    assert.deepEqual(builtFiles(dir), [...named(original), ...named(edited)].sort());
    edit(dir, 'src/cli/main.ts', 'Usage: saved meanwhile', 'Usage: edited');

    // A serve that made its bundle keeps no esbuild process (by default esbuild runs one for the life of the caller).
    edit(dir, 'src/cli/main.ts', 'Usage: edited', 'Usage: for serve');
    const serve = spawn(join(dir, 'bin', 'edge-relay'), ['serve', '--config', 'config/dev.json', '--port', '0'], { cwd: dir, env: { ...process.env, EDGE_RELAY_FROM_SOURCE: '' } });
    t.after(() => serve.kill('SIGKILL'));
    let out = '';
    serve.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    await until(() => out.includes('listening on'), 20000, 'serve to listen');
    const children = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && procParent(p) === serve.pid);
    assert.deepEqual(children, [], 'processes left by the build');
    serve.kill('SIGINT');

    // A source esbuild refuses (one --help does not load) and another edit: no bundle can be made: the sources run
    // through tsx, and say what is wrong when the broken one is loaded.
    writeFileSync(join(dir, 'src', 'cli', 'pub.ts'), `${readFileSync(join(dir, 'src', 'cli', 'pub.ts'), 'utf8')}\nexport const broken = ;\n`);
    edit(dir, 'src/cli/main.ts', 'Usage: for serve', 'Usage: edited again');
    const fallback = await runIn(dir, ['--help']);
    assert.equal(fallback.status, 0, fallback.stderr);
    assert.ok(fallback.stdout.startsWith('Usage: edited again'), fallback.stdout);
    assert.equal(fallback.stderr, '');
    const broken = await runIn(dir, ['pub', '--help']);
    assert.notEqual(broken.status, 0);
    assert.match(broken.stderr, /pub\.ts/);
    assert.ok(!builtFiles(dir).some((f) => !/^edge-relay-[0-9a-f]{64}\.mjs(\.map)?$/.test(f)), `no half-made file left: ${builtFiles(dir)}`);

    // Sources esbuild takes again, and no folder for bundles to be made in (a file in its place: what a read-only
    // install is to a user who may not write there): the sources run through tsx, without a word on stderr.
    writeFileSync(join(dir, 'src', 'cli', 'pub.ts'), readFileSync(join(ROOT, 'src', 'cli', 'pub.ts')));
    rmSync(join(dir, 'build'), { recursive: true });
    writeFileSync(join(dir, 'build'), 'not a folder\n');
    const noFolder = await runIn(dir, ['--help']);
    assert.equal(noFolder.status, 0, noFolder.stderr);
    assert.ok(noFolder.stdout.startsWith('Usage: edited again'), noFolder.stdout);
    assert.equal(noFolder.stderr, '');
  });

  it('bundles the dependencies but those finding files of their own, and makes a new bundle when the installed ones change (their lock files)', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-launcher-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    for (const part of ['bin', 'src', 'schemas', 'package.json', 'package-lock.json', 'tsconfig.json']) cpSync(join(ROOT, part), join(dir, part), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    const bundle = (await import(pathToFileURL(join(dir, 'bin', 'bundle.mjs')).href)) as typeof import('../../bin/bundle.mjs');

    const path = bundle.build();
    const { sources } = JSON.parse(readFileSync(`${path}.map`, 'utf8')) as { sources: string[] };
    const packages = new Set(sources.map((s) => /node_modules\/((@[^/]+\/)?[^/]+)\//.exec(s)?.[1]).filter(Boolean));
    for (const name of ['ajv', 'nats', 'pino', 'prom-client', 'ws']) assert.ok(packages.has(name), `${name} in the bundle: ${[...packages]}`);
    // ws's native helper finds its addon beside its own files (node-gyp-build, __dirname): required from node_modules.
    assert.ok(!packages.has('bufferutil') && !packages.has('thread-stream'), `left in node_modules: ${[...packages]}`);
    assert.match(readFileSync(path, 'utf8'), /require\("bufferutil"\)/);

    // Before: the digest covered package.json alone; a new version of a dependency ran the bundle of the old one.
    const original = bundle.sourceState();
    const lock = readFileSync(join(dir, 'package-lock.json'), 'utf8');
    writeFileSync(join(dir, 'package-lock.json'), lock.replace(/"lockfileVersion": \d+/, '"lockfileVersion": 99'));
    const relocked = bundle.sourceState();
    assert.notEqual(relocked.digest, original.digest);
    rmSync(join(dir, 'package-lock.json'));
    const unlocked = bundle.sourceState();
    assert.ok(![original.digest, relocked.digest].includes(unlocked.digest), 'no lock file is a state of its own');
    writeFileSync(join(dir, 'package-lock.json'), lock);
    assert.equal(bundle.sourceState().digest, original.digest);
  });
});

/** The parent process id of /proc entry `pid` (undefined when it has gone). */
function procParent(pid: string): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}
