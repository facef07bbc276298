/**
 * A provider id: lower-case letters, digits and hyphens, starting with a letter, at most 63
 * characters. The catalogue refuses any other id, so a route can reject a malformed one before it
 * looks anything up.
 */
export const PROVIDER_ID_PATTERN = /^[a-z][a-z0-9-]{0,62}$/;

/** True when `value` is a well-formed provider id (it may still name no enabled provider). */
export function isProviderId(value: unknown): value is string {
  return typeof value === 'string' && PROVIDER_ID_PATTERN.test(value);
}
