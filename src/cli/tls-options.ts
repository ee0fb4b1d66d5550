// The TLS options `bridge`, `pub` and `sub` share, for a relay on https://
// or wss:// whose certificate the system does not trust (a private CA), and
// for a relay that asks listeners for a client certificate
// (listen.tls.requireClientCert). Without them Node's own CA list applies
// (NODE_EXTRA_CA_CERTS adds to it); certificate checks are never turned off.
import { readFileSync } from 'node:fs';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createSecureContext, rootCertificates as tlsRootCertificates } from 'node:tls';

export const TLS_OPTIONS = {
  ca: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
} as const;

export const TLS_HELP = `  --ca FILE            PEM CA certificates to trust for an https:// or wss:// relay
                       (added to Node's own list and NODE_EXTRA_CA_CERTS)
  --tls-cert FILE      PEM client certificate, for a relay that asks for one
  --tls-key FILE       its private key`;

/** What ws and https take to trust the CA and present the certificate. */
export interface ClientTls {
  ca?: Buffer[];
  cert?: Buffer;
  key?: Buffer;
}

/** Reads the files named by the options; a string is what is wrong with them. */
export function readClientTls(values: { ca?: string; 'tls-cert'?: string; 'tls-key'?: string }): ClientTls | string {
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) return '--tls-cert and --tls-key go together';
  const read = (flag: string, file: string): Buffer | string => {
    try {
      return readFileSync(file);
    } catch (err) {
      return `${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
    }
  };
  const out: ClientTls = {};
  if (values.ca !== undefined) {
    const ca = read('--ca', values.ca);
    if (typeof ca === 'string') return ca;
    // A file with no certificate (empty, a key, DER) trusts nothing more: every connection would fail alike.
    if (!holdsCertificate(ca)) return `--ca ${values.ca}: no certificate in it (PEM)`;
    // Node's own CAs stay trusted: `ca` replaces the list, so it gets them back, and those of
    // NODE_EXTRA_CA_CERTS, which Node had added to it (before, --ca dropped them).
    out.ca = [ca, ...rootCertificates(), ...extraCertificates()];
  }
  if (values['tls-cert'] !== undefined) {
    const cert = read('--tls-cert', values['tls-cert']);
    if (typeof cert === 'string') return cert;
    const key = read('--tls-key', values['tls-key']!);
    if (typeof key === 'string') return key;
    // A certificate and key that do not belong together fail every connection alike: said once here (exit 2),
    // not retried for good by `sub` and `bridge`. (OpenSSL takes an RSA certificate with an EC key without a word.)
    try {
      createSecureContext({ cert, key });
      if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) return '--tls-cert/--tls-key: the key is not the certificate\'s';
    } catch (err) {
      return `--tls-cert/--tls-key: ${(err as Error).message}`;
    }
    out.cert = cert;
    out.key = key;
  }
  return out;
}

/** Whether a CA file holds at least one PEM certificate Node can read. */
function holdsCertificate(file: Buffer): boolean {
  const blocks = file.toString('latin1').match(/-----BEGIN (?:TRUSTED |X509 )?CERTIFICATE-----[\s\S]+?-----END (?:TRUSTED |X509 )?CERTIFICATE-----/g) ?? [];
  return blocks.some((pem) => {
    try {
      createSecureContext({ ca: pem });
      return true;
    } catch {
      return false;
    }
  });
}

function rootCertificates(): Buffer[] {
  return tlsRootCertificates.map((pem) => Buffer.from(pem));
}

/** The file NODE_EXTRA_CA_CERTS names, as Node reads it at start; nothing when unset or unreadable (Node warned then). */
function extraCertificates(): Buffer[] {
  const file = process.env.NODE_EXTRA_CA_CERTS;
  if (!file) return [];
  try {
    return [readFileSync(file)];
  } catch {
    return [];
  }
}
