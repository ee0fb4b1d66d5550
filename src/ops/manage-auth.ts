// Who may read the relay's operator endpoints (/$relay/metrics when the
// config asks, /$relay/status): a SAS token whose rule has the Manage right
// and whose resource is the namespace root or /$relay, given in the
// Authorization or ServiceBusAuthorization header or as sb-hc-token. The SAS
// rules are the hybrid connections' (one authorizer, so a reload and a key's
// rotation grace apply to both).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SasAuthorizer } from '../auth/sas-authorizer.ts';
import type { RelayConfig } from '../config/types.ts';
import { tokenHostsFor } from '../auth/token-hosts.ts';
import { refuseOtherMethods } from '../http/edge-errors.ts';
import { sendError } from '../http/respond.ts';
import { paramInAnyCase } from '../http/query-params.ts';

export interface Refusal {
  status: 401 | 403;
  code: string;
  message: string;
}

export class ManageAuth {
  constructor(
    private readonly config: RelayConfig,
    private readonly publicHost: string,
    private readonly authorizer: SasAuthorizer,
  ) {}

  /** Undefined when the request carries a Manage token for this relay; else why not. */
  check(req: IncomingMessage): Refusal | undefined {
    const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    // Any of the three places; a SAS token wins over what else is there (an empty header, a proxy's Basic credentials).
    const given = [req.headers.authorization, req.headers['servicebusauthorization'], paramInAnyCase(query, 'sb-hc-token') ?? undefined]
      .map((v) => (Array.isArray(v) ? v[0] : v))
      .filter((v): v is string => typeof v === 'string' && v !== '');
    const token = given.find((v) => /^SharedAccessSignature\s/i.test(v)) ?? given[0];
    const d = this.authorizer.check({ token, entity: '$relay', right: 'Manage', hosts: tokenHostsFor(req, this.config.namespaceHosts, this.publicHost) });
    if (d.ok) return undefined;
    if (d.code === 'TokenScopeInvalid' || d.code === 'RightMissing') return { status: 403, code: d.code, message: 'A token with the Manage right for this relay is required' };
    return { status: 401, code: d.code, message: 'A Shared Access Signature token with the Manage right is required' };
  }

  /**
   * For a GET-only operator endpoint: answers 405 to another method and the
   * refusal to a request without a Manage token, and returns true when it has
   * answered; false when the request may go on.
   */
  refuseUnlessManageGet(req: IncomingMessage, res: ServerResponse): boolean {
    if (refuseOtherMethods(req, res, ['GET'])) return true;
    const refused = this.check(req);
    if (!refused) return false;
    sendError(res, refused.status, refused.code, refused.message);
    return true;
  }
}
