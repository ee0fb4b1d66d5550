// The failed tests of a TAP report from node's test runner, for `npm test` to
// repeat at the very end of its output: CI keeps only the tail of what a run
// printed, and with over 800 tests a failure scrolls far out of it.

/** How many lines of one failure's report are repeated at most (its error and the top of its stack). */
const LINES_PER_FAILURE = 40;
/** How many failures are repeated at most. */
const FAILURES_SHOWN = 20;

/**
 * Each test that failed itself, as its `not ok` line and the YAML block under
 * it (location, error, stack), and what it printed to stderr before its
 * report, cut to LINES_PER_FAILURE lines. Suites and
 * files that failed only because a test in them did (`subtestsFailed`) are
 * left out; a file that failed on its own (it crashed, or a hook threw) is
 * kept.
 */
export function failedTests(report: string): string[] {
  const lines = report.split('\n');
  const failures: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const head = /^(\s*)not ok \d+ - (.*)$/.exec(lines[i]);
    if (!head) continue;
    const indent = head[1];
    const block = [lines[i].trimEnd()];
    block.push(...printedBefore(lines, i, indent, head[2]));
    // The YAML block: `  ---` two spaces deeper, up to its `  ...`.
    if (lines[i + 1]?.startsWith(`${indent}  ---`)) {
      for (let j = i + 2; j < lines.length && !lines[j].startsWith(`${indent}  ...`); j++) block.push(lines[j].trimEnd());
    }
    if (block.some((line) => line.trim() === "failureType: 'subtestsFailed'")) continue;
    failures.push(
      (block.length > LINES_PER_FAILURE ? [...block.slice(0, LINES_PER_FAILURE), `${indent}  (${block.length - LINES_PER_FAILURE} more lines in the report above)`] : block)
        .map((line) => line.slice(indent.length))
        .join('\n'),
    );
  }
  return failures;
}

/**
 * What a file printed to stderr before its `# Subtest:` line (node's test
 * runner passes it on as comments there): for a file that failed on its own,
 * this is where its error is.
 */
function printedBefore(lines: string[], notOk: number, indent: string, name: string): string[] {
  let start = notOk - 1;
  while (start >= 0 && lines[start] !== `${indent}# Subtest: ${name}`) start--;
  let first = start;
  while (first > 0 && lines[first - 1].startsWith(`${indent}# `) && !lines[first - 1].startsWith(`${indent}# Subtest: `)) first--;
  return start < 0 ? [] : lines.slice(first, start).map((line) => line.trimEnd());
}

/** The text `npm test` ends with when tests failed: each failure again, or nothing when none did. */
export function failureSummary(report: string): string {
  const failures = failedTests(report);
  if (failures.length === 0) return '';
  const shown = failures.slice(0, FAILURES_SHOWN);
  const more = failures.length > shown.length ? `\n# ... and ${failures.length - shown.length} more failures above\n` : '';
  return `\n# ${failures.length} failed (repeated from above):\n${shown.join('\n')}\n${more}`;
}
