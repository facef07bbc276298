import type { Logger } from 'pino';
import { isLinkvaultError } from '../errors.js';
import { tokenSetIdentity } from '../links/token-vault.js';
import type { Store } from '../store/store.js';
import type { KeyProvider } from './key-provider.js';
import type { Vault } from './vault.js';

export interface RewrapDeps {
  readonly store: Pick<Store, 'scanLinkIds' | 'getLink' | 'saveLink'>;
  readonly vault: Vault;
  readonly keys: KeyProvider;
  readonly log?: Logger;
}

export interface RewrapResult {
  /** Links seen. */
  readonly scanned: number;
  /** Links whose token set now has its data key wrapped under the current key. */
  readonly rewrapped: number;
  /** Links with no token set, or already under the current key. */
  readonly skipped: number;
  /** Compare-and-set writes lost to a concurrent writer (each was re-read and retried). */
  readonly conflicts: number;
  /** Links whose record does not open under its identity (sealed_record_invalid) or that kept conflicting; left as they are. */
  readonly failed: number;
}

const MAX_ATTEMPTS_PER_LINK = 5;

/**
 * Moves every link's data key under the current key (after a master-key or KMS-key rotation).
 * Only `kid` and `edk` change; iv, ct and tag are byte-identical, so no token is ever decrypted
 * here. Each write is a compare-and-set on the link version; on conflict the link is re-read
 * (a concurrent refresh may already have re-sealed it under the current key) and retried.
 * A key service that fails stops the run (key_service_unavailable): running it again is safe.
 */
export async function rewrapAll(deps: RewrapDeps): Promise<RewrapResult> {
  const { store, vault, keys, log } = deps;
  // Answers, and (KMS) resolves an alias to the key ARN that currentKeyId() compares against.
  await keys.ping();
  const current = keys.currentKeyId();
  let scanned = 0;
  let rewrapped = 0;
  let skipped = 0;
  let conflicts = 0;
  let failed = 0;

  for await (const id of store.scanLinkIds()) {
    scanned++;
    let outcome: 'rewrapped' | 'skipped' | 'failed' | null = null;
    for (let attempt = 0; attempt < MAX_ATTEMPTS_PER_LINK && outcome === null; attempt++) {
      const link = await store.getLink(id);
      if (!link || !link.tokens || link.tokens.kid === current) {
        outcome = 'skipped';
        break;
      }
      let tokens;
      try {
        tokens = await vault.rewrap(tokenSetIdentity(link), link.tokens);
      } catch (err) {
        if (!isLinkvaultError(err, 'sealed_record_invalid')) throw err;
        log?.warn({ linkId: id, err }, 'rewrap: the link\'s sealed record does not open under its identity; left as it is');
        outcome = 'failed';
        break;
      }
      const saved = await store.saveLink({ ...link, tokens }, link.version);
      if (saved) outcome = 'rewrapped';
      else conflicts++;
    }
    if (outcome === null) {
      log?.warn({ linkId: id }, 'rewrap: the link kept changing underneath; left for the next run');
      outcome = 'failed';
    }
    if (outcome === 'rewrapped') rewrapped++;
    else if (outcome === 'skipped') skipped++;
    else failed++;
  }
  const result = { scanned, rewrapped, skipped, conflicts, failed };
  log?.info({ ...result, kid: current }, 'rewrap finished');
  return result;
}
