/*! linkvault connect SDK v1 | Apache-2.0 | no dependencies */
(function (global) {
  'use strict';

  // Filled in by the server that serves this file (createWebRouter): the exact linkvault base URL
  // and origin. Messages are only ever accepted from ORIGIN, never from "whatever origin sent it".
  var BASE_URL = '__LINKVAULT_BASE_URL__';
  var ORIGIN = '__LINKVAULT_ORIGIN__';
  var VERSION = '1.0.0';
  var MESSAGE_TYPE = 'linkvault:connect-result';
  var PENDING_KEY = 'linkvault.connect.pending';
  var POPUP_WIDTH = 500;
  var POPUP_HEIGHT = 720;
  // A popup's `closed` can turn true a moment before its last postMessage is delivered; wait this
  // long before calling a closed popup "closed by the user".
  var CLOSE_GRACE_MS = 600;

  /** Why a connect did not produce a link. `code` is stable; `detail` carries linkvault's error code when there is one. */
  class LinkvaultConnectError extends Error {
    constructor(code, message, detail) {
      super(message);
      this.name = 'LinkvaultConnectError';
      this.code = code;
      this.detail = detail === undefined ? null : detail;
    }
  }

  var MESSAGES = {
    cancelled: 'The user cancelled the connection',
    popup_closed: 'The connect window was closed before the connection finished',
    popup_blocked: 'The browser blocked the connect window',
    flow_failed: 'The connection failed',
    session_expired: 'The session token is invalid or has expired; create a new session',
    origin_not_allowed: 'This page\u2019s origin is not on linkvault\u2019s allowlist',
    invalid_argument: 'connect() needs { sessionToken, provider }',
    superseded: 'A newer connect() call replaced this one',
  };

  function fail(code, detail) {
    return new LinkvaultConnectError(code, MESSAGES[code] || MESSAGES.flow_failed, detail);
  }

  /**
   * Maps a result page's (or redirect's) outcome onto the SDK's codes. `providerError` is the
   * provider's own OAuth error (RFC 6749 §4.1.2.1): access_denied is the user saying no.
   */
  function errorFromResult(status, error, providerError) {
    if (
      status === 'cancelled' ||
      error === 'cancelled' ||
      (error === 'provider_denied' && providerError === 'access_denied')
    )
      return fail('cancelled', error || null);
    if (error === 'session_expired' || error === 'unauthorized')
      return fail('session_expired', error);
    if (error === 'origin_not_allowed') return fail('origin_not_allowed', error);
    return fail('flow_failed', error || null);
  }

  function randomNonce() {
    var bytes = new Uint8Array(16);
    global.crypto.getRandomValues(bytes);
    var out = '';
    for (var i = 0; i < bytes.length; i++) out += ('0' + bytes[i].toString(16)).slice(-2);
    return out;
  }

  function connectUrl(sessionToken, provider, display, nonce) {
    // The session token travels in the fragment: never sent to a server, never in a Referer.
    // The connect page reads it once and removes it from the address bar.
    var fragment = new URLSearchParams({
      session: sessionToken,
      provider: provider,
      display: display,
      nonce: nonce,
    });
    return (
      BASE_URL +
      '/connect?origin=' +
      encodeURIComponent(global.location.origin) +
      '#' +
      fragment.toString()
    );
  }

  function popupFeatures() {
    var width = Math.min(POPUP_WIDTH, global.screen.availWidth || POPUP_WIDTH);
    var height = Math.min(POPUP_HEIGHT, global.screen.availHeight || POPUP_HEIGHT);
    var left = Math.round((global.screenX || 0) + ((global.outerWidth || width) - width) / 2);
    var top = Math.round((global.screenY || 0) + ((global.outerHeight || height) - height) / 2);
    return (
      'popup=yes,width=' +
      width +
      ',height=' +
      height +
      ',left=' +
      Math.max(0, left) +
      ',top=' +
      Math.max(0, top)
    );
  }

  var active = null;

  var CONFIRM_EVENT = 'linkvault:confirm';

  /**
   * A connect held for the host's confirmation (sessions with require_confirmation): the host page
   * hands confirmation_id to its backend, which calls POST /v1/confirmations/{confirmation_id} for
   * the signed-in user. Also announced as a `linkvault:confirm` event on window.
   */
  function confirmOutcome(confirmationId, provider) {
    var outcome = { status: 'confirm', confirmation_id: confirmationId, provider: provider };
    try {
      global.dispatchEvent(new CustomEvent(CONFIRM_EVENT, { detail: outcome }));
    } catch (e) {
      // An old browser without CustomEvent: the promise still carries the outcome.
    }
    return outcome;
  }

  var CONFIRMATION_ID = /^lnk_[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{43}$/;

  /**
   * Opens the provider's consent in a centred popup and resolves with
   * { status: 'connected', link_id, provider }, or { status: 'confirm', confirmation_id, provider }
   * when the session holds new links for the host's confirmation.
   * Call it from a click handler (browsers only allow popups on a user gesture). When the popup is
   * blocked it falls back to a full-page redirect (the promise then never settles: the page is
   * leaving; call linkvault.completeRedirect() on the session's return_to page), unless
   * options.fallback is 'none', which rejects with code 'popup_blocked' instead.
   */
  function connect(options) {
    options = options || {};
    var sessionToken = options.sessionToken;
    var provider = options.provider;
    if (
      typeof sessionToken !== 'string' ||
      sessionToken === '' ||
      typeof provider !== 'string' ||
      !/^[A-Za-z0-9_.-]{1,64}$/.test(provider)
    ) {
      return Promise.reject(fail('invalid_argument'));
    }
    if (active) active.abort(fail('superseded'));

    var nonce = randomNonce();
    var popup = global.open(
      connectUrl(sessionToken, provider, 'popup', nonce),
      'linkvault_connect',
      popupFeatures(),
    );
    if (!popup) {
      if (options.fallback === 'none') return Promise.reject(fail('popup_blocked'));
      try {
        global.sessionStorage.setItem(
          PENDING_KEY,
          JSON.stringify({ provider: provider, nonce: nonce }),
        );
      } catch (e) {
        // Storage disabled: completeRedirect() still works from the URL alone.
      }
      global.location.assign(connectUrl(sessionToken, provider, 'page', nonce));
      return new Promise(function () {});
    }
    try {
      popup.focus();
    } catch (e) {
      // Some browsers refuse focus() on a new popup; it is already in front.
    }

    return new Promise(function (resolve, reject) {
      var pollTimer = null;
      var graceTimer = null;

      function finish() {
        global.removeEventListener('message', onMessage);
        clearInterval(pollTimer);
        clearTimeout(graceTimer);
        if (active && active.nonce === nonce) active = null;
      }

      function onMessage(event) {
        // Exact origin and the very window we opened: a message from any other frame or origin is ignored.
        if (event.origin !== ORIGIN || event.source !== popup) return;
        var data = event.data;
        if (!data || data.type !== MESSAGE_TYPE || data.nonce !== nonce) return;
        finish();
        if (
          data.status === 'connected' &&
          typeof data.link_id === 'string' &&
          data.link_id !== ''
        ) {
          resolve({
            status: 'connected',
            link_id: data.link_id,
            provider: typeof data.provider === 'string' ? data.provider : provider,
          });
        } else if (
          data.status === 'confirm' &&
          typeof data.confirmation_id === 'string' &&
          CONFIRMATION_ID.test(data.confirmation_id)
        ) {
          resolve(
            confirmOutcome(
              data.confirmation_id,
              typeof data.provider === 'string' ? data.provider : provider,
            ),
          );
        } else {
          reject(errorFromResult(data.status, typeof data.error === 'string' ? data.error : null));
        }
      }

      global.addEventListener('message', onMessage);
      pollTimer = setInterval(function () {
        if (!popup.closed || graceTimer !== null) return;
        graceTimer = setTimeout(function () {
          finish();
          reject(fail('popup_closed'));
        }, CLOSE_GRACE_MS);
      }, 250);

      active = {
        nonce: nonce,
        // The newer call reuses this popup (same window name), so it is left open.
        abort: function (error) {
          finish();
          reject(error);
        },
      };
    });
  }

  /**
   * On the session's return_to page after a redirect-mode connect: returns
   * { status: 'connected', link_id, provider } when the URL carries a successful result,
   * { status: 'confirm', confirmation_id, provider } when the connection waits for the host's
   * confirmation, null when it carries none, and throws a
   * LinkvaultConnectError when it carries a failure. Removes the result from the address bar.
   * Treat link_id as a hint: your backend confirms it with GET /v1/links/{id}.
   */
  function completeRedirect() {
    var url = new URL(global.location.href);
    var status = url.searchParams.get('status');
    if (status === null) return null;
    var linkId = url.searchParams.get('link_id');
    var confirmationId = url.searchParams.get('confirmation_id');
    var error = url.searchParams.get('error');
    var provider = url.searchParams.get('provider');
    var providerError = url.searchParams.get('provider_error');
    ['status', 'link_id', 'confirmation_id', 'error', 'provider', 'provider_error'].forEach(
      function (name) {
        url.searchParams.delete(name);
      },
    );
    global.history.replaceState(global.history.state, '', url.pathname + url.search + url.hash);
    var pending = null;
    try {
      pending = JSON.parse(global.sessionStorage.getItem(PENDING_KEY) || 'null');
      global.sessionStorage.removeItem(PENDING_KEY);
    } catch (e) {
      pending = null;
    }
    if (!provider && pending && typeof pending.provider === 'string') provider = pending.provider;
    if (status === 'connected' && linkId)
      return { status: 'connected', link_id: linkId, provider: provider };
    if (status === 'confirm' && confirmationId && CONFIRMATION_ID.test(confirmationId))
      return confirmOutcome(confirmationId, provider);
    throw errorFromResult(status, error, providerError);
  }

  global.linkvault = Object.freeze({
    version: VERSION,
    origin: ORIGIN,
    connect: connect,
    completeRedirect: completeRedirect,
    LinkvaultConnectError: LinkvaultConnectError,
  });
})(window);
