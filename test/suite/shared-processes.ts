// Test files that share one process, for `npm test` (test/run-suite.ts).
//
// node's test runner starts a process per file, and in each the file's first
// tests pay for node, tsx's loader thread, the dependencies and the relay's
// modules, through tsx: about 1.9 s of CPU before a file with one relay in
// it does anything, 224 times a run. Files outside the clusters' lane are
// dealt into groups instead, and each group is one entry file importing its
// files in order: node's runner runs that entry as it runs a test file, in
// a process of its own, and the tests of its files one after the other, as
// it runs the tests of one file, each file's tests in a suite of its own
// named after it (its report, its timeout, its hooks; sharedEntrySource). On
// 2026-12-07, with the others' lane's files by how much CPU each took alone:
// the 76 lightest (under 2.5 s each) took 92 s of CPU one file a process, 45 s
// six to a process and 35 s thirteen to one; the next 87 (2.5 to 5 s) 285 s
// one a process and 113 s in nine processes, with the same 858 tests
// passing. Larger groups cost less, but a group's files run one after the
// other: ten to one made the others' lane (192 files in 20 processes, three
// at a time) 402 s long beside the clusters' 497 s.
//
// `npm test -- FILE` still runs each file named in a process of its own.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** How many files share one process at most. */
export const FILES_PER_PROCESS = 10;

/**
 * Files that measure the process they run in (its heap, its buffers outside the heap) keep one of their own:
 * what another file left behind, or frees while they measure, would be counted.
 */
const MEASURES_ITS_PROCESS = /\b(memoryUsage|arrayBuffersAfterGc)\b/;

/** Whether a test file, by its source, must run in a process of its own. */
export function needsOwnProcess(source: string): boolean {
  return MEASURES_ITS_PROCESS.test(source);
}

/**
 * `files` dealt in turn into as few groups of at most `perGroup` as hold them: files next to each other by name
 * (one folder, often alike in what they start and how long they take) go to different groups, and the groups
 * come out alike in length.
 */
export function dealIntoGroups(files: readonly string[], perGroup: number): string[][] {
  if (!Number.isInteger(perGroup) || perGroup < 1) throw new RangeError(`files per group must be a whole number from 1, not ${perGroup}`);
  const groups: string[][] = Array.from({ length: Math.ceil(files.length / perGroup) }, () => []);
  files.forEach((file, i) => groups[i % groups.length].push(file));
  return groups;
}

/** How an entry bounds its files. */
export interface EntryLimits {
  /** Each file's time, as its suite's timeout (and so each of its tests'). */
  perFileTimeoutMs: number;
  /**
   * How long the process may stay alive once its files' tests have all ended: something one of them left open (a
   * socket, a timer, a child process) keeps it from ending, and would otherwise hold the run until the group's
   * timeout. The process then ends failed, naming what kept it alive.
   */
  lingerMs: number;
}

/**
 * One group's entry file: a test file to node's runner, importing the group's files (relative to `root`) one after
 * the other, each inside a suite named after it with `perFileTimeoutMs`. That suite stands for the file as node's
 * runner has it for a file of its own: its tests take its timeout as theirs, and it bounds the file's tests as a
 * whole (the runner's `--test-timeout` is each file's timeout too, so a group of ten would otherwise have the ten
 * files' time between them); a file's top-level `before` and `after` hooks are its suite's; a file that fails to
 * load is that suite failing with its error, and the group's other files still run.
 */
export function sharedEntrySource(group: readonly string[], root: string, { perFileTimeoutMs, lingerMs }: EntryLimits): string {
  const files = group.map((file) => ({ name: file, url: pathToFileURL(join(root, file)).href }));
  return [
    `// Test files sharing one process (test/suite/shared-processes.ts): ${group.join(', ')}`,
    "import { after, describe } from 'node:test';",
    `for (const { name, url } of ${JSON.stringify(files)}) {`,
    `  describe(name, { timeout: ${perFileTimeoutMs} }, async () => {`,
    '    await import(url);',
    '  });',
    '}',
    "// Every file's tests have ended: a process still alive this much later has something left open.",
    'after(() => {',
    '  setTimeout(() => {',
    `    const said = ${JSON.stringify(`still running ${lingerMs} ms after the tests of ${group.join(', ')} ended, kept alive by: `)};`,
    "    process.stderr.write(said + process.getActiveResourcesInfo().join(', ') + '\\n');",
    '    process.exit(1);',
    `  }, ${lingerMs}).unref();`,
    '});',
    '',
  ].join('\n');
}

/** A group's entry file as written: its path, and the files it runs. */
export interface SharedEntry {
  path: string;
  files: string[];
}

/** Writes each group's entry file into `dir` (`shared-01.test.mjs` and on), in the groups' order. */
export function writeSharedEntries(groups: readonly string[][], dir: string, root: string, limits: EntryLimits): SharedEntry[] {
  mkdirSync(dir, { recursive: true });
  const width = String(groups.length).length;
  return groups.map((files, i) => {
    const path = join(dir, `shared-${String(i + 1).padStart(width, '0')}.test.mjs`);
    writeFileSync(path, sharedEntrySource(files, root, limits));
    return { path, files: [...files] };
  });
}
