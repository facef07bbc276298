import {
  ApiError,
  basePath,
  callApi,
  fragmentParam,
  hasSession,
  isSessionError,
} from './page-session.js';
import {
  externalLink,
  h,
  indexProviders,
  replaceChildren,
  scopeItems,
  showNotice,
} from './render-dom.js';
import { POPUP_CONTEXT_KEY, postResultToOpener } from './popup-result.js';

/**
 * The hosted connect page (connect_url, and the page the connect SDK opens). It lists the
 * providers the session may connect, what each will ask for, whom the connection is for (the
 * session's user_display and LINKVAULT_APP_NAME) and the privacy note. Connect POSTs to the connect
 * route with the session as a Bearer header (never in a URL: docs/threat-model.md) and then sends
 * the browser to the authorization URL it answers.
 *
 * Popup mode (display=popup, opened by the SDK): the server has already checked the opener's
 * origin against the allowlist and rendered it as data-opener-origin; it is kept, with the
 * SDK's nonce, in sessionStorage so that the result page (same tab, after the provider) knows
 * where to post the outcome. Nothing secret goes there.
 */

const body = document.body;
const display = fragmentParam('display') === 'popup' ? 'popup' : 'page';
const onlyProvider = fragmentParam('provider');
const nonce = fragmentParam('nonce');
const openerOrigin = body.dataset.openerOrigin || null;
const originRejected = body.dataset.originRejected === 'true';
const isPopup = display === 'popup' && window.opener !== null;
const EXPIRED_TEXT =
  'Connect links only work for a short time. Go back to the app and start again.';

const notice = document.getElementById('notice');
const list = document.getElementById('providers');
const loading = document.getElementById('loading');
const title = document.getElementById('page-title');
const lead = document.getElementById('page-lead');
const privacyNote = document.getElementById('privacy-note');
const forWhom = document.getElementById('for-whom');
const appName = body.dataset.appName || null;

function popupContext() {
  return { origin: openerOrigin, nonce: nonce || '', provider: onlyProvider || '' };
}

function finishPopup(result) {
  postResultToOpener(popupContext(), result);
  window.close();
}

function closeButton() {
  return h(
    'button',
    { type: 'button', class: 'button button-secondary', onclick: () => window.close() },
    'Close this window',
  );
}

function fail(titleText, message, errorCode) {
  loading.hidden = true;
  // Nothing is listed, so the text that speaks about the list goes too.
  lead.hidden = true;
  privacyNote.hidden = true;
  if (isPopup && openerOrigin) {
    postResultToOpener(popupContext(), { status: 'error', error: errorCode });
    showNotice(notice, 'error', titleText, message, closeButton());
  } else {
    showNotice(notice, 'error', titleText, message);
  }
}

async function startConnect(provider, button) {
  const buttons = [...list.querySelectorAll('button')];
  const label = button.textContent;
  for (const b of buttons) b.disabled = true;
  button.textContent = `Opening ${provider.name}\u2026`;
  if (isPopup) sessionStorage.setItem(POPUP_CONTEXT_KEY, JSON.stringify(popupContext()));
  else sessionStorage.removeItem(POPUP_CONTEXT_KEY);
  let started;
  try {
    // Same-origin credentials: the answer sets the flow's HttpOnly binding cookie.
    started = await callApi(`/v1/connect/${encodeURIComponent(provider.id)}`, {
      method: 'POST',
      body: { display: isPopup ? 'popup' : 'page' },
      credentials: 'same-origin',
    });
  } catch (error) {
    if (isSessionError(error)) {
      fail('This link has expired', EXPIRED_TEXT, 'session_expired');
      list.hidden = true;
      return;
    }
    for (const b of buttons) b.disabled = false;
    button.textContent = label;
    showNotice(
      notice,
      'error',
      `${provider.name} could not be opened`,
      error instanceof ApiError && error.status === 0
        ? error.message
        : 'linkvault could not start the connection. Try again in a moment.',
    );
    return;
  }
  const target =
    started && typeof started.authorization_url === 'string' ? started.authorization_url : null;
  if (!target || !/^https?:\/\//.test(target)) {
    for (const b of buttons) b.disabled = false;
    button.textContent = label;
    showNotice(notice, 'error', 'Something went wrong', 'Try again in a moment.');
    return;
  }
  // replace(): going back should not land on a half-started flow.
  window.location.replace(target);
}

/** "Connecting for ana@example.com to Acme CRM": the person sees whom the connection is for. */
function showForWhom(userDisplay) {
  if (!forWhom || (!userDisplay && !appName)) return;
  const parts = [];
  if (userDisplay) parts.push('You are connecting an account for ', h('strong', {}, userDisplay));
  else parts.push('You are connecting an account');
  if (appName) parts.push(' in ', h('strong', {}, appName));
  parts.push('. If that is not you, close this page and do not continue.');
  replaceChildren(forWhom, parts);
  forWhom.hidden = false;
}

/** 'crm' → 'CRM', 'productivity' → 'Productivity'. */
function categoryLabel(category) {
  return category.length <= 3
    ? category.toUpperCase()
    : category.charAt(0).toUpperCase() + category.slice(1).replace(/[_-]/g, ' ');
}

function providerCard(provider) {
  const scopeNames = Array.isArray(provider.scopes)
    ? provider.scopes.map((s) => s && s.name).filter((n) => typeof n === 'string')
    : [];
  const headingId = `provider-${provider.id}-name`;
  const button = h(
    'button',
    { type: 'button', class: 'button button-primary' },
    isPopup || onlyProvider ? `Continue to ${provider.name}` : `Connect ${provider.name}`,
  );
  button.addEventListener('click', () => startConnect(provider, button));
  const policy = externalLink(
    provider.privacy && provider.privacy.policy_url,
    `${provider.name} privacy policy`,
  );
  return h(
    'li',
    { class: 'card' },
    h(
      'div',
      { class: 'card-head' },
      h('h2', { id: headingId, class: 'card-title' }, provider.name),
      provider.category ? h('span', { class: 'tag' }, categoryLabel(provider.category)) : null,
    ),
    scopeNames.length
      ? [
          h('p', { class: 'card-text' }, `${provider.name} will ask you to allow this app to:`),
          h('ul', { class: 'scope-list' }, scopeItems(scopeNames, provider)),
        ]
      : h(
          'p',
          { class: 'card-text' },
          `${provider.name} will show you the access it grants before you agree.`,
        ),
    policy ? h('p', { class: 'card-links' }, policy) : null,
    h(
      'div',
      { class: 'card-actions' },
      button,
      // In the SDK's popup the user can say no here, before ever reaching the provider.
      isPopup
        ? h(
            'button',
            {
              type: 'button',
              class: 'button button-secondary',
              onclick: () => finishPopup({ status: 'cancelled' }),
            },
            'Cancel',
          )
        : null,
    ),
  );
}

/** The providers this session may connect (GET /v1/me/providers), in catalogue order, and whom it is for. */
async function loadAllowedProviders() {
  const mine = await callApi('/v1/me/providers');
  return {
    providers: [...indexProviders(mine).values()].filter(
      (p) => !onlyProvider || p.id === onlyProvider,
    ),
    userDisplay: mine && typeof mine.user_display === 'string' ? mine.user_display : null,
  };
}

async function main() {
  if (display === 'popup' && originRejected) {
    // The server refused the opener's origin, so no result may be posted to it. Only the bare
    // error code (no link, no session data) goes out, to whichever page opened us, so that the
    // developer sees why instead of a popup that never answers.
    if (window.opener)
      postResultToOpener(
        { origin: '*', nonce: nonce || '', provider: onlyProvider || '' },
        { status: 'error', error: 'origin_not_allowed' },
      );
    fail(
      'This site cannot connect accounts',
      'The page that opened this window is not allowed to use linkvault. Contact the app\u2019s support.',
      'origin_not_allowed',
    );
    return;
  }
  if (!hasSession()) {
    fail('This link has expired', EXPIRED_TEXT, 'session_expired');
    return;
  }

  let providers;
  try {
    const loaded = await loadAllowedProviders();
    providers = loaded.providers;
    showForWhom(loaded.userDisplay);
  } catch (error) {
    if (isSessionError(error)) fail('This link has expired', EXPIRED_TEXT, 'session_expired');
    else
      fail(
        'Something went wrong',
        error instanceof ApiError && error.status === 0
          ? error.message
          : 'linkvault could not load the list of providers. Try again in a moment.',
        error instanceof ApiError && error.code ? error.code : 'flow_failed',
      );
    return;
  }
  loading.hidden = true;
  if (providers.length === 0) {
    fail(
      'Nothing to connect',
      onlyProvider
        ? 'This provider is not available for this app.'
        : 'No providers are available for this app.',
      'provider_not_allowed',
    );
    return;
  }
  if (providers.length === 1) {
    title.textContent = `Connect ${providers[0].name}`;
    lead.textContent = `You will sign in on ${providers[0].name}\u2019s own site. linkvault never sees your password.`;
  }
  replaceChildren(list, providers.map(providerCard));
  list.hidden = false;
}

main();
