// docker-compose.yml's structure (there is no Docker engine here; the same
// topology runs as plain processes in test/cluster): three NATS nodes
// clustered with JetStream that require the edges to authenticate, two edges
// built from the Dockerfile, each with a config that the relay accepts and
// that points at the three NATS nodes. No secret is in the files: the keys and
// the NATS passwords come from the environment, made by the recipe in
// docs/scaling-out.md, and nats-server must read every value that recipe can
// make as that string (it reads a variable's value as a config value).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { connect } from 'nats';
import { loadConfig } from '../../src/config/load.ts';
import { weakKeysRefusal } from '../../src/config/secrets.ts';
import { tracked } from '../helpers/child-processes.ts';
import { freePort } from '../helpers/nats.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { untilAnswered, withTimeout } from '../helpers/wait.ts';
import { edges, environmentOf, mount, natsServices, recipe, root, routeCount, secretsFrom, services, startDeployNats, type ComposeService } from './compose-setup.ts';

/**
 * Shapes of `openssl rand -hex 32` that nats-server would read as something else than a string
 * (a number: 0e1f... and 7e3... are refused, about one value in twenty; all digits would be an integer).
 */
const HOSTILE_HEX = ['0e1fab' + 'c'.repeat(58), '7e3' + 'a'.repeat(61), '1e0d87' + 'f'.repeat(58), '5'.repeat(64), '1k' + 'b'.repeat(62), 'e'.repeat(64)];
const SECRETS = secretsFrom('c'.repeat(64));

function natsConfigCheck(env: Record<string, string>): { status: number | null; output: string } {
  const check = spawnSync('nats-server', ['-c', root + 'deploy/nats.conf', '-t'], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 10000 });
  return { status: check.status, output: check.stdout + check.stderr };
}

/** The secrets compose requires (`${NAME:?...}`) in a service's environment. */
function required(service: ComposeService): string[] {
  return Object.values(service.environment ?? {}).flatMap((v) => [...String(v).matchAll(/\$\{(\w+):\?/g)].map((m) => m[1]));
}

describe('docker-compose.yml', () => {
  it('runs three NATS nodes, clustered with each other, JetStream on, from one valid config', () => {
    assert.equal(natsServices.length, 3);
    const names = natsServices.map(([name]) => name).sort();
    const conf = readFileSync(root + 'deploy/nats.conf', 'utf8');
    assert.match(conf, /^jetstream\s*\{/m);
    assert.match(conf, /^\s*routes: \$NATS_ROUTES$/m);
    const serverNames = new Set<string>();
    for (const [name, s] of natsServices) {
      assert.deepEqual(s.command, ['--config', '/etc/nats/nats.conf'], name);
      assert.equal(mount(s.volumes, '/etc/nats/nats.conf'), './deploy/nats.conf');
      assert.ok(mount(s.volumes, '/data'), `${name} keeps JetStream data in a volume`);
      serverNames.add(s.environment!.NATS_NAME);
      assert.deepEqual(required(s).sort(), ['NATS_CLUSTER_PASSWORD', 'NATS_EDGE_PASSWORD'], `${name} takes both passwords from the environment`);
      const env = environmentOf(s, SECRETS);
      // Routes to all three, each with the cluster's credentials.
      const routes = env.NATS_ROUTES.replace(/^\[|\]$/g, '').split(/,\s*/);
      assert.deepEqual(routes.map((r) => new URL(r).hostname).sort(), names);
      for (const route of routes) assert.deepEqual([new URL(route).username, new URL(route).password], ['route', SECRETS.NATS_CLUSTER_PASSWORD]);
      // The real nats-server parses the config as this node would.
      const check = natsConfigCheck(env);
      assert.equal(check.status, 0, check.output);
      assert.match(check.output, /is valid/);
    }
    assert.equal(serverNames.size, 3, 'each node has its own server name');
    assert.match(conf, /^authorization\s*\{[\s\S]*\{ user: edge, password: \$NATS_EDGE_PASSWORD, permissions: \$EDGE_PERMISSIONS \}/m, 'clients must authenticate, and the edges may do what they do only (nats-permissions.test.ts)');
    assert.match(conf, /^cluster\s*\{[\s\S]*authorization\s*\{\s*user: route\s*password: \$NATS_CLUSTER_PASSWORD\s*\}/m, 'routes must authenticate');
  });

  it("nats-server takes every password the docs' .env recipe can make (a value read as a number is refused)", () => {
    assert.deepEqual(recipe.map((r) => r.name).sort(), [...new Set(services.flatMap(([, s]) => required(s)))].sort(), 'the recipe makes every secret compose requires');
    const [, node] = natsServices[0];
    for (const hex of HOSTILE_HEX) {
      const check = natsConfigCheck(environmentOf(node, secretsFrom(hex)));
      assert.equal(check.status, 0, `with random part ${hex}: ${check.output}`);
    }
  });

  it("forms the cluster with the route credentials, refuses a server without them, and lets the edges' user in", async (t) => {
    // A shape hex alone makes a number of: the node must read each password as this very string.
    const secrets = secretsFrom(HOSTILE_HEX[0]);
    const names = natsServices.map(([name]) => name);
    const ports = await Promise.all(names.map(async () => ({ port: await freePort(), routePort: await freePort(), monitorPort: await freePort() })));
    const routePorts = Object.fromEntries(names.map((name, i) => [name, ports[i].routePort]));
    const nodes = await Promise.all(natsServices.map(([name, s], i) => startDeployNats(t, name, environmentOf(s, secrets), ports[i], routePorts)));
    await untilAnswered(async () => (await Promise.all(nodes.map((n) => routeCount(n.monitor)))).every((c) => c === 2), 15000, 'the three nodes to route to each other');

    // The same config without the cluster's password in its routes: it asks to join, and is refused.
    const [, first] = natsServices[0];
    const rogue: Record<string, string> = { ...environmentOf(first, secrets), NATS_NAME: 'rogue', NATS_CLUSTER_PASSWORD: 'natsnotthepassword' };
    rogue.NATS_ROUTES = rogue.NATS_ROUTES.replaceAll(`route:${secrets.NATS_CLUSTER_PASSWORD}@`, '');
    const rogueNode = await startDeployNats(t, 'rogue', rogue, { port: await freePort(), routePort: await freePort(), monitorPort: await freePort() }, routePorts);
    await untilAnswered(async () => /Authorization Violation/.test(rogueNode.log()), 10000, 'the nodes to refuse the route');
    assert.equal(await routeCount(rogueNode.monitor), 0);
    assert.deepEqual(await Promise.all(nodes.map((n) => routeCount(n.monitor))), [2, 2, 2]);

    const nc = await connect({ servers: nodes[1].url, user: 'edge', pass: secrets.NATS_EDGE_PASSWORD, reconnect: false });
    await nc.flush();
    await nc.close();
    await assert.rejects(connect({ servers: nodes[1].url, user: 'edge', pass: 'natswrong', reconnect: false }), /Authorization Violation/);
  });

  it('runs two edges built from the Dockerfile, each with a config the relay accepts, on the three NATS nodes', () => {
    assert.equal(edges.length, 2);
    const dockerfile = readFileSync(root + 'Dockerfile', 'utf8');
    assert.match(dockerfile, /^ENTRYPOINT \["bin\/edge-relay"\]$/m, 'the image runs the launcher users run');
    assert.match(dockerfile, /^CMD \["serve", "--config", "\/etc\/edge-relay\/config.json"\]$/m);
    for (const dir of ['schemas', 'src', 'bin']) assert.match(dockerfile, new RegExp(`^COPY ${dir} `, 'm'));
    const edgeSecrets = ['EDGE_RELAY_ROOT_KEY', 'EDGE_RELAY_CHAT_KEY', 'NATS_EDGE_PASSWORD'];
    const nodeIds = new Set<string>();
    for (const [name, s] of edges) {
      assert.equal(s.build, '.', name);
      const file = mount(s.volumes, '/etc/edge-relay/config.json');
      assert.ok(file && existsSync(root + file), `${name} mounts its config`);
      const text = readFileSync(root + file, 'utf8');
      assert.deepEqual(required(s).sort(), [...edgeSecrets].sort(), `${name} is given its own secrets, not the cluster's`);
      for (const secret of edgeSecrets) {
        assert.ok(text.includes(`\${${secret}}`), `${file} takes ${secret} from the environment`);
        assert.ok(!text.includes(SECRETS[secret]));
      }
      const config = loadConfig(root + file, environmentOf(s, SECRETS), {});
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
      for (const hub of config.pubsub.hubs) assert.ok(hub.history?.maxBytes, `hub ${hub.name}'s history is bounded in bytes`);
      // A stop drains for up to timeouts.shutdownMs, then leaves the bus (at most 3 s): Docker must not kill it first.
      const grace = /^(\d+)s$/.exec(s.stop_grace_period ?? '');
      assert.ok(grace, `${name} has a stop_grace_period in seconds`);
      assert.ok(Number(grace[1]) * 1000 >= config.timeouts.shutdownMs + 3000 + 1000, `${name}'s stop_grace_period outlasts its drain`);
    }
    assert.equal(nodeIds.size, 2, 'distinct node ids');
  });

  it("the image's health check asks /$relay/health, and passes while the relay runs", async (t) => {
    const dockerfile = readFileSync(root + 'Dockerfile', 'utf8');
    const line = /^HEALTHCHECK .*\\\n\s*CMD (\[.*\])$/m.exec(dockerfile);
    assert.ok(line, 'the Dockerfile has an exec-form HEALTHCHECK');
    const command = JSON.parse(line[1]) as string[];
    assert.equal(command[0], 'node', 'the image has node, not curl');
    assert.ok(command.some((arg) => arg.includes("'http://127.0.0.1:9400/$relay/health'")), 'it asks the process, not readiness');
    const relay = await startTestRelay(t);
    const at = (port: number) => command.slice(1).map((arg) => arg.replace('127.0.0.1:9400', `127.0.0.1:${port}`));
    // Not spawnSync: the relay answers from this process.
    const run = async (port: number) => {
      const check = tracked(spawn(command[0], at(port), { stdio: 'ignore' }));
      return withTimeout(new Promise<number | null>((resolve) => check.once('exit', resolve)), 10000, 'the health check');
    };
    assert.equal(await run(Number(new URL(relay.url).port)), 0);
    assert.equal(await run(await freePort()), 1, 'nothing listening: unhealthy');
  });

  it('publishes no host port twice, and NATS only on loopback', () => {
    const published = services.flatMap(([, s]) => (s.ports ?? []).map((p) => p.split(':').slice(0, -1).join(':')));
    assert.equal(new Set(published).size, published.length);
    for (const [name, s] of natsServices) for (const p of s.ports ?? []) assert.match(p, /^127\.0\.0\.1:/, `${name} publishes ${p} on loopback only`);
  });

  it('keeps .env, where the secrets go, out of git and out of the image', () => {
    for (const file of ['.gitignore', '.dockerignore']) {
      assert.ok(readFileSync(root + file, 'utf8').split('\n').includes('.env'), `${file} lists .env`);
    }
  });
});
