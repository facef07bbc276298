import type { Router } from 'express';
import type { Logger } from 'pino';
import { LinkvaultError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { sendProblem } from './problem.js';
import { createStrictRouter } from './strict-router.js';

/** One readiness dependency: resolves when it answers, rejects otherwise. */
export interface ReadinessCheck {
  readonly name: string;
  check(): Promise<void>;
}

export type CheckOutcome = 'ok' | 'failed' | 'timeout';

/** A slow dependency counts as down: a load balancer probing /readyz must get an answer quickly. */
export const READINESS_TIMEOUT_MS = 2000;

async function runCheck(
  check: ReadinessCheck,
  timeoutMs: number,
  log: Logger,
): Promise<CheckOutcome> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CheckOutcome>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const outcome = check.check().then(
    (): CheckOutcome => 'ok',
    (err: unknown): CheckOutcome => {
      log.warn({ check: check.name, err }, 'readiness check failed');
      return 'failed';
    },
  );
  try {
    const result = await Promise.race([outcome, timeout]);
    if (result === 'timeout')
      log.warn({ check: check.name, timeout_ms: timeoutMs }, 'readiness check timed out');
    return result;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * GET /healthz (the process answers), GET /readyz (every dependency answers, checked in
 * parallel, each bounded by a timeout; the 503 body names the failing checks and nothing else),
 * GET /metrics (Prometheus text format 0.0.4).
 */
export function createHealthRouter(deps: {
  checks: readonly ReadinessCheck[];
  metrics: Metrics;
  log: Logger;
  timeoutMs?: number;
}): Router {
  const router = createStrictRouter();
  const timeoutMs = deps.timeoutMs ?? READINESS_TIMEOUT_MS;

  router.get('/healthz', (_req, res) => {
    res.status(200).json({ status: 'ok' });
  });

  router.get('/readyz', async (req, res) => {
    const outcomes = await Promise.all(deps.checks.map((c) => runCheck(c, timeoutMs, deps.log)));
    const checks: Record<string, CheckOutcome> = {};
    deps.checks.forEach((c, i) => {
      checks[c.name] = outcomes[i]!;
    });
    res.setHeader('Cache-Control', 'no-store');
    if (outcomes.every((o) => o === 'ok')) {
      res.status(200).json({ status: 'ready', checks });
      return;
    }
    const failing = deps.checks.filter((_c, i) => outcomes[i] !== 'ok').map((c) => c.name);
    sendProblem(
      req,
      res,
      new LinkvaultError('not_ready', { detail: `Not ready: ${failing.join(', ')}` }),
      { checks },
    );
  });

  router.get('/metrics', (_req, res) => {
    res.setHeader('Content-Type', 'text/plain; version=0.0.4; charset=utf-8');
    res.setHeader('Cache-Control', 'no-store');
    res.status(200).send(deps.metrics.render());
  });

  return router;
}
