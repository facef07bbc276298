import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Store } from '../../../src/store/store.js';

/**
 * A SqliteStore in a process of its own, called over IPC, so that a test can take the disk away
 * from that process alone (file-size-limit.ts) while the test process still reads and writes files.
 * Every answer says what the caller got: the value, or the LinkvaultError code it rejected with.
 */

type Method = Exclude<
  {
    [K in keyof Store]: Store[K] extends (...args: never[]) => Promise<unknown> ? K : never;
  }[keyof Store],
  undefined
>;

export interface StoreCall {
  readonly id: number;
  readonly method: Method;
  readonly args: readonly unknown[];
}

export type StoreAnswer =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly code: string };

export type Outcome =
  { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly code: string };

export interface StoreProcess {
  readonly pid: number;
  /** Calls `method` on the child's store; never rejects: the outcome says what the caller got. */
  call<M extends Method>(method: M, ...args: Parameters<Store[M]>): Promise<Outcome>;
  /** Closes the store and waits for the process to exit (SIGKILL if it does not answer). */
  stop(): Promise<void>;
}

const CHILD = join(import.meta.dirname, 'store-process-child.ts');

export async function startStoreProcess(path: string): Promise<StoreProcess> {
  const child: ChildProcess = fork(CHILD, [path], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.once('exit', () => child.kill('SIGKILL'));
  const pending = new Map<number, (answer: StoreAnswer) => void>();
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  child.on('message', (answer: StoreAnswer) => {
    if (answer.id === 0) return ready();
    pending.get(answer.id)?.(answer);
    pending.delete(answer.id);
  });
  await Promise.race([
    isReady,
    exited.then(() => {
      throw new Error('the store process exited before it was ready');
    }),
  ]);
  let next = 0;
  const call = (method: Method, args: readonly unknown[]): Promise<Outcome> =>
    new Promise((resolve) => {
      const id = ++next;
      pending.set(id, (answer) =>
        resolve(answer.ok ? { ok: true, value: answer.value } : { ok: false, code: answer.code }),
      );
      child.send({ id, method, args } satisfies StoreCall);
    });
  return {
    pid: child.pid!,
    call: (method, ...args) => call(method, args),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const closed = call('close', []);
      const outcome = await Promise.race([closed, exited.then(() => null)]);
      if (outcome === null || !outcome.ok) child.kill('SIGKILL');
      await exited;
    },
  };
}
