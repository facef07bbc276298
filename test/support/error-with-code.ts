import assert from 'node:assert/strict';
import { LinkvaultError } from '../../src/errors.js';

/**
 * For `assert.rejects(promise, errorWithCode(code, check))`: the rejection is a
 * LinkvaultError with exactly `code` (the message names what came instead), then `check` runs on it.
 */
export function errorWithCode(
  code: string,
  check: (err: LinkvaultError) => void = () => undefined,
): (err: unknown) => boolean {
  return (err: unknown): boolean => {
    assert.ok(err instanceof LinkvaultError, `expected LinkvaultError, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code} (${err.message})`);
    check(err);
    return true;
  };
}
