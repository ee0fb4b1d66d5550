// docs/errors.md (linked from the README) lists every code the relay can
// answer, with the status and close code the tables in the source give it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { ErrorSpec } from '../../src/http/error-answers.ts';
import { EDGE_ERRORS } from '../../src/http/edge-errors.ts';
import { HYBRID_ERRORS } from '../../src/hybrid/errors.ts';
import { ACK_ERRORS, PUBSUB_ERRORS } from '../../src/pubsub/errors.ts';

const page = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

/** The rows of the table under a `## heading`: code -> [status, close code]. */
function tableUnder(heading: string): Map<string, string[]> {
  const start = page.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `docs/errors.md has no section "${heading}"`);
  const end = page.indexOf('\n#', start + 1);
  const rows = new Map<string, string[]>();
  for (const line of page.slice(start, end < 0 ? undefined : end).split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    const code = /^`(\w+)`$/.exec(cells[1] ?? '')?.[1];
    if (code) rows.set(code, cells.slice(2, -1));
  }
  return rows;
}

/** Codes whose status is the one they carry, not their table's. */
const VARIABLE_STATUS = new Set(['ConnectRefused']);

function checkTable(heading: string, table: Record<string, ErrorSpec>, closeOnly: (code: string, spec: ErrorSpec) => boolean): void {
  const rows = tableUnder(heading);
  for (const [code, spec] of Object.entries(table)) {
    const row = rows.get(code);
    assert.ok(row, `docs/errors.md, "${heading}": ${code} is missing`);
    // A code answered with a status it carries (a connect handler's own 4xx) says so in the table.
    const status = VARIABLE_STATUS.has(code) ? '4xx' : String(spec.status);
    assert.equal(row[0], closeOnly(code, spec) ? '-' : status, `${code}: status`);
    assert.equal(row[1], spec.closeCode === undefined ? '-' : String(spec.closeCode), `${code}: close code`);
  }
  assert.deepEqual([...rows.keys()].filter((c) => !(c in table)), [], `"${heading}" lists codes the source does not have`);
}

describe('the error tables in docs/errors.md', () => {
  it('list every code of the edge', () => checkTable('The edge itself', EDGE_ERRORS, () => false));

  it('list every hybrid connections code', () => {
    const closeOnly = new Set(['ControlMessageInvalid', 'RenewTokenInvalid', 'AccessRevoked', 'ClientCertificateRevoked']);
    checkTable('Hybrid connections', HYBRID_ERRORS, (code) => closeOnly.has(code));
  });

  it('list every pub/sub code', () => {
    // Codes with a close code end open connections only, except those also answered to an upgrade or a REST call.
    const alsoAnswered = new Set(['ShuttingDown', 'SessionUnavailable']);
    checkTable('Publish/subscribe', PUBSUB_ERRORS, (code, spec) => spec.closeCode !== undefined && !alsoAnswered.has(code));
  });

  it('list every ack error name', () => {
    const start = page.indexOf('### Acks');
    assert.ok(start >= 0);
    for (const name of Object.keys(ACK_ERRORS)) assert.match(page.slice(start), new RegExp(`\\| \`${name}\` \\|`), `ack ${name}`);
  });

  it('are linked from the README', () => {
    assert.match(readFileSync(new URL('../../README.md', import.meta.url), 'utf8'), /\(docs\/errors\.md\)/);
  });
});
