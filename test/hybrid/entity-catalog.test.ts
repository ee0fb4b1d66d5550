// The catalog of hybrid connections (src/hybrid/entity-catalog.ts): names
// found case-insensitively, entities a listener creates when autoCreate is on,
// and what a reload does to both.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildConfig } from '../../src/config/load.ts';
import { EntityCatalog } from '../../src/hybrid/entity-catalog.ts';
import { testConfig } from '../helpers/relay.ts';

const configured = (...names: string[]) => buildConfig(testConfig({ hybridConnections: names.map((name) => ({ name })) })).hybridConnections;

describe('the catalog of hybrid connections', () => {
  it('forgets an entity a listener created once it is let go, and keeps one a reload listed meanwhile', () => {
    const catalog = new EntityCatalog(configured(), true);
    const made = catalog.getForListener('Made')!;
    assert.equal(made.dynamic, true);
    assert.equal(catalog.get('made'), made);
    catalog.releaseDynamic(made);
    assert.equal(catalog.get('made'), undefined);
    // Listed by a reload while a listener's refusal was on its way: the entity becomes configured, the same one.
    const again = catalog.getForListener('made')!;
    catalog.reconfigure(configured('made'), true);
    catalog.releaseDynamic(again);
    assert.equal(catalog.get('made'), again);
    assert.equal(again.dynamic, false);
  });

  it('lets go of a created entity without touching the configured one a later reload made under its name', () => {
    // A listener arrives on a created entity; a reload turns autoCreate off (the entity goes), another lists the
    // name; then the first listener's refusal lets go of the entity it had. Before, by name: the configured
    // entity went with it, and its listeners were refused EntityNotFound until the next reload (found by review).
    const catalog = new EntityCatalog(configured(), true);
    const made = catalog.getForListener('shared')!;
    assert.deepEqual(catalog.reconfigure(configured(), false), [made]);
    catalog.reconfigure(configured('shared'), true);
    const listed = catalog.get('shared')!;
    assert.notEqual(listed, made);
    catalog.releaseDynamic(made);
    assert.equal(catalog.get('shared'), listed, 'the configured entity stays');
  });
});
