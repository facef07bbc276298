import { randomBytes } from 'node:crypto';
import { LinkvaultError, invalidRequest } from '../../errors.js';
import type { SealIdentity } from '../../keys/key-provider.js';
import type { Vault } from '../../keys/vault.js';
import type { Store, WebhookDeliveryRecord, WebhookEndpointRecord } from '../../store/store.js';
import { generateWebhookSecret } from './standard-webhooks.js';

/**
 * Webhook endpoints (admin): where lifecycle events are delivered. Each endpoint gets its own
 * signing secret, shown once at creation and kept sealed in the store like a token set (the same
 * envelope encryption, bound to the endpoint's identity).
 */

/** The lifecycle events, as the contract names them. */
export const WEBHOOK_EVENT_TYPES = [
  'link.connected',
  'link.reconnected',
  'link.needs_reauth',
  'link.refresh_failed',
  'link.recovered',
  'link.revoked',
  'link.revocation_confirmed',
  'link.revocation_failed',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

const MAX_URL_CHARS = 2048;
const MAX_ENDPOINTS = 100;

export function webhookSecretIdentity(endpointId: string): SealIdentity {
  return {
    tenant: '_linkvault',
    link: `webhook:${endpointId}`,
    provider: '_linkvault',
    field: 'webhook_secret',
  };
}

export interface WebhookEndpointInput {
  readonly url: string;
  readonly events: readonly string[] | null;
  readonly tenantId: string | null;
}

export interface WebhookEndpoints {
  /** Creates an endpoint; the secret is returned only here. */
  create(input: WebhookEndpointInput): Promise<{ endpoint: WebhookEndpointRecord; secret: string }>;
  list(): Promise<WebhookEndpointRecord[]>;
  /** The endpoint, or null when absent. */
  get(id: string): Promise<WebhookEndpointRecord | null>;
  /** Rejects webhook_endpoint_not_found when absent. */
  remove(id: string): Promise<void>;
  /** Rejects webhook_endpoint_not_found when absent. */
  deliveries(id: string): Promise<WebhookDeliveryRecord[]>;
}

export interface WebhookEndpointsDeps {
  readonly store: Pick<
    Store,
    | 'putWebhookEndpoint'
    | 'getWebhookEndpoint'
    | 'listWebhookEndpoints'
    | 'deleteWebhookEndpoint'
    | 'listWebhookDeliveries'
  >;
  readonly vault: Pick<Vault, 'seal'>;
  /** Checks a URL's target at creation (https and public addresses in production); rejects invalid_webhook_url. */
  readonly checkUrl: (url: URL) => Promise<void>;
  readonly now: () => number;
}

/** The URL a caller gave, refused when it is not one linkvault should deliver to (shape only; checkUrl does the rest). */
export function parseWebhookUrl(raw: string): URL {
  if (raw.length > MAX_URL_CHARS)
    throw new LinkvaultError('invalid_webhook_url', {
      detail: `url is longer than ${MAX_URL_CHARS} characters`,
    });
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new LinkvaultError('invalid_webhook_url', { detail: 'url is not an absolute URL' });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new LinkvaultError('invalid_webhook_url', { detail: 'url must be https' });
  if (url.username || url.password)
    throw new LinkvaultError('invalid_webhook_url', {
      detail: 'url must not carry credentials; verify deliveries by their signature',
    });
  if (url.hash)
    throw new LinkvaultError('invalid_webhook_url', { detail: 'url must not have a fragment' });
  return url;
}

export function createWebhookEndpoints(deps: WebhookEndpointsDeps): WebhookEndpoints {
  const { store, vault, now } = deps;

  async function existing(id: string): Promise<WebhookEndpointRecord> {
    const endpoint = await store.getWebhookEndpoint(id);
    if (!endpoint) throw new LinkvaultError('webhook_endpoint_not_found');
    return endpoint;
  }

  return {
    async create(input) {
      const url = parseWebhookUrl(input.url);
      await deps.checkUrl(url);
      if (input.events !== null) {
        const unknown = input.events.filter(
          (e) => !(WEBHOOK_EVENT_TYPES as readonly string[]).includes(e),
        );
        if (unknown.length > 0)
          throw invalidRequest(
            'events',
            `unknown event type ${JSON.stringify(unknown[0])}; known: ${WEBHOOK_EVENT_TYPES.join(', ')}`,
          );
        if (input.events.length === 0)
          throw invalidRequest('events', 'events must name at least one type (omit it for all)');
      }
      if ((await store.listWebhookEndpoints()).length >= MAX_ENDPOINTS)
        throw invalidRequest(null, `at most ${MAX_ENDPOINTS} webhook endpoints`);
      const id = `whe_${randomBytes(12).toString('base64url')}`;
      const secret = generateWebhookSecret();
      const sealed = await vault.seal(webhookSecretIdentity(id), Buffer.from(secret, 'utf8'));
      const endpoint: WebhookEndpointRecord = {
        id,
        url: url.href,
        events: input.events === null ? null : [...new Set(input.events)],
        tenantId: input.tenantId,
        secret: sealed,
        createdAtMs: now(),
        disabledAtMs: null,
        disabledReason: null,
      };
      await store.putWebhookEndpoint(endpoint);
      return { endpoint, secret };
    },
    list: () => store.listWebhookEndpoints(),
    get: (id) => store.getWebhookEndpoint(id),
    async remove(id) {
      if (!(await store.deleteWebhookEndpoint(id)))
        throw new LinkvaultError('webhook_endpoint_not_found');
    },
    async deliveries(id) {
      await existing(id);
      return store.listWebhookDeliveries(id, 100);
    },
  };
}
