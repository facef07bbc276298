import { LinkvaultError } from '../../errors.js';

/**
 * Validation of a session's `return_to`: where the callback sends the browser afterwards. It is
 * an open-redirect surface (RFC 9700 §4.11), so the rule is an exact origin match against
 * LINKVAULT_RETURN_URL_ALLOWLIST, decided on the URL the WHATWG parser (what browsers run) sees,
 * and the raw text must already be in the form the parser would produce for its authority:
 * whatever the parser would repair or reinterpret (backslashes, `https:evil.com`, tabs and
 * newlines it silently strips, userinfo, a default port, an IP in decimal) is refused rather
 * than normalised, because a second parser downstream may repair it differently.
 */

export const MAX_RETURN_TO_CHARS = 2048;

/** Percent-encoded bytes that no legitimate return URL needs: controls, DEL and the backslash. */
const ENCODED_TRICK = /%(?:[01][0-9a-f]|7f|5c)/i;
/** Printable ASCII only: no whitespace, no controls, no non-ASCII (IDN is written in punycode). */
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;

function reject(detail: string): never {
  throw new LinkvaultError('invalid_return_to', { detail });
}

/**
 * Returns `raw` unchanged when it is an absolute http(s) URL whose origin is exactly one of
 * `allowlist` (origins as config.ts normalised them); throws 400 invalid_return_to otherwise.
 */
export function checkReturnTo(raw: unknown, allowlist: readonly string[]): string {
  if (typeof raw !== 'string' || raw === '') reject('return_to must be a non-empty string');
  if (raw.length > MAX_RETURN_TO_CHARS)
    reject(`return_to must be at most ${MAX_RETURN_TO_CHARS} characters`);
  if (!PRINTABLE_ASCII.test(raw))
    reject('return_to must not contain whitespace, control or non-ASCII characters');
  if (raw.includes('\\')) reject('return_to must not contain a backslash');
  if (ENCODED_TRICK.test(raw))
    reject('return_to must not contain encoded control characters or backslashes');

  // Scheme-relative and relative forms have no scheme of their own: refuse before parsing.
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(raw);
  if (!scheme) reject('return_to must be an absolute http(s) URL');
  const protocol = `${scheme[1]!.toLowerCase()}:`;
  if (protocol !== 'http:' && protocol !== 'https:') reject('return_to must use http or https');

  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    reject('return_to is not a valid URL');
  }
  if (parsed.protocol !== protocol) reject('return_to must be an absolute http(s) URL');
  if (parsed.username !== '' || parsed.password !== '') reject('return_to must not carry userinfo');

  // The authority as written must be exactly what the parser understood: this refuses userinfo
  // tricks, a trailing dot, percent-encoded or numeric host forms and an explicit default port.
  const afterScheme = raw.slice(scheme[0].length);
  const authority = afterScheme.split(/[/?#]/, 1)[0] ?? '';
  if (authority.toLowerCase() !== parsed.host)
    reject('return_to must name its host exactly as the allowlisted origin does');

  if (!allowlist.includes(parsed.origin)) reject('return_to is not on the allowlist');
  return raw;
}

/** `returnTo` with the result parameters set (replacing any of the same name it already carries). */
export function withResult(returnTo: string, result: Readonly<Record<string, string>>): string {
  const url = new URL(returnTo);
  for (const [name, value] of Object.entries(result)) url.searchParams.set(name, value);
  return url.href;
}
