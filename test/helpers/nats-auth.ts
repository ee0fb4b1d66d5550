// Credentials for nats-server in tests: an NKey user for an authorization
// block, and operator (JWT) mode made by hand as `nsc` would: an operator, an
// account with JetStream limits, a system account, and a user whose `.creds`
// file the relay reads (bus.credsFile). JWTs are signed with ed25519 NKeys
// (the nkeys.js that nats.js ships, as `nkeys`), in the format nats-server
// 2.9 decodes: header {"typ":"JWT","alg":"ed25519-nkey"}, claims with iss,
// sub and a `nats` object of the claim's type, version 2.
import { randomBytes } from 'node:crypto';
import { nkeys } from 'nats';

interface KeyPair {
  getPublicKey(): string;
  getSeed(): Uint8Array;
  sign(data: Uint8Array): Uint8Array;
}

const b64 = (value: object | string) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

function jwt(claims: Record<string, unknown>, signer: KeyPair): string {
  const head = b64({ typ: 'JWT', alg: 'ed25519-nkey' });
  const body = b64({ jti: randomBytes(16).toString('hex').toUpperCase(), iat: Math.floor(Date.now() / 1000), ...claims });
  return `${head}.${body}.${Buffer.from(signer.sign(Buffer.from(`${head}.${body}`))).toString('base64url')}`;
}

/** An NKey user: its seed (what the relay's bus.nkeyFile holds) and public key (what the server lists). */
export function nkeyUser(): { seed: string; publicKey: string } {
  const user = nkeys.createUser() as KeyPair;
  return { seed: new TextDecoder().decode(user.getSeed()), publicKey: user.getPublicKey() };
}

/** Operator mode: the server's config lines and a user's .creds file. */
export function operatorMode(): { serverConfig: string; creds: string } {
  const operator = nkeys.createOperator() as KeyPair;
  const account = nkeys.createAccount() as KeyPair;
  const system = nkeys.createAccount() as KeyPair;
  const user = nkeys.createUser() as KeyPair;
  const connections = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  const accountJwt = (pair: KeyPair, name: string, jetstream: boolean) =>
    jwt(
      {
        iss: operator.getPublicKey(),
        sub: pair.getPublicKey(),
        name,
        nats: {
          limits: jetstream ? { ...connections, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } : connections,
          default_permissions: { pub: {}, sub: {} },
          type: 'account',
          version: 2,
        },
      },
      operator,
    );
  const operatorJwt = jwt(
    { iss: operator.getPublicKey(), sub: operator.getPublicKey(), name: 'test-operator', nats: { system_account: system.getPublicKey(), type: 'operator', version: 2 } },
    operator,
  );
  const userJwt = jwt(
    { iss: account.getPublicKey(), sub: user.getPublicKey(), name: 'edge', nats: { pub: {}, sub: {}, subs: -1, data: -1, payload: -1, type: 'user', version: 2 } },
    account,
  );
  const serverConfig = [
    `operator: ${operatorJwt}`,
    `system_account: ${system.getPublicKey()}`,
    'resolver: MEMORY',
    'resolver_preload: {',
    `  ${account.getPublicKey()}: ${accountJwt(account, 'edge-relay', true)}`,
    `  ${system.getPublicKey()}: ${accountJwt(system, 'SYS', false)}`,
    '}',
  ].join('\n');
  const seed = new TextDecoder().decode(user.getSeed());
  const creds =
    `-----BEGIN NATS USER JWT-----\n${userJwt}\n------END NATS USER JWT------\n\n` +
    `************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n` +
    `-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`;
  return { serverConfig, creds };
}
