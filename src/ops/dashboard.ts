// The operator's dashboard (docs/dashboard.md): /$relay/dashboard serves a
// page made of plain files in ./dashboard/ (HTML, CSS, JavaScript, no
// framework, nothing fetched from elsewhere), read once at start-up. The page
// holds no data: it asks /$relay/stats (cluster-stats.ts) every second and
// reads /$relay/trace (trace-relay.ts), both behind a Manage token that the
// page keeps in memory. The page itself is served to anyone, with a
// Content-Security-Policy that lets it talk to this origin only.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { failEdgeRequest, refuseOtherMethods } from '../http/edge-errors.ts';
import { projectFile } from '../project-files.ts';
import { ClusterStats, type StatsSources } from './cluster-stats.ts';
import type { ManageAuth } from './manage-auth.ts';
import { TraceRelay } from './trace-relay.ts';

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'charts.js': 'text/javascript; charset=utf-8',
  'sas.js': 'text/javascript; charset=utf-8',
  'format.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
  'icon.svg': 'image/svg+xml',
};

const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // A page a listener serves from this origin cannot keep a hand on a dashboard it opens (hybrid/shared-origin.ts).
  'cross-origin-opener-policy': 'same-origin',
  'cache-control': 'no-cache',
};

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

/** The page's files, by the name after /$relay/dashboard/ ('' is the page). */
function loadAssets(): Map<string, Asset> {
  const dir = projectFile('src/ops/dashboard/');
  const assets = new Map<string, Asset>();
  for (const [file, type] of Object.entries(FILES)) {
    const body = readFileSync(new URL(file, dir));
    assets.set(file === 'index.html' ? '' : file, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
  }
  return assets;
}

export class OpsDashboard {
  readonly stats: ClusterStats;
  readonly trace: TraceRelay;
  private readonly assets = loadAssets();

  constructor(sources: StatsSources) {
    this.stats = new ClusterStats(sources);
    this.trace = new TraceRelay({ bus: sources.bus, subjects: sources.subjects, nodeId: sources.config.nodeId, trace: sources.metrics.trace, log: sources.log });
  }

  /** Answers /$relay/{name} when it is the dashboard's (the page, its files, stats, trace); false otherwise. */
  handle(name: string, req: IncomingMessage, res: ServerResponse, auth: ManageAuth): boolean {
    if (name === 'stats') {
      void this.stats.serve(req, res, auth);
      return true;
    }
    if (name === 'trace') {
      this.trace.serve(req, res, auth);
      return true;
    }
    if (name === 'dashboard' || name.startsWith('dashboard/')) {
      this.serveAsset(name.slice('dashboard/'.length), req, res);
      return true;
    }
    return false;
  }

  private serveAsset(file: string, req: IncomingMessage, res: ServerResponse): void {
    if (refuseOtherMethods(req, res, ['GET', 'HEAD'])) return;
    const asset = this.assets.get(file);
    if (!asset) return failEdgeRequest(res, 'NotFound');
    const headers = { ...SECURITY_HEADERS, etag: asset.etag };
    if (req.headers['if-none-match'] === asset.etag) {
      res.writeHead(304, headers).end();
      return;
    }
    res.writeHead(200, { ...headers, 'content-type': asset.type, 'content-length': String(asset.body.length) });
    res.end(req.method === 'HEAD' ? undefined : asset.body);
  }

  /**
   * At shutdown: ends the live trace's streams, which would hold the drain up.
   * The edge answers ops.stats until its bus closes, so a draining edge shows
   * as draining rather than silent.
   */
  close(): void {
    this.trace.close();
  }
}
