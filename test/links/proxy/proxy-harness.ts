import { randomBytes } from 'node:crypto';
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseServicesFile } from '../../../src/auth/services-file.js';
import type { LinkRecord } from '../../../src/links/link.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { connectViaProvider, TEST_REDIRECT_URI } from '../../support/provider-link.js';
import { signServiceJwt } from '../../support/service-jwt.js';
import type { SignServiceJwtOptions, TestServices } from '../../support/service-jwt.js';
import { startStack, type Stack, type StackOptions } from '../../support/stack.js';

/**
 * The proxy's real peers: node-oidc-provider as the link's authorization server (real tokens, real
 * refreshes with rotation), a stand-in provider API on loopback that records every request it
 * receives (it sees the bearer token; the caller never does), and the whole linkvault stack
 * listening on a loopback port, called over HTTP exactly as a service would.
 */

export const CLIENT = {
  client_id: 'linkvault-proxy-test',
  client_secret: 'proxy-test-secret-that-is-long-enough',
  redirect_uris: [TEST_REDIRECT_URI],
};

export interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly bodyBytes: number;
  readonly body: string;
}

export interface StandInApi {
  readonly port: number;
  /** `http://localhost:<port>`: a host name, as the catalogue requires (IP literals are refused). */
  readonly baseUrl: string;
  readonly received: Received[];
  /** Access tokens answered with 401 (as a provider does for a token it no longer accepts). */
  readonly rejectedTokens: Set<string>;
  close(): Promise<void>;
}

const CHUNK = Buffer.alloc(64 * 1024, 0x61);

/**
 * The stand-in API. Paths: `/hang/**` never answers; `/big/<bytes>` streams that many bytes with
 * back-pressure from one reused buffer; `/cut/<bytes>` declares that many bytes and drops the
 * connection after half of them; `/redirect` answers 302; anything else answers 200 JSON
 * echoing what it received, with rate-limit headers, a cookie and a hop-by-hop header. A request
 * whose bearer is in `rejectedTokens` gets 401 first.
 */
export async function startStandInApi(): Promise<StandInApi> {
  const received: Received[] = [];
  const rejectedTokens = new Set<string>();
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    let bodyBytes = 0;
    req.on('data', (chunk: Buffer) => {
      bodyBytes += chunk.length;
      if (bodyBytes <= 64 * 1024) chunks.push(chunk);
    });
    req.on('end', () => {
      const url = req.url ?? '';
      received.push({
        method: req.method ?? '',
        url,
        headers: req.headers,
        bodyBytes,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      const bearer = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (rejectedTokens.has(bearer)) {
        res.writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': 'Bearer error="invalid_token"',
        });
        return void res.end('{"error":"expired"}');
      }
      if (url.startsWith('/hang/')) return; // never answers
      const big = /^\/big\/(\d+)$/.exec(url);
      if (big) {
        let left = Number(big[1]);
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left });
        const pump = () => {
          while (left > 0) {
            const n = Math.min(left, CHUNK.length);
            left -= n;
            if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n)))
              return void res.once('drain', pump);
          }
          res.end();
        };
        return pump();
      }
      const cut = /^\/cut\/(\d+)$/.exec(url);
      if (cut) {
        // Declares that many bytes, sends half of them, then drops the connection.
        const declared = Number(cut[1]);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': declared });
        res.write(CHUNK.subarray(0, Math.floor(declared / 2)), () => res.destroy());
        return;
      }
      if (url === '/redirect') {
        res.writeHead(302, { location: `http://localhost:${port}/crm/elsewhere` });
        return void res.end();
      }
      res.writeHead(200, {
        'content-type': 'application/json',
        'x-ratelimit-remaining': '42',
        'ratelimit-limit': '100',
        'retry-after': '0',
        'set-cookie': 'provider_session=abc; Path=/',
        connection: 'keep-alive, x-provider-hop',
        'x-provider-hop': 'hop-value',
        'x-provider-plain': 'kept',
      });
      res.end(JSON.stringify({ ok: true, path: url, bytes: bodyBytes }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, 'localhost', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    baseUrl: `http://localhost:${port}`,
    received,
    rejectedTokens,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * Services for proxy tests: `admin-svc` (admin), `worker` (proxy only), `tokens-svc` (tokens
 * only), `both` (proxy and tokens) and `scoped-worker` (proxy, tenant-b only), each with an HS256 key.
 */
export function makeProxyServices(audience = 'linkvault'): TestServices {
  const defs: [string, string[]][] = [
    ['admin-svc', ['admin', 'sessions', 'links:read']],
    ['worker', ['proxy']],
    ['tokens-svc', ['tokens']],
    ['both', ['proxy', 'tokens']],
    ['scoped-worker', ['proxy']],
  ];
  const env: Record<string, string> = {};
  const keys: TestServices['keys'] = {};
  const services = defs.map(([id, roles]) => {
    const variable = `LV_PROXY_TEST_${id.replace(/-/g, '_').toUpperCase()}`;
    env[variable] = randomBytes(32).toString('base64url');
    (keys as Record<string, TestServices['keys'][string]>)[id] = {
      kid: id,
      alg: 'HS256',
      signingKey: Buffer.from(env[variable]!),
      iss: id,
    };
    return {
      id,
      roles,
      keys: [{ kid: id, alg: 'HS256', secret_env: variable }],
      ...(id === 'scoped-worker' ? { tenants: ['tenant-b'] } : {}),
    };
  });
  const servicesFile = { services };
  const token = (kid: string, overrides: Partial<SignServiceJwtOptions> = {}) => {
    const k = keys[kid]!;
    return signServiceJwt({
      kid,
      alg: 'HS256',
      key: k.signingKey,
      iss: k.iss,
      aud: audience,
      ...overrides,
    });
  };
  return {
    audience,
    services: parseServicesFile(servicesFile, env),
    servicesFile,
    env,
    keys,
    esPublicKeyPem: '',
    token,
    bearer: (kid, overrides) => `Bearer ${token(kid, overrides)}`,
  };
}

export interface ProxyHarness {
  readonly oidc: OidcServer;
  readonly api: StandInApi;
  readonly stack: Stack;
  readonly services: TestServices;
  /** A link to provider `acme` whose tokens came from a real authorization-code flow. */
  connect(linkId: string): Promise<LinkRecord>;
  close(): Promise<void>;
}

/**
 * Starts the OIDC server, the stand-in API and a listening stack with two providers: `acme`
 * (api_base_url = the stand-in) and `acme-sf` (no api_base_url; the link's captured instance_url
 * names the API host, as Salesforce's does). Both allow `localhost` only.
 */
export async function startProxyHarness(
  options: Pick<StackOptions, 'env' | 'wrapStore' | 'log' | 'redisUrl' | 'startAuditExporter'> & {
    /** Use this API (another process: the benchmark) as acme's api_base_url instead of the stand-in's. */
    readonly apiBaseUrl?: string;
  } = {},
): Promise<ProxyHarness> {
  const { apiBaseUrl, ...stackOptions } = options;
  const oidc = await startOidcServer({
    mode: 'oauth',
    clients: [CLIENT],
    rotateRefreshTokens: true,
  });
  const api = await startStandInApi();
  const services = makeProxyServices();
  const credentials = { clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret };
  let stack: Stack;
  try {
    stack = await startStack({
      listen: true,
      services,
      ...stackOptions,
      providers: [
        {
          entry: oidc.catalogueEntry('acme', {
            api_hosts: ['localhost'],
            api_base_url: apiBaseUrl ?? api.baseUrl,
          }),
          credentials,
          allowInsecureUrls: true,
        },
        {
          entry: oidc.catalogueEntry('acme-sf', {
            api_hosts: ['localhost'],
            capture_metadata: ['instance_url'],
          }),
          credentials,
          allowInsecureUrls: true,
        },
      ],
    });
  } catch (err) {
    await api.close();
    await oidc.close();
    throw err;
  }
  return {
    oidc,
    api,
    stack,
    services,
    connect: (linkId) =>
      connectViaProvider({
        oauth: stack.oauth,
        completeLogin: (u, o) => oidc.completeLogin(u, o),
        store: stack.store,
        vault: stack.vault,
        providerId: 'acme',
        linkId,
        connectedAtMs: Date.now() - 600_000,
      }),
    close: async () => {
      await stack.close();
      await api.close();
      await oidc.close();
    },
  };
}

export interface RawAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/**
 * One request to linkvault with the path sent byte for byte as given (no client-side
 * normalisation of `..`, `//` or percent-encoding).
 */
export function rawRequest(
  baseUrl: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string | Buffer,
): Promise<RawAnswer> {
  const base = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: base.hostname, port: base.port, method, path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The proxy grant rules used by the rule tables. */
export const TABLE_RULES = {
  allow: [
    { method: 'GET', path: '/crm/v3/objects/contacts/*' },
    { method: 'GET', path: '/crm/v3/objects/contacts/*/associations/**' },
    { method: 'POST', path: '/crm/v3/objects/notes' },
    { method: 'GET', path: '/files/**' },
    { method: 'GET', path: '/api/v1/lead/' },
    { method: 'DELETE', path: '/crm/v3/objects/contacts/*' },
  ],
};
