// npm test repeats its failures at the end: checked against a real report of
// node's test runner over files written here (one with a failing test in a
// suite, one that throws while it loads, one that passes).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { testRunnerReport } from '../helpers/test-runner-report.ts';
import { failedTests, failureSummary } from './failure-summary.ts';

async function tapReport(files: Record<string, string>): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'failure-summary-'));
  try {
    for (const [name, source] of Object.entries(files)) writeFileSync(join(dir, name), source);
    return (await testRunnerReport(['--test', '--test-reporter=tap', ...Object.keys(files)], dir)).report;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('npm test failure summary', () => {
  test('names each failed test with its location and error, and neither its suite nor what passed', async () => {
    const report = await tapReport({
      'a.test.mjs': `import { describe, test } from 'node:test';
describe('outer suite', () => {
  test('passes here', () => {});
  test('compares two numbers', () => { throw new Error('one is not two'); });
});
`,
      'b.test.mjs': `throw new Error('cannot load this file');\n`,
      'c.test.mjs': `import { test } from 'node:test';\ntest('also passes', () => {});\n`,
    });
    const failures = failedTests(report);
    assert.equal(failures.length, 2, report);
    const [compare, load] = failures;
    assert.match(compare, /^not ok \d+ - compares two numbers\n/);
    assert.match(compare, /a\.test\.mjs:4:/);
    assert.match(compare, /one is not two/);
    assert.match(load, /^not ok \d+ - \S*b\.test\.mjs\n/);
    assert.match(load, /cannot load this file/);
    const summary = failureSummary(report);
    assert.match(summary, /^\n# 2 failed \(repeated from above\):\nnot ok/);
    assert.doesNotMatch(summary, /outer suite|passes/);
  });

  test('is empty when nothing failed, and cuts a long failure', async () => {
    assert.equal(failureSummary(await tapReport({ 'c.test.mjs': `import { test } from 'node:test';\ntest('passes', () => {});\n` })), '');
    const long = ['not ok 1 - long', '  ---', ...Array.from({ length: 100 }, (_, i) => `  line ${i}`), '  ...'].join('\n');
    const [cut] = failedTests(long);
    assert.equal(cut.split('\n').length, 41);
    assert.match(cut, /\(61 more lines in the report above\)$/);
  });
});
