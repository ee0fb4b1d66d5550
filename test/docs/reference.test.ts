// The reference pages stay true to the code: every config key of the schema is
// in docs/configuration.md, and every metric the relay registers is in
// docs/endpoints.md.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { RelayMetrics } from '../../src/telemetry/metrics.ts';

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

interface SchemaNode {
  type?: string | string[];
  properties?: Record<string, SchemaNode>;
}

/** Dotted config keys: objects with properties are walked, anything else is a key. */
function configKeys(node: SchemaNode, prefix = ''): string[] {
  return Object.entries(node.properties ?? {}).flatMap(([name, child]) => {
    if (name === '$schema') return [];
    const key = prefix ? `${prefix}.${name}` : name;
    return child.type === 'object' && child.properties ? configKeys(child, key) : [key];
  });
}

interface BoundedNode {
  $ref?: string;
  type?: string | string[];
  minimum?: number;
  maximum?: number;
  properties?: Record<string, BoundedNode>;
  items?: BoundedNode;
  definitions?: Record<string, BoundedNode>;
}

/** Every number of the config with a minimum and a maximum, by dotted key (`[]` for a list's items). */
function boundedNumbers(schema: BoundedNode): { key: string; min: number; max: number }[] {
  const resolve = (node: BoundedNode): BoundedNode => (node.$ref ? resolve(schema.definitions![node.$ref.split('/').pop()!]) : node);
  const walk = (node: BoundedNode, prefix: string): { key: string; min: number; max: number }[] =>
    Object.entries(resolve(node).properties ?? {}).flatMap(([name, raw]) => {
      const child = resolve(raw);
      const key = prefix ? `${prefix}.${name}` : name;
      if (child.type === 'object' && child.properties) return walk(child, key);
      if (child.type === 'array' && child.items && resolve(child.items).type === 'object') return walk(child.items, `${key}[]`);
      if ((child.type === 'integer' || child.type === 'number') && child.minimum !== undefined && child.maximum !== undefined) return [{ key, min: child.minimum, max: child.maximum }];
      return [];
    });
  return walk(schema, '');
}

describe('reference pages', () => {
  it('docs/configuration.md names every config key', () => {
    const page = read('docs/configuration.md');
    const keys = configKeys(JSON.parse(read('schemas/config.schema.json')) as SchemaNode);
    assert.ok(keys.length > 30);
    assert.deepEqual(keys.filter((k) => !page.includes(`\`${k}\``)), []);
  });

  it('docs/configuration.md gives the range of every bounded number the schema takes', () => {
    const page = read('docs/configuration.md');
    const rows = page.split('\n').filter((line) => line.startsWith('| `'));
    const rowOf = (key: string) => rows.find((line) => line.startsWith(`| \`${key}\` |`) || line.startsWith(`| \`${key}\`,`));
    const bounded = boundedNumbers(JSON.parse(read('schemas/config.schema.json')) as BoundedNode);
    assert.ok(bounded.length > 40);
    const missing = bounded.filter(({ key, min, max }) => {
      const own = rowOf(key);
      if (own) return !own.includes(`Range \`${min}\` to \`${max}\`.`);
      // A key inside a list's items (pubsub.hubs[].eventHandlers[].retries) is given in its list's row.
      const [parent, name] = [key.slice(0, key.lastIndexOf('.')).replace(/\[\]$/, ''), key.slice(key.lastIndexOf('.') + 1)];
      return !rowOf(parent)?.includes(`\`${name}\` \`${min}\` to \`${max}\``);
    });
    assert.deepEqual(missing, []);
  });

  it('docs/endpoints.md names every metric of the relay', async () => {
    const page = read('docs/endpoints.md');
    const metrics = new RelayMetrics('test');
    const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => !/^edge_relay_(process|nodejs)_/.test(n));
    assert.ok(names.length > 10);
    assert.deepEqual(names.filter((n) => !page.includes(`\`${n}`)), []);
  });
});
