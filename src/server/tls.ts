// TLS on the relay's one port (listen.tls, docs/security.md): the PEM files
// read and checked, and kept current without a restart. A certificate is
// re-read on SIGHUP and when a file in the folder of any of the files
// changes: the folder is watched, not the file, since tools replace
// certificates by renaming a new file over the old one (certbot, Kubernetes'
// symlink swap of a mounted secret) and a watch on the old inode would never
// fire again (nor would a watch on a folder replaced whole: one that is
// another folder at the same path is watched anew). Events are debounced,
// and a set whose bytes did not change is not applied again. A new set is
// applied with server.setSecureContext, which open connections do not
// notice; a bad one (unreadable, not PEM, expired, a key of another type, a
// key that does not match) is refused with a log line and the old one stays.
// One not valid yet (a renewal issued by a CA whose clock runs ahead, or
// staged early) is refused the same way, since clients would refuse it, and
// read again when it becomes valid. The chain the file sends after it is
// checked too, but only warned about (`tls.chain_certificate_invalid`): an
// expired intermediate is sometimes sent on purpose, a cross-signature for old
// clients that newer ones skip (Let's Encrypt's chain in 2021), and the
// earliest expiry in the file is a metric of its own (`certificate="chain"`).
// Intermediates OpenSSL adds from listen.tls.caFile (a certFile holding the
// server's certificate alone) are not checked.
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import type { ServerOptions } from 'node:http';
import { createServer, type Server } from 'node:https';
import { dirname } from 'node:path';
import { createSecureContext, type SecureContextOptions, type TLSSocket } from 'node:tls';
import { certificatesOf, validityOf } from '../auth/client-certificate-chain.ts';
import { ConfigError } from '../config/errors.ts';
import type { ListenTlsConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';

/**
 * Quiet time after the last change in a watched folder before the files are
 * read: a renewal writes the certificate and the key one after the other.
 */
const CHANGE_DEBOUNCE_MS = 500;
/** A certificate not valid yet is read again this long after its start (the whole second it names has passed). */
const VALID_FROM_MARGIN_MS = 1000;
/** How often a watched folder that was removed is looked for again (it is watched again once it is back). */
const FOLDER_LOOK_AGAIN_MS = 1000;
/** The longest wait for a certificate to become valid before its files are read again (node's timers stop at ~24.8 days). */
const VALID_FROM_WAIT_CAP_MS = 86_400_000;

/** A certificate whose validity has not begun: refused like a bad one, with when it begins. */
export class CertificateNotYetValid extends ConfigError {
  constructor(
    message: string,
    /** When the certificate becomes valid, unix ms. */
    readonly validFrom: number,
  ) {
    super(message);
  }
}

/** A certificate of the chain sent after the server's that a client checking it would refuse, and why. */
export interface ChainProblem {
  subject: string;
  problem: 'expired' | 'not valid yet';
  /** When it expired, or becomes valid (ISO). */
  at: string;
}

export interface CertificateSet {
  context: SecureContextOptions;
  /** The server certificate's expiry, unix seconds. */
  notAfter: number;
  /** The earliest expiry of the certificates in the file, the chain sent after the server's included, but not one expired when read (unix seconds). */
  chainNotAfter: number;
  /** The chain's certificates that are expired or not valid yet (served all the same; see the head of this file). */
  chainProblems: ChainProblem[];
  subject: string;
  /** SHA-256 of the certificate, as `openssl x509 -fingerprint -sha256` prints it. */
  fingerprint: string;
  /** The files' bytes, to tell a real change from a touched file. */
  digest: string;
  /** listen.tls.caFile's bytes (the CAs client certificates are checked against), when it is set. */
  ca?: Buffer;
}

function readPem(file: string, key: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ConfigError(`${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** The bytes of the files listen.tls names. */
interface PemFiles {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
}

function readPemFiles(tls: ListenTlsConfig): PemFiles {
  const cert = readPem(tls.certFile, 'listen.tls.certFile');
  const key = readPem(tls.keyFile, 'listen.tls.keyFile');
  return { cert, key, ...(tls.caFile ? { ca: readPem(tls.caFile, 'listen.tls.caFile') } : {}) };
}

function digestOf({ cert, key, ca }: PemFiles): string {
  return createHash('sha256').update(cert).update(key).update(ca ?? '').digest('hex');
}

/** Reads and checks the files of listen.tls; throws ConfigError naming the key that is wrong. */
export function readCertificates(tls: ListenTlsConfig, now = Date.now()): CertificateSet {
  return certificateSetOf(tls, readPemFiles(tls), now);
}

/** A PEM certificate block, under each label OpenSSL reads one from (its label, group 1). */
const PEM_CERTIFICATE = /-----BEGIN ((?:X509 |TRUSTED )?CERTIFICATE)-----[^-]+-----END \1-----/g;

/**
 * The certificates of a PEM file as OpenSSL serves them: the server's (the first block, under any certificate
 * label), then the chain sent with it (the later blocks labelled CERTIFICATE or X509 CERTIFICATE; a TRUSTED one
 * after the first is skipped, as OpenSSL skips it).
 */
function certificatesIn(tls: ListenTlsConfig, cert: Buffer): [X509Certificate, ...X509Certificate[]] {
  try {
    const server = new X509Certificate(cert);
    const later = [...cert.toString('latin1').matchAll(PEM_CERTIFICATE)].slice(1).filter((m) => m[1] !== 'TRUSTED CERTIFICATE');
    return [server, ...later.map((m) => new X509Certificate(Buffer.from(m[0], 'latin1')))];
  } catch (err) {
    throw new ConfigError(`listen.tls.certFile: ${tls.certFile} is not a PEM certificate: ${(err as Error).message}`);
  }
}

/** PEM labels of an encrypted private key (PKCS#8, and the traditional form's header). */
const ENCRYPTED_KEY = /-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type: 4,ENCRYPTED/m;

/**
 * The key of keyFile. Read on its own first: createSecureContext's error for a file with no usable key (empty, the
 * certificate named twice, a key truncated mid-write) is OpenSSL's "DECODER routines::unsupported" or "bad decrypt",
 * with no word of a key, and was put on listen.tls.certFile (found by the TLS review).
 */
function privateKeyIn(tls: ListenTlsConfig, key: Buffer): KeyObject {
  // listen.tls has no passphrase to give: said as such rather than as OpenSSL's "bad decrypt".
  if (ENCRYPTED_KEY.test(key.toString('latin1'))) {
    throw new ConfigError(`listen.tls.keyFile: the key in ${tls.keyFile} is encrypted, and no passphrase can be given: store it decrypted (openssl pkey -in KEY -out KEY.plain), readable by this user only`);
  }
  try {
    return createPrivateKey(key);
  } catch (err) {
    throw new ConfigError(`listen.tls.keyFile: ${tls.keyFile} holds no PEM private key: ${(err as Error).message}`);
  }
}

/**
 * A folder's device, inode and birth time, or undefined when it is not there. The birth time tells a folder made
 * again from the one removed: ext4 gives the freed inode number out again at once (rm -r, mkdir), and with device
 * and inode alone a folder made again was taken for the one watched, its renewals unseen.
 */
function identityOf(folder: string): string | undefined {
  try {
    const stat = statSync(folder);
    return `${stat.dev}:${stat.ino}:${stat.birthtimeMs}`;
  } catch {
    return undefined;
  }
}

const subjectOf = (x509: X509Certificate) => x509.subject.replace(/\n/g, ', ');

/** The chain's certificates a client would refuse at `now`. */
function chainProblemsOf(chain: X509Certificate[], now: number): ChainProblem[] {
  const problems: ChainProblem[] = [];
  for (const x509 of chain) {
    const { from: validFrom, to: notAfter } = validityOf(x509);
    if (notAfter <= now) problems.push({ subject: subjectOf(x509), problem: 'expired', at: new Date(notAfter).toISOString() });
    else if (validFrom > now) problems.push({ subject: subjectOf(x509), problem: 'not valid yet', at: new Date(validFrom).toISOString() });
  }
  return problems;
}

/** Checks the files' bytes; throws ConfigError naming the key that is wrong. */
function certificateSetOf(tls: ListenTlsConfig, files: PemFiles, now: number): CertificateSet {
  const { cert, key, ca } = files;
  const [x509, ...chain] = certificatesIn(tls, cert);
  const notAfter = Math.floor(validityOf(x509).to / 1000);
  if (notAfter * 1000 <= now) throw new ConfigError(`listen.tls.certFile: the certificate in ${tls.certFile} expired on ${x509.validTo}`);
  const privateKey = privateKeyIn(tls, key);
  const context: SecureContextOptions = { cert, key, minVersion: tls.minVersion, ...(ca ? { ca } : {}) };
  try {
    // Throws on a key that does not match the certificate.
    createSecureContext(context);
  } catch (err) {
    const what = /key/i.test((err as Error).message) ? 'listen.tls.keyFile' : tls.caFile ? 'listen.tls.caFile' : 'listen.tls.certFile';
    throw new ConfigError(`${what}: ${(err as Error).message}`);
  }
  // OpenSSL takes a key of another type than the certificate's (an EC key beside an RSA certificate: a renewal that
  // changes the key type, its key written before its certificate) without a word, and then fails every handshake:
  // the key is checked against the certificate itself (found by the TLS review).
  if (!x509.checkPrivateKey(privateKey)) {
    throw new ConfigError(`listen.tls.keyFile: the key in ${tls.keyFile} is not the certificate's in ${tls.certFile}`);
  }
  // createSecureContext takes a CA file with no certificate in it (garbage, a key) without a word, and every client
  // certificate was then refused, every handshake with requireClientCert "all" (found by review).
  if (ca && certificatesOf(ca).length === 0) throw new ConfigError(`listen.tls.caFile: no PEM certificate in ${tls.caFile}`);
  // Last: a set refused for this alone is good otherwise, and is read again when it becomes valid.
  const { from: validFrom } = validityOf(x509);
  if (validFrom > now) {
    throw new CertificateNotYetValid(`listen.tls.certFile: the certificate in ${tls.certFile} is not valid before ${x509.validFrom} (clients would refuse it; is a clock wrong?)`, validFrom);
  }
  const digest = digestOf(files);
  // Not one expired already when read (a cross-signature sent on purpose would hold the metric in the past for
  // good): that one is warned of, and one that runs out while served shows.
  const expiries = chain.map((c) => Math.floor(validityOf(c).to / 1000));
  const chainNotAfter = Math.min(notAfter, ...expiries.filter((at) => at * 1000 > now));
  const chainProblems = chainProblemsOf(chain, now);
  return { context, notAfter, chainNotAfter, chainProblems, subject: subjectOf(x509), fingerprint: x509.fingerprint256, digest, ...(ca ? { ca } : {}) };
}

/** Warns of each certificate of the chain a client checking it would refuse (served all the same). */
function warnOfChain(log: Logger, set: CertificateSet): void {
  for (const problem of set.chainProblems) log.warn({ event: 'tls.chain_certificate_invalid', served: set.fingerprint, ...problem });
}

export type CertificateReason = 'start' | 'signal' | 'file' | 'config' | 'now-valid';

/** Keeps the server's certificates current: on demand (SIGHUP, reload) and when their files change. */
export class CertificateKeeper {
  private watchers: FSWatcher[] = [];
  /**
   * Each watched folder's identity (identityOf) when its watch began. A watch follows the folder, not its
   * path: one renamed in over it, or removed and made again, is watched anew (found by the TLS review: before, the
   * old folder's last event took the first renewal and every later one went unseen, without a word).
   */
  private watched = new Map<string, string | undefined>();
  /** Looks again for a watched folder that was removed. */
  private folderTimer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  /** Reads the files again when a certificate refused as not valid yet becomes valid. */
  private validFromTimer: NodeJS.Timeout | undefined;
  private closed = false;

  /**
   * Called when a new set changes the client CAs (listen.tls.caFile's bytes): connections that proved a
   * certificate under the old ones are the server's to check again (listeners: hybrid-service.ts).
   */
  onClientCasChanged: ((ca: Buffer | undefined) => void) | undefined;

  /** A copy: the live config's object is changed in place on reload, and retarget() compares against what this keeper serves. */
  private tls: ListenTlsConfig;

  constructor(
    tls: ListenTlsConfig,
    /** What is served now. */
    public current: CertificateSet,
    private readonly apply: (set: CertificateSet) => void,
    private readonly log: Logger,
  ) {
    this.tls = { ...tls };
    this.watchFolders();
  }

  /** Reads the files again; applies them when they changed and are good. Returns false when they were refused. */
  reload(reason: CertificateReason): boolean {
    let next: CertificateSet;
    if (this.validFromTimer) clearTimeout(this.validFromTimer);
    this.validFromTimer = undefined;
    try {
      next = readCertificates(this.tls);
    } catch (err) {
      const retryAt = err instanceof CertificateNotYetValid ? this.readAgainWhenValid(err.validFrom) : undefined;
      this.log.error({ event: 'tls.certificate_refused', reason, err: (err as Error).message, kept: this.current.fingerprint, ...(retryAt ? { retryAt } : {}) });
      return false;
    }
    if (next.digest === this.current.digest) return true;
    this.apply(next);
    const casChanged = !(next.ca ?? Buffer.alloc(0)).equals(this.current.ca ?? Buffer.alloc(0));
    this.current = next;
    this.log.info({ event: 'tls.certificate_loaded', reason, subject: next.subject, fingerprint: next.fingerprint, notAfter: new Date(next.notAfter * 1000).toISOString() });
    warnOfChain(this.log, next);
    if (casChanged) this.onClientCasChanged?.(next.ca);
    return true;
  }

  /** Reads the files again once a certificate valid from `validFrom` (unix ms) is: when, as an ISO date. */
  private readAgainWhenValid(validFrom: number): string {
    const wait = Math.min(Math.max(0, validFrom - Date.now()) + VALID_FROM_MARGIN_MS, VALID_FROM_WAIT_CAP_MS);
    this.validFromTimer = setTimeout(() => {
      this.validFromTimer = undefined;
      if (!this.closed) this.reload('now-valid');
    }, wait);
    this.validFromTimer.unref();
    return new Date(Date.now() + wait).toISOString();
  }

  /**
   * What is wrong with the certificate files `tls` names (unreadable, not PEM, a key that is not the
   * certificate's), or undefined when they would be served: a reload checks them before it changes anything.
   */
  problemWith(tls: ListenTlsConfig): string | undefined {
    try {
      // The very files served now (an expired certificate nobody replaced yet): nothing new to refuse, and a
      // reload of the rest of the config (a leaked SAS rule removed) must not wait for a renewal.
      const files = readPemFiles(tls);
      if (digestOf(files) === this.current.digest) return undefined;
      certificateSetOf(tls, files, Date.now());
      return undefined;
    } catch (err) {
      // Good files whose time has not come: the rest of the reload goes on, and the keeper takes them when it has.
      if (err instanceof CertificateNotYetValid) return undefined;
      return (err as Error).message;
    }
  }

  /** listen.tls changed on reload (other files, another minimum version): watch the new folders and read them. */
  retarget(tls: ListenTlsConfig, reason: CertificateReason = 'config'): boolean {
    const moved = tls.certFile !== this.tls.certFile || tls.keyFile !== this.tls.keyFile || tls.caFile !== this.tls.caFile;
    const versionChanged = tls.minVersion !== this.tls.minVersion;
    this.tls = { ...tls };
    if (moved) this.watchFolders();
    if (versionChanged) this.current = { ...this.current, digest: '' };
    return this.reload(reason);
  }

  private watchFolders(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    this.watched.clear();
    const folders = new Set([this.tls.certFile, this.tls.keyFile, ...(this.tls.caFile ? [this.tls.caFile] : [])].map((f) => dirname(f)));
    for (const folder of folders) {
      this.watched.set(folder, identityOf(folder));
      try {
        const watcher = watch(folder, { persistent: false }, () => this.changed());
        watcher.on('error', (err) => this.log.warn({ event: 'tls.watch_failed', folder, err: err.message }));
        this.watchers.push(watcher);
      } catch (err) {
        // Still reloaded on SIGHUP.
        this.log.warn({ event: 'tls.watch_failed', folder, err: (err as Error).message });
      }
    }
  }

  private changed(): void {
    if (this.closed) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      if (this.closed) return;
      this.followReplacedFolders();
      this.reload('file');
    }, CHANGE_DEBOUNCE_MS);
    this.debounce.unref();
  }

  /** Watches again when a watched folder is another one now; looks again for one that is gone until it is back. */
  private followReplacedFolders(): void {
    const now = [...this.watched].map(([folder, was]) => ({ folder, was, is: identityOf(folder) }));
    // One found gone is watched anew once it is back, whatever its identity (a filesystem without birth times).
    for (const { folder, is } of now) if (is === undefined) this.watched.set(folder, undefined);
    if (now.some(({ was, is }) => is !== undefined && is !== was)) this.watchFolders();
    if (now.some(({ is }) => is === undefined) && !this.folderTimer) this.lookForRemovedFolders();
  }

  /** A watched folder was removed (its files are refused meanwhile, once): once made again, it is watched and its files read. */
  private lookForRemovedFolders(): void {
    this.folderTimer = setTimeout(() => {
      this.folderTimer = undefined;
      if (this.closed) return;
      if ([...this.watched.keys()].some((folder) => identityOf(folder) === undefined)) this.lookForRemovedFolders();
      else this.changed();
    }, FOLDER_LOOK_AGAIN_MS);
    this.folderTimer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.debounce) clearTimeout(this.debounce);
    if (this.validFromTimer) clearTimeout(this.validFromTimer);
    if (this.folderTimer) clearTimeout(this.folderTimer);
    for (const w of this.watchers) w.close();
    this.watchers = [];
  }
}

/**
 * The relay's HTTPS server: the first certificates read (a bad one throws
 * ConfigError naming the key, so start-up stops), client certificates asked
 * for and required as listen.tls says, and a keeper that swaps certificates
 * in as they change. `served` hears each set served (its expiries, for the metrics).
 */
export function createTlsServer(
  tls: ListenTlsConfig,
  httpOptions: ServerOptions,
  handshakeMs: number,
  log: Logger,
  served: (set: CertificateSet) => void,
): { server: Server; certificates: CertificateKeeper } {
  const first = readCertificates(tls);
  warnOfChain(log, first);
  const server = createServer({
    ...httpOptions,
    ...first.context,
    requestCert: tls.requestCert,
    rejectUnauthorized: tls.requireClientCert === 'all',
    // A connection must finish its handshake as fast as a plain one must send its first byte (timeouts.firstByteMs).
    handshakeTimeout: handshakeMs,
  });
  // Failed handshakes (an untrusted client certificate, a scanner, one past the bound) reach the server's
  // 'clientError' too (node:https passes 'tlsClientError' on), where relay-server.ts logs them once.
  served(first);
  const certificates = new CertificateKeeper(
    tls,
    first,
    (set) => {
      server.setSecureContext(set.context);
      served(set);
    },
    log,
  );
  return { server, certificates };
}
