/**
 * The popup → opener half of the connect SDK's protocol (the other half is connect.js).
 * Message: { type: 'linkvault:connect-result', v: 1, nonce, status, link_id?, confirmation_id?,
 * provider?, error? } (status `confirm` carries confirmation_id, for the host's backend).
 * It is posted with targetOrigin = the opener's origin as the server validated it against the
 * allowlist, so the browser delivers it only if the opener really is at that origin
 * (HTML Living Standard, window.postMessage step "targetOrigin"); the SDK in turn accepts it only
 * from linkvault's exact origin and from the popup window it opened, with its own nonce.
 */

/** sessionStorage key of the popup context {origin, nonce, provider}: per tab and per origin, never secret. */
export const POPUP_CONTEXT_KEY = 'linkvault.popup';

export const MESSAGE_TYPE = 'linkvault:connect-result';

/** Reads (and removes) the popup context the connect page left for this tab, or null. */
export function takePopupContext() {
  let context = null;
  try {
    context = JSON.parse(sessionStorage.getItem(POPUP_CONTEXT_KEY) || 'null');
    sessionStorage.removeItem(POPUP_CONTEXT_KEY);
  } catch {
    return null;
  }
  if (
    !context ||
    typeof context.origin !== 'string' ||
    context.origin === '' ||
    typeof context.nonce !== 'string'
  )
    return null;
  return context;
}

/** Posts the result to window.opener; false when there is no opener to tell. */
export function postResultToOpener(context, result) {
  if (!window.opener || !context || !context.origin) return false;
  const message = { type: MESSAGE_TYPE, v: 1, nonce: context.nonce, status: result.status };
  if (result.link_id) message.link_id = result.link_id;
  if (result.confirmation_id) message.confirmation_id = result.confirmation_id;
  if (result.provider || context.provider) message.provider = result.provider || context.provider;
  if (result.error) message.error = result.error;
  window.opener.postMessage(message, context.origin);
  return true;
}
