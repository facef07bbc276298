import { invalidRequest } from '../errors.js';
import type { TemplateVariable } from './catalogue-entry.js';

/*
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

const PLACEHOLDER = /\{([^{}]*)\}/g;
/** Every substituted value must fit this, whatever its own pattern says. */
export const SAFE_TEMPLATE_VALUE = /^[A-Za-z0-9._-]{1,253}$/;

/** The variable names a template refers to, in order (`{client_id}` included). */
export function templatePlaceholders(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].map((m) => m[1]!);
}

/** A variable's `pattern` as the anchored, case-insensitive expression it stands for; throws when it does not compile. */
export function compileVariablePattern(source: string): RegExp {
  return new RegExp(`^(?:${source})$`, 'i');
}

const patternCache = new Map<string, RegExp>();
function compiledPattern(source: string): RegExp {
  let re = patternCache.get(source);
  if (!re) {
    re = compileVariablePattern(source);
    patternCache.set(source, re);
  }
  return re;
}

/** Normalises and checks one value; returns the normalised value or null when it is not acceptable. */
export function checkVariableValue(variable: TemplateVariable, raw: string): string | null {
  let value = raw.trim();
  if (variable.format === 'host') {
    value = value.toLowerCase();
    const m = /^https:\/\/([^/?#]+)\/?$/.exec(value);
    if (m) value = m[1]!;
  }
  if (variable.values) return Object.hasOwn(variable.values, value) ? value : null;
  if (!SAFE_TEMPLATE_VALUE.test(value)) return null;
  return compiledPattern(variable.pattern!).test(value) ? value : null;
}

function substitution(variable: TemplateVariable, value: string): string {
  return variable.values ? variable.values[value]! : value;
}

function sampleFor(variable: TemplateVariable): string {
  if (variable.default !== null) return substitution(variable, variable.default);
  if (variable.values) return Object.values(variable.values)[0]!;
  return 'example';
}

/** The template with every placeholder replaced by a plausible value, so that its URL shape can be checked at load. */
export function fillWithSamples(
  template: string,
  variables: ReadonlyMap<string, TemplateVariable>,
): string {
  return template.replace(PLACEHOLDER, (_, name: string) =>
    name === 'client_id' ? 'client' : sampleFor(variables.get(name)!),
  );
}

/**
 * Substitutes `{name}` placeholders from `values` (keyed by variable name), re-checking every value
 * against its variable, and `{client_id}` with `clientId()` (called only when the template has it).
 * Throws invalid_request naming the variable's parameter, never echoing the value.
 */
export function expandTemplate(
  template: string,
  declared: readonly TemplateVariable[],
  values: Readonly<Record<string, string>>,
  clientId: () => string,
): string {
  return template.replace(PLACEHOLDER, (_, name: string) => {
    if (name === 'client_id') return encodeURIComponent(clientId());
    const variable = declared.find((v) => v.name === name)!;
    const raw = Object.hasOwn(values, name) ? values[name] : undefined;
    const value = raw === undefined ? variable.default : checkVariableValue(variable, raw);
    if (value === null) {
      const parameter = variable.sessionParameter ?? variable.callbackParameter ?? name;
      throw invalidRequest(
        parameter,
        `${parameter} ${raw === undefined ? 'is required' : 'is not an allowed value'}`,
      );
    }
    return substitution(variable, value);
  });
}
