import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Verification of linkvault's webhook deliveries, per the Standard Webhooks scheme: headers
 * `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature` (space-separated
 * `v1,<base64 HMAC-SHA256>` entries) over `<id>.<timestamp>.<raw body>`, keyed by the bytes of
 * the endpoint secret (`whsec_` + base64).
 */

export type WebhookEventType =
  | 'link.connected'
  | 'link.reconnected'
  | 'link.needs_reauth'
  | 'link.refresh_failed'
  | 'link.recovered'
  | 'link.revoked'
  | 'link.revocation_confirmed'
  | 'link.revocation_failed';

export interface WebhookEventData {
  readonly link_id: string;
  readonly tenant_id: string;
  readonly user_id: string;
  readonly provider_id: string;
  /** link.refresh_failed */
  readonly permanent?: boolean;
  /** link.revoked */
  readonly revoked_by?: 'user' | 'service' | 'admin' | 'provider';
  readonly [member: string]: unknown;
}

export interface WebhookEvent {
  /** The event id (`webhook-id`): the same on every retry, so deduplicate on it. */
  readonly id: string;
  readonly type: WebhookEventType | (string & {});
  readonly timestamp: string;
  readonly data: WebhookEventData;
}

export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebhookVerificationError';
  }
}

export type WebhookHeaders =
  Headers | Readonly<Record<string, string | readonly string[] | undefined>>;

export interface VerifyWebhookOptions {
  /** How far the timestamp may be from now, either way (default 300 s): older deliveries are replays. */
  readonly toleranceSeconds?: number;
  /** The clock (ms since the epoch), for tests. */
  readonly now?: () => number;
}

function headerOf(headers: WebhookHeaders, name: string): string | null {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name);
  const record = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
  const key = Object.keys(record).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : record[key];
  if (Array.isArray(value)) return value.length === 1 ? (value[0] as string) : null;
  return typeof value === 'string' ? value : null;
}

function secretBytes(secret: string): Buffer {
  const encoded = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : secret;
  const bytes = Buffer.from(encoded, 'base64');
  if (bytes.length === 0) throw new TypeError('linkvault: the webhook secret is empty');
  return bytes;
}

/** The `v1,<base64>` signature of a delivery (what linkvault sends), for tests and tools. */
export function signWebhook(
  secret: string,
  id: string,
  timestampSeconds: number,
  rawBody: string | Buffer,
): string {
  const mac = createHmac('sha256', secretBytes(secret))
    .update(`${id}.${timestampSeconds}.`)
    .update(rawBody)
    .digest('base64');
  return `v1,${mac}`;
}

/**
 * Checks a delivery's signature and timestamp and returns the parsed event; throws
 * WebhookVerificationError otherwise. Pass the body exactly as received (bytes or string), before
 * any JSON parsing: re-serialised JSON does not verify.
 */
export function verifyWebhook(
  headers: WebhookHeaders,
  rawBody: string | Buffer,
  secret: string,
  options: VerifyWebhookOptions = {},
): WebhookEvent {
  const id = headerOf(headers, 'webhook-id');
  const timestamp = headerOf(headers, 'webhook-timestamp');
  const signatures = headerOf(headers, 'webhook-signature');
  if (!id || !timestamp || !signatures)
    throw new WebhookVerificationError(
      'missing webhook-id, webhook-timestamp or webhook-signature',
    );
  if (!/^\d{1,12}$/.test(timestamp))
    throw new WebhookVerificationError('invalid webhook-timestamp');
  const nowSeconds = Math.floor((options.now ?? Date.now)() / 1000);
  const tolerance = options.toleranceSeconds ?? 300;
  if (Math.abs(nowSeconds - Number(timestamp)) > tolerance)
    throw new WebhookVerificationError('webhook-timestamp is outside the tolerance');

  const expected = Buffer.from(
    signWebhook(secret, id, Number(timestamp), rawBody).slice(3),
    'base64',
  );
  const matched = signatures.split(' ').some((entry) => {
    const [version, value] = entry.split(',', 2);
    if (version !== 'v1' || !value) return false;
    const given = Buffer.from(value, 'base64');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  if (!matched) throw new WebhookVerificationError('no matching signature');

  let body: unknown;
  try {
    body = JSON.parse(Buffer.isBuffer(rawBody) ? rawBody.toString('utf8') : rawBody);
  } catch {
    throw new WebhookVerificationError('the body is not JSON');
  }
  const event = body as { type?: unknown; timestamp?: unknown; data?: unknown };
  if (typeof event.type !== 'string' || typeof event.data !== 'object' || event.data === null)
    throw new WebhookVerificationError('the body is not a webhook event');
  return {
    id,
    type: event.type,
    timestamp: typeof event.timestamp === 'string' ? event.timestamp : '',
    data: event.data as WebhookEventData,
  };
}
