import { LinkvaultError, invalidRequest } from '../../errors.js';

/**
 * A grant's proxy rules: which API calls the proxy may make with a link's token on a service's
 * behalf. Allow-list only: `{allow: [{method, path}]}`, where `path` is a template of `/`-separated
 * segments, each a literal, `*` (exactly one non-empty segment) or, as the last one, `**` (one or
 * more segments: the rest of the path).
 *
 * Matching is exact and works on the request path as the provider will read it (docs/proxy.md):
 * - case-sensitive (RFC 3986 §6.2.2.1: only the scheme and host are case-insensitive);
 * - a trailing slash is significant: `/a/b` and `/a/b/` are different paths (some APIs, such as
 *   Close, spell their endpoints with one). A template ending in `/` matches only paths ending in
 *   `/`; `**` also takes a trailing slash;
 * - the query is not part of the path and never matches anything.
 * A request path that a server could read as another path is refused before any rule is looked at
 * (checkRequestPath): `.` and `..` segments (RFC 3986 §5.2.4 would remove them), encoded or raw
 * slashes and backslashes inside a segment, empty segments, `;` path parameters, control
 * characters and malformed percent-encoding, whether raw or percent-encoded.
 */

export const PROXY_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
export type ProxyMethod = (typeof PROXY_METHODS)[number];

export interface ProxyRule {
  readonly method: ProxyMethod;
  /** The template as written (`/crm/v3/objects/contacts/*`): audited as the rule that matched. */
  readonly path: string;
}

export interface ProxyRules {
  readonly allow: readonly ProxyRule[];
}

export const MAX_PROXY_RULES = 100;
export const MAX_TEMPLATE_CHARS = 512;

/** RFC 3986 pchar without `%` and `;`: unreserved, sub-delims but `;`, `:` and `@`. */
const LITERAL_SEGMENT = /^[A-Za-z0-9._~!$&'()*+,=:@-]+$/;

function ruleError(index: number, member: 'method' | 'path' | null, detail: string) {
  return invalidRequest(`proxy.allow[${index}]${member ? `.${member}` : ''}`, detail);
}

function neverMatches(index: number, detail: string): LinkvaultError {
  return new LinkvaultError('grant_never_matches', {
    detail,
    extra: { parameter: `proxy.allow[${index}].path` },
  });
}

/** Checks one template: 400 invalid_request for a malformed one, 422 grant_never_matches for one no checked path can match. */
function checkTemplate(template: string, index: number): void {
  if (template.length === 0 || template.length > MAX_TEMPLATE_CHARS || template[0] !== '/')
    throw ruleError(
      index,
      'path',
      `path must be a template of 1-${MAX_TEMPLATE_CHARS} characters starting with "/"`,
    );
  if (template === '/') return;
  const segments = template.slice(1).split('/');
  segments.forEach((segment, i) => {
    const last = i === segments.length - 1;
    if (segment === '') {
      if (last) return; // a trailing slash: significant, matched as written
      throw neverMatches(
        index,
        'path has an empty segment ("//"): requests with one are refused, so the rule would never match',
      );
    }
    if (segment === '**') {
      if (!last)
        throw ruleError(index, 'path', '"**" may only be the last segment of a path template');
      return;
    }
    if (segment === '*') return;
    if (segment.includes('*'))
      throw ruleError(
        index,
        'path',
        '"*" and "**" must be whole segments (no partial wildcards such as "contacts*")',
      );
    if (segment === '.' || segment === '..')
      throw neverMatches(
        index,
        'path has a "." or ".." segment: requests with one are refused, so the rule would never match',
      );
    if (segment.includes('%') || segment.includes('\\') || segment.includes(';'))
      throw neverMatches(
        index,
        'path has "%", "\\" or ";": requests are matched decoded and such paths are refused, so the rule would never match',
      );
    if (!LITERAL_SEGMENT.test(segment))
      throw ruleError(
        index,
        'path',
        'path segments may hold only letters, digits and -._~!$&\'()+,=:@ (RFC 3986 pchar), "*" or "**"',
      );
  });
}

/**
 * The `proxy` member of POST /v1/grants: `{allow: [{method, path}, ...]}`, 1-100 rules, methods
 * upper-case from PROXY_METHODS. Refuses 400 invalid_request naming the member for a malformed
 * rule, 422 grant_never_matches for a template no request could match. Duplicates are dropped.
 */
export function parseProxyRules(raw: unknown): ProxyRules {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw invalidRequest('proxy', 'proxy must be an object {"allow": [{"method", "path"}]}');
  for (const key of Object.keys(raw))
    if (key !== 'allow') throw invalidRequest('proxy', 'proxy has only the member "allow"');
  const allow = (raw as { allow?: unknown }).allow;
  if (!Array.isArray(allow) || allow.length === 0 || allow.length > MAX_PROXY_RULES)
    throw invalidRequest(
      'proxy.allow',
      `proxy.allow must be an array of 1-${MAX_PROXY_RULES} rules {"method", "path"}`,
    );
  const rules: ProxyRule[] = [];
  const seen = new Set<string>();
  allow.forEach((item: unknown, index) => {
    if (typeof item !== 'object' || item === null || Array.isArray(item))
      throw ruleError(index, null, 'each rule must be an object {"method", "path"}');
    for (const key of Object.keys(item))
      if (key !== 'method' && key !== 'path')
        throw ruleError(index, null, 'a rule has only the members "method" and "path"');
    const { method, path } = item as { method?: unknown; path?: unknown };
    if (typeof method !== 'string' || !(PROXY_METHODS as readonly string[]).includes(method))
      throw ruleError(
        index,
        'method',
        `method must be one of ${PROXY_METHODS.join(', ')} (upper-case)`,
      );
    if (typeof path !== 'string')
      throw ruleError(index, 'path', 'path must be a string template such as "/v1/items/*"');
    checkTemplate(path, index);
    const key = `${method} ${path}`;
    if (seen.has(key)) return;
    seen.add(key);
    rules.push({ method: method as ProxyMethod, path });
  });
  return { allow: rules };
}

/** A proxied request path, checked: its segments decoded (what rules match) and the raw path (what is sent). */
export interface CheckedPath {
  readonly raw: string;
  readonly segments: readonly string[];
}

const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Checks a request path (starting with `/`, without the query) for anything that a server could
 * read as a different path than the one the rules are matched against. Throws proxy_not_allowed.
 */
export function checkRequestPath(raw: string): CheckedPath {
  const refuse = (why: string) =>
    new LinkvaultError('proxy_not_allowed', { detail: `The path is refused: ${why}` });
  if (raw.length === 0 || raw[0] !== '/') throw refuse('it must start with "/"');
  if (raw.length > 4096) throw refuse('it is too long');
  if (raw.includes('\\')) throw refuse('it contains a backslash');
  if (raw.includes(';')) throw refuse('it contains ";" (path parameters)');
  if (raw === '/') return { raw, segments: [''] };
  const parts = raw.slice(1).split('/');
  const segments = parts.map((part, i) => {
    if (part === '' && i !== parts.length - 1) throw refuse('it contains an empty segment ("//")');
    let decoded = part;
    if (part.includes('%'))
      try {
        decoded = decodeURIComponent(part);
      } catch {
        throw refuse('it has malformed percent-encoding');
      }
    if (decoded === '.' || decoded === '..') throw refuse('it contains a "." or ".." segment');
    if (decoded.includes('/') || decoded.includes('\\'))
      throw refuse('it contains an encoded slash or backslash');
    if (CONTROL.test(decoded)) throw refuse('it contains control characters');
    if (decoded.includes(';') || decoded.includes('?') || decoded.includes('#'))
      throw refuse('it contains an encoded ";", "?" or "#"');
    return decoded;
  });
  return { raw, segments };
}

/** Whether `template` (checked by parseProxyRules) matches the decoded `segments` of a checked path. */
export function templateMatches(template: string, segments: readonly string[]): boolean {
  if (template === '/') return segments.length === 1 && segments[0] === '';
  const parts = template.slice(1).split('/');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '**') {
      // The rest: at least one non-empty segment, then maybe a trailing slash.
      const rest = segments.slice(i);
      if (rest.length === 0 || rest[0] === '') return false;
      return rest.every((s, j) => s !== '' || j === rest.length - 1);
    }
    if (i >= segments.length) return false;
    const segment = segments[i]!;
    if (part === '*') {
      if (segment === '') return false;
    } else if (part !== segment) return false;
  }
  return parts.length === segments.length;
}

/** The first rule of `rules` that allows `method` on `path`, or null. */
export function matchProxyRule(
  rules: ProxyRules | null | undefined,
  method: string,
  path: CheckedPath,
): ProxyRule | null {
  if (!rules) return null;
  for (const rule of rules.allow)
    if (rule.method === method && templateMatches(rule.path, path.segments)) return rule;
  return null;
}

/**
 * The grant-creation checks of the two proxy members (a hook of grants.ts): a proxy-only grant
 * (`token_release: false`) must carry proxy rules, or it would allow nothing at all.
 */
export function checkGrantProxyMembers(input: {
  readonly tokenRelease?: boolean;
  readonly proxy?: ProxyRules | null;
}): void {
  if (input.tokenRelease === false && !input.proxy)
    throw invalidRequest(
      'proxy',
      'a grant with token_release false allows only proxied calls: it needs proxy rules',
    );
}
