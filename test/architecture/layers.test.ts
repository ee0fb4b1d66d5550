// The shape of src/ (docs/architecture.md, "Layers"): folders import one way,
// cli -> server -> {hybrid, pubsub, bridge, ops} -> {bus, auth, websocket,
// http, telemetry, validation, config}, and no file imports itself back
// through others. Computed from the sources, type-only imports included, so
// the shape cannot drift unnoticed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
  );
}

/** Relative import specifiers of a module: import/export ... from, side-effect imports and import(). */
function importsOf(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)['"](\.{1,2}\/[^'"]+)['"]/g)) out.push(m[1]);
  return out;
}

const files = sourceFiles(SRC);
const fileGraph = new Map<string, Set<string>>();
for (const file of files) {
  const targets = importsOf(readFileSync(file, 'utf8')).map((spec) => path.resolve(path.dirname(file), spec));
  fileGraph.set(path.relative(SRC, file), new Set(targets.map((t) => path.relative(SRC, t))));
}

const folderOf = (file: string) => (file.includes(path.sep) ? file.split(path.sep)[0] : '(src)');
const folderGraph = new Map<string, Set<string>>();
for (const [file, targets] of fileGraph) {
  const from = folderOf(file);
  const set = folderGraph.get(from) ?? new Set<string>();
  for (const target of targets) if (folderOf(target) !== from) set.add(folderOf(target));
  folderGraph.set(from, set);
}

/** Strongly connected components with more than one member (Tarjan): each is a cycle. */
function cycles(graph: Map<string, Set<string>>): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    indices.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!indices.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, indices.get(w)!));
      }
    }
    if (low.get(v) === indices.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!indices.has(v)) visit(v);
  return found;
}

/** Which folder may import which: a folder imports only folders of a lower rank. */
const RANK: Record<string, number> = {
  cli: 5,
  server: 4,
  ops: 3,
  hybrid: 2,
  pubsub: 2,
  bridge: 2,
  bus: 1,
  auth: 1,
  websocket: 1,
  http: 1,
  telemetry: 1,
  validation: 0,
  collections: 0,
  config: 0.5,
  // Files directly in src/: project-files.ts (where the files read at run time are).
  '(src)': 0,
};

describe('layers of src/', () => {
  it('knows every folder under src/', () => {
    const unknown = [...folderGraph.keys()].filter((f) => !(f in RANK));
    assert.deepEqual(unknown, [], 'give new folders a rank in this test and in docs/architecture.md');
  });

  it('has no pair of folders that import each other, and no longer folder cycle', () => {
    const mutual: string[] = [];
    for (const [from, targets] of folderGraph) for (const to of targets) if (from < to && folderGraph.get(to)?.has(from)) mutual.push(`${from} <-> ${to}`);
    assert.deepEqual(mutual, []);
    assert.deepEqual(cycles(folderGraph), []);
  });

  it('imports only downwards: domains never import the composition root or the command line', () => {
    const upward: string[] = [];
    for (const [from, targets] of folderGraph) {
      for (const to of targets) if (RANK[to] > RANK[from] || (RANK[to] === RANK[from] && RANK[from] >= 2)) upward.push(`${from} -> ${to}`);
    }
    assert.deepEqual(upward, []);
  });

  it('has no file-level import cycle', () => {
    assert.deepEqual(cycles(fileGraph), []);
  });

  it('finds cycles when there are some (the check itself works)', () => {
    const g = new Map([
      ['a', new Set(['b'])],
      ['b', new Set(['c'])],
      ['c', new Set(['a'])],
      ['d', new Set(['a'])],
    ]);
    assert.deepEqual(cycles(g), [['a', 'b', 'c']]);
  });
});
