// Whether a TLS peer's certificate chain still leads to one of a set of CAs:
// a listener's client certificate checked again after listen.tls.caFile
// changed (the TLS handshake checked it only against the CAs of its time).
import { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';

// Under each label OpenSSL reads as a CA (the handshake trusts it): before, only CERTIFICATE was seen here, and a
// caFile of TRUSTED or X509 CERTIFICATE blocks that changed at all closed every listener as revoked (found by review).
const PEM_CERTIFICATE = /-----BEGIN ((?:X509 |TRUSTED )?CERTIFICATE)-----[^-]+-----END \1-----/g;

/** The certificates of a PEM bundle (what is not one is skipped: the file was checked when it was read). */
export function certificatesOf(pem: Buffer | undefined): X509Certificate[] {
  if (!pem) return [];
  const out: X509Certificate[] = [];
  for (const block of pem.toString('latin1').match(PEM_CERTIFICATE) ?? []) {
    try {
      out.push(new X509Certificate(block));
    } catch {
      // Not a certificate after all.
    }
  }
  return out;
}

/**
 * True when the certificate `socket`'s peer presented, or one of the issuers
 * in its chain (as sent, and as the handshake completed it), is one of `cas`
 * or was issued and signed by one of them, each link up to it signed by the
 * next. Node links the chain a peer sent by names and key identifiers alone,
 * not by signatures: before, a listener whose certificate only a removed CA
 * signed kept its place by sending, after it, a made-up CA named as that one
 * and a listed CA's certificate (public), which matched by fingerprint (found
 * by review).
 */
export function chainLeadsTo(socket: TLSSocket, cas: X509Certificate[]): boolean {
  if (cas.length === 0) return false;
  let link: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  let cert = link?.raw ? new X509Certificate(link.raw) : undefined;
  while (link && cert && !seen.has(link.fingerprint256)) {
    seen.add(link.fingerprint256);
    for (const ca of cas) {
      if (cert.fingerprint256 === ca.fingerprint256) return true;
      if (cert.checkIssued(ca) && cert.verify(ca.publicKey)) return true;
    }
    link = link.issuerCertificate;
    const issuer: X509Certificate | undefined = link?.raw ? new X509Certificate(link.raw) : undefined;
    // What comes after a link that its issuer did not sign vouches for nothing.
    if (!issuer || !cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) return false;
    cert = issuer;
  }
  return false;
}
