// The relay's Prometheus metrics (prom-client), one registry per relay so
// several relays in one process (tests) keep their own. Counters are bumped
// where things happen; gauges of current state (connections, listeners per
// entity, retained sessions, bus round trip) are read when scraped. Names
// follow Prometheus conventions: edge_relay_*, _total for counters, base units.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { TraceSource, traceIncrements } from './trace.ts';

/**
 * Hybrid connections with an edge_relay_listeners series of their own: those with the most listeners; the rest are
 * summed under `entity=""`. Before, one series per entity with a listener: with autoCreate, listeners choose the names,
 * and 20,000 of them made each scrape 20,000 series (about 100 ms of a blocked event loop, 3 MB).
 */
export const LISTENER_SERIES_MAX = 1000;

/** Current state the gauges read at scrape time. */
export interface MetricsSources {
  connections(): Record<string, number>;
  listenersPerEntity(): Map<string, number>;
  sessionsRetained(): number;
  /** Reliable sessions of durable hubs behind the live flow, reading on from the stream (session-catch-up.ts). */
  sessionsBehind?(): number;
  bus(): { kind: string; connected: boolean };
  /** Bus round trip in seconds; undefined when it cannot be measured now. */
  busRoundTrip(): Promise<number | undefined>;
  /** With durable hubs: each hub stream and whether JetStream stores in it now. */
  jetstreamStoring?(): Map<string, boolean>;
  /** Log lines stderr did not take in time (log.bufferBytes), since start. */
  logLinesDropped?(): number;
}

export class RelayMetrics {
  /** The live trace's source on this edge (trace.ts): the domains reach it with the metrics. */
  readonly trace: TraceSource;
  readonly traceDropped: Counter<'reason'>;
  readonly registry = new Registry();
  readonly rendezvousOpened: Counter;
  readonly rendezvousFailed: Counter<'reason'>;
  readonly httpRequests: Counter<'status'>;
  readonly bytesRelayed: Counter<'direction'>;
  readonly pubsubEventsIn: Counter<'source'>;
  readonly pubsubEventsOut: Counter;
  readonly pubsubExpired: Counter<'where'>;
  readonly acks: Counter<'result'>;
  readonly handlerEvents: Counter<'event' | 'result'>;
  readonly slowConsumerCloses: Counter<'code'>;
  readonly sessionsRecovered: Counter<'from'>;
  readonly sessionsExpired: Counter;
  readonly recoveriesRefused: Counter<'reason'>;
  readonly publishToDeliver: Histogram;
  readonly limitRefusals: Counter<'limit'>;
  /** listen.proxyProtocol: connections closed before their PROXY header was read, by why. */
  readonly proxyProtocolRefusals: Counter<'reason'>;
  /** With listen.tls: when the certificate served now expires. */
  readonly certificateExpiry: Gauge<'certificate'>;
  private sources: MetricsSources | undefined;

  constructor(nodeId: string) {
    this.registry.setDefaultLabels({ node: nodeId });
    collectDefaultMetrics({ register: this.registry, prefix: 'edge_relay_' });
    const registers = [this.registry];
    const self = this;
    this.traceDropped = new Counter({
      name: 'edge_relay_trace_events_dropped_total',
      help: 'Live trace events dropped, by reason: rate (over the per-edge cap), bus (could not be sent to a viewer on another edge), viewer (the viewer did not keep up)',
      labelNames: ['reason'],
      registers,
    });
    this.trace = new TraceSource(nodeId, (reason, count = 1) => this.traceDropped.inc({ reason }, count));
    new Gauge({
      name: 'edge_relay_trace_viewers',
      help: 'Live trace viewers connected to this node',
      registers,
      collect() {
        this.set(self.trace.viewers);
      },
    });
    new Gauge({
      name: 'edge_relay_connections',
      help: 'Open connections by kind: listener (control channels), relayed_websocket (spliced pairs), http_request (relayed requests in flight), pubsub (attached pub/sub clients)',
      labelNames: ['kind'],
      registers,
      collect() {
        this.reset();
        for (const [kind, n] of Object.entries(self.sources?.connections() ?? {})) this.set({ kind }, n);
      },
    });
    new Gauge({
      name: 'edge_relay_listeners',
      help: 'Listener control channels on this node per hybrid connection',
      labelNames: ['entity'],
      registers,
      collect() {
        this.reset();
        const counts = [...(self.sources?.listenersPerEntity() ?? [])];
        // Listeners name their entities (autoCreate): past the cap, one series for the rest, so a scrape stays bounded.
        if (counts.length > LISTENER_SERIES_MAX) {
          counts.sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0));
          let rest = 0;
          for (const [, n] of counts.splice(LISTENER_SERIES_MAX)) rest += n;
          this.set({ entity: '' }, rest);
        }
        for (const [entity, n] of counts) this.set({ entity }, n);
      },
    });
    new Gauge({
      name: 'edge_relay_pubsub_sessions_retained',
      help: 'Reliable pub/sub sessions kept for a client that dropped its socket',
      registers,
      collect() {
        this.set(self.sources?.sessionsRetained() ?? 0);
      },
    });
    new Gauge({
      name: 'edge_relay_pubsub_sessions_behind',
      help: "Reliable sessions of durable hubs behind the live flow (their buffer was full): they read on from the hub's stream as their clients acknowledge",
      registers,
      collect() {
        this.set(self.sources?.sessionsBehind?.() ?? 0);
      },
    });
    new Gauge({
      name: 'edge_relay_bus_connected',
      help: 'Whether this node is connected to its bus (the in-process bus always is)',
      labelNames: ['bus'],
      registers,
      collect() {
        this.reset();
        const bus = self.sources?.bus();
        if (bus) this.set({ bus: bus.kind }, bus.connected ? 1 : 0);
      },
    });
    new Gauge({
      name: 'edge_relay_jetstream_storing',
      help: "Per durable hub stream: 1 while JetStream stores this node's writes to it, 0 while it is not ready, the bus is not connected, or a write to the stream gave up unanswered (no leader)",
      labelNames: ['stream'],
      registers,
      collect() {
        this.reset();
        for (const [stream, storing] of self.sources?.jetstreamStoring?.() ?? []) this.set({ stream }, storing ? 1 : 0);
      },
    });
    new Gauge({
      name: 'edge_relay_bus_round_trip_seconds',
      help: 'Round trip to the NATS bus, measured at scrape time (absent on the in-process bus or while disconnected)',
      labelNames: ['bus'],
      registers,
      async collect() {
        this.reset();
        const bus = self.sources?.bus();
        const rtt = await self.sources?.busRoundTrip();
        if (bus && rtt !== undefined) this.set({ bus: bus.kind }, rtt);
      },
    });
    let logLinesCounted = 0;
    new Counter({
      name: 'edge_relay_log_lines_dropped_total',
      help: 'Log lines dropped because stderr did not take them while log.bufferBytes of them waited',
      registers,
      collect() {
        const dropped = self.sources?.logLinesDropped?.() ?? 0;
        if (dropped > logLinesCounted) this.inc(dropped - logLinesCounted);
        logLinesCounted = dropped;
      },
    });
    this.rendezvousOpened = new Counter({ name: 'edge_relay_rendezvous_opened_total', help: 'Relayed WebSocket connections spliced', registers });
    this.rendezvousFailed = new Counter({
      name: 'edge_relay_rendezvous_failed_total',
      help: 'Relayed WebSocket connections that did not open, by reason (the relay error code)',
      labelNames: ['reason'],
      registers,
    });
    this.httpRequests = new Counter({ name: 'edge_relay_http_requests_total', help: 'Relayed HTTP requests by the status the sender got', labelNames: ['status'], registers });
    this.bytesRelayed = new Counter({
      name: 'edge_relay_bytes_relayed_total',
      help: 'Payload bytes through relayed WebSockets (counted when each closes), by direction',
      labelNames: ['direction'],
      registers,
    });
    this.pubsubEventsIn = new Counter({
      name: 'edge_relay_pubsub_events_in_total',
      help: 'Pub/sub events this node delivered to its members, by where they were published: local (a client or REST call on this node) or bus (another node)',
      labelNames: ['source'],
      registers,
    });
    this.pubsubEventsOut = new Counter({ name: 'edge_relay_pubsub_events_out_total', help: 'Pub/sub events delivered to clients on this node (one per recipient)', registers });
    this.pubsubExpired = new Counter({
      name: 'edge_relay_pubsub_expired_total',
      help: 'Pub/sub messages not sent because their messageTtlSeconds had passed: where=event (one reaching this node too late, sent to nobody) or held (a message a reliable session held and did not send, once per session)',
      labelNames: ['where'],
      registers,
    });
    this.acks = new Counter({ name: 'edge_relay_pubsub_acks_total', help: 'Acks sent to pub/sub clients, by result (success or the error name)', labelNames: ['result'], registers });
    this.handlerEvents = new Counter({
      name: 'edge_relay_pubsub_handler_events_total',
      help: 'Events sent to pub/sub event handlers, by event (connect, connected, disconnected, user) and result (ok, refused, failed, timeout)',
      labelNames: ['event', 'result'],
      registers,
    });
    this.slowConsumerCloses = new Counter({
      name: 'edge_relay_pubsub_slow_consumer_closes_total',
      help: 'Pub/sub connections closed for not keeping up, by code',
      labelNames: ['code'],
      registers,
    });
    this.sessionsRecovered = new Counter({
      name: 'edge_relay_pubsub_sessions_recovered_total',
      help: 'Reliable sessions a reconnecting client recovered, by where the session was held',
      labelNames: ['from'],
      registers,
    });
    this.sessionsExpired = new Counter({
      name: 'edge_relay_pubsub_sessions_expired_total',
      help: 'Reliable sessions dropped because their client did not come back within timeouts.sessionRetainMs',
      registers,
    });
    this.recoveriesRefused = new Counter({
      name: 'edge_relay_pubsub_recoveries_refused_total',
      help: 'Reconnects with a connection id that were refused, by reason: SessionNotFound (gone, or a wrong token), ShuttingDown (try another edge), SessionUnavailable (try again) or ClosedByServer (a reload removed the hub meanwhile, or a REST close of it, or of the connections of its user, of a group it was in or of the hub, reached the session while no edge held it)',
      labelNames: ['reason'],
      registers,
    });
    this.publishToDeliver = new Histogram({
      name: 'edge_relay_pubsub_publish_to_deliver_seconds',
      help: 'From the publishing node accepting an event to this node handing it to its recipients (once per event per node)',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.limitRefusals = new Counter({ name: 'edge_relay_limit_refusals_total', help: 'Work refused because a configured limit was reached, by limit', labelNames: ['limit'], registers });
    this.proxyProtocolRefusals = new Counter({
      name: 'edge_relay_proxy_protocol_refused_total',
      help: 'With listen.proxyProtocol: connections closed before a valid PROXY header, by reason (untrusted_peer, invalid, timeout)',
      labelNames: ['reason'],
      registers,
    });
    this.certificateExpiry = new Gauge({
      name: 'edge_relay_tls_certificate_expiry_timestamp_seconds',
      help: 'When the TLS certificate the relay serves now expires (certificate="server"), and the first certificate of its file to expire, the intermediates sent with it included, not one expired already when read (certificate="chain"); unix seconds; absent without listen.tls',
      labelNames: ['certificate'],
      registers,
    });
    // Traced where they are counted, so that no call site needs a second line.
    traceIncrements(this.handlerEvents, this.trace, (l) => (l.result === 'ok' ? undefined : ['handler.failed', { detail: String(l.event), code: String(l.result) }]));
  }

  /**
   * Counts (and traces) a request or message refused at `limit`. `beforeAuthorization`: refused before its token
   * was read, as anyone can be: traced under the refusals' own cap (telemetry/trace.ts).
   */
  limitRefused(limit: string, beforeAuthorization = false): void {
    this.limitRefusals.inc({ limit });
    if (!this.trace.on) return;
    if (beforeAuthorization) this.trace.emitRefusal('limit.refused', { code: limit });
    else this.trace.emit('limit.refused', { code: limit });
  }

  /** Where the gauges read current state (set once the services exist). */
  watch(sources: MetricsSources): void {
    this.sources = sources;
  }

  /** The text exposition and its content type. */
  async expose(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
