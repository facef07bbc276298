import { h } from './render-dom.js';

/**
 * A link's activity in plain words, from GET /v1/me/links/{id}/activity: who used the account, for
 * what (the grant's purpose), how often and when last, and the recent steps (connected, refreshed,
 * released to…, revocation requested…). Service ids and purposes are set by the app's admins, so
 * they go in as text nodes only (render-dom.js builds no markup from strings); the answer carries no
 * token material and none is shown.
 */

const relative = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

const UNITS = [
  ['year', 365 * 24 * 3600],
  ['month', 30 * 24 * 3600],
  ['week', 7 * 24 * 3600],
  ['day', 24 * 3600],
  ['hour', 3600],
  ['minute', 60],
];

/** "just now", "2 minutes ago", "yesterday"…, or null for a missing or malformed time. */
export function relativeTime(rfc3339, nowMs = Date.now()) {
  if (typeof rfc3339 !== 'string') return null;
  const ms = new Date(rfc3339).getTime();
  if (Number.isNaN(ms)) return null;
  const seconds = Math.round((ms - nowMs) / 1000);
  if (Math.abs(seconds) < 45) return 'just now';
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return relative.format(seconds < 0 ? -1 : 1, 'minute');
}

/** <time> with the relative words, the exact date as its tooltip and machine-readable value. */
function when(rfc3339, nowMs) {
  const words = relativeTime(rfc3339, nowMs);
  if (words === null) return 'at an unknown time';
  const date = new Date(rfc3339);
  return h('time', { datetime: date.toISOString(), title: absolute.format(date) }, words);
}

function times(count) {
  if (count === 1) return 'once';
  if (count === 2) return 'twice';
  return `${count} times`;
}

function text(value) {
  return typeof value === 'string' && value !== '' ? value : null;
}

/** “purpose”, quoted, as a text node (never markup). */
function quoted(purpose) {
  return h('span', { class: 'purpose' }, `\u201c${purpose}\u201d`);
}

/** "crm-sync used it 3 times for “tests”, last 2 minutes ago" */
function summaryItem(row, nowMs) {
  const service = text(row.service_id) ?? 'An app';
  const purpose = text(row.purpose);
  const count = Number.isInteger(row.releases) && row.releases > 0 ? row.releases : 0;
  return h(
    'li',
    null,
    h('strong', { class: 'service-id' }, service),
    ` used it ${times(count)}`,
    purpose ? [' for ', quoted(purpose)] : ' (no purpose given)',
    ', last ',
    when(row.last_at, nowMs),
  );
}

/** One recent step in plain words; null for a kind this page does not know (never shown raw). */
function stepWords(event, providerName) {
  const service = text(event.service_id);
  const purpose = text(event.purpose);
  const forPurpose = purpose ? [' for ', quoted(purpose)] : [];
  switch (event.type) {
    case 'link.connected':
      return [`Connected to ${providerName}`];
    case 'link.reconnected':
      return [`Connected to ${providerName} again`];
    case 'token.released':
      return [
        'Access given to ',
        h('strong', { class: 'service-id' }, service ?? 'an app'),
        ...forPurpose,
      ];
    case 'proxy.requested':
      return [
        'Used by ',
        h('strong', { class: 'service-id' }, service ?? 'an app'),
        ' through linkvault',
        ...forPurpose,
      ];
    case 'link.refreshed':
      return [`Access renewed with ${providerName}`];
    case 'link.needs_reauth':
      return [`${providerName} asked for the account to be connected again`];
    case 'link.revocation_requested':
      return ['Revocation requested'];
    case 'link.tombstoned':
      return ['linkvault deleted the access it held'];
    case 'link.provider_revocation':
      return [`${providerName} answered the request to end the access`];
    case 'link.shredded':
      return ['The stored details were erased'];
    default:
      return null;
  }
}

/** The activity panel's content for one link. */
export function activityContent(activity, providerName, nowMs = Date.now()) {
  const summary = activity && Array.isArray(activity.summary) ? activity.summary : [];
  const events = activity && Array.isArray(activity.events) ? activity.events : [];
  const steps = [];
  for (const event of events) {
    if (!event || typeof event !== 'object') continue;
    const words = stepWords(event, providerName);
    if (words) steps.push(h('li', null, ...words, ' \u2014 ', when(event.at, nowMs)));
  }
  return [
    h('h4', { class: 'activity-subtitle' }, 'Who used this account'),
    summary.length
      ? h(
          'ul',
          { class: 'activity-summary' },
          summary.map((row) => summaryItem(row, nowMs)),
        )
      : h('p', { class: 'activity-empty' }, 'No app has used this account yet.'),
    h('h4', { class: 'activity-subtitle' }, 'Recent steps, newest first'),
    steps.length
      ? h('ul', { class: 'activity-steps' }, steps)
      : h('p', { class: 'activity-empty' }, 'Nothing recorded yet.'),
  ];
}
