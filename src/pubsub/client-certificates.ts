// The certificate a pub/sub client presented in the TLS handshake, as the
// connect event carries it (`clientCertificates: [{thumbprint, content}]`):
// the SHA-1 thumbprint in upper-case hex, as Azure writes it, and the
// certificate in PEM. As on Azure, the handler decides what it is worth: the
// relay passes what was presented (it checks it against listen.tls.caFile only
// for listeners, docs/security.md). Empty without listen.tls.requestCert.
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface ClientCertificate {
  thumbprint: string;
  content: string;
}

function pem(der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

export function clientCertificatesOf(socket: Socket): ClientCertificate[] {
  const tls = socket as Partial<TLSSocket>;
  if (typeof tls.getPeerCertificate !== 'function') return [];
  const cert = tls.getPeerCertificate(false);
  if (!cert || !cert.raw) return [];
  return [{ thumbprint: cert.fingerprint.replace(/:/g, '').toUpperCase(), content: pem(cert.raw) }];
}
