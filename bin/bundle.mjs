// The CLI as one JavaScript file, build/edge-relay-DIGEST.mjs, made from
// src/ by esbuild (which tsx brings) and run by bin/edge-relay.js in place of
// the TypeScript through tsx whenever one was made from the sources as they
// are.
//
// Why: tsx compiles in loader hooks that node 20 runs on a thread of their
// own, and every module goes through them: a `serve` took 1.8 s of CPU to
// start through tsx and 0.85 s from the bundle (the rest is mostly ajv
// compiling the schemas), and held 33 MiB more. (The test suite starts close
// to 300 such processes.)
//
// The dependencies it loads (ajv, nats, pino, prom-client, ws and theirs) are
// in it too, but for the few that find files of their own at run time
// (NATIVE_OR_WORKER below). Each is then evaluated when a command first needs
// it, not at the bundle's first line, and node does not resolve, read and
// scan (cjs-module-lexer) some 270 CommonJS files one by one: with them left
// in node_modules, `edge-relay --help` took 0.41 s of CPU, `token`, `pub`
// and `sub` as much again as their own work (every package was imported
// at the top, whatever the command), `serve` 0.80 s; with them in, 0.13 s
// and 0.70 s (2026-12-07, `/usr/bin/time`).
//
// A bundle is named by the digest of what it is made from (every
// src/**/*.ts, tsconfig.json, package.json, the installed packages' lock
// files, this file and esbuild's version): the launcher computes the digest
// of the sources on disk and runs
// the bundle of that name, or makes it first (about a third of a second),
// or, when it cannot be made (a read-only install without it, a source
// esbuild refuses), runs the TypeScript through tsx as before, which says
// what is wrong with a source. One file, written whole and renamed into
// place: nothing can pair a digest with another bundle. And a bundle is
// kept only when what esbuild compiled is byte for byte what the digest
// was computed from (read back from its source map): a source saved while
// it was being made does not give its name to the wrong code.
//
// `node bin/bundle.mjs` (npm run build) makes it now, as the Dockerfile does.
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Bundles sit one folder below the project, as src/project-files.ts does: the paths it reads resolve alike. */
const BUILD = join(ROOT, 'build');
/** Bundles of other sources, and what a process killed while writing left, are removed this long after they were made. */
const STALE_MS = 10 * 60 * 1000;
/**
 * Which versions of the dependencies are installed, as npm writes them: the project's lock and the one npm keeps
 * of what it put in node_modules. The bundle holds the dependencies' code, so a new version makes a new bundle.
 */
const LOCK_FILES = ['package-lock.json', 'node_modules/.package-lock.json'];
/**
 * Packages left in node_modules, loaded by node when first required: they find files beside their own at run
 * time (`__dirname`), which a bundle has not: ws's optional native helpers (bufferutil, utf-8-validate, through
 * node-gyp-build) and the worker pino's transports run in (thread-stream).
 */
const NATIVE_OR_WORKER = ['bufferutil', 'utf-8-validate', 'node-gyp-build', 'thread-stream'];
/**
 * The bundle's first line: CommonJS code in it, and the packages left out, `require` node's modules and those
 * packages through this (esbuild's ESM output has no `require` of its own).
 */
const REQUIRE_BANNER = "import { createRequire as __edgeRelayCreateRequire } from 'node:module'; const require = __edgeRelayCreateRequire(import.meta.url);";

/** The TypeScript files under `dir`, their paths relative to ROOT, sorted (not dot files nor links: an editor's lock files). */
function sources(dir) {
  const found = [];
  for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue;
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) found.push(...sources(path));
    else if (entry.isFile() && entry.name.endsWith('.ts')) found.push(path);
  }
  return found.sort();
}

/** esbuild as tsx has it (its dependency): the same compiler, the same version. */
function esbuildPath() {
  return createRequire(createRequire(import.meta.url).resolve('tsx/package.json')).resolve('esbuild');
}

/**
 * What the bundle is made from, read now: `digest` of every source's path and
 * bytes (30-35 ms in a process just started, for src/'s 1.6 MB in 150
 * files), of the files that say how (tsconfig.json, package.json, this one),
 * of the lock files that say which dependencies are installed, and of
 * esbuild's version; and the bytes' own digest by path, to check a build
 * against.
 */
export function sourceState() {
  // Each file hashed once; the digest is of their paths and hashes.
  const hash = createHash('sha256');
  const files = new Map();
  for (const path of [...sources('src'), 'tsconfig.json', 'package.json', ...LOCK_FILES, 'bin/bundle.mjs']) {
    let bytes;
    try {
      bytes = readFileSync(join(ROOT, path));
    } catch (err) {
      // A lock file may be missing (an install with no lock, another package manager's): its absence is what is hashed.
      if (!LOCK_FILES.includes(path) || err.code !== 'ENOENT') throw err;
      bytes = Buffer.from('none');
    }
    const fileHash = createHash('sha256').update(bytes).digest('hex');
    files.set(path, fileHash);
    hash.update(`${path}\0${fileHash}\0`);
  }
  hash.update(`esbuild ${JSON.parse(readFileSync(join(dirname(esbuildPath()), '..', 'package.json'), 'utf8')).version}`);
  return { digest: hash.digest('hex'), files };
}

/** Where the bundle of the sources whose digest is `digest` is. */
export function bundlePath(digest) {
  return join(BUILD, `edge-relay-${digest}.mjs`);
}

/** esbuild, run in a process of its own that ends with the build (by default it runs one for the life of this one). */
function loadEsbuild() {
  const before = process.env.ESBUILD_WORKER_THREADS;
  process.env.ESBUILD_WORKER_THREADS = '0';
  try {
    return createRequire(import.meta.url)(esbuildPath());
  } finally {
    if (before === undefined) delete process.env.ESBUILD_WORKER_THREADS;
    else process.env.ESBUILD_WORKER_THREADS = before;
  }
}

/**
 * Makes the bundle of `state` (sourceState()), and returns its path; throws
 * when it cannot, or when a source esbuild compiled is not what `state` read
 * (saved meanwhile). Several processes may make it at once: each writes files
 * of its own and renames them into place, the source map first.
 */
export function build(state = sourceState()) {
  // A folder this process cannot write (a read-only install, files of another user): said before esbuild's work, not after.
  mkdirSync(BUILD, { recursive: true });
  accessSync(BUILD, constants.W_OK);
  const final = bundlePath(state.digest);
  const result = loadEsbuild().buildSync({
    entryPoints: [join(ROOT, 'src', 'cli', 'main.ts')],
    outfile: final,
    write: false,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // Dependencies in the bundle (see the top of this file), but those that need files of their own.
    external: NATIVE_OR_WORKER,
    banner: { js: REQUIRE_BANNER },
    // As tsx compiles: functions and classes keep their names (errors and logs name them).
    keepNames: true,
    // Linked: with EDGE_RELAY_NODE_FLAGS=--enable-source-maps, stack traces name the TypeScript's lines. Its
    // sources' contents are what is checked below.
    sourcemap: 'linked',
    sourcesContent: true,
    logLevel: 'silent',
  });
  const map = result.outputFiles.find((f) => f.path.endsWith('.map'));
  const code = result.outputFiles.find((f) => f.path === final);
  if (!map || !code) throw new Error('esbuild made no bundle');
  // Every source of ours compiled is one the digest read, with the same bytes (esbuild names them from the bundle's folder as
  // given, build/ even when that is a link, and through the project's real path when it was reached by one).
  const { sources: compiled, sourcesContent } = JSON.parse(map.text);
  const roots = [ROOT, realpathSync(ROOT)];
  compiled.forEach((source, i) => {
    // The dependencies' files: which they are is in the digest through the lock files.
    if (/(^|\/)node_modules\//.test(source)) return;
    const path = roots.map((root) => relative(root, resolve(BUILD, source))).find((p) => state.files.has(p));
    if (path === undefined) throw new Error(`esbuild compiled ${source}, which the digest does not cover`);
    if (createHash('sha256').update(sourcesContent[i]).digest('hex') !== state.files.get(path)) {
      throw new Error(`${path} changed while the bundle was made`);
    }
  });
  const tmp = `${final}.${process.pid}.${randomBytes(4).toString('hex')}`;
  try {
    writeFileSync(`${tmp}.map`, map.contents);
    renameSync(`${tmp}.map`, `${final}.map`);
    writeFileSync(tmp, code.contents);
    renameSync(tmp, final);
  } finally {
    rmSync(`${tmp}.map`, { force: true });
    rmSync(tmp, { force: true });
  }
  removeStale(state.digest);
  return final;
}

/** Removes bundles of other sources, and half-written files, made over STALE_MS ago. */
function removeStale(digest) {
  const now = Date.now();
  for (const name of readdirSync(BUILD)) {
    if (!name.startsWith('edge-relay-') || name.includes(digest)) continue;
    const path = join(BUILD, name);
    try {
      if (now - statSync(path).mtimeMs > STALE_MS) rmSync(path, { force: true });
    } catch {
      // gone meanwhile
    }
  }
}

/**
 * The bundle to import, made first when there is none of the sources on disk;
 * undefined when it cannot be had (the CLI then runs through tsx).
 */
export function bundleToRun() {
  try {
    const state = sourceState();
    const path = bundlePath(state.digest);
    try {
      statSync(path);
    } catch {
      build(state);
    }
    return pathToFileURL(path).href;
  } catch {
    return undefined;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const made = build();
  process.stdout.write(`${made} made from src/\n`);
}
