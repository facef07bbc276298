import type { Request, Response } from 'express';
import type { Sessions } from '../links/connect/sessions.js';
import type { SessionRecord } from '../links/connect/sessions.js';

/** Longer than any session token we mint (256 bits, base64url) by far: anything longer is not ours. */
const MAX_AUTHORIZATION_CHARS = 512;

/**
 * The session a browser's `Authorization: Bearer <session token>` names; rejects 401
 * session_expired otherwise. Pages send the session token in this header, never in a URL or a
 * cookie, so a request forged from another site cannot carry it (CSRF-proof revoke).
 */
export async function sessionOf(
  req: Request,
  res: Response,
  sessions: Pick<Sessions, 'resolveSession'>,
): Promise<SessionRecord> {
  const header = req.headers.authorization;
  const token =
    typeof header === 'string' &&
    header.length <= MAX_AUTHORIZATION_CHARS &&
    /^bearer /i.test(header)
      ? header.slice(7).trim()
      : undefined;
  try {
    return await sessions.resolveSession(token);
  } catch (err) {
    // RFC 6750 §3: a 401 for bearer auth names the scheme.
    res.setHeader('WWW-Authenticate', 'Bearer error="invalid_token"');
    throw err;
  }
}
