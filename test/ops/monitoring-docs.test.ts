import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startService } from '../../src/main.js';
import { startRedis, type RedisServerHandle } from '../support/redis-server.js';

/**
 * The Grafana dashboard and the alert rules in docs/ name only metrics the service exposes: the
 * names are read from their PromQL, and checked against the `# TYPE` lines of a real scrape of a
 * service on the Redis store (which adds the replication metric) with its separate metrics port.
 */

const root = join(import.meta.dirname, '..', '..');
const METRIC = /\b((?:linkvault|process|nodejs)_[a-z0-9_]+)\b/g;

function namesIn(exprs: readonly string[]): Set<string> {
  return new Set(exprs.flatMap((e) => [...e.matchAll(METRIC)].map((m) => m[1]!)));
}

/** Every PromQL expression of the dashboard (panel targets and template queries). */
function dashboardExprs(): string[] {
  const dashboard = JSON.parse(readFileSync(join(root, 'docs/grafana-dashboard.json'), 'utf8')) as {
    panels: { targets: { expr: string }[] }[];
    templating: { list: { query?: unknown }[] };
  };
  return [
    ...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)),
    ...dashboard.templating.list
      .map((v) => v.query)
      .filter((q): q is string => typeof q === 'string'),
  ];
}

/**
 * Every `expr:` of the rules file: a one-line value, or a `|` block (the more indented lines
 * after it). A simple reader on purpose: the file is ours and kept in this shape.
 */
function ruleExprs(): string[] {
  const lines = readFileSync(join(root, 'docs/alerts.yml'), 'utf8').split('\n');
  const exprs: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)expr:\s*(.*)$/.exec(lines[i]!);
    if (!m) continue;
    if (m[2] !== '|') {
      exprs.push(m[2]!);
      continue;
    }
    const block: string[] = [];
    while (i + 1 < lines.length && lines[i + 1]!.match(/^\s*/)![0].length > m[1]!.length)
      block.push(lines[++i]!.trim());
    exprs.push(block.join(' '));
  }
  return exprs;
}

/** Sample names a metric family of `type` renders as. */
function seriesNames(name: string, type: string): string[] {
  return type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`, name] : [name];
}

describe('when the monitoring docs are checked against a running service', () => {
  const dir = mkdtempSync(join(tmpdir(), 'linkvault-monitoring-'));
  let redis: RedisServerHandle;
  let exposed: Set<string>;
  before(async () => {
    redis = await startRedis();
    const config = loadConfig(
      {
        LINKVAULT_PORT: '0',
        LINKVAULT_HOST: '127.0.0.1',
        LINKVAULT_METRICS_PORT: '0',
        LINKVAULT_STORE: 'redis',
        LINKVAULT_REDIS_URL: redis.url,
      },
      dir,
    );
    const service = await startService(config, { log: createLogger({ level: 'silent' }) });
    try {
      const text = await (await fetch(`${service.metricsUrl}/metrics`)).text();
      exposed = new Set(
        [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].flatMap((m) => seriesNames(m[1]!, m[2]!)),
      );
    } finally {
      await service.close();
    }
  });
  after(async () => {
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('then every metric the dashboard names is exposed', () => {
    const names = namesIn(dashboardExprs());
    assert.ok(names.size >= 15, `only ${names.size} metric names read from the dashboard`);
    assert.deepEqual(
      [...names].filter((n) => !exposed.has(n)),
      [],
    );
  });

  test('then every metric the alert rules name is exposed', () => {
    const exprs = ruleExprs();
    assert.ok(exprs.length >= 9, `only ${exprs.length} rules read`);
    const names = namesIn(exprs);
    assert.deepEqual(
      [...names].filter((n) => !exposed.has(n)),
      [],
    );
  });

  test('then the reader would notice a metric that does not exist', () => {
    assert.ok(!exposed.has('linkvault_audit_export_lag_seconds'));
    assert.deepEqual(
      [...namesIn(['rate(linkvault_no_such_total[5m])'])],
      ['linkvault_no_such_total'],
    );
  });

  test('then docs/monitoring.md names the dashboard, the rules and every metric it lists', () => {
    const doc = readFileSync(join(root, 'docs/monitoring.md'), 'utf8');
    assert.match(doc, /\(grafana-dashboard\.json\)/);
    assert.match(doc, /\(alerts\.yml\)/);
    const listed = new Set(
      [...doc.matchAll(/`((?:linkvault|process|nodejs)_[a-z0-9_]+)`/g)].map((m) => m[1]!),
    );
    assert.deepEqual(
      [...listed].filter((n) => !exposed.has(n)),
      [],
    );
  });
});
