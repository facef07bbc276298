import { invalidRequest } from '../errors.js';

/**
 * Shape checks for request bodies: an object with only known members, each of a type and range.
 * Every refusal is 400 invalid_request naming the parameter. A caller-chosen name is echoed only
 * through safeName or echoableName, so a problem body never carries markup or control characters.
 */

const ECHOABLE = /^[A-Za-z0-9_.-]{1,64}$/;

/** A caller-chosen member name, made safe to echo (short, no markup or control characters). */
export function safeName(key: string): string {
  return key.slice(0, 64).replace(/[^A-Za-z0-9_.-]/g, '?');
}

/** The name itself when it is safe to echo as it is, else null (then the refusal names nothing). */
export function echoableName(name: string): string | null {
  return ECHOABLE.test(name) ? name : null;
}

/** The body as a JSON object, else 400 naming `parameter` (null: naming nothing). */
export function jsonObject(body: unknown, parameter: 'body' | null): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw invalidRequest(parameter, 'The body must be a JSON object');
  return body as Record<string, unknown>;
}

/** Refuses the first member not in `allowed`, naming it (masked by safeName). */
export function onlyMembers(body: Record<string, unknown>, allowed: ReadonlySet<string>): void {
  for (const key of Object.keys(body))
    if (!allowed.has(key))
      throw invalidRequest(safeName(key), 'Unknown member in the request body');
}

/** An optional integer member from `min` to `max`. */
export function optionalInteger(
  body: Record<string, unknown>,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const v = body[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw invalidRequest(name, `${name} must be an integer from ${min} to ${max}`);
  return v;
}

/** An optional boolean member. */
export function optionalBoolean(body: Record<string, unknown>, name: string): boolean | undefined {
  const v = body[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw invalidRequest(name, `${name} must be a boolean`);
  return v;
}

/** An optional list of 1-`max` strings that each pass `item`; `detailList` and `detailItem` say what was wrong. */
export function optionalStringList(
  body: Record<string, unknown>,
  name: string,
  max: number,
  item: (s: string) => boolean,
  detailList: string,
  detailItem: string,
): string[] | undefined {
  const v = body[name];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length === 0 || v.length > max) throw invalidRequest(name, detailList);
  for (const s of v) if (typeof s !== 'string' || !item(s)) throw invalidRequest(name, detailItem);
  return v as string[];
}
