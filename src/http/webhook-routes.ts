import type { NextFunction, Request, Response, Router } from 'express';
import { LinkvaultError, invalidRequest } from '../errors.js';
import { checkCallerId } from '../links/connect/sessions.js';
import { WEBHOOK_EVENT_TYPES, type WebhookEndpoints } from '../links/webhooks/webhook-endpoints.js';
import type { WebhookDeliveryRecord, WebhookEndpointRecord } from '../store/store.js';
import { jsonObject, onlyMembers, optionalStringList, safeName } from './request-shape.js';
import { authenticatedService, type ServiceAuth } from './service-auth.js';
import { mayActFor, tenantOutsideScope, tenantRequired } from '../auth/tenant-scope.js';
import { createStrictRouter } from './strict-router.js';

/**
 * Webhook endpoints (role `admin`): POST/GET /v1/webhook-endpoints, DELETE
 * /v1/webhook-endpoints/:id, GET /v1/webhook-endpoints/:id/deliveries. The secret is in the
 * creation answer only; listings never carry it.
 */

export interface WebhookRouterDeps {
  readonly auth: ServiceAuth;
  readonly endpoints: WebhookEndpoints;
}

const BODY_MEMBERS = new Set(['url', 'events', 'tenant_id']);
const MAX_ID_CHARS = 64;

function endpointJson(endpoint: WebhookEndpointRecord): Record<string, unknown> {
  return {
    id: endpoint.id,
    url: endpoint.url,
    events: endpoint.events ?? [...WEBHOOK_EVENT_TYPES],
    tenant_id: endpoint.tenantId,
    created_at: new Date(endpoint.createdAtMs).toISOString(),
    disabled_at:
      endpoint.disabledAtMs === null ? null : new Date(endpoint.disabledAtMs).toISOString(),
    disabled_reason: endpoint.disabledReason,
  };
}

function deliveryJson(delivery: WebhookDeliveryRecord): Record<string, unknown> {
  return {
    event_id: delivery.eventId,
    type: delivery.type,
    status: delivery.status,
    attempts: delivery.attempts,
    last_status_code: delivery.lastStatusCode,
    next_attempt_at:
      delivery.nextAttemptAtMs === null ? null : new Date(delivery.nextAttemptAtMs).toISOString(),
  };
}

function endpointId(req: Request): string {
  const id = req.params.id;
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_CHARS)
    throw new LinkvaultError('webhook_endpoint_not_found');
  return id;
}

/** A scoped admin sees only endpoints of its tenants; others answer as if they did not exist. */
function visibleTo(
  caller: { readonly tenants: ReadonlySet<string> | null },
  endpoint: WebhookEndpointRecord,
): boolean {
  return (
    caller.tenants === null || (endpoint.tenantId !== null && mayActFor(caller, endpoint.tenantId))
  );
}

export function createWebhookRouter(deps: WebhookRouterDeps): Router {
  const router = createStrictRouter();
  const { auth, endpoints } = deps;

  async function visibleEndpoint(res: Response, id: string): Promise<string> {
    const caller = authenticatedService(res);
    if (caller.tenants === null) return id;
    const found = await endpoints.get(id);
    if (!found || !visibleTo(caller, found)) throw new LinkvaultError('webhook_endpoint_not_found');
    return id;
  }
  const admin = [auth.authenticate, auth.requireRole('admin')];

  router.post(
    '/v1/webhook-endpoints',
    ...admin,
    async (req: Request, res: Response, next: NextFunction) => {
      try {
        const body = jsonObject(req.body, 'body');
        onlyMembers(body, BODY_MEMBERS);
        if (typeof body.url !== 'string') throw invalidRequest('url', 'url must be a string');
        const events =
          optionalStringList(
            body,
            'events',
            WEBHOOK_EVENT_TYPES.length,
            (s) => (WEBHOOK_EVENT_TYPES as readonly string[]).includes(s),
            `events must be a non-empty list of at most ${WEBHOOK_EVENT_TYPES.length} event types`,
            `events may name: ${WEBHOOK_EVENT_TYPES.join(', ')}`,
          ) ?? null;
        const tenantId =
          body.tenant_id === undefined || body.tenant_id === null
            ? null
            : checkCallerId(body.tenant_id, 'tenant_id');
        // A tenant-scoped admin registers endpoints for its tenants only (an endpoint without a
        // tenant would receive every tenant's events).
        const caller = authenticatedService(res);
        if (caller.tenants !== null) {
          if (tenantId === null) throw tenantRequired('an endpoint without one gets every tenant');
          if (!mayActFor(caller, tenantId)) throw tenantOutsideScope();
        }
        const { endpoint, secret } = await endpoints.create({ url: body.url, events, tenantId });
        res.status(201).setHeader('Cache-Control', 'no-store');
        res.json({ ...endpointJson(endpoint), secret });
      } catch (err) {
        next(err);
      }
    },
  );

  router.get(
    '/v1/webhook-endpoints',
    ...admin,
    async (req: Request, res: Response, next: NextFunction) => {
      try {
        for (const key of Object.keys(req.query))
          throw invalidRequest(safeName(key), 'Unknown query parameter');
        const caller = authenticatedService(res);
        const list = (await endpoints.list()).filter((e) => visibleTo(caller, e));
        res.setHeader('Cache-Control', 'no-store');
        res.json({ webhook_endpoints: list.map(endpointJson) });
      } catch (err) {
        next(err);
      }
    },
  );

  router.delete(
    '/v1/webhook-endpoints/:id',
    ...admin,
    async (req: Request, res: Response, next: NextFunction) => {
      try {
        await endpoints.remove(await visibleEndpoint(res, endpointId(req)));
        res.status(204).end();
      } catch (err) {
        next(err);
      }
    },
  );

  router.get(
    '/v1/webhook-endpoints/:id/deliveries',
    ...admin,
    async (req: Request, res: Response, next: NextFunction) => {
      try {
        for (const key of Object.keys(req.query))
          throw invalidRequest(safeName(key), 'Unknown query parameter');
        const list = await endpoints.deliveries(await visibleEndpoint(res, endpointId(req)));
        res.setHeader('Cache-Control', 'no-store');
        res.json({ deliveries: list.map(deliveryJson) });
      } catch (err) {
        next(err);
      }
    },
  );

  return router;
}
