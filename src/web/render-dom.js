/**
 * DOM building for the pages. Text only ever goes in through textContent and attributes through
 * setAttribute: never an HTML-parsing sink, never an HTML string, so data from the API (provider names, scope
 * descriptions, instructions) cannot become markup. The pages' CSP also demands Trusted Types
 * with no policy, which makes every HTML-string sink throw should one ever slip in.
 */

/**
 * h('a', { class: 'x', href: url, onclick: fn }, 'text', child, ...) → Element.
 * `null`, `undefined` and `false` children are skipped; arrays are flattened.
 */
export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function')
      node.addEventListener(name.slice(2), value);
    else if (name === 'class') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the element's children. */
export function replaceChildren(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

/** The URL when it is an absolute http(s) URL, else null: catalogue links must never become script URLs. */
export function safeHttpUrl(value) {
  if (typeof value !== 'string' || value === '') return null;
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch {
    return null;
  }
}

/** A link that opens outside this page, without giving the other site a handle on it. */
export function externalLink(href, text, extra = {}) {
  const url = safeHttpUrl(href);
  if (!url) return null;
  return h(
    'a',
    { href: url, target: '_blank', rel: 'noopener noreferrer', ...extra },
    text,
    h('span', { class: 'visually-hidden' }, ' (opens in a new tab)'),
  );
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** <time datetime=…>human date</time>, or the fallback text when there is no time. */
export function timeElement(rfc3339, fallback) {
  if (typeof rfc3339 !== 'string' || rfc3339 === '') return document.createTextNode(fallback);
  const date = new Date(rfc3339);
  if (Number.isNaN(date.getTime())) return document.createTextNode(fallback);
  return h('time', { datetime: date.toISOString() }, dateTime.format(date));
}

/**
 * Scope list items in plain words: the catalogue's description when it has one (the scope name
 * then follows in small print, for people who know it), else the scope name itself.
 */
export function scopeItems(scopeNames, provider) {
  const descriptions = new Map();
  for (const scope of provider && Array.isArray(provider.scopes) ? provider.scopes : []) {
    if (
      scope &&
      typeof scope.name === 'string' &&
      typeof scope.description === 'string' &&
      scope.description !== ''
    ) {
      descriptions.set(scope.name, scope.description);
    }
  }
  return scopeNames.map((name) => {
    const description = descriptions.get(name);
    return description
      ? h('li', null, description, ' ', h('code', { class: 'scope-name' }, name))
      : h('li', null, h('code', { class: 'scope-name' }, name));
  });
}

/** Providers from GET /v1/providers by id. */
export function indexProviders(body) {
  const map = new Map();
  for (const provider of body && Array.isArray(body.providers) ? body.providers : []) {
    if (provider && typeof provider.id === 'string') map.set(provider.id, provider);
  }
  return map;
}

/** Shows one message in the page's live region (announced by screen readers) and moves focus to it. */
export function showNotice(region, kind, title, ...body) {
  region.hidden = false;
  region.className = `notice notice-${kind}`;
  replaceChildren(
    region,
    h('h2', { class: 'notice-title', tabindex: '-1' }, title),
    ...body.map((part) => (typeof part === 'string' ? h('p', null, part) : part)),
  );
  region.querySelector('.notice-title').focus();
}
