import type { Logger } from 'pino';
import type { Audit } from '../audit/audit.js';

/**
 * Appends an audit event from background work; a failed append is logged, never thrown: the
 * revocation it describes has happened and must not be retried for the audit's sake.
 */
export async function auditQuietly(
  deps: { readonly audit: Pick<Audit, 'record'>; readonly log: Logger },
  type: string,
  data: Record<string, unknown>,
  requestId: string | null,
): Promise<void> {
  try {
    await deps.audit.record(type, data, requestId);
  } catch (err) {
    deps.log.error(
      { err, audit_type: type, link_id: data.link_id },
      'revocation worker: audit append failed',
    );
  }
}
