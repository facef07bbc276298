import {
  stringOption,
  UsageError,
  type CliContext,
  type CommandInput,
  type OptionSpec,
} from './command.js';
import { createServiceSigner, readSigningKey } from './service-token.js';

/**
 * The HTTP side of the operator commands: a running linkvault at `--url`, called with a service
 * JWT signed from `--service`, `--kid` and the key (`--key-file` or `--key-env`), or with the
 * development service's key (`--dev`). Answers that are problems become ApiError; the token and
 * the key never appear in an error or an output line.
 */

const REQUEST_TIMEOUT_MS = 30_000;

/** The options every HTTP command takes. */
export const API_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  url: {
    type: 'string',
    value: 'URL',
    description: 'linkvault base URL (default: LINKVAULT_PUBLIC_URL, else http://localhost:3000)',
  },
  service: { type: 'string', value: 'ID', description: 'the calling service id (JWT `iss`)' },
  kid: { type: 'string', value: 'KID', description: "the service key's kid" },
  'key-file': {
    type: 'string',
    value: 'PATH',
    description: 'file holding the HS* secret or the PEM private key of --kid',
  },
  'key-env': {
    type: 'string',
    value: 'NAME',
    description:
      "environment variable holding the secret or PEM (like the services file's secret_env)",
  },
  alg: {
    type: 'string',
    value: 'ALG',
    description: "JWS algorithm (default: HS256 for a secret; from the key's type for a PEM)",
  },
  audience: {
    type: 'string',
    value: 'AUD',
    description: 'JWT `aud` (default: LINKVAULT_AUDIENCE, else linkvault)',
  },
  dev: {
    type: 'boolean',
    description:
      'sign as the development service `dev` (outside production, sandbox on; as `linkvault dev-token`)',
  },
};

/** linkvault answered with a problem (RFC 9457). */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string | null,
    readonly requestId: string | null,
  ) {
    super(`${status} ${code}${detail ? `: ${detail}` : ''}`);
  }
}

/** linkvault could not be reached (refused, DNS, timeout): no answer at all. */
export class UnreachableError extends Error {
  override readonly name = 'UnreachableError';
}

export interface LinkvaultApi {
  readonly baseUrl: string;
  /** Calls `method path` with a fresh service token; resolves with the JSON body (null for 204). Throws ApiError, UnreachableError. */
  call(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<unknown>;
}

function baseUrlOf(input: CommandInput, env: CliContext['env']): string {
  const raw =
    stringOption(input, 'url') ??
    (env.LINKVAULT_PUBLIC_URL?.trim() ||
      `http://localhost:${env.LINKVAULT_PORT?.trim() || '3000'}`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--url must be an absolute http(s) URL, got "${raw}"`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search || url.hash)
    throw new UsageError(`--url must be an http(s) URL without query or fragment, got "${raw}"`);
  return url.href.replace(/\/$/, '');
}

async function tokenSource(input: CommandInput, ctx: CliContext): Promise<() => string> {
  if (input.options.dev === true) {
    for (const name of ['service', 'kid', 'key-file', 'key-env', 'alg'])
      if (input.options[name] !== undefined)
        throw new UsageError(`--dev signs as the development service: drop --${name}`);
    const [{ loadConfig }, { signDevToken }] = await Promise.all([
      import('../config.js'),
      import('../auth/dev-service.js'),
    ]);
    const config = loadConfig(ctx.env, ctx.cwd);
    return () => signDevToken(config);
  }
  const serviceId = stringOption(input, 'service');
  const kid = stringOption(input, 'kid');
  if (serviceId === undefined || kid === undefined)
    throw new UsageError('--service and --kid are required (or --dev on a development machine)');
  const key = readSigningKey(
    { keyFile: stringOption(input, 'key-file'), keyEnv: stringOption(input, 'key-env') },
    ctx.env,
    ctx.cwd,
  );
  const alg = stringOption(input, 'alg');
  const signer = createServiceSigner({
    serviceId,
    kid,
    audience:
      stringOption(input, 'audience') ?? (ctx.env.LINKVAULT_AUDIENCE?.trim() || 'linkvault'),
    ...key,
    ...(alg === undefined ? {} : { alg }),
  });
  return () => signer.token();
}

/** The API client for one command run, from its options. UsageError when the options do not make a caller. */
export async function connectApi(input: CommandInput, ctx: CliContext): Promise<LinkvaultApi> {
  const baseUrl = baseUrlOf(input, ctx.env);
  const token = await tokenSource(input, ctx);
  return {
    baseUrl,
    async call(method, path, body) {
      let res: Response;
      try {
        res = await fetch(`${baseUrl}${path}`, {
          method,
          headers: {
            authorization: `Bearer ${token()}`,
            accept: 'application/json, application/problem+json',
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
      } catch (err) {
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        const why =
          (err as Error).name === 'TimeoutError'
            ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`
            : (cause?.code ?? cause?.message ?? (err as Error).message);
        throw new UnreachableError(`cannot reach linkvault at ${baseUrl} (${why})`);
      }
      const text = await res.text();
      let json: unknown = null;
      if (text !== '') {
        try {
          json = JSON.parse(text);
        } catch {
          json = null;
        }
      }
      if (!res.ok) {
        const p = (json ?? {}) as Record<string, unknown>;
        throw new ApiError(
          res.status,
          typeof p.code === 'string' ? p.code : `http_${res.status}`,
          typeof p.detail === 'string' ? p.detail : typeof p.title === 'string' ? p.title : null,
          typeof p.request_id === 'string' ? p.request_id : res.headers.get('x-request-id'),
        );
      }
      if (text !== '' && json === null)
        throw new ApiError(
          res.status,
          'not_json',
          'the answer is not JSON: is --url a linkvault?',
          res.headers.get('x-request-id'),
        );
      return json;
    },
  };
}

/** `encodeURIComponent` for one path segment. */
export function segment(value: string): string {
  return encodeURIComponent(value);
}
