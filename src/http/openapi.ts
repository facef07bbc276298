import type { RequestHandler } from 'express';
import { ERROR_CATALOGUE, type ErrorCode } from '../errors.js';
import { OPENAPI_SCHEMAS } from './openapi-schemas.js';
import { ROUTE_TABLE, routeErrors, type RouteSpec } from './route-table.js';

/**
 * The OpenAPI 3.1 document, generated from the route table (route-table.ts) and the schemas
 * (openapi-schemas.ts). Served at GET /openapi.json; docs/openapi.json is this document without
 * `servers` (`npm run openapi` writes it; a test checks the committed file is current).
 */

export const OPENAPI_VERSION = '3.1.0';
/** The version of the API the document describes (the /v1 contract). */
export const API_VERSION = '1.0.0';

export interface OpenApiOptions {
  /** Routes to describe (default: ROUTE_TABLE); only `api` routes are documented. */
  readonly routes?: readonly RouteSpec[];
  /** The public URL, as `servers[0]` (omitted when absent). */
  readonly serverUrl?: string;
}

type Json = Record<string, unknown>;

function schemaRef(name: string): Json {
  if (!(name in OPENAPI_SCHEMAS)) throw new Error(`openapi: no schema named ${name}`);
  return { $ref: `#/components/schemas/${name}` };
}

/** Problem answers grouped by status, each with the enum of codes this route can give at that status. */
function problemAnswers(route: RouteSpec): Record<string, Json> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of routeErrors(route)) {
    const status = ERROR_CATALOGUE[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const answers: Record<string, Json> = {};
  for (const [status, codes] of [...byStatus].sort(([a], [b]) => a - b)) {
    codes.sort();
    answers[String(status)] = {
      description: codes.map((c) => `\`${c}\``).join(', '),
      ...(status === 429 || status === 503
        ? { headers: { 'Retry-After': { schema: { type: 'integer' } } } }
        : {}),
      content: {
        'application/problem+json': {
          schema: {
            allOf: [
              schemaRef('Problem'),
              {
                type: 'object',
                properties: { status: { const: status }, code: { enum: codes } },
              },
            ],
          },
        },
      },
    };
  }
  return answers;
}

function operationOf(route: RouteSpec): Json {
  const responses: Record<string, Json> = {};
  for (const answer of route.answers) {
    const headers = answer.headers
      ? Object.fromEntries(
          Object.entries(answer.headers).map(([name, description]) => [
            name,
            { description, schema: { type: 'string' } },
          ]),
        )
      : undefined;
    responses[String(answer.status)] = {
      description: answer.description,
      ...(headers ? { headers } : {}),
      ...(answer.schema
        ? {
            content: {
              [answer.contentType ?? 'application/json']: { schema: schemaRef(answer.schema) },
            },
          }
        : {}),
    };
  }
  Object.assign(responses, problemAnswers(route));
  const security =
    route.security === 'service'
      ? [{ serviceJwt: [] }]
      : route.security === 'session'
        ? [{ sessionBearer: [] }]
        : [];
  return {
    operationId: route.operationId,
    summary: route.summary,
    ...(route.role ? { description: `Requires the service role \`${route.role}\`.` } : {}),
    tags: [route.tag],
    security,
    ...(route.parameters && route.parameters.length > 0
      ? {
          parameters: route.parameters.map((p) => ({
            name: p.name,
            in: p.in,
            description: p.description,
            required: p.in === 'path' ? true : (p.required ?? false),
            schema: p.schema,
          })),
        }
      : {}),
    ...(route.body
      ? {
          requestBody: {
            required: route.body.required,
            content: { 'application/json': { schema: schemaRef(route.body.schema) } },
          },
        }
      : {}),
    responses,
  };
}

/** The OpenAPI 3.1 document of the API routes in `options.routes`. */
export function buildOpenApiDocument(options: OpenApiOptions = {}): Json {
  const routes = (options.routes ?? ROUTE_TABLE).filter((r) => r.api);
  const paths: Record<string, Record<string, Json>> = {};
  for (const route of routes) {
    const item = (paths[route.path] ??= {});
    const method = route.method.toLowerCase();
    if (item[method]) throw new Error(`openapi: ${route.method} ${route.path} declared twice`);
    item[method] = operationOf(route);
  }
  const tags = [...new Set(routes.map((r) => r.tag))].map((name) => ({ name }));
  return {
    openapi: OPENAPI_VERSION,
    info: {
      title: 'linkvault',
      version: API_VERSION,
      summary: 'OAuth broker and token vault: connect, vault, release under scoped grants, revoke.',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    ...(options.serverUrl ? { servers: [{ url: options.serverUrl }] } : {}),
    tags,
    paths,
    components: {
      securitySchemes: {
        serviceJwt: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description:
            'A service JWT: header `kid` (one of the service keys, whose `alg` only is accepted), claims `iss` (service id), `aud`, `iat`, `exp` (at most 300 s after `iat`). See docs/service-auth.md.',
        },
        sessionBearer: {
          type: 'http',
          scheme: 'bearer',
          description: 'A session token from POST /v1/sessions.',
        },
      },
      schemas: OPENAPI_SCHEMAS,
    },
  };
}

/** GET /openapi.json: the document, built once; public and cacheable (it holds no secret). */
export function createOpenApiRoute(options: OpenApiOptions): RequestHandler {
  let body: string | undefined;
  return (_req, res) => {
    body ??= JSON.stringify(buildOpenApiDocument(options));
    res.setHeader('Cache-Control', 'public, max-age=300');
    // Public and credential-free: API tools on other origins (documentation viewers, generators)
    // may read it. No other route sends CORS headers.
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.status(200).type('application/json').send(body);
  };
}
