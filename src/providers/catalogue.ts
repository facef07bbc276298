import { readFileSync } from 'node:fs';
import type { Config, ProviderCredentials } from '../config.js';
import { LinkvaultError, invalidRequest } from '../errors.js';
import type {
  AccountIdSource,
  ProviderPrivacy,
  RevocationStyle,
  TemplateVariable,
  TokenEndpointAuthMethod,
  TokenResponseStyle,
} from './catalogue-entry.js';
import { checkVariableValue, expandTemplate } from './expand-template.js';
import { EntryProblem, parseProviderEntry } from './parse-provider-entry.js';

/**
 * The provider catalogue: config/providers.json (built in) with LINKVAULT_PROVIDERS_FILE merged
 * over it, validated strictly once at start.
 *
 * Merge rule: an entry of LINKVAULT_PROVIDERS_FILE whose `id` matches a built-in entry REPLACES
 * the built-in entry as a whole (no field-by-field merge: a half-merged provider is harder to
 * reason about than a full copy); other ids are appended. Extra entries registered in code (the
 * sandbox) may not reuse an id from either file.
 */

/** Thrown at start for an invalid catalogue: one line naming the file, the entry and the problem. */
export class CatalogueError extends Error {
  constructor(
    readonly file: string,
    readonly entry: string,
    readonly problem: string,
  ) {
    super(`${file}: ${entry}: ${problem}`);
    this.name = 'CatalogueError';
  }
}

/** One validated catalogue entry (camelCase mirror of the snake_case JSON). */
export interface ProviderEntry {
  readonly id: string;
  readonly name: string;
  readonly category: string;
  /** OIDC issuer (may be templated); null for plain OAuth 2.0 providers. Set = OIDC: nonce sent, ID token validated. */
  readonly issuer: string | null;
  /** Null only when `issuer` is set: endpoints then come from discovery. */
  readonly authorizationUrl: string | null;
  readonly tokenUrl: string | null;
  readonly revocation: {
    readonly style: RevocationStyle;
    /** Null for 'none', or for 'rfc7009' on a discovered provider (discovery's revocation_endpoint is used). */
    readonly url: string | null;
    /** Which token the revoke call should send: revoking the refresh token usually ends the whole grant. */
    readonly tokenTypeHint: 'refresh_token' | 'access_token';
  };
  readonly scopes: {
    readonly default: readonly string[];
    readonly separator: string;
    /** Plain words per scope for the hosted connect page. */
    readonly descriptions: Readonly<Record<string, string>>;
  };
  readonly pkce: boolean;
  readonly tokenEndpointAuthMethod: TokenEndpointAuthMethod;
  readonly authorizationParams: Readonly<Record<string, string>>;
  readonly templateVariables: readonly TemplateVariable[];
  /** Token-response members (dotted paths) copied into the link's metadata (instance_url, api_domain, team.id, ...). */
  readonly captureMetadata: readonly string[];
  /** Hosts the tokens are meant for (`*.` prefix = any subdomain). */
  readonly apiHosts: readonly string[];
  /** Where the proxy sends API calls when the link captured no host of its own (no trailing slash); null when none. */
  readonly apiBaseUrl: string | null;
  readonly privacy: ProviderPrivacy;
  readonly accountId: AccountIdSource;
  readonly tokenResponse: TokenResponseStyle;
  readonly notes: string | null;
  /** Facts of this entry that are UNCONFIRMED in the reference research (leads, not facts). */
  readonly unconfirmed: readonly string[];
  /** True when this entry may use http:// endpoints (LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS, or an extra entry allowed so). */
  readonly insecureUrlsAllowed: boolean;
}

/** Endpoints of one provider with a link's template variables applied (each value re-validated). */
export interface ResolvedEndpoints {
  readonly issuer: string | null;
  readonly authorizationUrl: string | null;
  readonly tokenUrl: string | null;
  readonly revocationUrl: string | null;
  readonly defaultScopes: readonly string[];
}

/** What GET /v1/providers shows (snake_case, ready for JSON). */
export interface ProviderPublicView {
  readonly id: string;
  readonly name: string;
  readonly category: string;
  readonly scopes: readonly { readonly name: string; readonly description: string | null }[];
  readonly privacy: {
    readonly settings_url: string | null;
    readonly instructions: string;
    readonly policy_url: string;
  };
}

export interface Catalogue {
  /** Any catalogue entry, enabled or not. */
  get(id: string): ProviderEntry | undefined;
  /** Entries with client credentials, in catalogue order. */
  enabled(): ProviderEntry[];
  isEnabled(id: string): boolean;
  /** Client credentials (from config, or registered with an extra entry), or null when the provider is not enabled. */
  credentials(id: string): ProviderCredentials | null;
  /**
   * Validates template-variable values from one source and returns them keyed by variable name.
   * `values` is keyed by PARAMETER name (the connect request's parameters for 'session', the
   * callback's query parameters for 'callback'); unrelated keys are ignored.
   * - 'session': every variable gets a value (the given one, else its default); a required
   *   variable without a value is an error.
   * - 'callback': only the variables with a callback_parameter present in `values`; merge the
   *   result OVER the session's variables (`{...sessionVars, ...callbackVars}`) before the code
   *   exchange, and store the merged record on the link (refresh and revoke use it).
   * Throws LinkvaultError('invalid_request', extra.parameter) naming the parameter (never echoing
   * the value), or 'provider_not_found' for an unknown id.
   */
  resolveVariables(
    id: string,
    source: 'session' | 'callback',
    values: Readonly<Record<string, string | undefined>>,
  ): Record<string, string>;
  /** The provider's endpoints with `variables` (keyed by variable name) substituted; throws invalid_request on a missing/invalid value. */
  endpoints(id: string, variables: Readonly<Record<string, string>>): ResolvedEndpoints;
  /** The privacy block with its settings URL resolved from `variables` (defaults used; null when a value is missing). */
  privacy(
    id: string,
    variables?: Readonly<Record<string, string>>,
  ): { settings_url: string | null; instructions: string; policy_url: string };
  publicView(entry: ProviderEntry): ProviderPublicView;
}

export interface ExtraProvider {
  /** A raw snake_case entry, validated exactly like a file entry. */
  readonly entry: unknown;
  readonly credentials: ProviderCredentials;
  /** Allow http:// endpoints for this entry only (the sandbox served by linkvault itself outside production). */
  readonly allowInsecureUrls?: boolean;
}

export interface LoadCatalogueOptions {
  /** Path of the built-in catalogue (config/providers.json). */
  readonly builtinFile: string;
  /** Path of LINKVAULT_PROVIDERS_FILE; defaults to config.providersFile; null = none. */
  readonly extraFile?: string | null;
  readonly config: Pick<Config, 'allowInsecureProviderUrls' | 'providerCredentialFor'> &
    Partial<Pick<Config, 'providersFile'>>;
  /** Entries registered in code with their own credentials (the sandbox). */
  readonly extraEntries?: readonly ExtraProvider[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function readEntries(file: string): unknown[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CatalogueError(
      file,
      'file',
      `cannot read as JSON (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  if (!isObject(json) || !Array.isArray(json.providers))
    throw new CatalogueError(file, 'file', 'must be {"providers": [ ... ]}');
  for (const key of Object.keys(json)) {
    if (key !== 'providers' && key !== '$comment')
      throw new CatalogueError(file, 'file', `unknown top-level field "${key}"`);
  }
  return json.providers;
}

function entryLabel(raw: unknown, index: number): string {
  return isObject(raw) && typeof raw.id === 'string'
    ? `provider "${raw.id}"`
    : `providers[${index}]`;
}

function parseFile(file: string, allowHttp: boolean): ProviderEntry[] {
  const seen = new Set<string>();
  return readEntries(file).map((raw, index) => {
    let entry: ProviderEntry;
    try {
      entry = parseProviderEntry(raw, allowHttp);
    } catch (err) {
      if (err instanceof EntryProblem)
        throw new CatalogueError(file, entryLabel(raw, index), err.message);
      throw err;
    }
    if (seen.has(entry.id)) throw new CatalogueError(file, entryLabel(raw, index), 'duplicate id');
    seen.add(entry.id);
    return entry;
  });
}

/**
 * Reads and validates the catalogue once. Throws CatalogueError (one line: file, entry, problem)
 * on the first problem; main turns it into exit 1.
 */
export function loadCatalogue(options: LoadCatalogueOptions): Catalogue {
  const { config } = options;
  const allowHttp = config.allowInsecureProviderUrls;
  const entries = new Map<string, ProviderEntry>();
  for (const e of parseFile(options.builtinFile, allowHttp)) entries.set(e.id, e);

  const extraFile =
    options.extraFile === undefined ? (config.providersFile ?? null) : options.extraFile;
  if (extraFile) {
    // Whole-entry replace by id (documented at the top of this file).
    for (const e of parseFile(extraFile, allowHttp)) entries.set(e.id, e);
  }

  const extraCredentials = new Map<string, ProviderCredentials>();
  for (const [index, extra] of (options.extraEntries ?? []).entries()) {
    let entry: ProviderEntry;
    try {
      entry = parseProviderEntry(extra.entry, allowHttp || extra.allowInsecureUrls === true);
    } catch (err) {
      if (err instanceof EntryProblem)
        throw new CatalogueError('extra entries', entryLabel(extra.entry, index), err.message);
      throw err;
    }
    if (entries.has(entry.id))
      throw new CatalogueError(
        'extra entries',
        entryLabel(extra.entry, index),
        'duplicate id (already in a catalogue file)',
      );
    entries.set(entry.id, entry);
    extraCredentials.set(entry.id, Object.freeze({ ...extra.credentials }));
  }

  return createCatalogue(entries, extraCredentials, config);
}

function createCatalogue(
  entries: ReadonlyMap<string, ProviderEntry>,
  extraCredentials: ReadonlyMap<string, ProviderCredentials>,
  config: LoadCatalogueOptions['config'],
): Catalogue {
  const credentials = (id: string): ProviderCredentials | null => {
    if (!entries.has(id)) return null;
    return extraCredentials.get(id) ?? config.providerCredentialFor(id);
  };

  const entryOrThrow = (id: string): ProviderEntry => {
    const entry = entries.get(id);
    if (!entry)
      throw new LinkvaultError('provider_not_found', {
        detail: 'No such provider in the catalogue',
      });
    return entry;
  };

  const clientIdOf = (entry: ProviderEntry) => (): string => {
    const creds = credentials(entry.id);
    if (!creds)
      throw new LinkvaultError('provider_not_found', { detail: 'The provider is not enabled' });
    return creds.clientId;
  };
  const expand = (
    entry: ProviderEntry,
    template: string,
    variables: Readonly<Record<string, string>>,
  ): string => expandTemplate(template, entry.templateVariables, variables, clientIdOf(entry));

  const catalogue: Catalogue = {
    get: (id) => entries.get(id),
    enabled: () => [...entries.values()].filter((e) => credentials(e.id) !== null),
    isEnabled: (id) => credentials(id) !== null,
    credentials,
    resolveVariables(id, source, values) {
      const entry = entryOrThrow(id);
      const out: Record<string, string> = {};
      for (const variable of entry.templateVariables) {
        const parameter =
          source === 'session' ? variable.sessionParameter : variable.callbackParameter;
        const raw =
          parameter !== null && Object.hasOwn(values, parameter) ? values[parameter] : undefined;
        if (raw === undefined || raw.trim() === '') {
          if (source === 'callback') continue;
          if (variable.default === null) {
            const named = parameter ?? variable.name;
            throw invalidRequest(named, `${named} is required`);
          }
          out[variable.name] = variable.default;
          continue;
        }
        const value = checkVariableValue(variable, raw);
        if (value === null)
          throw invalidRequest(parameter!, `${parameter!} is not an allowed value`);
        out[variable.name] = value;
      }
      return out;
    },
    endpoints(id, variables) {
      const entry = entryOrThrow(id);
      return {
        issuer: entry.issuer === null ? null : expand(entry, entry.issuer, variables),
        authorizationUrl:
          entry.authorizationUrl === null ? null : expand(entry, entry.authorizationUrl, variables),
        tokenUrl: entry.tokenUrl === null ? null : expand(entry, entry.tokenUrl, variables),
        revocationUrl:
          entry.revocation.url === null ? null : expand(entry, entry.revocation.url, variables),
        defaultScopes: entry.scopes.default.map((s) => expand(entry, s, variables)),
      };
    },
    privacy(id, variables = {}) {
      const entry = entryOrThrow(id);
      let settingsUrl: string | null = null;
      if (entry.privacy.settingsUrl !== null) {
        try {
          settingsUrl = expand(entry, entry.privacy.settingsUrl, variables);
        } catch {
          settingsUrl = null;
        }
      }
      return {
        settings_url: settingsUrl,
        instructions: entry.privacy.instructions,
        policy_url: entry.privacy.policyUrl,
      };
    },
    publicView(entry) {
      return {
        id: entry.id,
        name: entry.name,
        category: entry.category,
        scopes: entry.scopes.default.map((s) => ({
          name: s,
          description: entry.scopes.descriptions[s] ?? null,
        })),
        privacy: catalogue.privacy(entry.id),
      };
    },
  };
  return Object.freeze(catalogue);
}
