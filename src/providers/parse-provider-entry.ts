import { isIP } from 'node:net';
import { PROVIDER_ID_PATTERN } from './provider-id.js';
import {
  REVOCATION_STYLES,
  TOKEN_RESPONSE_STYLES,
  type AccountIdSource,
  type RevocationStyle,
  type TemplateVariable,
  type TokenResponseStyle,
} from './catalogue-entry.js';
import type { ProviderEntry } from './catalogue.js';
import {
  SAFE_TEMPLATE_VALUE,
  checkVariableValue,
  compileVariablePattern,
  fillWithSamples,
  templatePlaceholders,
} from './expand-template.js';

const ENTRY_FIELDS = new Set([
  'id',
  'name',
  'category',
  'issuer',
  'authorization_url',
  'token_url',
  'revocation',
  'scopes',
  'pkce',
  'token_endpoint_auth_method',
  'authorization_params',
  'template_variables',
  'capture_metadata',
  'api_hosts',
  'api_base_url',
  'privacy',
  'account_id',
  'token_response',
  'notes',
  'unconfirmed',
]);
const REQUIRED_FIELDS = [
  'id',
  'name',
  'category',
  'issuer',
  'revocation',
  'scopes',
  'pkce',
  'token_endpoint_auth_method',
  'authorization_params',
  'template_variables',
  'capture_metadata',
  'api_hosts',
  'privacy',
];
const CATEGORY_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;
const VARIABLE_NAME_PATTERN = /^[a-zA-Z][a-zA-Z0-9_]{0,62}$/;
const PARAMETER_NAME_PATTERN = /^[a-zA-Z][a-zA-Z0-9_-]{0,62}$/;
const PATH_PATTERN = /^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$/;
const HOST_PATTERN =
  /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Metadata that could carry a credential is never captured. */
const SECRET_LOOKING = /token|secret|password|code|verifier|signature|webhook/i;
/** Authorization parameters linkvault sets itself. */
const RESERVED_AUTH_PARAMS = new Set([
  'client_id',
  'client_secret',
  'redirect_uri',
  'state',
  'nonce',
  'code_challenge',
  'code_challenge_method',
  'scope',
  'response_type',
]);
const RESERVED_VARIABLES = new Set(['client_id']);

type Json = Record<string, unknown>;

/** One problem with one raw entry; the loader adds the file and the entry's label. */
export class EntryProblem extends Error {}

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
  if (typeof v !== 'string' || v.trim() === '')
    fail(`${where}${key} must be a non-empty string or null`);
  return v;
}

function strArray(obj: Json, key: string, where = '', optional = false): string[] {
  const v = obj[key];
  if (v === undefined && optional) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' || s.trim() === ''))
    fail(`${where}${key} must be an array of non-empty strings`);
  if (new Set(v).size !== v.length) fail(`${where}${key} has duplicates`);
  return v as string[];
}

function strRecord(obj: Json, key: string, where = '', optional = false): Record<string, string> {
  const v = obj[key];
  if (v === undefined && optional) return {};
  if (!isObject(v) || Object.values(v).some((s) => typeof s !== 'string'))
    fail(`${where}${key} must be an object of strings`);
  return { ...(v as Record<string, string>) };
}

function parseTemplateVariable(raw: unknown, index: number): TemplateVariable {
  const where = `template_variables[${index}].`;
  if (!isObject(raw)) fail(`${where.slice(0, -1)} must be an object`);
  onlyFields(
    raw,
    [
      'name',
      'description',
      'pattern',
      'values',
      'default',
      'format',
      'session_parameter',
      'callback_parameter',
    ],
    where,
  );
  const name = str(raw, 'name', where);
  if (!VARIABLE_NAME_PATTERN.test(name))
    fail(`${where}name "${name}" must be letters, digits and _`);
  if (RESERVED_VARIABLES.has(name)) fail(`${where}name "${name}" is reserved`);
  const description = str(raw, 'description', where);
  const pattern = strOrNull(raw, 'pattern', where);
  let values: Record<string, string> | null = null;
  if (raw.values !== undefined && raw.values !== null) {
    values = strRecord(raw, 'values', where);
    if (Object.keys(values).length === 0) fail(`${where}values must not be empty`);
    for (const [k, sub] of Object.entries(values)) {
      if (!SAFE_TEMPLATE_VALUE.test(k))
        fail(`${where}values key "${k}" must be letters, digits, . _ -`);
      if (sub !== '' && !SAFE_TEMPLATE_VALUE.test(sub))
        fail(`${where}values["${k}"] must be letters, digits, . _ - (or empty)`);
    }
  }
  if ((pattern === null) === (values === null))
    fail(`${where}exactly one of pattern or values is required`);
  if (pattern !== null) {
    try {
      compileVariablePattern(pattern);
    } catch {
      fail(`${where}pattern is not a valid regular expression`);
    }
  }
  const format = raw.format === undefined ? 'text' : raw.format;
  if (format !== 'host' && format !== 'text') fail(`${where}format must be "host" or "text"`);
  const sessionParameter = strOrNull(raw, 'session_parameter', where);
  const callbackParameter = strOrNull(raw, 'callback_parameter', where);
  for (const p of [sessionParameter, callbackParameter]) {
    if (p !== null && !PARAMETER_NAME_PATTERN.test(p))
      fail(`${where}parameter name "${p}" must be letters, digits, _ and -`);
  }
  if (sessionParameter === null && callbackParameter === null)
    fail(`${where}needs a session_parameter or a callback_parameter`);
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
  if (def !== null && checkVariableValue(variable, def) === null)
    fail(`${where}default does not match the variable's own pattern/values`);
  return Object.freeze({ ...variable, default: def });
}

function checkUrl(
  template: string,
  field: string,
  variables: ReadonlyMap<string, TemplateVariable>,
  allowHttp: boolean,
  {
    allowClientId = false,
    allowFragment = false,
  }: { allowClientId?: boolean; allowFragment?: boolean } = {},
): void {
  for (const name of templatePlaceholders(template)) {
    if (name === 'client_id' && allowClientId) continue;
    if (!variables.has(name)) fail(`${field} uses undeclared template variable "{${name}}"`);
  }
  const sample = fillWithSamples(template, variables);
  if (sample.includes('{') || sample.includes('}')) fail(`${field} has an unbalanced "{" or "}"`);
  let parsed: URL;
  try {
    parsed = new URL(sample);
  } catch {
    fail(`${field} is not an absolute URL`);
  }
  if (parsed.protocol !== 'https:' && !(allowHttp && parsed.protocol === 'http:')) {
    fail(
      `${field} must use https${allowHttp ? ' or http' : ' (http needs LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS=true)'}`,
    );
  }
  if (parsed.username || parsed.password) fail(`${field} must not carry credentials`);
  if (parsed.hash && !allowFragment) fail(`${field} must not have a fragment`);
  // A placeholder may stand for (part of) the host or a path segment, never the scheme.
  if (/^\{|^[a-z]+:\/\/[^/]*@/.test(template)) fail(`${field} must start with a fixed scheme`);
}

/**
 * Validates one raw snake_case entry and converts it to a frozen ProviderEntry. Throws EntryProblem
 * naming the first problem; `allowHttp` admits http:// endpoints.
 */
export function parseProviderEntry(raw: unknown, allowHttp: boolean): ProviderEntry {
  if (!isObject(raw)) fail('must be an object');
  for (const key of Object.keys(raw)) if (!ENTRY_FIELDS.has(key)) fail(`unknown field "${key}"`);
  for (const key of REQUIRED_FIELDS)
    if (!(key in raw)) fail(key === 'privacy' ? 'missing privacy block' : `missing field "${key}"`);

  const id = str(raw, 'id');
  if (!PROVIDER_ID_PATTERN.test(id)) fail(`id "${id}" must be lower-case letters, digits and -`);
  const name = str(raw, 'name');
  const category = str(raw, 'category');
  if (!CATEGORY_PATTERN.test(category))
    fail(`category "${category}" must be lower-case letters, digits, _ and -`);

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
    if (template) for (const n of templatePlaceholders(template)) used.add(n);
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
  if ((authorizationUrl === null) !== (tokenUrl === null))
    fail('give both authorization_url and token_url, or neither (discovery)');
  [issuer, authorizationUrl, tokenUrl].forEach(noteUse);

  if (!isObject(raw.revocation)) fail('revocation must be an object');
  onlyFields(raw.revocation, ['style', 'url', 'token_type_hint'], 'revocation.');
  const style = str(raw.revocation, 'style', 'revocation.') as RevocationStyle;
  if (!REVOCATION_STYLES.includes(style))
    fail(`revocation.style "${style}" is not one of ${REVOCATION_STYLES.join(', ')}`);
  const revocationUrl = strOrNull(raw.revocation, 'url', 'revocation.');
  if (style === 'none' && revocationUrl !== null)
    fail('revocation.url must be null when style is none');
  if (
    style !== 'none' &&
    revocationUrl === null &&
    !(style === 'rfc7009' && authorizationUrl === null)
  ) {
    fail(`revocation.url is required for style ${style}`);
  }
  if (revocationUrl !== null)
    checkUrl(revocationUrl, 'revocation.url', varMap, allowHttp, {
      allowClientId: style === 'github_grant',
    });
  noteUse(revocationUrl);
  const hint = raw.revocation.token_type_hint ?? 'refresh_token';
  if (hint !== 'refresh_token' && hint !== 'access_token')
    fail('revocation.token_type_hint must be refresh_token or access_token');

  if (!isObject(raw.scopes)) fail('scopes must be an object');
  onlyFields(raw.scopes, ['default', 'separator', 'descriptions'], 'scopes.');
  const defaultScopes = strArray(raw.scopes, 'default', 'scopes.');
  const separator = raw.scopes.separator;
  if (separator !== ' ' && separator !== ',') fail('scopes.separator must be " " or ","');
  for (const s of defaultScopes) {
    if (/[\s,]/.test(s)) fail(`scope "${s}" must not contain spaces or commas`);
    for (const n of templatePlaceholders(s))
      if (!varMap.has(n)) fail(`scope "${s}" uses undeclared template variable "{${n}}"`);
    noteUse(s);
  }
  const descriptions = strRecord(raw.scopes, 'descriptions', 'scopes.', true);
  for (const scope of Object.keys(descriptions)) {
    if (!defaultScopes.includes(scope))
      fail(`scopes.descriptions names "${scope}", which is not a default scope`);
  }

  if (typeof raw.pkce !== 'boolean') fail('pkce must be true or false');
  const auth = raw.token_endpoint_auth_method;
  if (auth !== 'client_secret_basic' && auth !== 'client_secret_post')
    fail('token_endpoint_auth_method must be client_secret_basic or client_secret_post');

  const authorizationParams = strRecord(raw, 'authorization_params');
  for (const key of Object.keys(authorizationParams)) {
    if (RESERVED_AUTH_PARAMS.has(key))
      fail(`authorization_params must not set "${key}" (linkvault sets it)`);
  }

  const captureMetadata = strArray(raw, 'capture_metadata');
  for (const path of captureMetadata) {
    if (!PATH_PATTERN.test(path)) fail(`capture_metadata "${path}" must be a dotted member path`);
    if (SECRET_LOOKING.test(path))
      fail(`capture_metadata "${path}" looks like a credential and is never captured`);
  }
  const apiHosts = strArray(raw, 'api_hosts');
  for (const h of apiHosts)
    if (!HOST_PATTERN.test(h))
      fail(`api_hosts "${h}" must be a lower-case host name (optionally *.)`);
  const apiBaseUrl = parseApiBaseUrl(raw, apiHosts, allowHttp);

  if (!isObject(raw.privacy)) fail('missing privacy block');
  onlyFields(raw.privacy, ['settings_url', 'instructions', 'policy_url'], 'privacy.');
  if (!('settings_url' in raw.privacy))
    fail('privacy.settings_url is required (null when no stable URL is known)');
  const settingsUrl = strOrNull(raw.privacy, 'settings_url', 'privacy.');
  if (settingsUrl !== null)
    checkUrl(settingsUrl, 'privacy.settings_url', varMap, allowHttp, { allowFragment: true });
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
      if (raw.account_id.path !== undefined)
        fail('account_id.path must be absent when from is none');
    } else if (from === 'id_token_claim' || from === 'token_response') {
      const path = str(raw.account_id, 'path', 'account_id.');
      if (!PATH_PATTERN.test(path) || SECRET_LOOKING.test(path))
        fail('account_id.path must be a dotted member path that names no credential');
      if (from === 'id_token_claim' && issuer === null)
        fail('account_id from id_token_claim needs an issuer (OIDC)');
      accountId = { from, path };
    } else {
      fail('account_id.from must be id_token_claim, token_response or none');
    }
  }

  const tokenResponse = (raw.token_response ?? 'standard') as TokenResponseStyle;
  if (!TOKEN_RESPONSE_STYLES.includes(tokenResponse))
    fail(`token_response must be one of ${TOKEN_RESPONSE_STYLES.join(', ')}`);
  const notes = strOrNull(raw, 'notes');
  const unconfirmed = strArray(raw, 'unconfirmed', '', true);

  for (const v of templateVariables)
    if (!used.has(v.name)) fail(`template variable "${v.name}" is declared but never used`);

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
    apiBaseUrl,
    privacy: { settingsUrl, instructions, policyUrl },
    accountId,
    tokenResponse,
    notes,
    unconfirmed,
    insecureUrlsAllowed: allowHttp,
  });
}

/**
 * `api_base_url` (optional): where the proxy sends a link's API calls when the link captured no
 * host of its own. A fixed https URL (no template, credentials, query or fragment) whose host is
 * one of the entry's api_hosts and not an IP literal: the proxy attaches tokens to what it names.
 */
function parseApiBaseUrl(
  raw: Json,
  apiHosts: readonly string[],
  allowHttp: boolean,
): string | null {
  if (raw.api_base_url === undefined || raw.api_base_url === null) return null;
  const value = raw.api_base_url;
  if (typeof value !== 'string') fail('api_base_url must be a string or null');
  if (value.includes('{')) fail('api_base_url must not use template variables');
  checkUrl(value, 'api_base_url', new Map(), allowHttp);
  const url = new URL(value);
  if (url.search !== '' || value.includes('?')) fail('api_base_url must not have a query');
  if (isIP(url.hostname.replace(/^\[|\]$/g, '')) !== 0)
    fail('api_base_url must name a host, not an IP address');
  const host = url.hostname;
  const listed = apiHosts.some((pattern) =>
    pattern.startsWith('*.') ? host.endsWith(pattern.slice(1)) : host === pattern,
  );
  if (!listed) fail(`api_base_url host "${host}" must be one of api_hosts`);
  return value.replace(/\/+$/, '');
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
