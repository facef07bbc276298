import type { NextFunction, Request, RequestHandler, Response, Router } from 'express';
import type { Connect } from '../links/connect/connect.js';
import { checkCallerId } from '../links/connect/sessions.js';
import { toLinkJson } from '../links/link.js';
import { jsonObject, onlyMembers } from './request-shape.js';
import { authenticatedService, type ServiceAuth } from './service-auth.js';
import { createStrictRouter } from './strict-router.js';

/**
 * POST /v1/confirmations/{confirmation_id} (docs/api.md): the host's backend, which knows who is
 * signed in, confirms a connect held as pending_confirmation for the session's tenant and user.
 * A claim for anyone else discards the pending link and revokes its tokens at the provider (409
 * confirmation_mismatch): whoever holds a confirmation id that is not theirs learns nothing and
 * gets nothing. The id is single use and unguessable; the route logs its template only
 * (observe-requests.ts), never the id.
 *
 * Tenant scoping of services (issue 11 item 2) goes before confirm():
 * `(await connect.findConfirmation(id)).tenantId` is the tenant the confirmation belongs to (it
 * reads only, and answers 404 confirmation_not_found exactly as confirm would).
 */

export interface ConfirmationRouterDeps {
  readonly connect: Pick<Connect, 'findConfirmation' | 'confirm'>;
  readonly serviceAuth: ServiceAuth;
}

const CONFIRMATION_FIELDS: ReadonlySet<string> = new Set(['tenant_id', 'user_id']);

function noStore(_req: Request, res: Response, next: NextFunction): void {
  res.setHeader('Cache-Control', 'no-store');
  next();
}

export function createConfirmationRouter(deps: ConfirmationRouterDeps): Router {
  const { connect, serviceAuth } = deps;

  const confirmRoute: RequestHandler = async (req, res) => {
    const body = jsonObject(req.body, 'body');
    onlyMembers(body, CONFIRMATION_FIELDS);
    const claim = {
      tenantId: checkCallerId(body.tenant_id, 'tenant_id'),
      userId: checkCallerId(body.user_id, 'user_id'),
    };
    const confirmationId = req.params.confirmation_id;
    const service = authenticatedService(res);
    const link = await connect.confirm(confirmationId, claim, {
      serviceId: service.id,
      requestId: req.requestId ?? null,
    });
    res.status(200).json(toLinkJson(link));
  };

  const router = createStrictRouter();
  router.post(
    '/v1/confirmations/:confirmation_id',
    noStore,
    serviceAuth.authenticate,
    serviceAuth.requireRole('sessions'),
    confirmRoute,
  );
  return router;
}
