// Prometheus in practice (docs/security.md, "Prometheus"): the scrape config
// printed in the docs is read here, and the relay is scraped over TLS with
// the Authorization header that config makes Prometheus send: a static
// bearer token from metrics.bearerTokenFile (re-read on reload), or a
// long-lived Manage SAS token with type SharedAccessSignature.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { createSasToken } from '../../src/auth/sas-token.ts';
import { loadConfig } from '../../src/config/load.ts';
import { clientTls, makePki } from '../helpers/certs.ts';
import { httpRequest } from '../helpers/http.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startTestRelay, testConfig } from '../helpers/relay.ts';

interface ScrapeConfig {
  scheme: string;
  metrics_path: string;
  authorization: { type?: string; credentials_file: string };
  tls_config: { ca_file: string };
}

/** The scrape config block of docs/security.md. */
function documentedScrapeConfig(): ScrapeConfig {
  const page = readFileSync(new URL('../../docs/security.md', import.meta.url), 'utf8');
  const block = /<!-- scrape-config:[^>]*-->\n```yaml\n([\s\S]*?)```/.exec(page);
  assert.ok(block, 'docs/security.md has the marked scrape config');
  return (parse(block[1]) as { scrape_configs: ScrapeConfig[] }).scrape_configs[0];
}

/** The Authorization header Prometheus sends for `authorization`: "<type or Bearer> <credentials file, trimmed>". */
function prometheusHeader(auth: ScrapeConfig['authorization'], credentialsFile: string): string {
  return `${auth.type ?? 'Bearer'} ${readFileSync(credentialsFile, 'utf8').trim()}`;
}

describe('Prometheus scraping /$relay/metrics', () => {
  it('works with the documented scrape config: a bearer token file shared with the relay, over https, rotated on reload', async (t) => {
    const scrape = documentedScrapeConfig();
    assert.equal(scrape.scheme, 'https');
    assert.equal(scrape.metrics_path, '/$relay/metrics');
    assert.equal(scrape.authorization.type, undefined, 'Bearer, the default type');
    const pki = makePki(t);
    const relayToken = join(pki.dir, 'metrics.token');
    const prometheusToken = join(pki.dir, 'prometheus.token');
    writeFileSync(relayToken, 'first-token-0123456789abcdef0123456789\n');
    writeFileSync(prometheusToken, 'first-token-0123456789abcdef0123456789\n');
    const overrides = {
      listen: { host: '127.0.0.1', port: 0, tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile } },
      metrics: { requireManage: true, bearerTokenFile: relayToken },
    };
    const file = join(pki.dir, 'relay.json');
    writeFileSync(file, JSON.stringify(testConfig(overrides)));
    const relay = await startTestRelay(t, overrides, { loadConfig: () => loadConfig(file, {}, {}) });
    const url = `${relay.url}${scrape.metrics_path}`;
    const tls = clientTls(pki);
    const scrapeWith = (authorization?: string) => httpRequest(url, { tls, headers: authorization ? { authorization } : {} });

    const ok = await scrapeWith(prometheusHeader(scrape.authorization, prometheusToken));
    assert.equal(ok.status, 200);
    assert.match(String(ok.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(String(ok.body), /^edge_relay_connections\{/m);
    assert.match(String(ok.body), /^edge_relay_tls_certificate_expiry_timestamp_seconds\{certificate="server",node="[^"]+"\} \d{10}$/m);
    assert.equal((await scrapeWith()).status, 401);
    assert.equal((await scrapeWith('Bearer wrong-token-0123456789abcdef0123456789')).status, 401);

    // Rotation: both files change; the relay reads its own on reload.
    writeFileSync(relayToken, 'second-token-0123456789abcdef0123456789\n');
    writeFileSync(prometheusToken, 'second-token-0123456789abcdef0123456789\n');
    assert.equal((await scrapeWith('Bearer first-token-0123456789abcdef0123456789')).status, 200, 'until the reload');
    assert.equal(relay.reload('signal').ok, true);
    assert.equal((await scrapeWith(prometheusHeader(scrape.authorization, prometheusToken))).status, 200);
    assert.equal((await scrapeWith('Bearer first-token-0123456789abcdef0123456789')).status, 401);
  });

  it('works with a long-lived Manage SAS token as credentials of type SharedAccessSignature', async (t) => {
    const pki = makePki(t);
    const relay = await startTestRelay(t, { listen: { host: '127.0.0.1', port: 0, tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile } } });
    const token = createSasToken(`http://127.0.0.1/`, ROOT_KEY_NAME, ROOT_KEY, Math.floor(Date.now() / 1000) + 365 * 86400);
    const credentials = join(pki.dir, 'prometheus.sas');
    writeFileSync(credentials, `${token.replace(/^SharedAccessSignature /, '')}\n`);
    const res = await httpRequest(`${relay.url}/$relay/metrics`, {
      tls: clientTls(pki),
      headers: { authorization: prometheusHeader({ type: 'SharedAccessSignature', credentials_file: credentials }, credentials) },
    });
    assert.equal(res.status, 200);
  });
});
