import { type Router, type Request } from 'express';
import { LinkvaultError, invalidRequest } from '../errors.js';
import type { SessionRecord } from '../links/connect/sessions.js';
import { normaliseReason, type Revocation } from '../links/revoke/revocation.js';
import { checkCallerId } from '../links/connect/sessions.js';
import { jsonObject, safeName } from './request-shape.js';
import { sessionOf } from './session-bearer.js';
import { authenticatedService, type ServiceAuth } from './service-auth.js';
import { PROVIDER_ID_PATTERN } from '../providers/provider-id.js';
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
 * Revocation routes (docs/api.md): thin — parse, authorize, call links/revocation.ts, shape the reply.
 *
 *   DELETE /v1/links/{id}            service `links:revoke`  → 200 RevocationRecord
 *   DELETE /v1/me/links/{id}         session bearer          → 200 RevocationRecord (another user's link: 404)
 *   GET    /v1/links/{id}/revocation service `links:read`    → RevocationRecord
 *   GET    /v1/me/links/{id}/revocation session bearer       → RevocationRecord of one of the user's links
 *   POST   /v1/revocations           service `admin`         → 202 {job_id, matched}
 *   GET    /v1/revocations/{job_id}  service `admin`         → bulk progress
 *
 * An optional JSON body `{reason}` on the DELETEs is recorded as the revocation's reason.
 *
 * A tenant-scoped service (auth/tenant-scope.ts) revokes and reads only its tenants' links and
 * bulk jobs: another tenant's link is 404 link_not_found and its job 404 job_not_found, exactly
 * like missing ones; a bulk revocation must name one of its tenants.
 */

export interface RevocationRouterDeps {
  readonly revocation: Revocation;
  readonly auth: ServiceAuth;
  readonly sessions: { resolveSession(token: unknown): Promise<SessionRecord> };
  /** Reads the tenant of a link or a bulk job for a tenant-scoped caller (a link's tenant never changes). */
  readonly store: Pick<Store, 'getLink' | 'getJobStatus'>;
}

const MAX_LINK_ID_CHARS = 512;
const JOB_ID = /^rvj_[0-9a-f-]{36}$/;

function linkIdOf(req: Request): string {
  const id = req.params.id;
  // Too long to be one of ours: the same answer as any unknown link.
  if (typeof id !== 'string' || id === '' || id.length > MAX_LINK_ID_CHARS)
    throw new LinkvaultError('link_not_found');
  return id;
}

function bodyObject(req: Request): Record<string, unknown> {
  const body: unknown = req.body;
  return body === undefined ? {} : jsonObject(body, null);
}

/** Unlike onlyMembers (request-shape.ts), names `body` as the parameter and the member in the detail. */
function onlyBodyMembers(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) throw invalidRequest('body', `Unknown member "${safeName(key)}"`);
  }
}

function reasonOf(body: Record<string, unknown>, fallback: string): string {
  if (
    body.reason !== undefined &&
    (typeof body.reason !== 'string' || body.reason.trim() === '' || body.reason.length > 200)
  ) {
    throw invalidRequest('reason', 'reason must be a non-empty string of at most 200 characters');
  }
  return normaliseReason(body.reason, fallback);
}

export function createRevocationRouter(deps: RevocationRouterDeps): Router {
  const router = createStrictRouter();
  const { revocation, auth, store } = deps;

  /** The link id of the request when `service` may act on it; link_not_found (as for a missing link) otherwise. */
  async function linkIdWithin(req: Request, service: TenantScoped): Promise<string> {
    const linkId = linkIdOf(req);
    if (!isTenantScoped(service)) return linkId;
    const link = await store.getLink(linkId);
    if (!link || !mayActFor(service, link.tenantId)) throw new LinkvaultError('link_not_found');
    return linkId;
  }

  /** A bulk job another tenant's admin (or an unscoped one, over every tenant) started is not there for a scoped service. */
  async function jobWithin(jobId: string, service: TenantScoped): Promise<void> {
    if (!isTenantScoped(service)) return;
    const row = await store.getJobStatus(jobId);
    const filter = row?.status.filter as { tenant_id?: unknown } | undefined;
    const tenantId = filter?.tenant_id;
    if (typeof tenantId !== 'string' || !mayActFor(service, tenantId))
      throw new LinkvaultError('job_not_found');
  }

  router.delete(
    '/v1/links/:id',
    auth.authenticate,
    auth.requireRole('links:revoke'),
    async (req, res) => {
      const service = authenticatedService(res);
      const body = bodyObject(req);
      onlyBodyMembers(body, ['reason']);
      const { record } = await revocation.revokeLink(await linkIdWithin(req, service), {
        revokedBy: 'service',
        serviceId: service.id,
        reason: reasonOf(body, 'service_request'),
        requestId: req.requestId,
      });
      res.status(200).json(record);
    },
  );

  router.delete('/v1/me/links/:id', async (req, res) => {
    const session = await sessionOf(req, res, deps.sessions);
    const body = bodyObject(req);
    onlyBodyMembers(body, ['reason']);
    // Another user's link answers exactly like a missing one (404, never 403): no existence oracle.
    const { record } = await revocation.revokeLink(
      linkIdOf(req),
      {
        revokedBy: 'user',
        serviceId: session.serviceId,
        reason: reasonOf(body, 'user_request'),
        requestId: req.requestId,
      },
      { tenantId: session.tenantId, userId: session.userId },
    );
    res.status(200).json(record);
  });

  // For the manage page, which shows a revoked link's guidance again.
  router.get('/v1/me/links/:id/revocation', async (req, res) => {
    const session = await sessionOf(req, res, deps.sessions);
    res.status(200).json(
      await revocation.getRecord(linkIdOf(req), {
        tenantId: session.tenantId,
        userId: session.userId,
      }),
    );
  });

  router.get(
    '/v1/links/:id/revocation',
    auth.authenticate,
    auth.requireRole('links:read'),
    async (req, res) => {
      const linkId = await linkIdWithin(req, authenticatedService(res));
      res.status(200).json(await revocation.getRecord(linkId));
    },
  );

  router.post('/v1/revocations', auth.authenticate, auth.requireRole('admin'), async (req, res) => {
    const service = authenticatedService(res);
    const body = bodyObject(req);
    onlyBodyMembers(body, ['tenant_id', 'user_id', 'provider_id', 'reason']);
    const tenantId =
      body.tenant_id === undefined ? null : checkCallerId(body.tenant_id, 'tenant_id');
    const userId = body.user_id === undefined ? null : checkCallerId(body.user_id, 'user_id');
    let providerId: string | null = null;
    if (body.provider_id !== undefined) {
      if (typeof body.provider_id !== 'string' || !PROVIDER_ID_PATTERN.test(body.provider_id)) {
        throw invalidRequest('provider_id', 'provider_id must be a provider id');
      }
      providerId = body.provider_id;
    }
    if (body.reason === undefined) throw invalidRequest('reason', 'reason is required');
    const reason = reasonOf(body, 'bulk');
    if (!tenantId && !providerId)
      throw invalidRequest('tenant_id', 'tenant_id (or provider_id) is required');
    if (userId && !tenantId) throw invalidRequest('tenant_id', 'user_id needs tenant_id');
    if (isTenantScoped(service)) {
      if (!tenantId) throw tenantRequired('a bulk revocation by provider reaches every tenant');
      if (!mayActFor(service, tenantId)) throw tenantOutsideScope();
    }
    const started = await revocation.startBulk(
      { tenantId, userId, providerId },
      { revokedBy: 'admin', serviceId: service.id, reason, requestId: req.requestId },
    );
    res.status(202).json(started);
  });

  router.get(
    '/v1/revocations/:job_id',
    auth.authenticate,
    auth.requireRole('admin'),
    async (req, res) => {
      const jobId = req.params.job_id;
      if (typeof jobId !== 'string' || !JOB_ID.test(jobId))
        throw new LinkvaultError('job_not_found');
      await jobWithin(jobId, authenticatedService(res));
      res.status(200).json(await revocation.getBulkStatus(jobId));
    },
  );

  return router;
}
