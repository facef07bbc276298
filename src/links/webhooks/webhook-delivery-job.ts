import type { Logger } from 'pino';
import type { ClaimedJob, JobHandler } from '../../jobs/job-worker.js';
import type { Vault } from '../../keys/vault.js';
import type { Metrics } from '../../metrics.js';
import type { Store, WebhookDeliveryRecord } from '../../store/store.js';
import type { WebhookJobPayload } from './lifecycle-webhooks.js';
import { signWebhook } from './standard-webhooks.js';
import { webhookSecretIdentity } from './webhook-endpoints.js';

/**
 * Sends one lifecycle event to one endpoint, signed per Standard Webhooks, and decides what comes
 * next: a 2xx ends it; 410 Gone disables the endpoint; anything else (another status, a timeout, a
 * refused or unreachable target) is retried on a schedule that starts at seconds (the first three
 * attempts within a minute) and grows to hours, for at least 24 hours from the first attempt. A
 * receiver's Retry-After moves the next attempt later, never earlier. The job lives in the durable
 * queue, so retries survive restarts and move between replicas; `webhook-id` is the event id on
 * every attempt, so a receiver can drop duplicates.
 */

/** Delay after the n-th failed attempt (1-based); the last entry repeats. */
export const WEBHOOK_RETRY_DELAYS_MS = [
  5_000, 15_000, 40_000, 300_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000, 28_800_000,
] as const;
/** Retries stop once the next attempt would start this long after the first one. */
export const WEBHOOK_RETRY_WINDOW_MS = 24 * 3_600_000 + 8 * 3_600_000;
/** A Retry-After longer than this is capped (a receiver cannot park a delivery for a week). */
const MAX_RETRY_AFTER_MS = 12 * 3_600_000;

/** Delivery outcome from the sender port (net/webhook-sender.ts implements it). */
export interface WebhookSendPort {
  send(req: {
    url: string;
    headers: Readonly<Record<string, string>>;
    body: string;
  }): Promise<{ status: number; retryAfterSeconds: number | null }>;
}

export interface WebhookDeliveryJobDeps {
  readonly store: Pick<Store, 'getWebhookEndpoint' | 'putWebhookEndpoint' | 'putWebhookDelivery'>;
  readonly vault: Pick<Vault, 'open'>;
  readonly sender: WebhookSendPort;
  readonly metrics: Pick<Metrics, 'webhookDeliveries'>;
  readonly log: Logger;
  readonly now: () => number;
}

/** When the attempt after `attempts` failed ones is due, or null when retries are over. */
export function nextAttemptAtMs(
  firstAttemptAtMs: number,
  attempts: number,
  nowMs: number,
  retryAfterSeconds: number | null,
): number | null {
  const step =
    WEBHOOK_RETRY_DELAYS_MS[Math.min(attempts, WEBHOOK_RETRY_DELAYS_MS.length) - 1] ??
    WEBHOOK_RETRY_DELAYS_MS[0];
  const asked =
    retryAfterSeconds === null ? 0 : Math.min(retryAfterSeconds * 1000, MAX_RETRY_AFTER_MS);
  const at = nowMs + Math.max(step, asked);
  // At least 24 hours of attempts: stop only once the first attempt is that far behind.
  if (nowMs - firstAttemptAtMs >= 24 * 3_600_000 || at - firstAttemptAtMs > WEBHOOK_RETRY_WINDOW_MS)
    return null;
  return at;
}

export function createWebhookDeliveryJob(deps: WebhookDeliveryJobDeps): JobHandler {
  const { store, vault, sender, metrics, log, now } = deps;

  async function record(
    p: WebhookJobPayload,
    status: WebhookDeliveryRecord['status'],
    attempts: number,
    lastStatusCode: number | null,
    nextAt: number | null,
  ): Promise<void> {
    await store.putWebhookDelivery({
      endpointId: p.endpoint_id,
      eventId: p.event_id,
      type: p.type,
      status,
      attempts,
      lastStatusCode,
      nextAttemptAtMs: nextAt,
      updatedAtMs: now(),
    });
  }

  async function run(job: ClaimedJob): Promise<void> {
    const p = job.payload as unknown as WebhookJobPayload;
    const endpoint = await store.getWebhookEndpoint(p.endpoint_id);
    if (!endpoint || endpoint.disabledAtMs !== null) {
      // Removed or disabled since the event: nothing to deliver to.
      await job.complete();
      return;
    }
    const secret = (await vault.open(webhookSecretIdentity(endpoint.id), endpoint.secret)).toString(
      'utf8',
    );
    const timestampSeconds = Math.floor(now() / 1000);
    const body = JSON.stringify({ type: p.type, timestamp: p.timestamp, data: p.data });
    const attempts = job.attempts + 1;
    let status: number | null = null;
    let retryAfterSeconds: number | null = null;
    let failure: string | null = null;
    try {
      const answer = await sender.send({
        url: endpoint.url,
        headers: {
          'webhook-id': p.event_id,
          'webhook-timestamp': String(timestampSeconds),
          'webhook-signature': signWebhook(secret, p.event_id, timestampSeconds, body),
        },
        body,
      });
      status = answer.status;
      retryAfterSeconds = answer.retryAfterSeconds;
    } catch (err) {
      failure = (err as { reason?: string }).reason ?? 'network';
      log.info(
        { endpoint_id: endpoint.id, event_id: p.event_id, reason: failure, err },
        'webhook delivery attempt failed',
      );
    }

    if (status !== null && status >= 200 && status < 300) {
      metrics.webhookDeliveries.inc({ outcome: 'delivered' });
      await record(p, 'delivered', attempts, status, null);
      await job.complete();
      return;
    }
    if (status === 410) {
      metrics.webhookDeliveries.inc({ outcome: 'gone' });
      await store.putWebhookEndpoint({
        ...endpoint,
        disabledAtMs: now(),
        disabledReason: 'the receiver answered 410 Gone',
      });
      log.warn({ endpoint_id: endpoint.id }, 'webhook endpoint answered 410 Gone: disabled');
      await record(p, 'failed', attempts, status, null);
      await job.complete();
      return;
    }
    const nextAt = nextAttemptAtMs(p.first_attempt_at_ms, attempts, now(), retryAfterSeconds);
    if (nextAt === null) {
      metrics.webhookDeliveries.inc({ outcome: 'failed' });
      log.warn(
        { endpoint_id: endpoint.id, event_id: p.event_id, attempts, status_code: status },
        'webhook delivery failed for good',
      );
      await record(p, 'failed', attempts, status, null);
      await job.complete();
      return;
    }
    metrics.webhookDeliveries.inc({ outcome: failure === 'target_refused' ? 'refused' : 'retry' });
    await record(p, 'retrying', attempts, status, nextAt);
    await job.reschedule(nextAt, attempts);
  }

  return { run };
}
