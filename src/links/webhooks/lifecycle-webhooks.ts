import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Metrics } from '../../metrics.js';
import type { Store, WebhookEndpointRecord } from '../../store/store.js';
import type { Audit } from '../audit/audit.js';
import { REVOCATION_AUDIT } from '../revoke/revocation.js';
import type { WebhookEventType } from './webhook-endpoints.js';

/**
 * Lifecycle webhooks as a projection of the audit trail. Every lifecycle step of a link is already
 * an audit record (connect, reconnect, needs_reauth, refresh failures, revocation and its outcome
 * at the provider); this wraps the Audit so that, once such a record is stored, one delivery job per
 * subscribed endpoint goes on the durable job queue. Nothing is sent from the request path, and a
 * release (`token.released`) costs one failed map lookup here.
 *
 * What is lost: an event whose record was stored but whose jobs could not be queued (the store
 * failed between the two) is logged and counted (`webhook_enqueue_failures_total`), not retried —
 * the audit record still says what happened.
 */

export const WEBHOOK_JOB_KIND = 'webhook.deliver';

/** The payload of one delivery job: everything needed to send it again, and never a token. */
export interface WebhookJobPayload {
  readonly endpoint_id: string;
  readonly event_id: string;
  readonly type: WebhookEventType;
  /** RFC 3339, when the event happened (the same on every retry). */
  readonly timestamp: string;
  readonly data: Readonly<Record<string, unknown>>;
  readonly first_attempt_at_ms: number;
}

const LINK_FIELDS = ['link_id', 'tenant_id', 'user_id', 'provider_id'] as const;

/** The webhook events one audit record stands for, with the extra `data` of each. */
export function lifecycleEventsOf(
  auditType: string,
  fields: Readonly<Record<string, unknown>>,
): { type: WebhookEventType; extra: Record<string, unknown> }[] {
  switch (auditType) {
    case 'link.connected':
      return [{ type: 'link.connected', extra: {} }];
    case 'link.reconnected':
      return [{ type: 'link.reconnected', extra: {} }];
    case 'link.needs_reauth':
      return [
        { type: 'link.refresh_failed', extra: { permanent: true } },
        { type: 'link.needs_reauth', extra: { reason: fields.reason ?? null } },
      ];
    case 'link.refresh_failed':
      return [
        {
          type: 'link.refresh_failed',
          extra: { permanent: false, error_code: fields.error_code ?? null },
        },
      ];
    case 'link.refreshed':
      return fields.recovered === true ? [{ type: 'link.recovered', extra: {} }] : [];
    case REVOCATION_AUDIT.requested:
      return [{ type: 'link.revoked', extra: { revoked_by: fields.revoked_by ?? null } }];
    case REVOCATION_AUDIT.providerOutcome:
      if (fields.final !== true || fields.job_role === 'orphan') return [];
      if (fields.outcome === 'confirmed' || fields.outcome === 'already_invalid')
        return [{ type: 'link.revocation_confirmed', extra: {} }];
      if (fields.outcome === 'failed')
        return [
          {
            type: 'link.revocation_failed',
            extra: { error_code: fields.error_code ?? null },
          },
        ];
      return [];
    default:
      return [];
  }
}

export interface LifecycleWebhooksDeps {
  readonly store: Pick<Store, 'listWebhookEndpoints' | 'enqueue' | 'getLink'>;
  readonly log: Logger;
  readonly metrics: Pick<Metrics, 'webhookEnqueueFailures'>;
  readonly now: () => number;
  /** How long a replica reuses its read of the endpoint list (default 2 s). */
  readonly endpointCacheMs?: number;
  /** Called after jobs were queued (wakes the local job worker). */
  readonly onQueued?: () => void;
}

/** The Audit, plus webhook delivery jobs for the lifecycle records it stores. */
export function withLifecycleWebhooks(audit: Audit, deps: LifecycleWebhooksDeps): Audit {
  const { store, log, now } = deps;
  const cacheMs = deps.endpointCacheMs ?? 2000;
  let cached: { atMs: number; endpoints: Promise<WebhookEndpointRecord[]> } | null = null;

  function endpoints(): Promise<WebhookEndpointRecord[]> {
    if (!cached || now() - cached.atMs > cacheMs) {
      const pending = store.listWebhookEndpoints();
      cached = { atMs: now(), endpoints: pending };
      pending.catch(() => {
        if (cached?.endpoints === pending) cached = null;
      });
    }
    return cached.endpoints;
  }

  async function linkData(
    fields: Readonly<Record<string, unknown>>,
  ): Promise<Record<string, unknown> | null> {
    const data: Record<string, unknown> = {};
    for (const name of LINK_FIELDS) if (typeof fields[name] === 'string') data[name] = fields[name];
    if (typeof data.link_id !== 'string') return null;
    if (LINK_FIELDS.every((name) => typeof data[name] === 'string')) return data;
    const link = await store.getLink(data.link_id);
    if (!link) return null;
    return {
      link_id: link.id,
      tenant_id: link.tenantId,
      user_id: link.userId,
      provider_id: link.providerId,
    };
  }

  async function enqueueFor(
    auditType: string,
    fields: Readonly<Record<string, unknown>>,
  ): Promise<void> {
    const events = lifecycleEventsOf(auditType, fields);
    if (events.length === 0) return;
    const all = await endpoints();
    if (all.length === 0) return;
    const base = await linkData(fields);
    if (!base) return;
    const atMs = now();
    for (const { type, extra } of events) {
      const eventId = `evt_${randomBytes(16).toString('base64url')}`;
      for (const endpoint of all) {
        if (endpoint.disabledAtMs !== null) continue;
        if (endpoint.events !== null && !endpoint.events.includes(type)) continue;
        if (endpoint.tenantId !== null && endpoint.tenantId !== base.tenant_id) continue;
        const payload: WebhookJobPayload = {
          endpoint_id: endpoint.id,
          event_id: eventId,
          type,
          timestamp: new Date(atMs).toISOString(),
          data: { ...base, ...extra },
          first_attempt_at_ms: atMs,
        };
        await store.enqueue({
          id: `webhook:${endpoint.id}:${eventId}`,
          kind: WEBHOOK_JOB_KIND,
          payload: payload as unknown as Record<string, unknown>,
          attempts: 0,
          runAtMs: atMs,
        });
      }
    }
    deps.onQueued?.();
  }

  return {
    fingerprint: (secret) => audit.fingerprint(secret),
    async record(type, fields, requestId) {
      const seq = await audit.record(type, fields, requestId);
      try {
        await enqueueFor(type, fields);
      } catch (err) {
        deps.metrics.webhookEnqueueFailures.inc();
        log.error({ err, audit_type: type, audit_seq: seq }, 'could not queue lifecycle webhooks');
      }
      return seq;
    },
  };
}
