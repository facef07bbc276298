import { isLinkvaultError } from '../errors.js';

/**
 * The `outcome` label of linkvault_key_service_calls_total; every provider uses the same values so
 * one dashboard reads both. 'breaker_open': failed at once without calling (KMS known down).
 */
export type KeyServiceOutcome = 'ok' | 'invalid' | 'unavailable' | 'error' | 'breaker_open';

/** The outcome of a key-provider call that threw `err`: the port's two failures by code, anything else 'error'. */
export function keyServiceOutcome(err: unknown): KeyServiceOutcome {
  if (isLinkvaultError(err, 'sealed_record_invalid')) return 'invalid';
  if (isLinkvaultError(err, 'key_service_unavailable')) return 'unavailable';
  return 'error';
}
