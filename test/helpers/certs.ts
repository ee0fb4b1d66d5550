// Certificates for the TLS tests, made at run time with `openssl` (Debian's
// package): a test CA, server certificates for 127.0.0.1 and localhost, and
// client certificates, from that CA or from another one the relay does not
// trust. Everything lives in a temp folder removed in clean-up. Clients trust
// the test CA explicitly (`ca` option, or NODE_EXTRA_CA_CERTS in a child
// process): nothing here turns certificate checks off.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { cleanupFor } from './cleanup.ts';

export interface CertFiles {
  certFile: string;
  keyFile: string;
}

export interface TestPki {
  dir: string;
  /** The test CA's certificate (PEM file): what clients trust, and what signs client certificates. */
  caFile: string;
  ca: Buffer;
  /** A server certificate for 127.0.0.1 and localhost. */
  server: CertFiles;
  /** Another server certificate (`name`) from the same CA, for 127.0.0.1 and localhost. */
  issueServer(name: string, hosts?: string[]): CertFiles;
  /** A server certificate (`name`) from the same CA, for 127.0.0.1 and localhost, valid from `validFrom` (whole seconds) for a day. */
  issueServerValidFrom(name: string, validFrom: Date): CertFiles;
  /**
   * A server certificate (`name`, for 127.0.0.1 and localhost, valid now for a day) signed by an intermediate CA
   * (`name`-ca, signed by the test CA, valid from `intermediateFrom` until `intermediateUntil`); its certFile holds
   * both, the chain a client is sent.
   */
  issueServerChain(name: string, intermediateFrom: Date, intermediateUntil: Date): CertFiles & { intermediateFile: string };
  /**
   * A client certificate with CN `name`, from the test CA, or from a CA nobody trusts with `untrusted`; with
   * `intermediate`, signed by an intermediate CA the test CA signed, its certFile holding both (the chain sent).
   */
  issueClient(name: string, options?: { untrusted?: boolean; intermediate?: boolean }): CertFiles;
  /**
   * What a holder of `client` (from the test CA) can send without any CA's key: its certificate, then a "CA" named
   * and key-identified as the test CA, made under a CA of its own named and key-identified as `ca`, then `ca`'s real
   * certificate (public). Nothing of it past the first is signed by the one after it: only names and key ids link it.
   */
  forgeChainTo(client: CertFiles, ca: string): CertFiles;
  /**
   * A certificate `name` (`name`.pem) with `subject`, for the key of `keyOf` (a name made here before, such as 'ca':
   * `keyOf`.key; a new key `name`.key without), signed by the CA `issuer` made here ('ca', 'other-ca' once
   * issueClient made it, or an earlier `name`; itself without), with `extensions` (lines of an openssl extension
   * file; none makes a version 1 certificate), valid from `validFrom` until `until` (whole seconds; from now for a
   * day without). A CA's key certified by another CA (a cross-certificate), a leaf that names itself as a CA, an
   * expired CA.
   */
  issueCertificate(name: string, options: { subject: string; issuer?: string; keyOf?: string; extensions?: string; validFrom?: Date; until?: Date }): CertFiles;
  /** One PEM file `name` holding `files` in that order (a chain a client sends). */
  bundle(name: string, files: string[]): string;
}

const OPENSSL = process.env.OPENSSL ?? 'openssl';

function openssl(args: string[], cwd: string): void {
  execFileSync(OPENSSL, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20000 });
}

/** A CA (`name`.pem, .key) with CN `edge-relay {subject}`, and with `keyId` its subject key identifier (hex) is that. */
function newCa(dir: string, name: string, subject = name, keyId?: string): void {
  openssl(
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=edge-relay ${subject}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      ...(keyId ? ['-addext', `subjectKeyIdentifier=${keyId}`] : []),
    ],
    dir,
  );
}

/** A certificate's subject key identifier, hex. */
function keyIdOf(dir: string, name: string): string {
  const text = execFileSync(OPENSSL, ['x509', '-in', `${name}.pem`, '-noout', '-ext', 'subjectKeyIdentifier'], { cwd: dir, timeout: 20000 }).toString();
  return text.split('\n')[1].trim().replace(/:/g, '');
}

function issue(dir: string, ca: string, name: string, extensions: string, subject = `/CN=${name}`): CertFiles {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject], dir);
  openssl(
    ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`],
    dir,
  );
  return { certFile: join(dir, `${name}.pem`), keyFile: join(dir, `${name}.key`) };
}

/** YYYYMMDDHHMMSSZ, as `openssl ca -startdate` takes a time. */
function opensslTime(at: Date): string {
  return at.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** What sign() makes: a certificate `name`.pem, for a new key (`name`.key) or the key of an earlier name. */
interface SignOptions {
  subject: string;
  /** The CA that signs it (`issuer`.pem, .key); the certificate signs itself without. */
  issuer?: string;
  /** Whose key (`keyOf`.key) it is for; a new key without. */
  keyOf?: string;
  /** Lines of an openssl extension file; without, a version 1 certificate (no extensions at all). */
  extensions?: string;
  validFrom: Date;
  until: Date;
}

/**
 * A certificate with everything given (`openssl x509 -req` of OpenSSL 3.0 starts every certificate now, and takes no
 * existing key for a self-signed one): `openssl ca` with a throwaway database.
 */
function sign(dir: string, name: string, options: SignOptions): CertFiles {
  const keyFile = `${options.keyOf ?? name}.key`;
  if (options.extensions !== undefined) writeFileSync(join(dir, `${name}.ext`), options.extensions);
  writeFileSync(join(dir, `${name}.index`), '');
  writeFileSync(
    join(dir, `${name}.cnf`),
    `[ca]\ndefault_ca = test\n[test]\ndatabase = ${name}.index\nnew_certs_dir = .\nserial = ${name}.serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n[any]\ncommonName = supplied\n`,
  );
  writeFileSync(join(dir, `${name}.serial`), '01\n');
  if (options.keyOf) openssl(['req', '-new', '-key', keyFile, '-out', `${name}.csr`, '-subj', options.subject], dir);
  else openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', `${name}.csr`, '-subj', options.subject], dir);
  openssl(
    ['ca', '-batch', '-notext', '-config', `${name}.cnf`, ...(options.issuer ? ['-cert', `${options.issuer}.pem`, '-keyfile', `${options.issuer}.key`] : ['-selfsign', '-keyfile', keyFile]),
      '-in', `${name}.csr`, '-out', `${name}.pem`, '-startdate', opensslTime(options.validFrom), '-enddate', opensslTime(options.until),
      ...(options.extensions !== undefined ? ['-extfile', `${name}.ext`] : [])],
    dir,
  );
  return { certFile: join(dir, `${name}.pem`), keyFile: join(dir, keyFile) };
}

/** Like issue(), with the validity given. */
function issueValidFrom(dir: string, ca: string, name: string, extensions: string, validFrom: Date, until = new Date(validFrom.getTime() + 86_400_000)): CertFiles {
  return sign(dir, name, { subject: `/CN=${name}`, issuer: ca, extensions, validFrom, until });
}

function serverExtensions(hosts: string[]): string {
  const san = hosts.map((h) => (/^[\d.]+$|:/.test(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
  return `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`;
}

/** A fresh CA and server certificate in a temp folder, removed in the test's clean-up. */
export function makePki(t: Pick<TestContext, 'after'>): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-pki-'));
  cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
  newCa(dir, 'ca');
  let otherCa = false;
  let intermediate = false;
  const issueServer = (name: string, hosts = ['127.0.0.1', 'localhost']) => issue(dir, 'ca', name, serverExtensions(hosts));
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    ca: readFileSync(join(dir, 'ca.pem')),
    server: issueServer('server'),
    issueServer,
    issueServerValidFrom: (name, validFrom) => issueValidFrom(dir, 'ca', name, serverExtensions(['127.0.0.1', 'localhost']), validFrom),
    issueServerChain: (name, intermediateFrom, intermediateUntil) => {
      const intermediate = `${name}-ca`;
      const caExtensions = 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n';
      // Written as `${intermediate}.pem` and `.key`, which issue() signs with.
      issueValidFrom(dir, 'ca', intermediate, caExtensions, intermediateFrom, intermediateUntil);
      const leaf = issue(dir, intermediate, name, serverExtensions(['127.0.0.1', 'localhost']));
      const chainFile = join(dir, `${name}-chain.pem`);
      const intermediateFile = join(dir, `${intermediate}.pem`);
      writeFileSync(chainFile, Buffer.concat([readFileSync(leaf.certFile), readFileSync(intermediateFile)]));
      return { certFile: chainFile, keyFile: leaf.keyFile, intermediateFile };
    },
    issueClient: (name, options = {}) => {
      if (options.untrusted && !otherCa) {
        newCa(dir, 'other-ca');
        otherCa = true;
      }
      const ext = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n';
      if (!options.intermediate) return issue(dir, options.untrusted ? 'other-ca' : 'ca', name, ext);
      if (!intermediate) {
        issue(dir, options.untrusted ? 'other-ca' : 'ca', 'intermediate-ca', 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n');
        intermediate = true;
      }
      const leaf = issue(dir, 'intermediate-ca', name, ext);
      const chainFile = join(dir, `${name}-chain.pem`);
      writeFileSync(chainFile, Buffer.concat([readFileSync(leaf.certFile), readFileSync(join(dir, 'intermediate-ca.pem'))]));
      return { certFile: chainFile, keyFile: leaf.keyFile };
    },
    forgeChainTo: (client, ca) => {
      newCa(dir, `forged-${ca}`, ca, keyIdOf(dir, ca));
      const bridge = issue(dir, `forged-${ca}`, 'forged-bridge', `basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nsubjectKeyIdentifier=${keyIdOf(dir, 'ca')}\nauthorityKeyIdentifier=keyid:always\n`, '/CN=edge-relay ca');
      const chainFile = join(dir, 'forged-chain.pem');
      writeFileSync(chainFile, Buffer.concat([readFileSync(client.certFile), readFileSync(bridge.certFile), readFileSync(join(dir, `${ca}.pem`))]));
      return { certFile: chainFile, keyFile: client.keyFile };
    },
    issueCertificate: (name, { validFrom = new Date(), until = new Date(validFrom.getTime() + 86_400_000), ...options }) => sign(dir, name, { ...options, validFrom, until }),
    bundle: (name, files) => {
      const file = join(dir, name);
      writeFileSync(file, Buffer.concat(files.map((f) => readFileSync(f))));
      return file;
    },
  };
}

/** TLS options a client in this process passes to trust the test CA (and present a certificate). */
export function clientTls(pki: TestPki, cert?: CertFiles): { ca: Buffer; cert?: Buffer; key?: Buffer } {
  return cert ? { ca: pki.ca, cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) } : { ca: pki.ca };
}
