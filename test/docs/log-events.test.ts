// docs/log-events.md stays true to the code: every event src/ logs at warn,
// error or fatal level has a row there, and every row names such an event.
//
// The events are found in the source as TypeScript reads it (its parser, no
// type checking): a call of `.warn`, `.error` or `.fatal` on anything
// (`log.warn`, `this.deps.log.error`, `root.warn`), or of `x[...]` whose
// index names levels as strings (`log[allowed ? 'info' : 'warn']`), whose first
// argument is an object literal with an `event` property. A level or an event
// name the parser cannot read as written (a level variable, an event from a
// variable) fails the test, as does a warn/error/fatal call on a logger
// without an event: this test would not see what those log.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];
/** The levels docs/log-events.md lists. */
const LISTED = new Set(['fatal', 'error', 'warn']);

/**
 * Event names built from templates, by the template as written, with what it
 * can make. `pubsub.roster_${how}`: src/pubsub/hub-cluster.ts, `how` from
 * HubRoster's `changed` (src/pubsub/hub-roster.ts); logged at info today, so
 * not listed, but checked should it ever be logged at warn or above.
 */
const TEMPLATES: Record<string, string[]> = {
  'pubsub.roster_${how}': ['pubsub.roster_joined', 'pubsub.roster_restarted', 'pubsub.roster_left', 'pubsub.roster_silent'],
};

interface Logged {
  event: string;
  levels: string[];
  where: string;
}

interface Scan {
  logged: Logged[];
  /** What the scan cannot read, by place: each is a failure. */
  unreadable: string[];
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** The string literals inside `node` (a level index such as `allowed ? 'info' : 'warn'`). */
function stringsIn(node: ts.Node): string[] {
  if (ts.isStringLiteralLike(node)) return [node.text];
  const out: string[] = [];
  node.forEachChild((child) => void out.push(...stringsIn(child)));
  return out;
}

/** The events one file logs, with their levels. */
function scanSource(text: string, name: string): Scan {
  const file = ts.createSourceFile(name, text, ts.ScriptTarget.Latest, true);
  const logged: Logged[] = [];
  const unreadable: string[] = [];
  const where = (node: ts.Node) => `${name}:${file.getLineAndCharacterOfPosition(node.getStart(file)).line + 1}`;
  const visit = (node: ts.Node): void => {
    if (ts.isCallExpression(node)) {
      const callee = node.expression;
      const first = node.arguments[0];
      const eventProperty =
        first && ts.isObjectLiteralExpression(first) ? first.properties.find((p) => p.name !== undefined && ts.isIdentifier(p.name) && p.name.text === 'event') : undefined;
      let levels: string[] | undefined;
      if (ts.isPropertyAccessExpression(callee) && LEVELS.includes(callee.name.text)) levels = [callee.name.text];
      else if (ts.isElementAccessExpression(callee) && eventProperty) {
        levels = stringsIn(callee.argumentExpression).filter((s) => LEVELS.includes(s));
        if (levels.length === 0) unreadable.push(`${where(node)}: a level chosen at run time (${callee.argumentExpression.getText(file)})`);
      }
      if (levels && levels.length > 0) {
        if (eventProperty) {
          const value = ts.isPropertyAssignment(eventProperty) ? eventProperty.initializer : undefined;
          if (value && ts.isStringLiteralLike(value)) logged.push({ event: value.text, levels, where: where(node) });
          else if (value && ts.isTemplateExpression(value)) {
            const template = value.getText(file).slice(1, -1);
            const names = TEMPLATES[template];
            if (names) for (const event of names) logged.push({ event, levels, where: where(node) });
            else unreadable.push(`${where(node)}: an event name from a template (${template}): add its names to TEMPLATES`);
          } else unreadable.push(`${where(node)}: an event name the test cannot read (${eventProperty.getText(file)})`);
        } else if (levels.some((l) => LISTED.has(l)) && ts.isPropertyAccessExpression(callee) && /log(ger)?$|^root$/i.test(callee.expression.getText(file).split('.').pop()!)) {
          unreadable.push(`${where(node)}: ${callee.getText(file)} without an event`);
        }
      }
    }
    node.forEachChild(visit);
  };
  visit(file);
  return { logged, unreadable };
}

/** Rows of docs/log-events.md: the event of each, its level column and the section it is under. */
function documentedRows(page: string): { event: string; level: string; section: string }[] {
  const rows: { event: string; level: string; section: string }[] = [];
  let section = '';
  for (const line of page.split('\n')) {
    const heading = /^## (\S+)/.exec(line);
    if (heading) section = heading[1];
    const row = /^\| `([a-z_]+\.[a-z_]+)` \| ([^|]+) \|/.exec(line);
    if (row) rows.push({ event: row[1], level: row[2].trim(), section });
  }
  return rows;
}

describe('docs/log-events.md', () => {
  it('finds events as the code logs them', () => {
    const { logged, unreadable } = scanSource(
      [
        "log.warn({ event: 'a.one', x });",
        'this.deps.log.error(',
        "  { hub, event: 'a.two' },",
        ');',
        "log[ok ? 'info' : 'warn']({ event: 'a.three' });",
        'log.info({ event: `pubsub.roster_${how}` });',
        "root.fatal({ event: 'a.four' }, 'text');",
        "log.info({ event: 'a.five' });",
        "JSON.stringify({ type: 'system', event: 'connected' });",
        "log[level]({ event: 'a.six' });",
        'log.warn({ event: `a.${x}` });',
        "this.log.error('no event');",
        "res.error('not a logger');",
      ].join('\n'),
      'sample.ts',
    );
    assert.deepEqual(
      logged.map((l) => `${l.event} ${l.levels.join('|')} ${l.where}`),
      [
        'a.one warn sample.ts:1',
        'a.two error sample.ts:2',
        'a.three info|warn sample.ts:5',
        'pubsub.roster_joined info sample.ts:6',
        'pubsub.roster_restarted info sample.ts:6',
        'pubsub.roster_left info sample.ts:6',
        'pubsub.roster_silent info sample.ts:6',
        'a.four fatal sample.ts:7',
        'a.five info sample.ts:8',
      ],
    );
    assert.deepEqual(unreadable, [
      'sample.ts:10: a level chosen at run time (level)',
      'sample.ts:11: an event name from a template (a.${x}): add its names to TEMPLATES',
      'sample.ts:12: this.log.error without an event',
    ]);
  });

  const scans = sourceFiles(join(ROOT, 'src')).map((path) => scanSource(readFileSync(path, 'utf8'), relative(ROOT, path)));
  const logged = scans.flatMap((s) => s.logged).filter((l) => l.levels.some((level) => LISTED.has(level)));
  const rows = documentedRows(read('docs/log-events.md'));

  it('can read every event src/ logs', () => {
    assert.deepEqual(
      scans.flatMap((s) => s.unreadable),
      [],
    );
  });

  it('lists every event src/ logs at warn, error or fatal level', () => {
    assert.ok(logged.length > 50, `${logged.length} warn/error/fatal log calls found`);
    const listed = new Set(rows.map((r) => r.event));
    const missing = [...new Set(logged.filter((l) => !listed.has(l.event)).map((l) => `${l.event} (${l.where})`))];
    assert.deepEqual(missing, [], 'logged at warn, error or fatal level, and not in docs/log-events.md');
  });

  it('lists no event src/ does not log at those levels, and each once', () => {
    const found = new Set(logged.map((l) => l.event));
    assert.deepEqual(
      rows.filter((r) => !found.has(r.event)).map((r) => r.event),
      [],
      'in docs/log-events.md, and not logged at warn, error or fatal level in src/',
    );
    const seen = new Set<string>();
    assert.deepEqual(
      rows.filter((r) => seen.has(r.event) || !seen.add(r.event)).map((r) => r.event),
      [],
      'listed twice',
    );
  });

  it('gives each event the levels it is logged at, under the section of its prefix', () => {
    const wrong: string[] = [];
    for (const row of rows) {
      if (row.section !== row.event.split('.')[0]) wrong.push(`${row.event}: under "## ${row.section}"`);
      const levels = new Set(logged.filter((l) => l.event === row.event).flatMap((l) => l.levels));
      for (const level of levels) {
        if (!new RegExp(`\\b${level}\\b`).test(row.level)) wrong.push(`${row.event}: logged at ${level}, the row says "${row.level}"`);
      }
    }
    assert.deepEqual(wrong, []);
  });
});
