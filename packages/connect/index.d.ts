/**
 * Types for linkvault's browser connect script (served at `/sdk/connect.v1.js`, exposed as
 * `window.linkvault`), and for `loadConnect`, which loads it from your linkvault.
 */

/** Stable reasons a connect did not produce a link. */
export type LinkvaultConnectErrorCode =
  | 'cancelled'
  | 'popup_closed'
  | 'popup_blocked'
  | 'flow_failed'
  | 'session_expired'
  | 'origin_not_allowed'
  | 'invalid_argument'
  | 'superseded';

export declare class LinkvaultConnectError extends Error {
  readonly name: 'LinkvaultConnectError';
  readonly code: LinkvaultConnectErrorCode;
  /** linkvault's own error code (docs/errors.md), when there is one. */
  readonly detail: string | null;
}

export interface ConnectOptions {
  /** The session token your backend got from POST /v1/sessions. */
  readonly sessionToken: string;
  /** The provider id, e.g. `hubspot`. */
  readonly provider: string;
  /** 'none': reject with `popup_blocked` instead of falling back to a full-page redirect. */
  readonly fallback?: 'redirect' | 'none';
}

/** A connect that produced a link. */
export interface ConnectedResult {
  readonly status: 'connected';
  /** A hint: your backend confirms it with GET /v1/links/{id}. */
  readonly link_id: string;
  readonly provider: string | null;
}

/**
 * A connect held for your confirmation (the session was minted with require_confirmation): hand
 * `confirmation_id` to your backend, which calls POST /v1/confirmations/{confirmation_id} for the
 * signed-in user. Also announced as a `linkvault:confirm` event on window.
 */
export interface ConfirmResult {
  readonly status: 'confirm';
  readonly confirmation_id: string;
  readonly provider: string | null;
}

export type ConnectResult = ConnectedResult | ConfirmResult;

export interface LinkvaultConnect {
  readonly version: string;
  /** The linkvault origin the script was served from; messages are accepted only from it. */
  readonly origin: string;
  /**
   * Opens the provider's consent in a popup (call it from a click handler) and resolves with the
   * new link; rejects with LinkvaultConnectError. When the popup is blocked it falls back to a
   * full-page redirect (the promise then never settles) unless `fallback: 'none'`.
   */
  connect(options: ConnectOptions): Promise<ConnectResult>;
  /**
   * On the session's return_to page after a redirect: the result, null when the URL carries none;
   * throws LinkvaultConnectError for a failure. Removes the result from the address bar.
   */
  completeRedirect(): ConnectResult | null;
  readonly LinkvaultConnectError: typeof LinkvaultConnectError;
}

export interface LoadConnectOptions {
  /** Your linkvault's public URL (LINKVAULT_PUBLIC_URL). */
  readonly baseUrl: string;
  /** `sha384-…` of the script your linkvault serves (docs/sdk.md; `@linkvault/connect/sri`). */
  readonly integrity?: string;
}

/** Adds `<script src="<baseUrl>/sdk/connect.v1.js">` once and resolves with `window.linkvault`. */
export declare function loadConnect(options: LoadConnectOptions): Promise<LinkvaultConnect>;

declare global {
  interface Window {
    /** Set by `<script src="…/sdk/connect.v1.js">`. */
    linkvault?: LinkvaultConnect;
  }
}
