// Reload without a restart (docs/security.md, "Reload"): SIGHUP and POST
// /$relay/reload read the config again. A config that does not load (a bad
// value, a key file that cannot be read, a weak key off loopback) changes
// nothing: it never gets here, and the caller logs the key that failed.
// Here a config that loaded is applied, in one turn of the event loop: the
// live config object, which every part of the relay holds, takes the new
// values in place, and each part whose state derives from them is told
// (HybridService.reconfigure, PubSubService.reconfigure, the admission
// limits, trusted proxies, the certificates; the log level once the reload
// is logged). Keys that only
// a restart can change (where it listens, the bus, timeouts) are left as
// they were and reported.
import type { JetStreamAccess } from '../bus/jetstream.ts';
import type { BusConfig, ListenTlsConfig, RelayConfig } from '../config/types.ts';
import type { HybridService } from '../hybrid/hybrid-service.ts';
import type { PubSubService } from '../pubsub/pubsub-service.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { ConnectionRateLimiter } from './connection-rate.ts';
import type { HttpConnections } from './http-connections.ts';
import type { CertificateKeeper, CertificateReason } from './tls.ts';
import type { ProxyTrust } from './trust-proxy.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

export interface ReloadTargets {
  /** The config every part holds: changed in place. */
  live: RelayConfig;
  /** The root logger (its children follow its level). */
  log: Logger;
  hybrid: HybridService;
  pubsub: PubSubService;
  proxyTrust: ProxyTrust;
  connectRate: ConnectionRateLimiter;
  httpConnections: HttpConnections;
  certificates: CertificateKeeper | undefined;
  /** Why the reload happened, as the certificates' log says it (SIGHUP: 'signal'; the API: 'config'). */
  certificateReason: CertificateReason;
  /** JetStream access for durable hubs added now (made on first need when none was needed at start). */
  jetstreamFor(next: RelayConfig): JetStreamAccess | undefined;
}

/** Where a running relay took these from at start; a new value waits for a restart. RestartOnlyValues below pins the same keys in a worker: a key added here belongs there too. */
function restartOnly(c: RelayConfig): Record<string, unknown> {
  return {
    nodeId: c.nodeId,
    'listen.host': c.listen.host,
    'listen.port': c.listen.port,
    'listen.tls': c.listen.tls !== undefined,
    'listen.proxyProtocol': c.listen.proxyProtocol,
    // Only with TLS on: turned off, 'listen.tls' says it (before, these two were listed as well).
    ...(c.listen.tls ? { 'listen.tls.requestCert': c.listen.tls.requestCert, 'listen.tls.requireClientCert': c.listen.tls.requireClientCert } : {}),
    publicUrl: c.publicUrl,
    bus: c.bus,
    timeouts: c.timeouts,
    'log.bufferBytes': c.log.bufferBytes,
  };
}

/**
 * The restart-only values of a config, as `serve --workers`' primary passes them to each worker it starts:
 * a worker started again after a crash takes them, not the file as it is by then (a change that waits for a
 * restart in the others: TLS turned on, another port or NATS server, would otherwise hold in it alone).
 */
export interface RestartOnlyValues {
  listen: { host: string; port: number; proxyProtocol: boolean; tls: ListenTlsConfig | null };
  publicUrl: string | null;
  bus: BusConfig;
  timeouts: RelayConfig['timeouts'];
  logBufferBytes: number;
}

/** Passed in a worker's environment: without the bus's password and token (a worker resolves its own secrets). */
export function restartOnlyValues(c: RelayConfig): RestartOnlyValues {
  const { host, port, proxyProtocol, tls } = c.listen;
  const { pass: _pass, token: _token, ...bus } = c.bus;
  return { listen: { host, port, proxyProtocol, tls: tls ?? null }, publicUrl: c.publicUrl ?? null, bus, timeouts: c.timeouts, logBufferBytes: c.log.bufferBytes };
}

/** `c` with the restart-only values `v` (TLS as `v` has it, on or off; with it on, the certificate files are `c`'s, which reload). */
export function withRestartOnlyValues(c: RelayConfig, v: RestartOnlyValues): RelayConfig {
  const pinned = v.listen.tls;
  const tls = pinned === null ? undefined : c.listen.tls ? { ...c.listen.tls, requestCert: pinned.requestCert, requireClientCert: pinned.requireClientCert } : pinned;
  return {
    ...c,
    listen: { ...c.listen, host: v.listen.host, port: v.listen.port, proxyProtocol: v.listen.proxyProtocol, tls },
    publicUrl: v.publicUrl ?? undefined,
    bus: { ...v.bus, pass: c.bus.pass, token: c.bus.token },
    timeouts: v.timeouts,
    log: { ...c.log, bufferBytes: v.logBufferBytes },
  };
}

/** Equal as JSON, whatever the order of object keys (a worker's pinned bus has its secrets put back last). */
function same(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

function canonicalJson(value: unknown): string | undefined {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/** The restart-only keys whose values differ between the config running and `next` (nodeId, listen, bus, ...). */
export function restartOnlyChanges(live: RelayConfig, next: RelayConfig): string[] {
  const before = restartOnly(live);
  const after = restartOnly(next);
  // Keys one side has only with TLS on are compared when both have them ('listen.tls' covers the rest).
  return Object.keys(before).filter((k) => k in after && !same(before[k], after[k]));
}

/** Applies a config that loaded; returns what changed, for the log and the reload endpoint's answer. */
export function applyConfig(t: ReloadTargets, next: RelayConfig): Record<string, unknown> {
  const live = t.live;
  const restartNeeded = restartOnlyChanges(live, next);
  // A kept hub's `durable` and `history` wait for a restart: the live config keeps them as they run
  // (before, it took the new ones, and a hub turned durable had JetStream started and a stream made for
  // it while it stayed on core NATS, and the edge said not ready on a server without JetStream).
  const running = new Map(live.pubsub.hubs.map((h) => [asciiLowerCase(h.name), h]));
  for (const hub of next.pubsub.hubs) {
    const was = running.get(asciiLowerCase(hub.name));
    if (!was) continue;
    if (Boolean(was.durable) !== Boolean(hub.durable)) restartNeeded.push(`pubsub.hubs[${hub.name}].durable`);
    if (!same(was.history, hub.history)) restartNeeded.push(`pubsub.hubs[${hub.name}].history`);
    hub.durable = was.durable;
    hub.history = was.history;
  }
  const changed = (['sas', 'rotationGraceSeconds', 'namespaceHosts', 'autoCreate', 'hybridConnections', 'limits', 'metrics'] as const).filter(
    (k) => !same(live[k], next[k]),
  );
  // The level is what a reload applies of `log` (bufferBytes waits for a restart, so the live one stays as it was:
  // comparing the whole object listed `log` as changed on every reload after a bufferBytes edit).
  if (live.log.level !== next.log.level) changed.push('log' as never);
  if (!same(live.pubsub.hubs, next.pubsub.hubs)) changed.push('pubsub' as never);
  if (!same(live.listen.trustProxy, next.listen.trustProxy)) changed.push('listen.trustProxy' as never);
  const tlsFiles = (c: RelayConfig) => c.listen.tls && [c.listen.tls.certFile, c.listen.tls.keyFile, c.listen.tls.caFile, c.listen.tls.minVersion];
  if (live.listen.tls && next.listen.tls && !same(tlsFiles(live), tlsFiles(next))) changed.push('listen.tls' as never);

  live.sas = next.sas;
  live.rotationGraceSeconds = next.rotationGraceSeconds;
  live.namespaceHosts = next.namespaceHosts;
  live.autoCreate = next.autoCreate;
  live.hybridConnections = next.hybridConnections;
  live.pubsub.hubs = next.pubsub.hubs;
  Object.assign(live.limits, next.limits);
  live.metrics = next.metrics;
  live.listen.trustProxy = next.listen.trustProxy;
  // The loggers take the level around the config.reloaded line (relay-server.ts).
  live.log.level = next.log.level;

  // One time for every grace the reload starts: SAS keys and hub keys rotated together end together (before, the hub
  // keys' grace was counted from after the listeners were checked again, and outlived the SAS keys' by as long).
  const now = Date.now();
  const hybrid = t.hybrid.reconfigure(live, now);
  const pubsub = t.pubsub.reconfigure(live, t.jetstreamFor(live), now);
  t.connectRate.configure(live.limits.connectRatePerAddress, live.limits.connectBurstPerAddress);
  t.httpConnections.limit = live.limits.httpConnectionsPerNode;
  t.httpConnections.perAddressLimit = live.limits.httpConnectionsPerAddress;
  t.proxyTrust.configure(live.listen.trustProxy);
  // Other certificate files, or another minimum version: the server serves them from now on.
  if (t.certificates && next.listen.tls && live.listen.tls) {
    const { certFile, keyFile, caFile, minVersion } = next.listen.tls;
    Object.assign(live.listen.tls, { certFile, keyFile, caFile, minVersion });
    t.certificates.retarget(live.listen.tls, t.certificateReason);
  }
  return {
    changed,
    entitiesRemoved: hybrid.entitiesRemoved,
    listenersClosed: hybrid.listenersClosed,
    sasKeysRotated: hybrid.keysRotated,
    hubsAdded: pubsub.hubsAdded,
    hubsRemoved: pubsub.hubsRemoved,
    hubKeysRotated: pubsub.keysRotated,
    restartNeeded,
  };
}
