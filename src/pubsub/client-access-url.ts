// Client access URLs, as Azure's server SDKs make them: the hub's client
// endpoint (ws/wss) with `access_token`, a JWT signed with the hub's access
// key whose audience is the endpoint's http(s) form.
import { signJwt } from '../auth/jwt.ts';

export interface ClientAccessOptions {
  userId?: string;
  roles?: string[];
  groups?: string[];
  ttlSeconds?: number;
}

export function clientAccessUrl(baseUrl: string, hub: string, accessKey: string, options: ClientAccessOptions = {}): string {
  const base = baseUrl.replace(/\/+$/, '');
  const httpBase = base.replace(/^ws(s?):/i, 'http$1:');
  const claims: Record<string, unknown> = { aud: `${httpBase}/client/hubs/${hub}` };
  if (options.userId) claims.sub = options.userId;
  if (options.roles && options.roles.length > 0) claims.role = options.roles;
  if (options.groups && options.groups.length > 0) claims['webpubsub.group'] = options.groups;
  const token = signJwt(claims, accessKey, options.ttlSeconds ?? 3600);
  const wsBase = httpBase.replace(/^http(s?):/i, 'ws$1:');
  return `${wsBase}/client/hubs/${hub}?access_token=${token}`;
}
