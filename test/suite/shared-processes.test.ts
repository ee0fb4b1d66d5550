// npm test runs light test files several to a process (shared-processes.ts):
// how the files are dealt into groups, and a real run of node's test runner
// over an entry written for four files (their tests in one process, one
// after the other, each file a suite of its name with its own timeout, a
// failure reported at its own file's line, a file that fails to load a
// failed suite, the file after those run, a process kept alive by a file's
// timer after its tests ended failed, naming what kept it).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { testRunnerReport } from '../helpers/test-runner-report.ts';
import { failedTests } from './failure-summary.ts';
import { dealIntoGroups, needsOwnProcess, writeSharedEntries } from './shared-processes.ts';

describe('test files sharing a process', () => {
  test('files are dealt in turn into as few groups as hold them, each file once, in order within its group', () => {
    const files = Array.from({ length: 13 }, (_, i) => `test/f${String(i).padStart(2, '0')}.test.ts`);
    const groups = dealIntoGroups(files, 6);
    assert.deepEqual(
      groups.map((group) => group.length),
      [5, 4, 4],
    );
    assert.deepEqual(groups[0], ['test/f00.test.ts', 'test/f03.test.ts', 'test/f06.test.ts', 'test/f09.test.ts', 'test/f12.test.ts']);
    assert.deepEqual(groups.flat().sort(), files);
    assert.deepEqual(dealIntoGroups(files.slice(0, 3), 1), [[files[0]], [files[1]], [files[2]]]);
    assert.deepEqual(dealIntoGroups(files.slice(0, 6), 6), [files.slice(0, 6)]);
    assert.deepEqual(dealIntoGroups([], 6), []);
    for (const bad of [0, -1, 2.5, Number.NaN]) assert.throws(() => dealIntoGroups(files, bad), RangeError);
  });

  test('a file that measures its own process runs alone', () => {
    assert.equal(needsOwnProcess('const before = process.memoryUsage().arrayBuffers;'), true);
    assert.equal(needsOwnProcess("import { memoryUsage } from 'node:process';\nconst heap = memoryUsage().heapUsed;"), true);
    assert.equal(needsOwnProcess("import { test } from 'node:test';\ntest('x', () => {});"), false);
  });

  test("node's runner runs a shared entry's files in one process, one after the other, each bounded and reported as a file of its own", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'shared-processes-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = (name: string, body: string) => writeFileSync(join(dir, name), `import { test } from 'node:test';\nimport assert from 'node:assert/strict';\n${body}\n`);
    // Each test says which process ran it and when it started and ended.
    const says = (name: string, ms: number) =>
      `test(${JSON.stringify(name)}, async () => { const start = Date.now(); await new Promise((r) => setTimeout(r, ${ms})); console.log(JSON.stringify({ name: ${JSON.stringify(name)}, pid: process.pid, start, end: Date.now() })); });`;
    file('first.test.ts', `${says('first a', 300)}\ntest('first fails', () => { assert.equal(1 + 1, 3); });`);
    // Over its own file's time (the entry's 1.5 s a file), not one of the others'.
    file('slow.test.ts', `${says('slow a', 1000)}\ntest('slow outlasts the time of its file', () => new Promise((r) => setTimeout(r, 4000)));`);
    writeFileSync(join(dir, 'broken.test.ts'), "throw new Error('broken while it loads');\n");
    file('second.test.ts', `${says('second a', 600)}\n${says('second b', 600)}`);
    // In a group of its own: passes, and leaves a timer running for good, so its process ends, failed, 1 s after its tests.
    file('lingers.test.ts', "test('lingers leaves a timer', () => { setInterval(() => {}, 200); });");
    const names = ['first.test.ts', 'slow.test.ts', 'broken.test.ts', 'second.test.ts'];
    const entries = writeSharedEntries([names, ['lingers.test.ts']], join(dir, 'entries'), dir, { perFileTimeoutMs: 1500, lingerMs: 1000 });
    assert.deepEqual(
      entries.map((entry) => entry.files),
      [names, ['lingers.test.ts']],
    );

    // The runner's own timeout is the group's: its files take longer than the 1.5 s each has, between them.
    const { code, report } = await testRunnerReport(
      ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=20000', '--test-reporter=tap', ...entries.map((entry) => entry.path)],
      process.cwd(),
    );
    assert.equal(code, 1, report);

    const ran = [...report.matchAll(/\{"name":.*?\}/g)].map((m) => JSON.parse(m[0]) as { name: string; pid: number; start: number; end: number });
    assert.deepEqual(
      ran.map((r) => r.name),
      ['first a', 'slow a', 'second a', 'second b'],
      report,
    );
    assert.equal(new Set(ran.map((r) => r.pid)).size, 1, 'one process ran every file');
    for (let i = 1; i < ran.length; i++) assert.ok(ran[i].start >= ran[i - 1].end, `${ran[i].name} started after ${ran[i - 1].name} ended`);

    // Each file is a suite of its name; a failure is reported at its own file's line.
    for (const name of names) assert.match(report, new RegExp(`^(not )?ok \\d+ - ${name.replace('.', '\\.')}$`, 'm'), report);
    const failures = failedTests(report);
    assert.equal(failures.length, 5, report);
    assert.match(failures[0], /not ok \d+ - first fails/);
    assert.match(failures[0], /first\.test\.ts:\d+:\d+/);
    assert.match(failures[1], /not ok \d+ - slow outlasts the time of its file/);
    assert.match(failures[2], /not ok \d+ - slow\.test\.ts/);
    assert.match(failures[2], /timed out after 1500ms/);
    assert.match(failures[3], /not ok \d+ - broken\.test\.ts/);
    assert.match(failures[3], /broken while it loads/);
    // The second process, whose tests passed, failed for ending with 1, what it said before it ended in its failure.
    assert.match(failures[4], /not ok \d+ - .*entries\/shared-2\.test\.mjs/);
    assert.match(failures[4], /exitCode: 1/);
    assert.match(failures[4], /still running 1000 ms after the tests of lingers\.test\.ts ended, kept alive by: .*Timeout/);
    assert.match(report, /^ok \d+ - second\.test\.ts$/m, 'the file after a timed-out one and a broken one runs and passes');
    assert.match(report, /^ok \d+ - lingers\.test\.ts$/m);
  });
});
