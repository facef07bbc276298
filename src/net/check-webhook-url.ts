import { LinkvaultError } from '../errors.js';
import { resolveTarget, TargetRefusedError } from './public-address.js';

/**
 * The creation-time check of a webhook URL. In production: https only, and the host must resolve
 * to public addresses only (checked again at every delivery: DNS can change). Outside production
 * http and local receivers are allowed, for development and tests.
 */
export async function checkWebhookUrl(url: URL, production: boolean): Promise<void> {
  if (!production) return;
  if (url.protocol !== 'https:')
    throw new LinkvaultError('invalid_webhook_url', { detail: 'url must be https' });
  try {
    await resolveTarget(url.hostname, true);
  } catch (err) {
    if (err instanceof TargetRefusedError)
      throw new LinkvaultError('invalid_webhook_url', { detail: err.reason });
    throw err;
  }
}
