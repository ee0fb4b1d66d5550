// The CLI as one JavaScript file, build/edge-relay.mjs, made from src/ by
// esbuild (which tsx brings) and run by bin/edge-relay.js in place of the
// TypeScript through tsx whenever it was made from the sources as they are.
//
// Why: tsx compiles in loader hooks that node 20 runs on a thread of their
// own, and every module goes through them: a `serve` took 1.8 s of CPU to
// start through tsx and 0.9 s from the bundle (the rest is mostly ajv
// compiling the schemas), one process as it is, one thread fewer, and no
// writes to a cache in /tmp. (The test suite starts close to 300 such
// processes.)
//
// When the bundle is made from sources that are not the ones on disk (an
// edit since), it is made again at the next start, in about a third of a
// second; when that cannot be done (a read-only install without it, a source
// esbuild refuses), the CLI runs through tsx as before, which says what is
// wrong with a source. Nothing is ever run from a bundle of other sources:
// build/sources.json names the digest of what it was made from (every
// src/**/*.ts, tsconfig.json, this file and esbuild's version).
//
// `node bin/bundle.mjs` (npm run build) makes it now, as the Dockerfile does.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The bundle sits one folder below the project, as src/project-files.ts does: the paths it reads resolve alike. */
const BUNDLE = join(ROOT, 'build', 'edge-relay.mjs');
const MANIFEST = join(ROOT, 'build', 'sources.json');

/** The TypeScript files under `dir`, their paths relative to ROOT, sorted. */
function sources(dir) {
  const found = [];
  for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) found.push(...sources(path));
    else if (entry.name.endsWith('.ts')) found.push(path);
  }
  return found.sort();
}

/** esbuild as tsx has it (its dependency): the same compiler, the same version. */
function esbuildPath() {
  return createRequire(createRequire(import.meta.url).resolve('tsx/package.json')).resolve('esbuild');
}

/**
 * One digest of what the bundle is made from: every source's path and bytes
 * (about 3 ms for src/'s 1.4 MB), tsconfig.json (esbuild reads it), this file
 * (how it is made) and esbuild's version (what makes it).
 */
export function sourceDigest() {
  const hash = createHash('sha256');
  for (const path of [...sources('src'), 'tsconfig.json', 'bin/bundle.mjs']) hash.update(path).update('\0').update(readFileSync(join(ROOT, path))).update('\0');
  const esbuildPackage = join(esbuildPath(), '..', '..', 'package.json');
  hash.update(`esbuild ${JSON.parse(readFileSync(esbuildPackage, 'utf8')).version}`);
  return hash.digest('hex');
}

function builtFrom() {
  try {
    return JSON.parse(readFileSync(MANIFEST, 'utf8')).digest;
  } catch {
    return undefined;
  }
}

/**
 * Makes the bundle from the sources whose digest is `digest`. Two processes
 * starting at once may both make it: each writes files of its own and renames
 * them into place, the bundle before the manifest that names it, so a reader
 * never takes a half-written file, nor a manifest ahead of its bundle.
 */
export function build(digest = sourceDigest()) {
  const esbuild = createRequire(import.meta.url)(esbuildPath());
  mkdirSync(join(ROOT, 'build'), { recursive: true });
  const tmp = `${BUNDLE}.${process.pid}.${randomBytes(4).toString('hex')}`;
  try {
    esbuild.buildSync({
      entryPoints: [join(ROOT, 'src', 'cli', 'main.ts')],
      outfile: tmp,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      // Dependencies stay in node_modules, loaded as node loads them.
      packages: 'external',
      // As tsx compiles: functions and classes keep their names (errors and logs name them).
      keepNames: true,
      // With EDGE_RELAY_NODE_FLAGS=--enable-source-maps, stack traces name the TypeScript lines.
      sourcemap: 'external',
      logLevel: 'silent',
    });
    writeFileSync(`${tmp}.json`, `${JSON.stringify({ digest })}\n`);
    renameSync(`${tmp}.map`, `${BUNDLE}.map`);
    renameSync(tmp, BUNDLE);
    renameSync(`${tmp}.json`, MANIFEST);
  } finally {
    for (const leftover of [tmp, `${tmp}.map`, `${tmp}.json`]) rmSync(leftover, { force: true });
  }
}

/**
 * The bundle to import, made again first when the sources changed; undefined
 * when it cannot be had (the CLI then runs through tsx).
 */
export function bundleToRun() {
  try {
    const digest = sourceDigest();
    if (builtFrom() !== digest) build(digest);
    return builtFrom() === digest ? pathToFileURL(BUNDLE).href : undefined;
  } catch {
    return undefined;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  build();
  process.stdout.write(`${BUNDLE} made from src/ (${builtFrom()})\n`);
}
