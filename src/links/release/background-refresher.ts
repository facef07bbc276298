import type { Logger } from 'pino';
import type { Store } from '../../store/store.js';
import type { LinkRecord } from '../link.js';
import {
  refreshDue,
  REFRESH_UNCERTAIN_KEY,
  type RefreshCoordinator,
} from './refresh-coordinator.js';

/**
 * Refreshes links ahead of expiry so that callers rarely wait on a provider: every interval it
 * takes the active links whose access token expires within the lead window (plus jitter, so links
 * connected together do not all refresh in one burst), and those whose last refresh answer was lost,
 * from the store's expiry index (Store.listLinksExpiringBefore: an index, never a scan of every
 * link), and refreshes each through the same coordinator as the token route. One replica per link:
 * a link whose lock is held is skipped.
 */

export interface BackgroundRefresherDeps {
  readonly store: Pick<Store, 'listLinksExpiringBefore'>;
  readonly coordinator: Pick<RefreshCoordinator, 'refreshAhead'>;
  readonly log: Logger;
  readonly now: () => number;
  readonly intervalMs: number;
  /** Refresh when the token expires within this window. */
  readonly leadMs: number;
  /** Up to this much is added to the lead per link at random (default: a fifth of the lead). */
  readonly jitterMs?: number;
  /** Links refreshed at once (default 4): a provider must not see a burst from us. */
  readonly concurrency?: number;
  /** Candidates taken per round from the expiry index, soonest first (default 500). */
  readonly batchSize?: number;
  readonly random?: () => number;
}

export interface RoundResult {
  readonly checked: number;
  readonly refreshed: number;
  readonly failed: number;
}

export interface BackgroundRefresher {
  readonly name: string;
  /** Schedules rounds (an unref'd timer: it never keeps the process alive). */
  start(): void;
  /** Stops scheduling and resolves when the round in progress has finished. */
  stop(): Promise<void>;
  /** One round now (tests, and the timer). */
  runOnce(): Promise<RoundResult>;
}

export function createBackgroundRefresher(deps: BackgroundRefresherDeps): BackgroundRefresher {
  const { store, coordinator, log, now } = deps;
  const jitterMs = deps.jitterMs ?? Math.floor(deps.leadMs / 5);
  const concurrency = Math.max(1, deps.concurrency ?? 4);
  const batchSize = deps.batchSize ?? 500;
  const random = deps.random ?? Math.random;
  let timer: NodeJS.Timeout | null = null;
  let stopped = true;
  /** Set by stop(): a scan in progress ends early. */
  let halted = false;
  let running: Promise<RoundResult> | null = null;

  function isDue(link: LinkRecord, atMs: number): boolean {
    if (link.status !== 'active' || !link.tokens) return false;
    if (REFRESH_UNCERTAIN_KEY in link.metadata) return true;
    return refreshDue(link, atMs, deps.leadMs + random() * jitterMs);
  }

  async function* candidates(): AsyncGenerator<string> {
    const links = await store.listLinksExpiringBefore(now() + deps.leadMs + jitterMs, batchSize);
    for (const link of links) {
      if (halted) return;
      if (isDue(link, now())) yield link.id;
    }
  }

  async function runOnce(): Promise<RoundResult> {
    let checked = 0;
    let refreshed = 0;
    let failed = 0;
    const active = new Set<Promise<void>>();
    for await (const id of candidates()) {
      checked++;
      const p: Promise<void> = coordinator.refreshAhead(id, deps.leadMs).then(
        (outcome) => {
          if (outcome === 'refreshed') refreshed++;
          else if (outcome === 'failed') failed++;
        },
        (err: unknown) => {
          failed++;
          log.warn({ link_id: id, err }, 'background refresh failed');
        },
      );
      const tracked = p.finally(() => active.delete(tracked));
      active.add(tracked);
      if (active.size >= concurrency) await Promise.race(active);
    }
    await Promise.all(active);
    if (checked > 0) log.info({ checked, refreshed, failed }, 'background refresh round');
    return { checked, refreshed, failed };
  }

  function schedule(): void {
    if (stopped) return;
    timer = setTimeout(() => {
      timer = null;
      running = runOnce()
        .catch((err: unknown) => {
          log.warn({ err }, 'background refresh round failed');
          return { checked: 0, refreshed: 0, failed: 0 };
        })
        .finally(() => {
          running = null;
          schedule();
        });
    }, deps.intervalMs);
    timer.unref();
  }

  return {
    name: 'background-refresher',
    start() {
      if (!stopped) return;
      stopped = false;
      halted = false;
      schedule();
    },
    async stop() {
      stopped = true;
      halted = true;
      if (timer) clearTimeout(timer);
      timer = null;
      if (running) await running;
    },
    runOnce,
  };
}
