import type { Response } from 'supertest';
import { ERROR_CATALOGUE, problemType, type ErrorCode } from '../../src/errors.js';

/** The whole problem+json body we expect for `code` on `res` (its request id), plus `members`. */
export function expectedProblem(
  res: Response,
  code: ErrorCode,
  members: Readonly<Record<string, unknown>> = {},
): Record<string, unknown> {
  return {
    type: problemType(code),
    title: ERROR_CATALOGUE[code].title,
    status: ERROR_CATALOGUE[code].status,
    code,
    ...members,
    request_id: res.headers['x-request-id'],
  };
}
