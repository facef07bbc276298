import { type Router, type Request, type RequestHandler } from 'express';
import { LinkvaultError, invalidRequest } from '../errors.js';
import { toLinkJson } from '../links/link.js';
import { checkCallerId, type Sessions } from '../links/connect/sessions.js';
import type { Store } from '../store/store.js';
import type { LinkFilter, LinkStatus } from '../links/link.js';
import { listLinksWithin, mayActFor } from '../auth/tenant-scope.js';
import { authenticatedService, type ServiceAuth } from './service-auth.js';
import { echoableName } from './request-shape.js';
import { sessionOf } from './session-bearer.js';
import { parseStrictQuery, rawQueryOf } from './strict-query.js';
import { PROVIDER_ID_PATTERN } from '../providers/provider-id.js';
import { createStrictRouter } from './strict-router.js';

/**
 * Link read routes: services list and read links (role links:read); the browser, holding a
 * session bearer, lists the links of that session's own tenant and user. No route here returns
 * token material: toLinkJson builds the view by allowlist. A tenant-scoped service
 * (auth/tenant-scope.ts) lists and reads only its tenants' links; another tenant's link is 404
 * link_not_found, exactly like a missing one.
 */

export interface LinkRouterDeps {
  readonly store: Pick<Store, 'getLink' | 'listLinks'>;
  readonly sessions: Pick<Sessions, 'resolveSession'>;
  readonly serviceAuth: ServiceAuth;
}

const LINK_ID = /^lnk_[A-Za-z0-9_-]{1,64}$/;
const STATUSES: readonly LinkStatus[] = [
  'active',
  'needs_reauth',
  'revoked',
  'pending_confirmation',
];
const LIST_FILTERS = new Set(['tenant_id', 'user_id', 'provider_id', 'status']);
const LIST_QUERY_LIMITS = { maxQueryChars: 2048, maxParams: 8, maxValueChars: 256 } as const;

function parseListFilter(req: Request): LinkFilter {
  const query = parseStrictQuery(req, LIST_QUERY_LIMITS);
  const filter: { -readonly [K in keyof LinkFilter]: LinkFilter[K] } = {};
  for (const [name, value] of query.values) {
    if (!LIST_FILTERS.has(name)) {
      const shown = echoableName(name);
      throw invalidRequest(
        shown,
        shown
          ? `Unknown filter "${shown}" (known: tenant_id, user_id, provider_id, status)`
          : 'Unknown filter',
      );
    }
    if (name === 'tenant_id') filter.tenantId = checkCallerId(value, 'tenant_id');
    else if (name === 'user_id') filter.userId = checkCallerId(value, 'user_id');
    else if (name === 'provider_id') {
      if (!PROVIDER_ID_PATTERN.test(value))
        throw invalidRequest('provider_id', 'provider_id must be a provider id');
      filter.providerId = value;
    } else {
      if (!(STATUSES as readonly string[]).includes(value))
        throw invalidRequest(
          'status',
          'status must be active, needs_reauth, revoked or pending_confirmation',
        );
      filter.status = value as LinkStatus;
    }
  }
  return filter;
}

export function createLinkRouter(deps: LinkRouterDeps): Router {
  const { store, sessions, serviceAuth } = deps;
  const router = createStrictRouter();

  const listLinks: RequestHandler = async (req, res) => {
    const filter = parseListFilter(req);
    const links = await listLinksWithin(store, authenticatedService(res), filter);
    res.json({ links: links.map(toLinkJson) });
  };

  const getLink: RequestHandler = async (req, res) => {
    const id = req.params.id;
    const link = typeof id === 'string' && LINK_ID.test(id) ? await store.getLink(id) : null;
    if (!link || !mayActFor(authenticatedService(res), link.tenantId))
      throw new LinkvaultError('link_not_found');
    res.json(toLinkJson(link));
  };

  const myLinks: RequestHandler = async (req, res) => {
    const session = await sessionOf(req, res, sessions);
    // No query parameters are accepted here: the session alone says whose links these are.
    if (rawQueryOf(req) !== '') throw invalidRequest(null, 'This route takes no query parameters');
    const links = await store.listLinks({ tenantId: session.tenantId, userId: session.userId });
    res.json({ links: links.map(toLinkJson) });
  };

  router.get(
    '/v1/links',
    serviceAuth.authenticate,
    serviceAuth.requireRole('links:read'),
    listLinks,
  );
  router.get(
    '/v1/links/:id',
    serviceAuth.authenticate,
    serviceAuth.requireRole('links:read'),
    getLink,
  );
  router.get('/v1/me/links', myLinks);
  return router;
}
