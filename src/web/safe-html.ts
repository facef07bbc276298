/**
 * Server-side HTML building where escaping is the default: every value interpolated into the
 * `html` tag is escaped unless it is itself SafeHtml (built by this same tag). Pages reflect
 * request data (the result page's query, a rejected origin), so forgetting to escape must be
 * impossible rather than merely unlikely (OWASP XSS Prevention Cheat Sheet, rule 1 and 2: the
 * escaping below is safe in element content and in quoted attribute values, the only two
 * contexts the templates use).
 */

export class SafeHtml {
  readonly #html: string;

  private constructor(markup: string) {
    this.#html = markup;
  }

  /** Markup the caller vouches for. Only `html` below uses it, on text it escaped itself. */
  static fromTrusted(markup: string): SafeHtml {
    return new SafeHtml(markup);
  }

  toString(): string {
    return this.#html;
  }
}

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
  '`': '&#96;',
};

/** Escapes text for HTML element content and for quoted attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"'`]/g, (ch) => ESCAPES[ch] ?? ch);
}

type Interpolation =
  SafeHtml | string | number | null | undefined | false | readonly Interpolation[];

function render(value: Interpolation): string {
  if (value === null || value === undefined || value === false) return '';
  if (value instanceof SafeHtml) return value.toString();
  if (Array.isArray(value)) return value.map((v: Interpolation) => render(v)).join('');
  return escapeHtml(String(value));
}

/** Tagged template: literal parts are trusted markup, every interpolation is escaped (SafeHtml passes through). */
export function html(strings: TemplateStringsArray, ...values: Interpolation[]): SafeHtml {
  let out = strings[0] ?? '';
  for (let i = 0; i < values.length; i++) out += render(values[i]) + (strings[i + 1] ?? '');
  return SafeHtml.fromTrusted(out);
}
