// The launcher (bin/edge-relay.js with bin/bundle.mjs): it runs the bundled
// CLI when the bundle was made from the sources on disk, makes it again when
// a source changed, runs the TypeScript through tsx when it cannot be made,
// and never runs a bundle of other sources. Tried on a copy of the project,
// whose sources the test edits.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { withTimeout } from '../helpers/wait.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const USAGE = 'Usage: edge-relay COMMAND [options]';

/** `edge-relay ARGS` in `dir`'s copy, as users run it (bin/edge-relay), bounded: its exit code and output. */
function runIn(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const child = spawn(join(dir, 'bin', 'edge-relay'), args, { cwd: dir, env: { ...process.env, ...env }, timeout: 30000 });
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

/** What the copy's build/ holds: the bundle, its source map, and the digest of the sources it was made from. */
function built(dir: string): { digest: string; bundle: string; files: string[] } {
  return {
    digest: (JSON.parse(readFileSync(join(dir, 'build', 'sources.json'), 'utf8')) as { digest: string }).digest,
    bundle: readFileSync(join(dir, 'build', 'edge-relay.mjs'), 'utf8'),
    files: readdirSync(join(dir, 'build')).sort(),
  };
}

function edit(dir: string, file: string, from: string, to: string): void {
  const path = join(dir, file);
  const text = readFileSync(path, 'utf8');
  assert.ok(text.includes(from), `${file} holds ${from}`);
  writeFileSync(path, text.replace(from, to));
}

describe('the launcher', () => {
  it('runs the bundle made from the sources on disk, makes it again when one changes, and runs them through tsx when it cannot', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-launcher-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    for (const part of ['bin', 'src', 'schemas', 'package.json', 'tsconfig.json']) cpSync(join(ROOT, part), join(dir, part), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    // The digest as the copy's launcher computes it, over the copy's sources.
    const { sourceDigest } = (await import(pathToFileURL(join(dir, 'bin', 'bundle.mjs')).href)) as { sourceDigest(): string };

    // No bundle yet: made at the first start, from these sources.
    const first = await runIn(dir, ['--help']);
    assert.equal(first.status, 0, first.stderr);
    assert.ok(first.stdout.startsWith(USAGE), first.stdout);
    assert.equal(built(dir).digest, sourceDigest());
    assert.deepEqual(built(dir).files, ['edge-relay.mjs', 'edge-relay.mjs.map', 'sources.json']);

    // The bundle is what runs while it is the sources' (marked here in the bundle alone), unless EDGE_RELAY_FROM_SOURCE=1.
    edit(dir, 'build/edge-relay.mjs', USAGE, 'Usage: from the bundle');
    assert.ok((await runIn(dir, ['--help'])).stdout.startsWith('Usage: from the bundle'));
    assert.ok((await runIn(dir, ['--help'], { EDGE_RELAY_FROM_SOURCE: '1' })).stdout.startsWith(USAGE));

    // A source edited: made again before it runs, by the first of several processes starting at once or by each.
    edit(dir, 'src/cli/main.ts', USAGE, 'Usage: edited');
    const several = await Promise.all([1, 2, 3, 4].map(() => runIn(dir, ['--help'])));
    for (const run of several) assert.ok(run.stdout.startsWith('Usage: edited'), run.stdout + run.stderr);
    const remade = built(dir);
    assert.equal(remade.digest, sourceDigest());
    assert.ok(remade.bundle.includes('Usage: edited'));
    assert.deepEqual(remade.files, ['edge-relay.mjs', 'edge-relay.mjs.map', 'sources.json'], 'no half-made file left');

    // A source esbuild refuses (one --help does not load) and another edit: no bundle can be made, and the one there
    // is of other sources: the sources run through tsx, and say what is wrong when the broken one is loaded.
    writeFileSync(join(dir, 'src', 'cli', 'pub.ts'), `${readFileSync(join(dir, 'src', 'cli', 'pub.ts'), 'utf8')}\nexport const broken = ;\n`);
    edit(dir, 'src/cli/main.ts', 'Usage: edited', 'Usage: edited again');
    const fallback = await runIn(dir, ['--help']);
    assert.equal(fallback.status, 0, fallback.stderr);
    assert.ok(fallback.stdout.startsWith('Usage: edited again'), fallback.stdout);
    assert.equal(built(dir).digest, remade.digest, 'the bundle of the sources before stays as it was');
    const broken = await runIn(dir, ['pub', '--help']);
    assert.notEqual(broken.status, 0);
    assert.match(broken.stderr, /pub\.ts/);
    assert.deepEqual(built(dir).files, ['edge-relay.mjs', 'edge-relay.mjs.map', 'sources.json'], 'no half-made file left');
  });
});
