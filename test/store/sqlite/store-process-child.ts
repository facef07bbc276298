/**
 * The child side of store-process.ts: a SqliteStore (wrapped as createStore wraps it) on the file
 * named by argv[2], driven over the IPC channel. Run only by startStoreProcess.
 */
import { isLinkvaultError } from '../../../src/errors.js';
import { checkedStore } from '../../../src/store/checked-store.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';
import type { StoreCall, StoreAnswer } from './store-process.js';

const store = checkedStore(new SqliteStore({ path: process.argv[2]! }));

function answer(message: StoreAnswer): void {
  process.send!(message);
}

process.on('message', (message: StoreCall) => {
  const { id, method, args } = message;
  const call = (store[method] as (...a: unknown[]) => Promise<unknown>).bind(store);
  call(...args).then(
    (value) => {
      answer({ id, ok: true, value: value ?? null });
      if (method === 'close') process.disconnect();
    },
    (err: unknown) =>
      answer({
        id,
        ok: false,
        code: isLinkvaultError(err) ? err.code : `not a LinkvaultError: ${String(err)}`,
      }),
  );
});
answer({ id: 0, ok: true, value: 'ready' });
