import type { Request, Router } from 'express';
import { LinkvaultError, invalidRequest } from '../errors.js';
import type { AuditQuery } from '../links/audit/audit-query.js';
import type { AuditFilter } from '../store/store.js';
import { checkCallerId, type Sessions } from '../links/connect/sessions.js';
import { echoableName } from './request-shape.js';
import { authenticatedService, type ServiceAuth } from './service-auth.js';
import { mayActFor, tenantOutsideScope, tenantRequired } from '../auth/tenant-scope.js';
import { sessionOf } from './session-bearer.js';
import { parseStrictQuery } from './strict-query.js';
import { createStrictRouter } from './strict-router.js';

/**
 * The audit trail, read: GET /v1/audit (role admin; filters, cursor paging, oldest first) and
 * GET /v1/me/links/{id}/activity (session bearer: what was done with one of the user's links).
 * Token values never appear: events carry only their keyed labels.
 */

export interface AuditRouterDeps {
  readonly auditQuery: AuditQuery;
  readonly sessions: Pick<Sessions, 'resolveSession'>;
  readonly auth: ServiceAuth;
}

const FILTERS = new Set(['link_id', 'service_id', 'tenant_id', 'type', 'after', 'limit']);
const QUERY_LIMITS = { maxQueryChars: 2048, maxParams: 8, maxValueChars: 512 } as const;
const LINK_ID = /^lnk_[A-Za-z0-9_-]{1,64}$/;
const TYPE = /^[a-z][a-z0-9_.]{0,63}$/;
const CURSOR = /^[A-Za-z0-9_-]{1,400}$/;
const MAX_LIMIT = 500;

function parseAuditQuery(req: Request): { filter: AuditFilter; after?: string; limit: number } {
  const query = parseStrictQuery(req, QUERY_LIMITS);
  const filter: { -readonly [K in keyof AuditFilter]: AuditFilter[K] } = {};
  let after: string | undefined;
  let limit = 100;
  for (const [name, value] of query.values) {
    if (!FILTERS.has(name)) {
      const shown = echoableName(name);
      throw invalidRequest(shown, shown ? `Unknown parameter "${shown}"` : 'Unknown parameter');
    }
    if (name === 'link_id') {
      if (!LINK_ID.test(value)) throw invalidRequest('link_id', 'link_id must be a link id');
      filter.linkId = value;
    } else if (name === 'service_id') filter.serviceId = checkCallerId(value, 'service_id');
    else if (name === 'tenant_id') filter.tenantId = checkCallerId(value, 'tenant_id');
    else if (name === 'type') {
      if (!TYPE.test(value)) throw invalidRequest('type', 'type must be an event type');
      filter.type = value;
    } else if (name === 'after') {
      if (!CURSOR.test(value)) throw invalidRequest('after', 'after must be a cursor from `next`');
      after = value;
    } else {
      if (!/^\d{1,3}$/.test(value) || Number(value) < 1 || Number(value) > MAX_LIMIT)
        throw invalidRequest('limit', `limit must be an integer from 1 to ${MAX_LIMIT}`);
      limit = Number(value);
    }
  }
  return { filter, ...(after === undefined ? {} : { after }), limit };
}

export function createAuditRouter(deps: AuditRouterDeps): Router {
  const { auditQuery, sessions, auth } = deps;
  const router = createStrictRouter();

  router.get('/v1/audit', auth.authenticate, auth.requireRole('admin'), async (req, res) => {
    const { filter, after, limit } = parseAuditQuery(req);
    // A tenant-scoped admin reads one of its tenants at a time (the filter keeps every event to it).
    const caller = authenticatedService(res);
    if (caller.tenants !== null) {
      if (filter.tenantId === undefined) throw tenantRequired('the audit trail spans every tenant');
      if (!mayActFor(caller, filter.tenantId)) throw tenantOutsideScope();
    }
    const page = await auditQuery.list(filter, after, limit);
    res.setHeader('Cache-Control', 'no-store');
    res.status(200).json(page);
  });

  router.get('/v1/me/links/:id/activity', async (req, res) => {
    const session = await sessionOf(req, res, sessions);
    if (Object.keys(req.query).length > 0)
      throw invalidRequest(null, 'This route takes no query parameters');
    const id = req.params.id;
    if (typeof id !== 'string' || !LINK_ID.test(id)) throw new LinkvaultError('link_not_found');
    const activity = await auditQuery.activity(id, {
      tenantId: session.tenantId,
      userId: session.userId,
    });
    res.setHeader('Cache-Control', 'no-store');
    res.status(200).json(activity);
  });

  return router;
}
