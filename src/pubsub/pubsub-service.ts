// Publish/subscribe on this node: builds the hubs and the parts that serve
// them, and answers for them as a whole. The client endpoint is
// client-endpoint.ts, recovery session-recovery.ts, how connections end and
// the keep-alive timer connection-lifecycle.ts, frames client-protocol.ts,
// REST rest-api.ts, one hub across the cluster hub-cluster.ts, and how its
// events cross the cluster event-feed.ts. Events flow one way: a hub sends
// through its feed; the feed hands events from other edges to the hub that
// registered for them. A durable hub (the NATS bus with JetStream) sends
// through its stream instead (stream-events.ts, docs/durability.md). A
// reload reconfigures it in place (reconfigure): hubs added and removed,
// access keys rotated.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { RetiredKeys } from '../auth/retired-keys.ts';
import { tokenHostsFor } from '../auth/token-hosts.ts';
import type { Bus } from '../bus/bus.ts';
import type { JetStreamAccess, StreamSpec } from '../bus/jetstream.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { HubConfig, RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { ClientEndpoint } from './client-endpoint.ts';
import type { ClientProtocolContext } from './client-protocol.ts';
import { ConnectionLifecycle } from './connection-lifecycle.ts';
import { DirectFeed, type EventFeed } from './event-feed.ts';
import { MemoryHistory } from './history.ts';
import { ClusterHub } from './hub-cluster.ts';
import { MAX_HISTORY_READS, handleRestRequest, type RestContext } from './rest-api.ts';
import { CallLimit } from './call-limit.ts';
import { PubSubConnection } from './pubsub-connection.ts';
import { LiveSocketOptions } from './live-limits.ts';
import { ReplayingFeed } from './replaying-feed.ts';
import { RECOVERY_WINDOW_MS, SessionRecovery } from './session-recovery.ts';
import { StreamEvents } from './stream-events.ts';
import { AbuseProtection } from './abuse-protection.ts';
import { EventDispatcher } from './cloud-events.ts';
import { HandlerTransport, type RelayedRequests } from './event-handlers.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { HERE_TTL_MS } from './hub-roster.ts';

/** How long after the last announcement heard from another edge under this node id /$relay/ready still says so. */
const NODE_ID_CLASH_MEMORY_MS = 3 * HERE_TTL_MS;

export class PubSubService implements RestContext {
  readonly hubs = new Map<string, ClusterHub>();
  private readonly publicHost: string;
  private readonly feed: EventFeed;
  private readonly lifecycle: ConnectionLifecycle;
  private readonly endpoint: ClientEndpoint;
  private readonly othersCanTake: boolean;
  /** The durable hubs' event paths, started once JetStream is ready. */
  private readonly streams: StreamEvents[] = [];
  /** How events reach event handlers (docs/event-handlers.md). */
  private readonly handlerTransport = new HandlerTransport();
  private readonly abuseProtection: AbuseProtection;
  readonly events: EventDispatcher;
  private readonly subjects: Subjects;
  private readonly hubDeps: ConstructorParameters<typeof ClusterHub>[1];
  private readonly handoverDeps: ConstructorParameters<typeof ClusterHub>[3];
  /** Access keys a reload replaced, accepted until rotationGraceSeconds after it, by hub key. */
  private readonly retiredKeys = new RetiredKeys();
  /** startStreams ran: a durable hub added later starts its own stream. */
  private streamsStarted = false;
  /** Every durable hub this edge started with reads its stream (false until then: /$relay/ready says so). */
  private streamsFollowed = false;
  /** The streams being started now, each once. */
  private readonly startingStreams = new Map<StreamEvents, Promise<void>>();

  constructor(
    readonly config: RelayConfig,
    private readonly log: Logger,
    publicUrl: string,
    bus: Bus,
    subjects: Subjects,
    private readonly metrics: RelayMetrics,
    /** Set when durable hubs keep their events in JetStream. */
    private jetstream?: JetStreamAccess,
  ) {
    this.publicHost = new URL(publicUrl).hostname;
    this.othersCanTake = bus.reachesOtherNodes;
    const b = config.bus;
    this.feed =
      bus.kind === 'nats'
        ? new ReplayingFeed(
            bus,
            {
              nodeId: config.nodeId,
              subject: subjects.replay(),
              windowMs: b.replayWindowMs,
              maxBytes: b.replayBufferBytes,
              requestTimeoutMs: b.requestTimeoutMs,
              gatherStallMs: b.gatherStallMs,
            },
            log,
          )
        : new DirectFeed(bus, config.nodeId);
    // Abuse protection names this relay by publicUrl's host (and port), as Azure names itself.
    this.abuseProtection = new AbuseProtection(new URL(publicUrl).host, this.handlerTransport, (url, allowed, detail) =>
      log[allowed ? 'info' : 'warn']({ event: 'pubsub.event_handler_validated', url: url.replace(/[?#].*$/, ''), allowed, detail }),
    );
    this.events = new EventDispatcher({
      transport: this.handlerTransport,
      protection: this.abuseProtection,
      log,
      // Read at each answer: a reload changes limits in place.
      get maxAnswerBytes() {
        return config.limits.pubsubMessageBytes;
      },
      accessKeys: (hub) => {
        const cluster = this.hub(hub.name);
        return cluster ? this.accessKeys(cluster) : standingKeys(hub);
      },
      // A reliable session's checkpoint keeps the state, so an edge that takes the session over has it.
      statesChanged: (source) => {
        if (!(source instanceof PubSubConnection) || !source.session) return;
        this.hub(source.hub)?.durable?.sessionChanged(source, true);
      },
      count: (event, result) => metrics.handlerEvents.inc({ event, result }),
    });
    for (const hub of config.pubsub.hubs) {
      if (!hub.upstream) continue;
      // Without its query or credentials: an Azure Function's handler URL carries its key there (`?code=`), others a `user:pass@`.
      const shown = hub.upstream.url.replace(/[?#].*$/, '?…').replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, '$1…@');
      log.warn({ event: 'config.upstream_migrated', hub: hub.name }, `pubsub.hubs[].upstream is read as eventHandlers: [{ "urlTemplate": "${shown}", "userEventPattern": "*" }]; write it so`);
    }
    this.lifecycle = new ConnectionLifecycle(this.hubs, config, log, metrics, this.othersCanTake, (connection, reason) => {
      const hub = this.hub(connection.hub);
      if (hub) this.events.systemEvent(hub.config, connection, 'disconnected', { reason });
    });
    // Times the bus lost its connection: a cluster-wide call during which it did reached only the edges that answered
    // before, and says so (503) rather than answering as if every edge had been asked.
    let busLosses = 0;
    bus.onConnectionChange((connected) => {
      if (!connected) busLosses++;
    });
    const hubDeps = (this.hubDeps = {
      bus,
      busLosses: () => busLosses,
      subjects,
      nodeId: config.nodeId,
      bootId: randomBytes(6).toString('base64url'),
      limits: config.limits,
      log,
      metrics,
      requestTimeoutMs: b.requestTimeoutMs,
      gatherStallMs: b.gatherStallMs,
      feed: this.feed,
      endConnection: this.lifecycle.end.bind(this.lifecycle),
      nodeIdClash: (boot: string) => {
        if (!this.nodeIdClashes.has(boot)) {
          log.error({
            event: 'bus.node_id_clash',
            nodeId: config.nodeId,
            otherBoot: boot,
            hint: 'another edge process on this NATS cluster uses this nodeId: each takes the other\'s pub/sub events for its own and drops them; give every edge its own nodeId (--node-id)',
          });
        }
        this.nodeIdClashes.set(boot, Date.now());
      },
    });
    this.handoverDeps = {
      log,
      limits: config.limits,
      requestTimeoutMs: b.requestTimeoutMs,
      release: this.lifecycle.release.bind(this.lifecycle),
      publishedSince: this.feed.publishedSince?.bind(this.feed),
      seen: this.feed.seen?.bind(this.feed),
      missingSince: this.feed.missingSince?.bind(this.feed),
    };
    this.subjects = subjects;
    for (const hubConfig of config.pubsub.hubs) this.addHub(hubConfig);
    const protocol: ClientProtocolContext = {
      hub: (connection) => this.hub(connection.hub),
      endConnection: hubDeps.endConnection,
      sendEvent: (connection, hub, event, dataType, payload) => this.events.dataEvent(hub.config, connection, event, dataType, payload),
      sendMessageEvent: (connection, hub, contentType, body) => this.events.userEvent(hub.config, connection, 'message', contentType, body),
      eventFailed: (connection, reason) => log.warn({ event: 'pubsub.message_event_failed', hub: connection.hub, connectionId: connection.id, reason }),
      groupSendFailed: (connection, group, code, reason) => log.warn({ event: 'pubsub.group_send_failed', hub: connection.hub, connectionId: connection.id, group, code, reason }),
      // Read when used: limits change on reload.
      get groupsPerConnection() {
        return config.limits.groupsPerConnection;
      },
      replyLost: (connection, reason) => log.warn({ event: 'pubsub.reply_lost', hub: connection.hub, connectionId: connection.id, reason }),
      countAck: (result) => metrics.acks.inc({ result }),
    };
    const socketOptions = new LiveSocketOptions(config.limits, config.timeouts.closeHandshakeMs);
    const shuttingDown = () => this.lifecycle.shuttingDown;
    // Read when used (timeouts need a restart today, src/server/reload.ts; this stays right if that changes).
    // A recovery's answer within the move wait (bus.requestTimeoutMs), a durable take's own deadline (its claim stored,
    // publishTimeoutMs, and read back, requestTimeoutMs) and a read of its checkpoint (requestTimeoutMs): 11 s by default.
    const answerBound = 3 * b.requestTimeoutMs + b.jetstream.publishTimeoutMs;
    const recovery = new SessionRecovery(log, metrics, socketOptions, b.requestTimeoutMs, answerBound, shuttingDown, () => Math.min(RECOVERY_WINDOW_MS, config.timeouts.sessionRetainMs));
    this.endpoint = new ClientEndpoint({
      config,
      log,
      metrics,
      hub: (name) => this.hub(name),
      hostsFor: (req) => this.hostsFor(req),
      accessKeys: (hub) => this.accessKeys(hub),
      lifecycle: this.lifecycle,
      recovery,
      protocol,
      events: this.events,
      shuttingDown,
    });
  }

  /** Sends a JSON value to a hub group as a REST send does (listener presence); false when there is no such hub. */
  async sendToGroup(hubName: string, group: string, data: unknown): Promise<boolean> {
    const hub = this.hub(hubName);
    if (!hub) return false;
    await hub.send({ kind: 'group', name: group }, { from: 'group', group, fromUserId: null, dataType: 'json', dataJson: JSON.stringify(data) });
    return true;
  }

  /** hc:// event handlers reach hybrid connections' listeners through these (wired by the composition root). */
  useRelayedRequests(relayed: RelayedRequests): void {
    this.handlerTransport.relayed = relayed;
  }

  /** Event handler URLs are validated again (abuse protection) before their next event: call after a configuration reload. */
  revalidateEventHandlers(): void {
    this.abuseProtection.revalidate();
  }

  /** Builds a hub (at start, or added on reload); a durable one gets its stream path, started once JetStream is ready. */
  private addHub(hubConfig: HubConfig): ClusterHub {
    const { config, log, subjects, jetstream } = this;
    const hubDeps = this.hubDeps;
    const b = config.bus;
    const hub = new ClusterHub(hubConfig, hubDeps, hubDeps.endConnection, this.handoverDeps);
    this.hubs.set(hub.key, hub);
    if (jetstream && hubConfig.durable) {
      const events = new StreamEvents(hub, {
        js: jetstream,
        subjects,
        stream: PubSubService.streamName(config, hub.key),
        nodeId: config.nodeId,
        bootId: hubDeps.bootId,
        log,
        history: hubConfig.history !== undefined,
        limits: config.limits,
        requestTimeoutMs: b.requestTimeoutMs,
        publishTimeoutMs: b.jetstream.publishTimeoutMs,
        checkpointIntervalMs: b.jetstream.checkpointIntervalMs,
        sessionRetainMs: config.timeouts.sessionRetainMs,
        release: this.lifecycle.release.bind(this.lifecycle),
        endConnection: hubDeps.endConnection,
      });
      hub.durable = events;
      if (hubConfig.history) hub.history = events;
      this.streams.push(events);
    } else if (hubConfig.history) {
      hub.memoryHistory = new MemoryHistory(hubConfig.history);
      hub.history = hub.memoryHistory;
    }
    return hub;
  }

  /** The JetStream stream a durable hub keeps its events in. */
  static streamName(config: RelayConfig, hubKey: string): string {
    return `${config.bus.jetstream.streamPrefix}_${hubKey}`;
  }

  /** The streams of the durable hubs, with the limits their history (or session retention) needs. */
  static streamSpecs(config: RelayConfig, subjects: Subjects): StreamSpec[] {
    return config.pubsub.hubs.filter((h) => h.durable).map((h) => PubSubService.streamSpec(config, subjects, h));
  }

  static streamSpec(config: RelayConfig, subjects: Subjects, h: HubConfig): StreamSpec {
    // Without history a stream still keeps what a session moving between edges may replay.
    const sessionAgeMs = Math.max(120_000, 2 * config.timeouts.sessionRetainMs);
    const key = asciiLowerCase(h.name);
    return {
      name: PubSubService.streamName(config, key),
      subjects: [subjects.hubEvents(key)],
      maxAgeMs: h.history?.maxAgeSeconds !== undefined ? Math.max(h.history.maxAgeSeconds * 1000, sessionAgeMs) : h.history ? 0 : sessionAgeMs,
      maxMessages: h.history?.maxMessages ?? -1,
      maxBytes: h.history?.maxBytes ?? -1,
    };
  }

  /** Durable hubs start reading their streams once JetStream is ready (keeps trying until it works or the service stops). */
  async startStreams(): Promise<void> {
    this.streamsStarted = true;
    for (const events of [...this.streams]) await this.startStream(events);
    // Each stream is started by now unless the service stopped (or a reload removed its hub).
    if (!this.stopped) this.streamsFollowed = true;
  }

  /** Other edge processes heard under this edge's node id, by boot id: when last. */
  private readonly nodeIdClashes = new Map<string, number>();

  /** What the edge cannot do while it serves the rest (/$relay/ready's `degraded`). */
  degraded(): string[] {
    const since = Date.now() - NODE_ID_CLASH_MEMORY_MS;
    for (const [boot, at] of this.nodeIdClashes) if (at < since) this.nodeIdClashes.delete(boot);
    if (this.nodeIdClashes.size === 0) return [];
    return [`another edge uses this nodeId (${this.config.nodeId}): pub/sub events between them are lost; give each edge its own`];
  }

  /**
   * Whether the durable hubs this edge started with read their streams: until
   * they do, a session cannot be recovered or moved here ("try again"), so the
   * edge is not ready. A hub added later by a reload does not take the edge out.
   */
  followsStreams(): boolean {
    return this.streams.length === 0 || this.streamsFollowed;
  }

  private async startStream(events: StreamEvents): Promise<void> {
    // One start at a time per stream (JetStream may become ready again while one is under way).
    const running = this.startingStreams.get(events);
    if (running) return running;
    const starting = (async () => {
      for (let attempt = 0; !this.stopped && !events.started && this.streams.includes(events); attempt++) {
        try {
          await events.start();
          break;
        } catch (err) {
          if (attempt % 20 === 0) this.log.warn({ event: 'jetstream.start_failed', err: (err as Error).message });
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    })();
    this.startingStreams.set(events, starting);
    try {
      await starting;
    } finally {
      this.startingStreams.delete(events);
    }
  }

  /** The keys a hub's tokens may be signed with: its access key, its secondary key, and during a rotation those they replaced. */
  accessKeys(hub: ClusterHub): string[] {
    return [...standingKeys(hub.config), ...this.retiredKeys.keys(hub.key)];
  }

  // --- reload ---------------------------------------------------------------------

  /**
   * Takes a reloaded config, which server/reload.ts has put in place of the
   * old one. New hubs open (a durable one gets its JetStream stream, created
   * now); a removed hub ends its connections (1008 ClosedByServer, saying
   * why) and leaves the bus. A kept hub takes its new access keys (a key
   * dropped still passes for rotationGraceSeconds) and upstream; connections made with
   * the old key stay, as a client's token is only checked when it connects.
   * Durability and history need a restart: returned as such.
   */
  reconfigure(config: RelayConfig, jetstream?: JetStreamAccess, now = Date.now()): { hubsAdded: string[]; hubsRemoved: string[]; keysRotated: string[] } {
    this.jetstream ??= jetstream;
    const out = { hubsAdded: [] as string[], hubsRemoved: [] as string[], keysRotated: [] as string[] };
    const listed = new Set(config.pubsub.hubs.map((h) => asciiLowerCase(h.name)));
    for (const [key, hub] of [...this.hubs]) {
      if (listed.has(key)) continue;
      for (const connection of [...hub.local.connections.values()]) this.lifecycle.end(connection, 'ClosedByServer', 'the hub was removed from the configuration');
      hub.handover.close();
      hub.durable?.close(true);
      hub.leaveBus();
      this.hubs.delete(key);
      this.retiredKeys.forget(key);
      const i = this.streams.findIndex((e) => e === hub.durable);
      if (i >= 0) this.streams.splice(i, 1);
      // Its stream is not made again on a reconnect (an operator may delete it).
      if (hub.durable) this.jetstream?.forgetStream(PubSubService.streamName(config, key));
      out.hubsRemoved.push(hub.name);
    }
    for (const next of config.pubsub.hubs) {
      const hub = this.hub(next.name);
      if (!hub) {
        const added = this.addHub(next);
        out.hubsAdded.push(added.name);
        const events = this.streams.find((e) => e === added.durable);
        if (events && this.jetstream) {
          const spec = PubSubService.streamSpec(config, this.subjects, next);
          void this.jetstream.addStream(spec).then(() => (this.streamsStarted ? this.startStream(events) : undefined));
        }
        continue;
      }
      const [was, keys] = [standingKeys(hub.config), standingKeys(next)];
      const replaced = was.filter((k) => !keys.includes(k));
      if (replaced.length > 0 || keys.some((k) => !was.includes(k))) {
        // Every key replaced so far is bounded by this rotation's grace (0: they all stop now), also when this
        // one only adds a key (a fresh secondary after a leaked one was dropped with a long grace). A key that
        // only moved (the secondary made primary) was never out of use: nothing to retire.
        const until = now + config.rotationGraceSeconds * 1000;
        this.retiredKeys.bound(hub.key, until);
        for (const key of replaced) this.retiredKeys.retire(hub.key, key, until);
        for (const key of keys) this.retiredKeys.restore(hub.key, key);
        out.keysRotated.push(hub.name);
      }
      hub.config.accessKey = next.accessKey;
      hub.config.secondaryAccessKey = next.secondaryAccessKey;
      hub.config.accessKeyFile = next.accessKeyFile;
      hub.config.secondaryAccessKeyFile = next.secondaryAccessKeyFile;
      hub.config.upstream = next.upstream;
      hub.config.eventHandlers = next.eventHandlers;
      this.events.forgetHandlers(hub.config);
    }
    // Handler URLs may have changed: abuse protection asks them again before their next event.
    this.revalidateEventHandlers();
    return out;
  }

  /** Largest REST body (limits.pubsubMessageBytes, which a reload may change). */
  get maxBodyBytes(): number {
    return this.config.limits.pubsubMessageBytes;
  }

  /** How long a REST body may stop arriving before the call is answered 408 (timeouts.headersMs, as for a request head). */
  get bodyIdleMs(): number {
    return this.config.timeouts.headersMs;
  }

  /** How long a REST answer may wait for a client that reads none of it (timeouts.senderStallMs, as for a relayed response). */
  get answerStallMs(): number {
    return this.config.timeouts.senderStallMs;
  }

  answerStalled(hub: string): void {
    this.log.info({ event: 'pubsub.rest_reader_stalled', hub, ms: this.config.timeouts.senderStallMs });
  }

  readonly historyReads = new CallLimit(MAX_HISTORY_READS, 0);

  restCallFailed(hub: string, err: unknown): void {
    this.log.error({ event: 'pubsub.rest_call_failed', hub, err: err instanceof Error ? err.message : String(err) });
  }

  bodyTooLarge(hub: string): void {
    this.metrics.limitRefused('pubsubMessageBytes');
    this.log.warn({ event: 'limit.reached', limit: 'pubsubMessageBytes', hub, via: 'rest' });
  }

  private stopped = false;

  hub(name: string): ClusterHub | undefined {
    return this.hubs.get(asciiLowerCase(name));
  }

  hostsFor(req: IncomingMessage): string[] {
    return tokenHostsFor(req, this.config.namespaceHosts, this.publicHost);
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, hubName: string, params: URLSearchParams, path: string): void {
    this.endpoint.handleUpgrade({ req, socket, head, hubName, params, path });
  }

  handleRest(req: IncomingMessage, res: ServerResponse, hubName: string, segments: string[], params: URLSearchParams, path: string, query: string): void {
    handleRestRequest(this, req, res, hubName, segments, params, path, query);
  }

  /** Attached client connections, and reliable sessions held for a dropped socket: of one hub, or of all. */
  openCounts(only?: ClusterHub): { attached: number; retained: number; behind: number } {
    let attached = 0;
    let retained = 0;
    let behind = 0;
    for (const hub of only ? [only] : this.hubs.values()) {
      for (const c of hub.local.connections.values()) {
        if (c.ended) continue;
        if (c.socket) attached++;
        else if (c.session) retained++;
        if (c.session?.behindAt !== undefined) behind++;
      }
    }
    return { attached, retained, behind };
  }

  // --- shutdown -------------------------------------------------------------------

  /**
   * Tells every client to reconnect elsewhere (close 1012). With other nodes
   * on the bus, reliable sessions stay here, still buffering events, until
   * the node the client reconnects to takes them over (session-handover.ts);
   * alone, there is nobody to hand them to and they end.
   */
  /** `deadline`: when the drain ends (a performance.now() time); connected/disconnected events are not sent after it. */
  beginShutdown(deadline: number): void {
    this.events.beginShutdown(deadline);
    this.lifecycle.shuttingDown = true;
    for (const hub of this.hubs.values()) {
      for (const connection of [...hub.local.connections.values()]) {
        if (connection.session && this.othersCanTake) connection.closeSocket('ShuttingDown');
        else this.lifecycle.end(connection, 'ShuttingDown');
      }
      // A durable hub's sessions need no taker here: their checkpoints are written, any edge takes them from there.
      void hub.durable?.releaseAll();
      hub.leaveRoster();
    }
  }

  /**
   * Reliable sessions still held here for a client to take elsewhere (while
   * another edge is on the hub's roster: alone, nobody could take them), or
   * given and not yet paged out by the taker.
   */
  /** Connections with connected or disconnected events still to send to the event handler. */
  systemEventsPending(): number {
    return this.events.systemEventsPending;
  }

  sessionsAwaitingHandover(): number {
    let held = 0;
    for (const hub of this.hubs.values()) {
      held += hub.handover.givingCount + (hub.durable?.pendingWrites ?? 0);
      if (!hub.hasOtherEdges()) continue;
      for (const c of hub.local.connections.values()) if (!c.ended && c.session) held++;
    }
    return held;
  }

  /** At the end of shutdown: ends what is left and leaves the bus. */
  finishShutdown(): void {
    this.stopped = true;
    this.lifecycle.stop();
    for (const hub of this.hubs.values()) {
      for (const connection of [...hub.local.connections.values()]) this.lifecycle.end(connection, 'ShuttingDown');
      hub.handover.close();
      hub.durable?.close();
      hub.leaveBus();
    }
    this.feed.close();
  }
}

/** The keys a hub accepts at all times: its access key, then its secondary key if it has one. */
function standingKeys(hub: HubConfig): string[] {
  return hub.secondaryAccessKey === undefined || hub.secondaryAccessKey === hub.accessKey ? [hub.accessKey] : [hub.accessKey, hub.secondaryAccessKey];
}
