import type { ProviderEntry } from '../providers/catalogue.js';

export type CallKind = 'discovery' | 'authorization_code' | 'refresh' | 'revoke';

/**
 * What happened on the wire during one port call, filled in by the provider fetch and the response
 * quirks, so that a failure is classified from facts, never from a library's message text.
 */
export interface ProviderCall {
  readonly kind: CallKind;
  readonly entry: ProviderEntry;
  requests: number;
  status: number | null;
  retryAfterSeconds: number | undefined;
  /** RFC 6749 `error` member of an error answer (after quirk mapping). */
  errorCode: string | null;
  tooLarge: boolean;
  /** Set when a request got no HTTP answer: 'refused' = never reached the provider. */
  transport: 'refused' | 'lost' | 'timeout' | null;
}

export function startProviderCall(kind: CallKind, entry: ProviderEntry): ProviderCall {
  return {
    kind,
    entry,
    requests: 0,
    status: null,
    retryAfterSeconds: undefined,
    errorCode: null,
    tooLarge: false,
    transport: null,
  };
}
