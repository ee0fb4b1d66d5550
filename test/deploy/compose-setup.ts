// What the deploy tests share: docker-compose.yml as parsed, the secrets the
// docs' .env recipe makes, the environment compose gives each service, and a
// NATS node of the compose file (deploy/nats.conf) run as a local process.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { parse } from 'yaml';
import { tracked } from '../helpers/child-processes.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { untilAnswered, withTimeout } from '../helpers/wait.ts';

export const root = new URL('../../', import.meta.url).pathname;

export interface ComposeService {
  image?: string;
  build?: string;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  stop_grace_period?: string;
  depends_on?: unknown;
}

const compose = parse(readFileSync(root + 'docker-compose.yml', 'utf8'), { merge: true }) as { services: Record<string, ComposeService> };
export const services = Object.entries(compose.services);
export const natsServices = services.filter(([, s]) => s.image?.startsWith('nats:'));
export const edges = services.filter(([, s]) => s.build !== undefined);

/** The `.env` recipe of docs/scaling-out.md: each line `NAME=prefix$(openssl rand -hex 32)`. */
export const recipe = (() => {
  const doc = readFileSync(root + 'docs/scaling-out.md', 'utf8');
  const block = /^cat > \.env <<EOF\n([\s\S]*?)^EOF$/m.exec(doc);
  assert.ok(block, 'docs/scaling-out.md has the .env recipe');
  return block[1]
    .trim()
    .split('\n')
    .map((line) => {
      const m = /^(\w+)=(\w*)\$\(openssl rand -hex 32\)$/.exec(line);
      assert.ok(m, `a recipe line: ${line}`);
      return { name: m[1], prefix: m[2] };
    });
})();

/** What that recipe gives, with `hex` for the random part. */
export function secretsFrom(hex: string): Record<string, string> {
  return Object.fromEntries(recipe.map(({ name, prefix }) => [name, prefix + hex]));
}

/** A compose `environment` value with `${NAME}` and `${NAME:?message}` filled in from `env`, as compose does. */
function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(/\$\{(\w+)(?::\?[^}]*)?\}/g, (_, name: string) => {
    assert.ok(name in env, `${name} is in the .env recipe`);
    return env[name];
  });
}

/** The environment compose gives a service, from a .env holding `secrets`. */
export function environmentOf(service: ComposeService, secrets: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, interpolate(String(v), secrets)]));
}

/** host path -> container path of a bind mount */
export function mount(volumes: string[] | undefined, target: string): string | undefined {
  const found = volumes?.map((v) => v.split(':')).find(([, to]) => to === target);
  return found?.[0];
}

export interface DeployNats {
  monitor: string;
  url: string;
  /** The last 64 KiB of what the node logged. */
  log(): string;
  /** Every line the node logged about a client refused a publish or a subscription by its permissions. */
  violations(): string[];
}

/**
 * A NATS node of the compose file as a local process: deploy/nats.conf with its ports moved to free ones on
 * 127.0.0.1 and its store in a temp dir, and the environment compose gives it, its routes' host names
 * pointed at the other local nodes. Everything else (authorization and its permissions, cluster authorization,
 * JetStream) as shipped.
 */
export async function startDeployNats(
  t: Pick<TestContext, 'after'>,
  name: string,
  env: Record<string, string>,
  ports: { port: number; routePort: number; monitorPort: number },
  routePorts: Record<string, number>,
): Promise<DeployNats> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-deploy-nats-'));
  let conf = readFileSync(root + 'deploy/nats.conf', 'utf8');
  const replace = (from: RegExp, to: string) => {
    assert.match(conf, from);
    conf = conf.replace(from, to);
  };
  replace(/^port: 4222$/m, `host: 127.0.0.1\nport: ${ports.port}`);
  replace(/^http_port: 8222$/m, `http: "127.0.0.1:${ports.monitorPort}"`);
  replace(/^(\s*)store_dir: \/data$/m, `$1store_dir: "${join(dir, 'jetstream')}"`);
  replace(/^(\s*)port: 6222$/m, `$1host: 127.0.0.1\n$1port: ${ports.routePort}`);
  writeFileSync(join(dir, 'nats.conf'), conf);
  const routes = env.NATS_ROUTES?.replace(/([@/])(nats-\d):6222/g, (_, before: string, node: string) => `${before}127.0.0.1:${routePorts[node]}`);
  const child = tracked(spawn('nats-server', ['-c', join(dir, 'nats.conf')], { env: { ...process.env, ...env, NATS_ROUTES: routes ?? '' }, stdio: ['ignore', 'ignore', 'pipe'] }));
  let log = '';
  let partial = '';
  const violations: string[] = [];
  child.stderr!.on('data', (d: Buffer) => {
    const text = d.toString();
    log = (log + text).slice(-65536);
    // Kept whole, however much is logged after them.
    const lines = (partial + text).split('\n');
    partial = lines.pop()!;
    violations.push(...lines.filter((line) => /Violation/.test(line)));
  });
  cleanupFor(t).after(async () => {
    child.kill('SIGKILL');
    if (child.exitCode === null && child.signalCode === null) await withTimeout(new Promise((r) => child.once('exit', r)), 5000, `${name} to exit`).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  const monitor = `http://127.0.0.1:${ports.monitorPort}`;
  await untilAnswered(async () => (await fetch(`${monitor}/varz`).catch(() => undefined))?.ok === true, 10000, `${name} to listen: ${log}`);
  return { monitor, url: `nats://127.0.0.1:${ports.port}`, log: () => log, violations: () => [...violations] };
}

/** How many other servers a node has routes to. */
export async function routeCount(monitor: string): Promise<number> {
  const { routes = [] } = (await (await fetch(`${monitor}/routez`, { signal: AbortSignal.timeout(2000) })).json()) as { routes?: { remote_id: string }[] };
  return new Set(routes.map((r) => r.remote_id)).size;
}
