import { readFileSync } from 'node:fs';
import type { Config, ProviderCredentials } from '../config.js';
import { LinkvaultError, invalidRequest } from '../errors.js';
import { PROVIDER_ID_PATTERN } from './provider-id.js';

/**
 * The provider catalogue: config/providers.json (built in) with LINKVAULT_PROVIDERS_FILE merged
 * over it, validated strictly once at start.
 *
 * JSON is snake_case (API.md); the in-memory ProviderEntry is camelCase. Everything a caller
 * needs is converted once here so that no other file reads the raw JSON.
 *
 * Merge rule: an entry of LINKVAULT_PROVIDERS_FILE whose `id` matches a built-in entry REPLACES
 * the built-in entry as a whole (no field-by-field merge: a half-merged provider is harder to
 * reason about than a full copy); other ids are appended. Extra entries registered in code (the
 * sandbox) may not reuse an id from either file.
 *
 * Template variables: URLs, the issuer, default scopes and the privacy settings URL may contain
 * `{name}` placeholders. Each variable declares where its value may come from — the connect
 * request (`session_parameter`, a query/body parameter of the connect route) and/or the provider's
 * callback (`callback_parameter`, e.g. Zoho's `accounts-server`) — and what it may be: an
 * anchored, case-insensitive `pattern`, or a closed `values` map from the accepted value to the
 * text substituted into URLs. Every value is also held to a conservative character set (letters,
 * digits, `.`, `_`, `-`) before substitution, so that no value can add a path, port, userinfo or
 * query to a URL (RFC 9700 §4.4 mix-up / SSRF: endpoints must stay on the provider's own hosts).
 * `{client_id}` is reserved: it is replaced by the provider's client id (GitHub's revocation URL).
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

/**
 * How a token is revoked at the provider.
 * - rfc7009             RFC 7009 POST to revocation.url with token + token_type_hint, client authenticated
 * - none                the provider offers no revocation (revoke() resolves 'unsupported')
 * - github_grant        DELETE revocation.url ({client_id} substituted) with Basic client auth and JSON {access_token}
 * - slack_auth_revoke   POST revocation.url (auth.revoke) with the token as a Bearer; 200 ok:true
 * - intercom_uninstall  POST revocation.url with the access token as a Bearer (uninstalls the app from the workspace)
 */
export type RevocationStyle = 'rfc7009' | 'none' | 'github_grant' | 'slack_auth_revoke' | 'intercom_uninstall';
export const REVOCATION_STYLES: readonly RevocationStyle[] = ['rfc7009', 'none', 'github_grant', 'slack_auth_revoke', 'intercom_uninstall'];

/**
 * Token-endpoint answer quirks handled by the OAuth adapter.
 * - standard    RFC 6749 §5 JSON
 * - slack       HTTP 200 with `ok:false` on errors; token_type `bot`/`user`
 * - github      form-encoded answers unless `Accept: application/json`; errors may come as 200 with `error`
 * - jwt_expiry  standard, but no `expires_in`: the expiry is read from the access token's JWT `exp` (monday OAuth 2.1)
 */
export type TokenResponseStyle = 'standard' | 'slack' | 'github' | 'jwt_expiry';
export const TOKEN_RESPONSE_STYLES: readonly TokenResponseStyle[] = ['standard', 'slack', 'github', 'jwt_expiry'];

export type TokenEndpointAuthMethod = 'client_secret_basic' | 'client_secret_post';

/** Where the provider's stable account id comes from (used to recognise a reconnect of the same account). */
export type AccountIdSource =
  | { readonly from: 'id_token_claim'; readonly path: string }
  | { readonly from: 'token_response'; readonly path: string }
  | { readonly from: 'none' };

export interface TemplateVariable {
  readonly name: string;
  readonly description: string;
  /** Anchored, case-insensitive pattern (source text, as written in the catalogue); null when `values` is used. */
  readonly pattern: string | null;
  /** Closed set: accepted value → text substituted into URLs; null when `pattern` is used. */
  readonly values: Readonly<Record<string, string>> | null;
  /** Used when the connect request gives no value; null = the variable is required. */
  readonly default: string | null;
  /** 'host': lower-cased, and an `https://host[/]` form is accepted and reduced to the host. */
  readonly format: 'host' | 'text';
  /** Name of the connect-request parameter carrying the value, or null. */
  readonly sessionParameter: string | null;
  /** Name of the provider callback query parameter carrying the value (Zoho `accounts-server`), or null. */
  readonly callbackParameter: string | null;
}

export interface ProviderPrivacy {
  /** Where the end user removes the app's access; may contain template variables; null when no stable URL is known. */
  readonly settingsUrl: string | null;
  readonly instructions: string;
  readonly policyUrl: string;
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
  readonly privacy: { readonly settings_url: string | null; readonly instructions: string; readonly policy_url: string };
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
  resolveVariables(id: string, source: 'session' | 'callback', values: Readonly<Record<string, string | undefined>>): Record<string, string>;
  /** The provider's endpoints with `variables` (keyed by variable name) substituted; throws invalid_request on a missing/invalid value. */
  endpoints(id: string, variables: Readonly<Record<string, string>>): ResolvedEndpoints;
  /** The privacy block with its settings URL resolved from `variables` (defaults used; null when a value is missing). */
  privacy(id: string, variables?: Readonly<Record<string, string>>): { settings_url: string | null; instructions: string; policy_url: string };
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
  readonly config: Pick<Config, 'allowInsecureProviderUrls' | 'providerCredentialFor'> & Partial<Pick<Config, 'providersFile'>>;
  /** Entries registered in code with their own credentials (the sandbox). */
  readonly extraEntries?: readonly ExtraProvider[];
}

// ---------------------------------------------------------------------------------------------
// validation

const ENTRY_FIELDS = new Set([
  'id', 'name', 'category', 'issuer', 'authorization_url', 'token_url', 'revocation', 'scopes', 'pkce',
  'token_endpoint_auth_method', 'authorization_params', 'template_variables', 'capture_metadata', 'api_hosts',
  'privacy', 'account_id', 'token_response', 'notes', 'unconfirmed',
]);
const REQUIRED_FIELDS = [
  'id', 'name', 'category', 'issuer', 'revocation', 'scopes', 'pkce', 'token_endpoint_auth_method',
  'authorization_params', 'template_variables', 'capture_metadata', 'api_hosts', 'privacy',
];
const CATEGORY_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;
const VARIABLE_NAME_PATTERN = /^[a-zA-Z][a-zA-Z0-9_]{0,62}$/;
const PARAMETER_NAME_PATTERN = /^[a-zA-Z][a-zA-Z0-9_-]{0,62}$/;
const PATH_PATTERN = /^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$/;
const HOST_PATTERN = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Every substituted value must fit this, whatever its own pattern says. */
const SAFE_VALUE = /^[A-Za-z0-9._-]{1,253}$/;
/** Metadata that could carry a credential is never captured. */
const SECRET_LOOKING = /token|secret|password|code|verifier|signature|webhook/i;
/** Authorization parameters linkvault sets itself. */
const RESERVED_AUTH_PARAMS = new Set([
  'client_id', 'client_secret', 'redirect_uri', 'state', 'nonce', 'code_challenge', 'code_challenge_method', 'scope', 'response_type',
]);
const PLACEHOLDER = /\{([^{}]*)\}/g;
const RESERVED_VARIABLES = new Set(['client_id']);

type Json = Record<string, unknown>;

class EntryProblem extends Error {}

function fail(problem: string): never {
  throw new EntryProblem(problem);
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function onlyFields(obj: Json, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) fail(`unknown field "${where}${key}"`);
  }
}

function str(obj: Json, key: string, where = ''): string {
  const v = obj[key];
  if (typeof v !== 'string' || v.trim() === '') fail(`${where}${key} must be a non-empty string`);
  return v;
}

function strOrNull(obj: Json, key: string, where = ''): string | null {
  const v = obj[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string' || v.trim() === '') fail(`${where}${key} must be a non-empty string or null`);
  return v;
}

function strArray(obj: Json, key: string, where = '', optional = false): string[] {
  const v = obj[key];
  if (v === undefined && optional) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' || s.trim() === '')) fail(`${where}${key} must be an array of non-empty strings`);
  if (new Set(v).size !== v.length) fail(`${where}${key} has duplicates`);
  return v as string[];
}

function strRecord(obj: Json, key: string, where = '', optional = false): Record<string, string> {
  const v = obj[key];
  if (v === undefined && optional) return {};
  if (!isObject(v) || Object.values(v).some((s) => typeof s !== 'string')) fail(`${where}${key} must be an object of strings`);
  return { ...(v as Record<string, string>) };
}

function placeholders(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].map((m) => m[1]!);
}

function compilePattern(source: string): RegExp {
  return new RegExp(`^(?:${source})$`, 'i');
}

function parseTemplateVariable(raw: unknown, index: number): TemplateVariable {
  const where = `template_variables[${index}].`;
  if (!isObject(raw)) fail(`${where.slice(0, -1)} must be an object`);
  onlyFields(raw, ['name', 'description', 'pattern', 'values', 'default', 'format', 'session_parameter', 'callback_parameter'], where);
  const name = str(raw, 'name', where);
  if (!VARIABLE_NAME_PATTERN.test(name)) fail(`${where}name "${name}" must be letters, digits and _`);
  if (RESERVED_VARIABLES.has(name)) fail(`${where}name "${name}" is reserved`);
  const description = str(raw, 'description', where);
  const pattern = strOrNull(raw, 'pattern', where);
  let values: Record<string, string> | null = null;
  if (raw.values !== undefined && raw.values !== null) {
    values = strRecord(raw, 'values', where);
    if (Object.keys(values).length === 0) fail(`${where}values must not be empty`);
    for (const [k, sub] of Object.entries(values)) {
      if (!SAFE_VALUE.test(k)) fail(`${where}values key "${k}" must be letters, digits, . _ -`);
      if (sub !== '' && !SAFE_VALUE.test(sub)) fail(`${where}values["${k}"] must be letters, digits, . _ - (or empty)`);
    }
  }
  if ((pattern === null) === (values === null)) fail(`${where}exactly one of pattern or values is required`);
  if (pattern !== null) {
    try {
      compilePattern(pattern);
    } catch {
      fail(`${where}pattern is not a valid regular expression`);
    }
  }
  const format = raw.format === undefined ? 'text' : raw.format;
  if (format !== 'host' && format !== 'text') fail(`${where}format must be "host" or "text"`);
  const sessionParameter = strOrNull(raw, 'session_parameter', where);
  const callbackParameter = strOrNull(raw, 'callback_parameter', where);
  for (const p of [sessionParameter, callbackParameter]) {
    if (p !== null && !PARAMETER_NAME_PATTERN.test(p)) fail(`${where}parameter name "${p}" must be letters, digits, _ and -`);
  }
  if (sessionParameter === null && callbackParameter === null) fail(`${where}needs a session_parameter or a callback_parameter`);
  const variable: TemplateVariable = {
    name,
    description,
    pattern,
    values: values ? Object.freeze(values) : null,
    default: null,
    format,
    sessionParameter,
    callbackParameter,
  };
  const def = strOrNull(raw, 'default', where);
  if (def !== null && checkValue(variable, def) === null) fail(`${where}default does not match the variable's own pattern/values`);
  return Object.freeze({ ...variable, default: def });
}

/** Normalises and checks one value; returns the normalised value or null when it is not acceptable. */
function checkValue(variable: TemplateVariable, raw: string): string | null {
  let value = raw.trim();
  if (variable.format === 'host') {
    value = value.toLowerCase();
    const m = /^https:\/\/([^/?#]+)\/?$/.exec(value);
    if (m) value = m[1]!;
  }
  if (variable.values) return Object.hasOwn(variable.values, value) ? value : null;
  if (!SAFE_VALUE.test(value)) return null;
  return compiledPattern(variable.pattern!).test(value) ? value : null;
}

const patternCache = new Map<string, RegExp>();
function compiledPattern(source: string): RegExp {
  let re = patternCache.get(source);
  if (!re) {
    re = compilePattern(source);
    patternCache.set(source, re);
  }
  return re;
}

function substitution(variable: TemplateVariable, value: string): string {
  return variable.values ? variable.values[value]! : value;
}

function sampleFor(variable: TemplateVariable): string {
  if (variable.default !== null) return substitution(variable, variable.default);
  if (variable.values) return Object.values(variable.values)[0]!;
  return 'example';
}

function checkUrl(
  template: string,
  field: string,
  variables: ReadonlyMap<string, TemplateVariable>,
  allowHttp: boolean,
  { allowClientId = false, allowFragment = false }: { allowClientId?: boolean; allowFragment?: boolean } = {},
): void {
  for (const name of placeholders(template)) {
    if (name === 'client_id' && allowClientId) continue;
    if (!variables.has(name)) fail(`${field} uses undeclared template variable "{${name}}"`);
  }
  const sample = template.replace(PLACEHOLDER, (_, name: string) => (name === 'client_id' ? 'client' : sampleFor(variables.get(name)!)));
  if (sample.includes('{') || sample.includes('}')) fail(`${field} has an unbalanced "{" or "}"`);
  let parsed: URL;
  try {
    parsed = new URL(sample);
  } catch {
    fail(`${field} is not an absolute URL`);
  }
  if (parsed.protocol !== 'https:' && !(allowHttp && parsed.protocol === 'http:')) {
    fail(`${field} must use https${allowHttp ? ' or http' : ' (http needs LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS=true)'}`);
  }
  if (parsed.username || parsed.password) fail(`${field} must not carry credentials`);
  if (parsed.hash && !allowFragment) fail(`${field} must not have a fragment`);
  // A placeholder may stand for (part of) the host or a path segment, never the scheme.
  if (/^\{|^[a-z]+:\/\/[^/]*@/.test(template)) fail(`${field} must start with a fixed scheme`);
}

function parseEntry(raw: unknown, allowHttp: boolean): ProviderEntry {
  if (!isObject(raw)) fail('must be an object');
  for (const key of Object.keys(raw)) if (!ENTRY_FIELDS.has(key)) fail(`unknown field "${key}"`);
  for (const key of REQUIRED_FIELDS) if (!(key in raw)) fail(key === 'privacy' ? 'missing privacy block' : `missing field "${key}"`);

  const id = str(raw, 'id');
  if (!PROVIDER_ID_PATTERN.test(id)) fail(`id "${id}" must be lower-case letters, digits and -`);
  const name = str(raw, 'name');
  const category = str(raw, 'category');
  if (!CATEGORY_PATTERN.test(category)) fail(`category "${category}" must be lower-case letters, digits, _ and -`);

  // template variables first: every templated field is checked against them
  if (!Array.isArray(raw.template_variables)) fail('template_variables must be an array');
  const templateVariables = raw.template_variables.map(parseTemplateVariable);
  const varMap = new Map<string, TemplateVariable>();
  for (const v of templateVariables) {
    if (varMap.has(v.name)) fail(`template variable "${v.name}" is declared twice`);
    varMap.set(v.name, v);
  }
  const used = new Set<string>();
  const noteUse = (template: string | null): void => {
    if (template) for (const n of placeholders(template)) used.add(n);
  };

  const issuer = strOrNull(raw, 'issuer');
  if (issuer !== null) {
    checkUrl(issuer, 'issuer', varMap, allowHttp);
    if (issuer.includes('?')) fail('issuer must not have a query');
  }
  const authorizationUrl = strOrNull(raw, 'authorization_url');
  const tokenUrl = strOrNull(raw, 'token_url');
  if (authorizationUrl !== null) checkUrl(authorizationUrl, 'authorization_url', varMap, allowHttp);
  if (tokenUrl !== null) checkUrl(tokenUrl, 'token_url', varMap, allowHttp);
  if ((authorizationUrl === null || tokenUrl === null) && issuer === null) {
    fail('authorization_url and token_url are required when issuer is null (no discovery)');
  }
  if ((authorizationUrl === null) !== (tokenUrl === null)) fail('give both authorization_url and token_url, or neither (discovery)');
  [issuer, authorizationUrl, tokenUrl].forEach(noteUse);

  if (!isObject(raw.revocation)) fail('revocation must be an object');
  onlyFields(raw.revocation, ['style', 'url', 'token_type_hint'], 'revocation.');
  const style = str(raw.revocation, 'style', 'revocation.') as RevocationStyle;
  if (!REVOCATION_STYLES.includes(style)) fail(`revocation.style "${style}" is not one of ${REVOCATION_STYLES.join(', ')}`);
  const revocationUrl = strOrNull(raw.revocation, 'url', 'revocation.');
  if (style === 'none' && revocationUrl !== null) fail('revocation.url must be null when style is none');
  if (style !== 'none' && revocationUrl === null && !(style === 'rfc7009' && authorizationUrl === null)) {
    fail(`revocation.url is required for style ${style}`);
  }
  if (revocationUrl !== null) checkUrl(revocationUrl, 'revocation.url', varMap, allowHttp, { allowClientId: style === 'github_grant' });
  noteUse(revocationUrl);
  const hint = raw.revocation.token_type_hint ?? 'refresh_token';
  if (hint !== 'refresh_token' && hint !== 'access_token') fail('revocation.token_type_hint must be refresh_token or access_token');

  if (!isObject(raw.scopes)) fail('scopes must be an object');
  onlyFields(raw.scopes, ['default', 'separator', 'descriptions'], 'scopes.');
  const defaultScopes = strArray(raw.scopes, 'default', 'scopes.');
  const separator = raw.scopes.separator;
  if (separator !== ' ' && separator !== ',') fail('scopes.separator must be " " or ","');
  for (const s of defaultScopes) {
    if (/[\s,]/.test(s)) fail(`scope "${s}" must not contain spaces or commas`);
    for (const n of placeholders(s)) if (!varMap.has(n)) fail(`scope "${s}" uses undeclared template variable "{${n}}"`);
    noteUse(s);
  }
  const descriptions = strRecord(raw.scopes, 'descriptions', 'scopes.', true);
  for (const scope of Object.keys(descriptions)) {
    if (!defaultScopes.includes(scope)) fail(`scopes.descriptions names "${scope}", which is not a default scope`);
  }

  if (typeof raw.pkce !== 'boolean') fail('pkce must be true or false');
  const auth = raw.token_endpoint_auth_method;
  if (auth !== 'client_secret_basic' && auth !== 'client_secret_post') fail('token_endpoint_auth_method must be client_secret_basic or client_secret_post');

  const authorizationParams = strRecord(raw, 'authorization_params');
  for (const key of Object.keys(authorizationParams)) {
    if (RESERVED_AUTH_PARAMS.has(key)) fail(`authorization_params must not set "${key}" (linkvault sets it)`);
  }

  const captureMetadata = strArray(raw, 'capture_metadata');
  for (const path of captureMetadata) {
    if (!PATH_PATTERN.test(path)) fail(`capture_metadata "${path}" must be a dotted member path`);
    if (SECRET_LOOKING.test(path)) fail(`capture_metadata "${path}" looks like a credential and is never captured`);
  }
  const apiHosts = strArray(raw, 'api_hosts');
  for (const h of apiHosts) if (!HOST_PATTERN.test(h)) fail(`api_hosts "${h}" must be a lower-case host name (optionally *.)`);

  if (!isObject(raw.privacy)) fail('missing privacy block');
  onlyFields(raw.privacy, ['settings_url', 'instructions', 'policy_url'], 'privacy.');
  if (!('settings_url' in raw.privacy)) fail('privacy.settings_url is required (null when no stable URL is known)');
  const settingsUrl = strOrNull(raw.privacy, 'settings_url', 'privacy.');
  if (settingsUrl !== null) checkUrl(settingsUrl, 'privacy.settings_url', varMap, allowHttp, { allowFragment: true });
  noteUse(settingsUrl);
  const instructions = str(raw.privacy, 'instructions', 'privacy.');
  const policyUrl = str(raw.privacy, 'policy_url', 'privacy.');
  checkUrl(policyUrl, 'privacy.policy_url', new Map(), allowHttp);

  let accountId: AccountIdSource = { from: 'none' };
  if (raw.account_id !== undefined) {
    if (!isObject(raw.account_id)) fail('account_id must be an object');
    onlyFields(raw.account_id, ['from', 'path'], 'account_id.');
    const from = raw.account_id.from;
    if (from === 'none') {
      if (raw.account_id.path !== undefined) fail('account_id.path must be absent when from is none');
    } else if (from === 'id_token_claim' || from === 'token_response') {
      const path = str(raw.account_id, 'path', 'account_id.');
      if (!PATH_PATTERN.test(path) || SECRET_LOOKING.test(path)) fail('account_id.path must be a dotted member path that names no credential');
      if (from === 'id_token_claim' && issuer === null) fail('account_id from id_token_claim needs an issuer (OIDC)');
      accountId = { from, path };
    } else {
      fail('account_id.from must be id_token_claim, token_response or none');
    }
  }

  const tokenResponse = (raw.token_response ?? 'standard') as TokenResponseStyle;
  if (!TOKEN_RESPONSE_STYLES.includes(tokenResponse)) fail(`token_response must be one of ${TOKEN_RESPONSE_STYLES.join(', ')}`);
  const notes = strOrNull(raw, 'notes');
  const unconfirmed = strArray(raw, 'unconfirmed', '', true);

  for (const v of templateVariables) if (!used.has(v.name)) fail(`template variable "${v.name}" is declared but never used`);

  return deepFreeze({
    id,
    name,
    category,
    issuer,
    authorizationUrl,
    tokenUrl,
    revocation: { style, url: revocationUrl, tokenTypeHint: hint },
    scopes: { default: defaultScopes, separator, descriptions },
    pkce: raw.pkce,
    tokenEndpointAuthMethod: auth,
    authorizationParams,
    templateVariables,
    captureMetadata,
    apiHosts,
    privacy: { settingsUrl, instructions, policyUrl },
    accountId,
    tokenResponse,
    notes,
    unconfirmed,
    insecureUrlsAllowed: allowHttp,
  });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

function readEntries(file: string): unknown[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CatalogueError(file, 'file', `cannot read as JSON (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!isObject(json) || !Array.isArray(json.providers)) throw new CatalogueError(file, 'file', 'must be {"providers": [ ... ]}');
  for (const key of Object.keys(json)) {
    if (key !== 'providers' && key !== '$comment') throw new CatalogueError(file, 'file', `unknown top-level field "${key}"`);
  }
  return json.providers;
}

function entryLabel(raw: unknown, index: number): string {
  return isObject(raw) && typeof raw.id === 'string' ? `provider "${raw.id}"` : `providers[${index}]`;
}

function parseFile(file: string, allowHttp: boolean): ProviderEntry[] {
  const seen = new Set<string>();
  return readEntries(file).map((raw, index) => {
    let entry: ProviderEntry;
    try {
      entry = parseEntry(raw, allowHttp);
    } catch (err) {
      if (err instanceof EntryProblem) throw new CatalogueError(file, entryLabel(raw, index), err.message);
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

  const extraFile = options.extraFile === undefined ? (config.providersFile ?? null) : options.extraFile;
  if (extraFile) {
    // Whole-entry replace by id (documented at the top of this file).
    for (const e of parseFile(extraFile, allowHttp)) entries.set(e.id, e);
  }

  const extraCredentials = new Map<string, ProviderCredentials>();
  for (const [index, extra] of (options.extraEntries ?? []).entries()) {
    let entry: ProviderEntry;
    try {
      entry = parseEntry(extra.entry, allowHttp || extra.allowInsecureUrls === true);
    } catch (err) {
      if (err instanceof EntryProblem) throw new CatalogueError('extra entries', entryLabel(extra.entry, index), err.message);
      throw err;
    }
    if (entries.has(entry.id)) throw new CatalogueError('extra entries', entryLabel(extra.entry, index), 'duplicate id (already in a catalogue file)');
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
    if (!entry) throw new LinkvaultError('provider_not_found', { detail: 'No such provider in the catalogue' });
    return entry;
  };

  const invalid = (parameter: string, problem: string): LinkvaultError => invalidRequest(parameter, `${parameter} ${problem}`);

  /** Substitutes `{name}` placeholders; every value is re-checked against its variable. */
  const expand = (entry: ProviderEntry, template: string, variables: Readonly<Record<string, string>>): string =>
    template.replace(PLACEHOLDER, (_, name: string) => {
      if (name === 'client_id') {
        const creds = credentials(entry.id);
        if (!creds) throw new LinkvaultError('provider_not_found', { detail: 'The provider is not enabled' });
        return encodeURIComponent(creds.clientId);
      }
      const variable = entry.templateVariables.find((v) => v.name === name)!;
      const raw = Object.hasOwn(variables, name) ? variables[name] : undefined;
      const value = raw === undefined ? variable.default : checkValue(variable, raw);
      if (value === null) throw invalid(variable.sessionParameter ?? variable.callbackParameter ?? name, raw === undefined ? 'is required' : 'is not an allowed value');
      return substitution(variable, value);
    });

  const catalogue: Catalogue = {
    get: (id) => entries.get(id),
    enabled: () => [...entries.values()].filter((e) => credentials(e.id) !== null),
    isEnabled: (id) => credentials(id) !== null,
    credentials,
    resolveVariables(id, source, values) {
      const entry = entryOrThrow(id);
      const out: Record<string, string> = {};
      for (const variable of entry.templateVariables) {
        const parameter = source === 'session' ? variable.sessionParameter : variable.callbackParameter;
        const raw = parameter !== null && Object.hasOwn(values, parameter) ? values[parameter] : undefined;
        if (raw === undefined || raw.trim() === '') {
          if (source === 'callback') continue;
          if (variable.default === null) throw invalid(parameter ?? variable.name, 'is required');
          out[variable.name] = variable.default;
          continue;
        }
        const value = checkValue(variable, raw);
        if (value === null) throw invalid(parameter!, 'is not an allowed value');
        out[variable.name] = value;
      }
      return out;
    },
    endpoints(id, variables) {
      const entry = entryOrThrow(id);
      return {
        issuer: entry.issuer === null ? null : expand(entry, entry.issuer, variables),
        authorizationUrl: entry.authorizationUrl === null ? null : expand(entry, entry.authorizationUrl, variables),
        tokenUrl: entry.tokenUrl === null ? null : expand(entry, entry.tokenUrl, variables),
        revocationUrl: entry.revocation.url === null ? null : expand(entry, entry.revocation.url, variables),
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
      return { settings_url: settingsUrl, instructions: entry.privacy.instructions, policy_url: entry.privacy.policyUrl };
    },
    publicView(entry) {
      return {
        id: entry.id,
        name: entry.name,
        category: entry.category,
        scopes: entry.scopes.default.map((s) => ({ name: s, description: entry.scopes.descriptions[s] ?? null })),
        privacy: catalogue.privacy(entry.id),
      };
    },
  };
  return Object.freeze(catalogue);
}
