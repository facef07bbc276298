import {
  ApiError,
  callApi,
  hasSession,
  isSessionError,
  revealSessionToken,
} from './page-session.js';
import {
  externalLink,
  h,
  indexProviders,
  replaceChildren,
  scopeItems,
  showNotice,
  timeElement,
} from './render-dom.js';
import { activityContent } from './activity-view.js';

/**
 * "My linked accounts" (manage_url): the user's links with status, granted access and dates;
 * Reconnect for links that need it (through the connect SDK, popup first); Revoke behind a
 * confirmation, after which the revocation record's guidance is shown: what the provider
 * confirmed, its settings page, the instructions and its privacy policy. The provider's answer
 * usually comes a moment after the revoke, so the page follows the record until it is final. A
 * link revoked earlier shows its record and guidance too. Every link has a collapsed "Activity"
 * section: which apps used the account, for what, how often and when last, and the recent steps.
 */

const notice = document.getElementById('notice');
const list = document.getElementById('links');
const loading = document.getElementById('loading');
const dialog = document.getElementById('confirm');
const dialogText = document.getElementById('confirm-text');
const dialogTitle = document.getElementById('confirm-title');
const confirmButton = document.getElementById('confirm-revoke');
const keepButton = document.getElementById('confirm-cancel');

const STATUS_LABELS = {
  active: 'Active',
  needs_reauth: 'Needs reconnecting',
  revoked: 'Revoked',
  pending_confirmation: 'Waiting for confirmation',
};
const STATUS_ORDER = { needs_reauth: 0, pending_confirmation: 1, active: 2, revoked: 3 };
/** Provider answers after which the revocation record no longer changes. */
const FINAL_PROVIDER_STATUSES = new Set(['confirmed', 'unsupported', 'failed']);
/** Following a revocation: the first check after 0.5 s, doubling up to 5 s, for at most 3 minutes. */
const FOLLOW_FIRST_DELAY_MS = 500;
const FOLLOW_MAX_DELAY_MS = 5000;
const FOLLOW_FOR_MS = 3 * 60 * 1000;
const EXPIRED_TEXT =
  'For your security this page only works for a short time and not after a reload. Open your linked accounts again from the app.';

let providers = new Map();
let requiresConfirmation = false;

function providerName(id) {
  const provider = providers.get(id);
  return provider && typeof provider.name === 'string' ? provider.name : id;
}

function sessionExpired() {
  loading.hidden = true;
  list.hidden = true;
  showNotice(notice, 'error', 'This page has expired', EXPIRED_TEXT);
}

function apiFailure(error, what) {
  if (isSessionError(error)) return sessionExpired();
  showNotice(
    notice,
    'error',
    `Could not ${what}`,
    error instanceof ApiError && error.status === 0
      ? error.message
      : 'Something went wrong on our side. Try again in a moment.',
  );
}

/** Asks for confirmation in a modal dialog; resolves true when the user confirmed. */
function confirmRevoke(name) {
  dialogTitle.textContent = `Revoke ${name} access?`;
  dialogText.textContent = `The app will no longer be able to use your ${name} account. linkvault deletes the access it holds and asks ${name} to end it too. To use it again later you would connect it again.`;
  return new Promise((resolve) => {
    const onClose = () => {
      dialog.removeEventListener('close', onClose);
      resolve(dialog.returnValue === 'confirm');
    };
    dialog.addEventListener('close', onClose);
    dialog.returnValue = '';
    dialog.showModal();
    keepButton.focus();
  });
}

confirmButton.addEventListener('click', () => dialog.close('confirm'));
keepButton.addEventListener('click', () => dialog.close('cancel'));

function providerStatusSentence(name, status) {
  switch (status) {
    case 'confirmed':
      return `${name} confirmed that the access has ended.`;
    case 'unsupported':
      return `${name} does not let apps end access themselves, so the app may still be listed in your ${name} account. Remove it there to be sure.`;
    case 'pending':
      return `linkvault is still asking ${name} to end the access and will keep trying. You can also remove it yourself.`;
    default:
      return `${name} did not confirm that the access has ended. Remove the app in your ${name} settings to be sure.`;
  }
}

function guidanceName(record, fallbackName) {
  const guidance = (record && record.guidance) || {};
  return typeof guidance.provider_name === 'string' && guidance.provider_name !== ''
    ? guidance.provider_name
    : fallbackName;
}

function providerStatusOf(record) {
  const status =
    record && record.provider_revocation ? record.provider_revocation.status : undefined;
  return status === 'pending' || FINAL_PROVIDER_STATUSES.has(status) ? status : 'failed';
}

/** Shows the provider's answer in a guidance section (announced: the paragraph is a live region). */
function showProviderStatus(section, name, status) {
  const line = section.querySelector('.provider-status');
  line.className = `provider-status provider-status-${status}`;
  line.textContent = providerStatusSentence(name, status);
}

/**
 * Polls the revocation record until the provider's answer is final (then shows it in place, with
 * no reload), the section left the page, the session ended, or FOLLOW_FOR_MS passed (the pending
 * sentence already says linkvault keeps trying).
 */
function followRevocation(linkId, section, name) {
  const until = Date.now() + FOLLOW_FOR_MS;
  let delay = FOLLOW_FIRST_DELAY_MS;
  const check = async () => {
    if (!section.isConnected) return;
    let record;
    try {
      record = await callApi(`/v1/me/links/${encodeURIComponent(linkId)}/revocation`);
    } catch (error) {
      if (isSessionError(error)) return;
      record = null; // a transient failure: try again later
    }
    if (!section.isConnected) return;
    if (record) {
      const status = providerStatusOf(record);
      showProviderStatus(section, guidanceName(record, name), status);
      if (status !== 'pending') return;
    }
    if (Date.now() + delay > until) return;
    setTimeout(check, delay);
    delay = Math.min(delay * 2, FOLLOW_MAX_DELAY_MS);
  };
  setTimeout(check, delay);
  delay = Math.min(delay * 2, FOLLOW_MAX_DELAY_MS);
}

/** The revocation record's guidance, as a section with a focusable heading. */
function guidanceSection(record, fallbackName) {
  const guidance = (record && record.guidance) || {};
  const name = guidanceName(record, fallbackName);
  const providerStatus = providerStatusOf(record);
  const headingId = `guidance-${record && record.link_id ? record.link_id : 'revoked'}`;
  const settings = externalLink(guidance.settings_url, `Open your ${name} settings`, {
    class: 'button button-secondary',
  });
  const policy = externalLink(guidance.privacy_policy_url, `${name} privacy policy`);
  return h(
    'section',
    { class: 'guidance', 'aria-labelledby': headingId },
    h('h3', { id: headingId, class: 'guidance-title', tabindex: '-1' }, `${name} access revoked`),
    h(
      'p',
      null,
      'Revoked on ',
      timeElement(record && record.revoked_at, 'just now'),
      '. The app can no longer use this account, and linkvault has deleted the access it held.',
    ),
    h(
      'p',
      { class: `provider-status provider-status-${providerStatus}`, role: 'status' },
      providerStatusSentence(name, providerStatus),
    ),
    typeof guidance.instructions === 'string' && guidance.instructions !== ''
      ? [
          h('h4', { class: 'guidance-subtitle' }, `Check in ${name}`),
          h('p', { class: 'instructions' }, guidance.instructions),
        ]
      : null,
    settings || policy ? h('p', { class: 'guidance-links' }, settings, policy) : null,
  );
}

async function revoke(link, card) {
  const name = providerName(link.provider_id);
  if (!(await confirmRevoke(name))) return;
  const actions = card.querySelector('.card-actions');
  for (const button of actions.querySelectorAll('button')) button.disabled = true;
  const status = card.querySelector('.status');
  const previousStatus = status.textContent;
  status.textContent = 'Revoking\u2026';
  let record;
  try {
    record = await callApi(`/v1/me/links/${encodeURIComponent(link.id)}`, { method: 'DELETE' });
  } catch (error) {
    status.textContent = previousStatus;
    for (const button of actions.querySelectorAll('button')) button.disabled = false;
    if (
      error instanceof ApiError &&
      (error.code === 'link_revoked' || error.code === 'link_not_found')
    ) {
      await loadLinks();
      showNotice(notice, 'info', `${name} was already revoked`, 'The list has been updated.');
      return;
    }
    apiFailure(error, `revoke ${name}`);
    return;
  }
  status.textContent = STATUS_LABELS.revoked;
  status.className = 'status status-revoked';
  const subtitle = card.querySelector('.card-subtitle');
  if (subtitle) subtitle.textContent = 'Access it had';
  card.classList.add('card-revoked');
  const guidance = guidanceSection(record, name);
  actions.replaceWith(guidance);
  guidance.querySelector('.guidance-title').focus();
  if (providerStatusOf(record) === 'pending') followRevocation(link.id, guidance, name);
}

/** A link revoked before this visit: its record and guidance, fetched into the card's slot. */
async function showRevocationRecord(link, slot) {
  const name = providerName(link.provider_id);
  let record;
  try {
    record = await callApi(`/v1/me/links/${encodeURIComponent(link.id)}/revocation`);
  } catch (error) {
    if (isSessionError(error)) return sessionExpired();
    if (!slot.isConnected) return;
    replaceChildren(
      slot,
      h(
        'p',
        { class: 'card-text' },
        `The details of this revocation could not be loaded. To be sure the access has ended, check your ${name} settings.`,
      ),
    );
    return;
  }
  if (!slot.isConnected) return;
  const guidance = guidanceSection(record, name);
  slot.replaceWith(guidance);
  if (providerStatusOf(record) === 'pending') followRevocation(link.id, guidance, name);
}

/** The collapsed "Activity" section; loads (again) each time it is opened. */
function activitySection(link, name) {
  const body = h('div', { class: 'activity-body', 'aria-live': 'polite' });
  const details = h(
    'details',
    { class: 'activity' },
    h(
      'summary',
      { class: 'activity-toggle' },
      'Activity',
      h('span', { class: 'visually-hidden' }, ` of your ${name} account`),
    ),
    body,
  );
  let loads = 0;
  details.addEventListener('toggle', async () => {
    if (!details.open) return;
    const mine = ++loads;
    details.setAttribute('aria-busy', 'true');
    if (!body.hasChildNodes())
      replaceChildren(body, h('p', { class: 'activity-empty' }, 'Loading\u2026'));
    let content;
    try {
      const activity = await callApi(`/v1/me/links/${encodeURIComponent(link.id)}/activity`);
      content = activityContent(activity, name);
    } catch (error) {
      if (isSessionError(error)) return sessionExpired();
      content = h(
        'p',
        { class: 'activity-empty' },
        'The activity could not be loaded. Close and open this section to try again.',
      );
    }
    if (mine !== loads) return;
    details.removeAttribute('aria-busy');
    replaceChildren(body, content);
  });
  return details;
}

async function reconnect(link, button) {
  const name = providerName(link.provider_id);
  button.disabled = true;
  let result;
  try {
    result = await window.linkvault.connect({
      sessionToken: revealSessionToken(),
      provider: link.provider_id,
    });
  } catch (error) {
    button.disabled = false;
    const code = error && error.code;
    if (code === 'cancelled' || code === 'popup_closed') return;
    if (code === 'session_expired') return sessionExpired();
    showNotice(
      notice,
      'error',
      `Could not reconnect ${name}`,
      `${name} did not complete the connection. Try again in a moment.`,
    );
    return;
  }
  await loadLinks();
  if (result && result.status === 'confirm') {
    // Not offered under confirmation (loadRequiresConfirmation); a session changed meanwhile lands here.
    showNotice(
      notice,
      'info',
      `Reconnect ${name} from the app`,
      'This app confirms new connections itself, so the reconnect cannot be finished here. Open the app and reconnect from there.',
    );
    return;
  }
  showNotice(
    notice,
    'success',
    `${name} is connected again`,
    'The app can use this account again.',
  );
}

function linkCard(link) {
  const name = providerName(link.provider_id);
  const provider = providers.get(link.provider_id);
  const headingId = `link-${link.id}-name`;
  const scopes = Array.isArray(link.granted_scopes)
    ? link.granted_scopes.filter((s) => typeof s === 'string')
    : [];
  const card = h('li', { class: `card${link.status === 'revoked' ? ' card-revoked' : ''}` });
  const actions = h('div', { class: 'card-actions' });
  const revocationSlot =
    link.status === 'revoked' ? h('div', { class: 'guidance-slot', 'aria-busy': 'true' }) : null;
  if (link.status === 'needs_reauth' && !requiresConfirmation) {
    // Short visible labels keep both buttons on one line; the hidden part names the provider for
    // screen readers' button lists, with the visible text kept at the start (WCAG 2.5.3 label in name).
    const button = h(
      'button',
      { type: 'button', class: 'button button-primary' },
      'Reconnect',
      h('span', { class: 'visually-hidden' }, ` ${name}`),
    );
    button.addEventListener('click', () => reconnect(link, button));
    actions.append(button);
  }
  if (link.status !== 'revoked') {
    actions.append(
      h(
        'button',
        { type: 'button', class: 'button button-danger', onclick: () => revoke(link, card) },
        'Revoke access',
        h('span', { class: 'visually-hidden' }, ` to ${name}`),
      ),
    );
  }
  replaceChildren(
    card,
    h(
      'div',
      { class: 'card-head' },
      h('h2', { id: headingId, class: 'card-title' }, name),
      h(
        'span',
        { class: `status status-${link.status}` },
        STATUS_LABELS[link.status] || link.status,
      ),
    ),
    link.status === 'needs_reauth'
      ? h(
          'p',
          { class: 'card-text attention' },
          requiresConfirmation
            ? `${name} asked to be connected again before the app can use it. Reconnect it from the app.`
            : `${name} asked to be connected again before the app can use it.`,
        )
      : null,
    h(
      'dl',
      { class: 'facts' },
      h(
        'div',
        null,
        h('dt', null, 'Linked'),
        h('dd', null, timeElement(link.created_at, 'Unknown')),
      ),
      h(
        'div',
        null,
        h('dt', null, 'Last used'),
        h('dd', null, timeElement(link.last_used_at, 'Not used yet')),
      ),
    ),
    scopes.length
      ? [
          h(
            'h3',
            { class: 'card-subtitle' },
            link.status === 'revoked' ? 'Access it had' : 'Access granted',
          ),
          h('ul', { class: 'scope-list' }, scopeItems(scopes, provider)),
        ]
      : null,
    actions.childElementCount ? actions : null,
    revocationSlot,
    activitySection(link, name),
  );
  if (revocationSlot) showRevocationRecord(link, revocationSlot);
  return card;
}

/**
 * Provider names, scope descriptions and privacy links from the public catalogue. Not worth
 * failing the page for: without them links show provider ids.
 */
async function loadProviderNames() {
  try {
    return indexProviders(await callApi('/v1/providers', { auth: false }));
  } catch {
    return new Map();
  }
}

/**
 * Whether this session holds new connections for the app's confirmation: then a reconnect cannot
 * be finished from this page (the confirmation id must reach the app's backend), so none is offered.
 */
async function loadRequiresConfirmation() {
  try {
    const mine = await callApi('/v1/me/providers');
    return Boolean(mine && mine.require_confirmation === true);
  } catch {
    return false;
  }
}

async function loadLinks() {
  const [catalogue, mine, confirmation] = await Promise.all([
    loadProviderNames(),
    callApi('/v1/me/links'),
    loadRequiresConfirmation(),
  ]);
  providers = catalogue;
  requiresConfirmation = confirmation;
  const links = (mine && Array.isArray(mine.links) ? mine.links : [])
    .slice()
    .sort(
      (a, b) =>
        (STATUS_ORDER[a.status] ?? 3) - (STATUS_ORDER[b.status] ?? 3) ||
        String(b.created_at).localeCompare(String(a.created_at)),
    );
  loading.hidden = true;
  if (links.length === 0) {
    list.hidden = true;
    showNotice(
      notice,
      'info',
      'No linked accounts',
      'You have not connected any accounts to this app yet.',
    );
    return;
  }
  replaceChildren(list, links.map(linkCard));
  list.hidden = false;
}

async function main() {
  if (!hasSession()) return sessionExpired();
  try {
    await loadLinks();
  } catch (error) {
    loading.hidden = true;
    apiFailure(error, 'load your linked accounts');
  }
}

main();
