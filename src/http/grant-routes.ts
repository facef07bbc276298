import { type Router, type NextFunction, type Request, type Response } from 'express';
import { LinkvaultError, invalidRequest } from '../errors.js';
import { MAX_PURPOSE_CHARS, type GrantInput, type Grants } from '../links/release/grants.js';
import type { GrantRecord } from '../links/release/grants.js';
import { checkCallerId } from '../links/connect/sessions.js';
import { parseProxyRules } from '../links/proxy/proxy-rules.js';
import { PROVIDER_ID_PATTERN } from '../providers/provider-id.js';
import { authenticatedService, type ServiceAuth } from './service-auth.js';
import {
  jsonObject,
  onlyMembers,
  optionalBoolean,
  optionalStringList,
  safeName,
} from './request-shape.js';
import { createStrictRouter } from './strict-router.js';
import {
  isTenantScoped,
  mayActFor,
  tenantOutsideScope,
  tenantRequired,
  type TenantScoped,
} from '../auth/tenant-scope.js';
import type { Store } from '../store/store.js';

/**
 * Grants administration (role `admin`): POST /v1/grants, GET /v1/grants?service_id=,
 * DELETE /v1/grants/:id. Shapes are checked here; the rules of a grant live in links/grants.ts.
 *
 * A tenant-scoped admin (auth/tenant-scope.ts) grants only within its tenants: tenant_id is
 * required and must be one of them, and a link_id must name a link of that tenant (another
 * tenant's link is 404 link_not_found, as a missing one). It lists only grants that name one of
 * its tenants, and removing any other grant is 404 grant_not_found, as for a missing one.
 */

export interface GrantRouterDeps {
  readonly auth: ServiceAuth;
  readonly grants: Grants;
  /** Reads a grant or a link for a tenant-scoped caller. */
  readonly store: Pick<Store, 'getGrant' | 'getLink'>;
}

const BODY_MEMBERS = new Set([
  'service_id',
  'tenant_id',
  'provider_id',
  'link_id',
  'scopes',
  'purpose',
  'expires_at',
  'token_release',
  'proxy',
]);
const MAX_ID_CHARS = 256;
const MAX_SCOPES = 100;
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/;
/** RFC 3339 §5.6 date-time (seconds required, fraction optional, Z or a numeric offset). */
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;
/** Printable, no control characters: ids are echoed back and logged. */
const ID_TEXT = /^[^\u0000-\u001f\u007f]+$/;

function isScopeToken(s: string): boolean {
  return SCOPE_TOKEN.test(s);
}

function optionalId(b: Record<string, unknown>, name: string): string | null {
  const v = b[name];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_ID_CHARS || !ID_TEXT.test(v))
    throw invalidRequest(
      name,
      `${name} must be a string of 1-${MAX_ID_CHARS} printable characters`,
    );
  return v;
}

/**
 * A grant matches links by exact equality (links/release/grants.ts), so a scope that no link can
 * ever have is refused when the grant is created, not discovered later as a silent 403 no_grant.
 * Grants have no wildcards: omitting provider_id means every provider, and tenant_id names one
 * tenant. Refused as invalid_request naming the member, with the reason; the same status as the
 * domain's own refusals of grants that cannot apply ("link_id belongs to another tenant").
 */
/** 422: the grant is well formed but names a tenant or provider that no link can have. */
function neverMatches(parameter: string, detail: string): LinkvaultError {
  return new LinkvaultError('grant_never_matches', { detail, extra: { parameter } });
}

function refuseUnmatchable(input: GrantInput): void {
  const { tenantId, providerId } = input;
  if (tenantId !== null && tenantId !== undefined) {
    if (tenantId === '*')
      throw neverMatches(
        'tenant_id',
        'tenant_id is an exact tenant id, not a pattern: "*" would match no link (grants have no wildcards)',
      );
    if (tenantId.trim() !== tenantId)
      throw neverMatches(
        'tenant_id',
        'tenant_id starts or ends with white space: no tenant id can, so this grant would match no link',
      );
    // The rule sessions apply to the tenant ids links are created under.
    checkCallerId(tenantId, 'tenant_id');
  }
  if (providerId !== null && providerId !== undefined && !PROVIDER_ID_PATTERN.test(providerId)) {
    const lower = providerId.toLowerCase();
    throw neverMatches(
      'provider_id',
      PROVIDER_ID_PATTERN.test(lower)
        ? `provider ids are lower-case: this grant would match no link (did you mean "${lower}"?)`
        : 'provider_id is not a provider id (lower-case letters, digits and hyphens): this grant would match no link',
    );
  }
}

/** Parses an RFC 3339 timestamp strictly (a real calendar date) into ms since epoch. */
function parseRfc3339(value: string): number | null {
  const m = RFC3339.exec(value);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(
    Number,
  ) as [number, number, number, number, number, number];
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 60) return null;
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (day > daysInMonth) return null;
  const ms = Date.parse(value.toUpperCase());
  return Number.isFinite(ms) ? ms : null;
}

/** Strict body check for POST /v1/grants. */
function parseGrantBody(body: unknown): GrantInput {
  const b = jsonObject(body, 'body');
  onlyMembers(b, BODY_MEMBERS);

  const serviceId = optionalId(b, 'service_id');
  if (serviceId === null) throw invalidRequest('service_id', 'service_id is required');

  const scopes =
    b.scopes === null
      ? null
      : (optionalStringList(
          b,
          'scopes',
          MAX_SCOPES,
          isScopeToken,
          `scopes must be an array of 1-${MAX_SCOPES} scope strings (omit it for every scope of the link)`,
          'each scope must be a scope token (RFC 6749 §3.3)',
        ) ?? null);

  if (
    typeof b.purpose !== 'string' ||
    b.purpose.trim().length === 0 ||
    b.purpose.trim().length > MAX_PURPOSE_CHARS ||
    !ID_TEXT.test(b.purpose)
  ) {
    throw invalidRequest(
      'purpose',
      `purpose is required: 1-${MAX_PURPOSE_CHARS} printable characters`,
    );
  }

  let expiresAtMs: number | null = null;
  if (b.expires_at !== undefined && b.expires_at !== null) {
    const ms = typeof b.expires_at === 'string' ? parseRfc3339(b.expires_at) : null;
    if (ms === null) throw invalidRequest('expires_at', 'expires_at must be an RFC 3339 date-time');
    expiresAtMs = ms;
  }

  return {
    serviceId,
    tenantId: optionalId(b, 'tenant_id'),
    providerId: optionalId(b, 'provider_id'),
    linkId: optionalId(b, 'link_id'),
    scopes,
    purpose: b.purpose,
    expiresAtMs,
    ...proxyMembers(b),
  };
}

/** `token_release` (default true) and `proxy` (links/proxy/proxy-rules.ts checks the rules). */
function proxyMembers(b: Record<string, unknown>): Pick<GrantInput, 'tokenRelease' | 'proxy'> {
  const tokenRelease = optionalBoolean(b, 'token_release');
  const proxy = b.proxy === undefined || b.proxy === null ? null : parseProxyRules(b.proxy);
  return { ...(tokenRelease === undefined ? {} : { tokenRelease }), proxy };
}

/** The API's Grant JSON. */
function grantJson(grant: GrantRecord): Record<string, unknown> {
  return {
    id: grant.id,
    service_id: grant.serviceId,
    tenant_id: grant.tenantId,
    provider_id: grant.providerId,
    link_id: grant.linkId,
    scopes: grant.scopes,
    purpose: grant.purpose,
    created_at: new Date(grant.createdAtMs).toISOString(),
    expires_at: grant.expiresAtMs === null ? null : new Date(grant.expiresAtMs).toISOString(),
    // Shown when set, so grants without proxy members keep their shape.
    ...(grant.tokenRelease === false ? { token_release: false } : {}),
    ...(grant.proxy ? { proxy: grant.proxy } : {}),
  };
}

/** True when a scoped caller may see `grant`: it names one of the caller's tenants. */
function grantWithin(grant: GrantRecord, caller: TenantScoped): boolean {
  if (!isTenantScoped(caller)) return true;
  // A link-only grant (no tenant_id) is an unscoped admin's: not one a scoped admin may see or remove.
  return grant.tenantId !== null && mayActFor(caller, grant.tenantId);
}

export function createGrantRouter(deps: GrantRouterDeps): Router {
  const router = createStrictRouter();
  const { auth, grants, store } = deps;
  const admin = [auth.authenticate, auth.requireRole('admin')];

  /** A scoped admin's grant stays inside its tenants (see the top of this file). */
  async function checkWithinTenants(input: GrantInput, caller: TenantScoped): Promise<void> {
    if (!isTenantScoped(caller)) return;
    const tenantId = input.tenantId ?? null;
    if (tenantId === null) throw tenantRequired('a grant without one is not bound to a tenant');
    if (!mayActFor(caller, tenantId)) throw tenantOutsideScope();
    if (input.linkId !== null && input.linkId !== undefined) {
      // grants.ts would say "link_id belongs to another tenant": to a scoped admin, that link does not exist.
      const link = await store.getLink(input.linkId);
      if (!link || !mayActFor(caller, link.tenantId))
        throw new LinkvaultError('link_not_found', { detail: 'link_id names no link' });
    }
  }

  router.post('/v1/grants', ...admin, async (req: Request, res: Response, next: NextFunction) => {
    try {
      const input = parseGrantBody(req.body);
      refuseUnmatchable(input);
      await checkWithinTenants(input, authenticatedService(res));
      const grant = await grants.create(input, {
        serviceId: authenticatedService(res).id,
        requestId: req.requestId,
      });
      res.status(201).setHeader('Cache-Control', 'no-store');
      res.json(grantJson(grant));
    } catch (err) {
      next(err);
    }
  });

  router.get('/v1/grants', ...admin, async (req: Request, res: Response, next: NextFunction) => {
    try {
      for (const key of Object.keys(req.query))
        if (key !== 'service_id') throw invalidRequest(safeName(key), 'Unknown query parameter');
      const raw = req.query.service_id;
      if (
        raw !== undefined &&
        (typeof raw !== 'string' || raw.length === 0 || raw.length > MAX_ID_CHARS)
      )
        throw invalidRequest('service_id', 'service_id must be a single non-empty value');
      const caller = authenticatedService(res);
      const list = (await grants.list(raw)).filter((grant) => grantWithin(grant, caller));
      res.setHeader('Cache-Control', 'no-store');
      res.json({ grants: list.map(grantJson) });
    } catch (err) {
      next(err);
    }
  });

  router.delete(
    '/v1/grants/:id',
    ...admin,
    async (req: Request, res: Response, next: NextFunction) => {
      try {
        const id = req.params.id;
        if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_CHARS)
          throw new LinkvaultError('grant_not_found');
        const caller = authenticatedService(res);
        if (isTenantScoped(caller)) {
          const grant = await store.getGrant(id);
          if (!grant || !grantWithin(grant, caller)) throw new LinkvaultError('grant_not_found');
        }
        await grants.remove(id, {
          serviceId: authenticatedService(res).id,
          requestId: req.requestId,
        });
        res.status(204).end();
      } catch (err) {
        next(err);
      }
    },
  );

  return router;
}
