import { type Router, type NextFunction, type Request, type Response } from 'express';
import type { TokenRelease } from '../links/release/token-release.js';
import { authenticatedService, type ServiceAuth } from './service-auth.js';
import { answerTokenRequest, TOKEN_ROUTE } from './token-endpoint.js';
import { createStrictRouter } from './strict-router.js';

/** POST /v1/links/:id/token through Express: authentication and role as middleware, then the core (token-endpoint.ts). */

export interface TokenRouterDeps {
  readonly auth: ServiceAuth;
  readonly release: TokenRelease;
}

export function createTokenRouter(deps: TokenRouterDeps): Router {
  const router = createStrictRouter();
  const { auth, release } = deps;

  router.post(
    TOKEN_ROUTE,
    auth.authenticate,
    auth.requireRole('tokens'),
    async (req: Request, res: Response, next: NextFunction) => {
      // Token-bearing: never stored by a cache, whatever the outcome (RFC 6749 §5.1), even in an app
      // mounted without the security headers.
      res.setHeader('Cache-Control', 'no-store');
      res.setHeader('Pragma', 'no-cache');
      try {
        const id = req.params.id;
        const json = await answerTokenRequest(
          release,
          authenticatedService(res),
          typeof id === 'string' ? id : undefined,
          req.body,
          req.requestId,
        );
        res.status(200).type('application/json').send(json);
      } catch (err) {
        next(err);
      }
    },
  );

  return router;
}
