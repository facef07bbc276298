import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { resolveTarget, TargetRefusedError } from './public-address.js';

/** One signed delivery attempt. */
export interface WebhookRequest {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** What the receiver answered: its status, and its Retry-After in seconds when it gave one. */
export interface WebhookResponse {
  readonly status: number;
  readonly retryAfterSeconds: number | null;
}

/** Why no answer came: the target was refused, or the receiver could not be reached in time. */
export class WebhookSendError extends Error {
  constructor(
    readonly reason: 'target_refused' | 'timeout' | 'network',
    detail: string,
  ) {
    super(detail);
    this.name = 'WebhookSendError';
  }
}

export interface WebhookSender {
  /** POSTs the request once; never follows a redirect (a 3xx is an answer like any other). */
  send(req: WebhookRequest): Promise<WebhookResponse>;
}

export interface WebhookSenderOptions {
  /** Only https URLs to public addresses (production). */
  readonly publicOnly: boolean;
  /** The whole attempt, connect to last byte. */
  readonly timeoutMs: number;
  readonly userAgent?: string;
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), or null. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | null {
  if (value === undefined) return null;
  const trimmed = value.trim();
  if (/^\d{1,9}$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - nowMs) / 1000));
}

/**
 * Delivers over node:http(s), resolving the host itself and pinning the connection to the checked
 * address (public-address.ts), so the check is the address actually reached, at every attempt.
 */
export function createWebhookSender(options: WebhookSenderOptions): WebhookSender {
  return {
    async send(req) {
      let url: URL;
      try {
        url = new URL(req.url);
      } catch {
        throw new WebhookSendError('target_refused', 'not a URL');
      }
      if (url.protocol !== 'https:' && (options.publicOnly || url.protocol !== 'http:'))
        throw new WebhookSendError('target_refused', 'only https URLs are delivered to');
      let target;
      try {
        target = await resolveTarget(url.hostname, options.publicOnly);
      } catch (err) {
        if (err instanceof TargetRefusedError)
          throw new WebhookSendError('target_refused', err.reason);
        throw err;
      }
      const pinned: LookupFunction = (_host, opts, callback) => {
        if ((opts as { all?: boolean }).all)
          (callback as (e: null, a: { address: string; family: number }[]) => void)(null, [
            { address: target.address, family: target.family },
          ]);
        else callback(null, target.address, target.family);
      };
      const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
      return new Promise<WebhookResponse>((resolve, reject) => {
        const outgoing = send(
          url,
          {
            method: 'POST',
            lookup: pinned,
            headers: {
              ...req.headers,
              'content-type': 'application/json',
              'content-length': String(Buffer.byteLength(req.body)),
              'user-agent': options.userAgent ?? 'linkvault-webhooks/1',
            },
            timeout: options.timeoutMs,
            agent: false,
          },
          (res) => {
            // The body is not needed; read a little, then drop the connection.
            res.resume();
            const retryAfter = parseRetryAfter(
              Array.isArray(res.headers['retry-after'])
                ? res.headers['retry-after'][0]
                : res.headers['retry-after'],
              Date.now(),
            );
            res.on('end', () => undefined);
            clearTimeout(overall);
            resolve({ status: res.statusCode ?? 0, retryAfterSeconds: retryAfter });
            res.destroy();
          },
        );
        const overall = setTimeout(() => {
          outgoing.destroy(new WebhookSendError('timeout', 'the receiver did not answer in time'));
        }, options.timeoutMs);
        outgoing.on('timeout', () =>
          outgoing.destroy(new WebhookSendError('timeout', 'the receiver did not answer in time')),
        );
        outgoing.on('error', (err) => {
          clearTimeout(overall);
          reject(
            err instanceof WebhookSendError
              ? err
              : new WebhookSendError(
                  'network',
                  (err as NodeJS.ErrnoException).code ?? 'network error',
                ),
          );
        });
        outgoing.end(req.body);
      });
    },
  };
}
