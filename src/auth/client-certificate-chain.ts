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
 *
 * The path is held to what a new handshake (OpenSSL's X509_verify_cert) asks
 * of it, since a listener kept here on a path the handshake refuses is one
 * whose every accept leg (a new TLS connection) is refused: each certificate
 * on it valid at `now`, each issuer a CA. Before, neither was asked (found by
 * review): a plain leaf (CA:FALSE) that a listed CA issued for a removed CA's
 * name and key linked the listener's certificate to the listed CA, and so did
 * an expired cross-certificate; OpenSSL takes neither ("invalid CA
 * certificate", "certificate has expired"), and at the handshake it had
 * preferred the removed CA, then in its store, to the link the peer sent.
 */
export function chainLeadsTo(socket: TLSSocket, cas: X509Certificate[], now = Date.now()): boolean {
  if (cas.length === 0) return false;
  let link: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  let cert = link?.raw ? new X509Certificate(link.raw) : undefined;
  if (!link || !cert || !validAt(cert, now)) return false;
  // Listed itself: the handshake (OpenSSL, without partial chains) trusts a listed certificate as the whole path when
  // it is self-signed, a CA or not (a pinned client certificate), and one that is not only through an issuer listed
  // too ("unable to verify the first certificate"), which the walk below tries. Before, any listed certificate counted
  // here, one the removed CA issued included. Self-signed is read as its subject naming its issuer and its own key
  // verifying it (OpenSSL reads the names and key ids alone; a pinned certificate passes both).
  const own = cert;
  if (cas.some((ca) => ca.fingerprint256 === own.fingerprint256) && own.subject === own.issuer && own.verify(own.publicKey)) return true;
  const seen = new Set<string>();
  while (link && cert && !seen.has(link.fingerprint256)) {
    seen.add(link.fingerprint256);
    for (const ca of cas) if (issues(ca, cert, now)) return true;
    link = link.issuerCertificate;
    const issuer: X509Certificate | undefined = link?.raw ? new X509Certificate(link.raw) : undefined;
    // What comes after a link that its issuer did not sign vouches for nothing, nor what comes after an issuer that
    // is not a CA (OpenSSL asks basicConstraints CA:TRUE, node's #ca, of every issuer under the listed one: "invalid
    // CA certificate") or is not valid now.
    if (!issuer || !issuer.ca || !validAt(issuer, now) || !cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) return false;
    cert = issuer;
  }
  return false;
}

/**
 * Whether `ca`, listed, issued and signed `cert` as OpenSSL's handshake would take it as the last of a path: valid
 * at `now` (OpenSSL checks the dates of the CA it trusts too), and a CA as X509_check_ca calls one there, which is
 * more than node's X509Certificate#ca (basicConstraints CA:TRUE): a root without basicConstraints that has a
 * keyUsage (checkIssued refuses one without keyCertSign), or a version 1 root (no extensions at all), also counts;
 * the handshake takes both as the last of a path, not as an issuer under it. One with CA:FALSE does not count.
 */
function issues(ca: X509Certificate, cert: X509Certificate, now: number): boolean {
  if (!validAt(ca, now) || !cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false;
  if (ca.ca) return true;
  const fields = caFieldsOf(ca.raw);
  if (!fields || fields.basicConstraints) return false;
  return fields.keyUsage || (fields.version === 1 && ca.subject === ca.issuer);
}

/**
 * A certificate's validity in unix ms: node prints its times as OpenSSL does ('Dec  7 10:00:00 2026 GMT', a fraction
 * of a second after the seconds when it has one), which Date.parse reads; NaN for what does not parse. The listening
 * certificate's checks (server/tls.ts) read them here too.
 */
export function validityOf(cert: X509Certificate): { from: number; to: number } {
  return { from: Date.parse(cert.validFrom), to: Date.parse(cert.validTo) };
}

/**
 * Valid at `now` as OpenSSL counts it (from notBefore, until before notAfter); a date that does not parse is not.
 * A new handshake refuses a path with a certificate not valid now (OpenSSL checks the dates of each, the listed CA's
 * too), so the recheck does too: it is what the listener's next accept leg would meet.
 */
function validAt(cert: X509Certificate, now: number): boolean {
  const { from, to } = validityOf(cert);
  return from <= now && now < to;
}

// The extensions X509_check_ca reads (RFC 5280 4.2.1.9 and 4.2.1.3), as their OIDs' content bytes.
const BASIC_CONSTRAINTS = Buffer.from([0x55, 0x1d, 0x13]);
const KEY_USAGE = Buffer.from([0x55, 0x1d, 0x0f]);

interface Tlv {
  tag: number;
  start: number;
  end: number;
}

/** The DER element at `at` within `end`; undefined when it does not fit (node parsed the certificate already). */
function tlvAt(der: Buffer, at: number, end: number): Tlv | undefined {
  if (at + 2 > end) return undefined;
  let length = der[at + 1];
  let start = at + 2;
  if (length & 0x80) {
    const bytes = length & 0x7f;
    if (bytes === 0 || bytes > 4 || start + bytes > end) return undefined;
    length = der.readUIntBE(start, bytes);
    start += bytes;
  }
  return start + length <= end ? { tag: der[at], start, end: start + length } : undefined;
}

/** The elements inside `outer`. */
function childrenOf(der: Buffer, outer: Tlv): Tlv[] | undefined {
  const out: Tlv[] = [];
  for (let at = outer.start; at < outer.end; ) {
    const tlv = tlvAt(der, at, outer.end);
    if (!tlv) return undefined;
    out.push(tlv);
    at = tlv.end;
  }
  return out;
}

/** A certificate's version and whether it has basicConstraints and keyUsage (RFC 5280 4.1: tbsCertificate's [0] and [3]). */
function caFieldsOf(der: Buffer): { version: number; basicConstraints: boolean; keyUsage: boolean } | undefined {
  const certificate = tlvAt(der, 0, der.length);
  const tbs = certificate && tlvAt(der, certificate.start, certificate.end);
  const fields = tbs && childrenOf(der, tbs);
  if (!fields) return undefined;
  const versionField = fields[0]?.tag === 0xa0 ? tlvAt(der, fields[0].start, fields[0].end) : undefined;
  const version = versionField ? der[versionField.end - 1] + 1 : 1;
  const wrapped = fields.find((f) => f.tag === 0xa3);
  const list = wrapped && tlvAt(der, wrapped.start, wrapped.end);
  const extensions = list ? childrenOf(der, list) : [];
  if (!extensions) return undefined;
  const oids: Buffer[] = [];
  for (const extension of extensions) {
    const oid = childrenOf(der, extension)?.[0];
    if (!oid || oid.tag !== 0x06) return undefined;
    oids.push(der.subarray(oid.start, oid.end));
  }
  return { version, basicConstraints: oids.some((o) => o.equals(BASIC_CONSTRAINTS)), keyUsage: oids.some((o) => o.equals(KEY_USAGE)) };
}
