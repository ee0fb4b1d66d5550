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

describe('reference pages', () => {
  it('docs/configuration.md names every config key', () => {
    const page = read('docs/configuration.md');
    const keys = configKeys(JSON.parse(read('schemas/config.schema.json')) as SchemaNode);
    assert.ok(keys.length > 30);
    assert.deepEqual(keys.filter((k) => !page.includes(`\`${k}\``)), []);
  });

  it('docs/endpoints.md names every metric of the relay', async () => {
    const page = read('docs/endpoints.md');
    const metrics = new RelayMetrics('test');
    const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => !/^edge_relay_(process|nodejs)_/.test(n));
    assert.ok(names.length > 10);
    assert.deepEqual(names.filter((n) => !page.includes(`\`${n}`)), []);
  });
});
