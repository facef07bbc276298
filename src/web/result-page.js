import { postResultToOpener, takePopupContext } from './popup-result.js';

/**
 * The connect result page (/connect/result), where the OAuth callback sends the browser in popup
 * mode or when the session has no return_to. The server rendered the outcome (validated and
 * escaped) as data attributes and as text; in a popup opened by the connect SDK this posts the
 * outcome to the opener and closes the window. Opened any other way it just stays as a page.
 */

const data = document.body.dataset;
const result = {
  status: ['connected', 'confirm', 'cancelled'].includes(data.status) ? data.status : 'error',
  link_id: data.linkId || null,
  confirmation_id: data.confirmationId || null,
  provider: data.provider || null,
  error: data.error || null,
};

const context = takePopupContext();
if (context && postResultToOpener(context, result)) {
  const hint = document.getElementById('result-hint');
  if (hint) hint.textContent = 'This window will close now. If it stays open, you can close it.';
  window.close();
} else {
  const closeHint = document.getElementById('result-hint');
  if (closeHint && !window.opener)
    closeHint.textContent = 'You can close this tab and go back to the app.';
}
document.getElementById('result-title')?.focus();
