// docker-compose.yml's structure (there is no Docker engine here; the same
// topology runs as plain processes in test/cluster): three NATS nodes
// clustered with JetStream that require the edges to authenticate, two edges
// built from the Dockerfile, each with a config that the relay accepts and
// that points at the three NATS nodes. No secret is in the files: the keys and
// the NATS password come from the environment.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config/load.ts';
import { weakKeysRefusal } from '../../src/config/secrets.ts';

const root = new URL('../../', import.meta.url).pathname;
const compose = parse(readFileSync(root + 'docker-compose.yml', 'utf8'), { merge: true }) as {
  services: Record<string, { image?: string; build?: string; command?: string[]; environment?: Record<string, string>; volumes?: string[]; ports?: string[] }>;
};
const services = Object.entries(compose.services);
const natsServices = services.filter(([, s]) => s.image?.startsWith('nats:'));
const edges = services.filter(([, s]) => s.build !== undefined);

/** What a .env would give compose (values as `openssl rand -hex 32` makes them). */
const SECRETS = {
  EDGE_RELAY_ROOT_KEY: 'a'.repeat(64),
  EDGE_RELAY_CHAT_KEY: 'b'.repeat(64),
  NATS_EDGE_PASSWORD: 'c'.repeat(64),
};

/** host path -> container path of a bind mount */
function mount(volumes: string[] | undefined, target: string): string | undefined {
  const found = volumes?.map((v) => v.split(':')).find(([, to]) => to === target);
  return found?.[0];
}

describe('docker-compose.yml', () => {
  it('runs three NATS nodes, clustered with each other, JetStream on, from one valid config', () => {
    assert.equal(natsServices.length, 3);
    const names = natsServices.map(([name]) => name).sort();
    const conf = readFileSync(root + 'deploy/nats.conf', 'utf8');
    assert.match(conf, /^jetstream\s*\{/m);
    for (const name of names) assert.ok(conf.includes(`nats://${name}:6222`), `a route to ${name}`);
    const serverNames = new Set<string>();
    for (const [name, s] of natsServices) {
      assert.deepEqual(s.command, ['--config', '/etc/nats/nats.conf'], name);
      assert.equal(mount(s.volumes, '/etc/nats/nats.conf'), './deploy/nats.conf');
      assert.ok(mount(s.volumes, '/data'), `${name} keeps JetStream data in a volume`);
      serverNames.add(s.environment!.NATS_NAME);
      // The real nats-server parses the config as this node would.
      assert.match(String(s.environment!.NATS_EDGE_PASSWORD), /^\$\{NATS_EDGE_PASSWORD:\?/, `${name} takes the edges' password from the environment`);
      const check = spawnSync('nats-server', ['-c', root + 'deploy/nats.conf', '-t'], {
        env: { ...process.env, NATS_NAME: s.environment!.NATS_NAME, NATS_EDGE_PASSWORD: SECRETS.NATS_EDGE_PASSWORD },
        encoding: 'utf8',
        timeout: 10000,
      });
      assert.equal(check.status, 0, check.stderr);
      assert.match(check.stdout + check.stderr, /is valid/);
    }
    assert.equal(serverNames.size, 3, 'each node has its own server name');
    assert.match(conf, /^authorization\s*\{[\s\S]*\{ user: edge, password: \$NATS_EDGE_PASSWORD \}/m, 'clients must authenticate');
  });

  it('runs two edges built from the Dockerfile, each with a config the relay accepts, on the three NATS nodes', () => {
    assert.equal(edges.length, 2);
    const dockerfile = readFileSync(root + 'Dockerfile', 'utf8');
    assert.match(dockerfile, /^ENTRYPOINT \["bin\/edge-relay"\]$/m, 'the image runs the launcher users run');
    assert.match(dockerfile, /^CMD \["serve", "--config", "\/etc\/edge-relay\/config.json"\]$/m);
    for (const dir of ['schemas', 'src', 'bin']) assert.match(dockerfile, new RegExp(`^COPY ${dir} `, 'm'));
    const nodeIds = new Set<string>();
    for (const [name, s] of edges) {
      assert.equal(s.build, '.', name);
      const file = mount(s.volumes, '/etc/edge-relay/config.json');
      assert.ok(file && existsSync(root + file), `${name} mounts its config`);
      const text = readFileSync(root + file, 'utf8');
      for (const [name, value] of Object.entries(SECRETS)) {
        assert.ok(text.includes(`\${${name}}`), `${file} takes ${name} from the environment`);
        assert.ok(!text.includes(value));
        assert.match(String(s.environment![name]), new RegExp(`^\\$\\{${name}:\\?`), `compose requires ${name}`);
      }
      const config = loadConfig(root + file, SECRETS, {});
      nodeIds.add(config.nodeId);
      assert.equal(weakKeysRefusal(config, false), undefined, 'serve starts on 0.0.0.0 with such keys');
      assert.equal(config.bus.kind, 'nats');
      assert.deepEqual([config.bus.user, config.bus.pass], ['edge', SECRETS.NATS_EDGE_PASSWORD]);
      assert.deepEqual(config.bus.servers!.map((u) => new URL(u).hostname).sort(), natsServices.map(([n]) => n).sort());
      assert.equal(config.listen.host, '0.0.0.0');
      const [published, inside] = s.ports![0].split(':');
      assert.equal(Number(inside), config.listen.port);
      assert.equal(new URL(config.publicUrl!).port, published, `${name}'s rendezvous address is its published port`);
      assert.ok(config.pubsub.hubs.length > 0 && config.hybridConnections.length > 0);
    }
    assert.equal(nodeIds.size, 2, 'distinct node ids');
  });

  it('publishes no host port twice', () => {
    const published = services.flatMap(([, s]) => (s.ports ?? []).map((p) => p.split(':')[0]));
    assert.equal(new Set(published).size, published.length);
  });
});
