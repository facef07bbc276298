/**
 * The browser half of a linkvault session. connect_url and manage_url carry the session token in
 * the URL fragment, which browsers never send to a server or put in a Referer. It is read here
 * exactly once, removed from the address bar at once (history.replaceState) and then lives only
 * in this module's memory: not in a URL, not in storage, not in a cookie. The API is called with
 * it as a Bearer header, which no other site can make the browser attach, so the state-changing
 * calls (revoke) are CSRF-proof by construction (OWASP CSRF Prevention Cheat Sheet, "custom
 * request headers"). A reload therefore loses the session on purpose; the pages say so.
 */

const fragment = new URLSearchParams(window.location.hash.replace(/^#/, ''));
if (window.location.hash !== '') {
  window.history.replaceState(null, '', window.location.pathname + window.location.search);
}

const sessionToken = fragment.get('session');

/** Path prefix of the service (from LINKVAULT_PUBLIC_URL), rendered by the server; '' at the root. */
export const basePath = (document.body.dataset.basePath || '').replace(/\/$/, '');

/** A non-secret fragment parameter (provider, display, nonce). */
export function fragmentParam(name) {
  return name === 'session' ? null : fragment.get(name);
}

export function hasSession() {
  return typeof sessionToken === 'string' && sessionToken !== '';
}

/** The token, for handing to the connect SDK or the connect route. Never log or store it. */
export function revealSessionToken() {
  return sessionToken;
}

/** A failed API call: HTTP status and linkvault's error code (problem+json `code`). */
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the linkvault API. `auth: true` sends the session as a Bearer token; `body` is sent as
 * JSON. Credentials (cookies) are never sent, except with `credentials: 'same-origin'`, which the
 * connect start needs so that the browser keeps the flow's binding cookie: nothing relies on
 * ambient authority.
 */
export async function callApi(
  path,
  { method = 'GET', auth = true, body, credentials = 'omit' } = {},
) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth) {
    if (!hasSession()) throw new ApiError(401, 'session_expired');
    headers.Authorization = `Bearer ${sessionToken}`;
  }
  let response;
  try {
    response = await fetch(basePath + path, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      credentials,
      cache: 'no-store',
      redirect: 'error',
    });
  } catch {
    throw new ApiError(
      0,
      'network_error',
      'linkvault could not be reached. Check your connection and try again.',
    );
  }
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(
      response.status,
      answer && typeof answer.code === 'string' ? answer.code : null,
      answer && typeof answer.detail === 'string' ? answer.detail : null,
    );
  }
  return answer;
}

/** True for the errors that mean "this page's session is gone": the user must start again from the app. */
export function isSessionError(error) {
  return (
    error instanceof ApiError &&
    (error.status === 401 || error.code === 'session_expired' || error.code === 'unauthorized')
  );
}
