import { LinkvaultError } from '../../errors.js';
import type { AuditFilter, Store } from '../../store/store.js';
import { auditEventJson } from './export/audit-exporter.js';

/**
 * Reading the retained audit trail: the admin's filtered listing (GET /v1/audit) and a user's view
 * of what was done with one of their links (GET /v1/me/links/{id}/activity). Both read what the
 * store still holds (LINKVAULT_AUDIT_STORE_MAX_EVENTS); older events are in the export files.
 */

/** The store's indexed audit reads. */
export type AuditQuerySource = Pick<Store, 'queryAudit'>;

export interface ActivitySummary {
  readonly service_id: string;
  readonly purpose: string | null;
  readonly releases: number;
  readonly last_at: string;
}

export interface Activity {
  readonly summary: readonly ActivitySummary[];
  readonly events: readonly {
    at: string;
    type: string;
    service_id?: string;
    purpose?: string;
  }[];
}

export interface AuditQuery {
  list(
    filter: AuditFilter,
    after: string | undefined,
    limit: number,
  ): Promise<{ events: Record<string, unknown>[]; next: string | null }>;
  /** Rejects link_not_found unless the link is the user's. */
  activity(linkId: string, owner: { tenantId: string; userId: string }): Promise<Activity>;
}

/** Events a user sees about their link; the rest (e.g. internal bookkeeping) stays in the admin view. */
const USER_VISIBLE = new Set([
  'link.connected',
  'link.reconnected',
  'token.released',
  'link.refreshed',
  'link.needs_reauth',
  'link.revocation_requested',
  'link.tombstoned',
  'link.provider_revocation',
  'link.shredded',
  'proxy.requested',
]);
const ACTIVITY_EVENTS = 100;
const ACTIVITY_SCAN_LIMIT = 20_000;

export function createAuditQuery(deps: {
  readonly store: AuditQuerySource & Pick<Store, 'getLink'>;
}): AuditQuery {
  const { store } = deps;
  return {
    async list(filter, after, limit) {
      const page = await store.queryAudit(filter, {
        ...(after === undefined ? {} : { after }),
        limit,
        order: 'asc',
      });
      return { events: page.events.map((e) => auditEventJson(e.shard, e)), next: page.next };
    },

    async activity(linkId, owner) {
      const link = await store.getLink(linkId);
      if (!link || link.tenantId !== owner.tenantId || link.userId !== owner.userId)
        throw new LinkvaultError('link_not_found');
      const summary = new Map<
        string,
        { service_id: string; purpose: string | null; releases: number; lastMs: number }
      >();
      const events: Activity['events'][number][] = [];
      let after: string | undefined;
      let scanned = 0;
      do {
        const page = await store.queryAudit(
          { tenantId: link.tenantId, linkId },
          { ...(after === undefined ? {} : { after }), limit: 500, order: 'desc' },
        );
        for (const e of page.events) {
          scanned++;
          const serviceId = typeof e.data.service_id === 'string' ? e.data.service_id : undefined;
          const purpose = typeof e.data.purpose === 'string' ? e.data.purpose : undefined;
          if (e.type === 'token.released' || e.type === 'proxy.requested') {
            if (serviceId !== undefined) {
              const key = `${serviceId}\u0000${purpose ?? ''}`;
              const row = summary.get(key) ?? {
                service_id: serviceId,
                purpose: purpose ?? null,
                releases: 0,
                lastMs: e.atMs,
              };
              row.releases++;
              row.lastMs = Math.max(row.lastMs, e.atMs);
              summary.set(key, row);
            }
          }
          if (events.length < ACTIVITY_EVENTS && USER_VISIBLE.has(e.type)) {
            if (e.type === 'link.provider_revocation' && e.data.final !== true) continue;
            events.push({
              at: new Date(e.atMs).toISOString(),
              type: e.type,
              ...(serviceId === undefined ? {} : { service_id: serviceId }),
              ...(purpose === undefined ? {} : { purpose }),
            });
          }
        }
        after = page.next ?? undefined;
      } while (after !== undefined && scanned < ACTIVITY_SCAN_LIMIT);
      return {
        summary: [...summary.values()]
          .sort((a, b) => b.lastMs - a.lastMs)
          .map((r) => ({
            service_id: r.service_id,
            purpose: r.purpose,
            releases: r.releases,
            last_at: new Date(r.lastMs).toISOString(),
          })),
        events,
      };
    },
  };
}
