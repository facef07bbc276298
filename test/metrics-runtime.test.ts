import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { startService } from '../src/main.js';
import { Metrics } from '../src/metrics.js';

/**
 * Process and runtime metrics, and LINKVAULT_METRICS_PORT: a real service, scraped over HTTP.
 */

const dir = mkdtempSync(join(tmpdir(), 'linkvault-metrics-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const silent = () => createLogger({ level: 'silent' });

/** Sample values by series (`name{labels}`) from a Prometheus text body. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

const RUNTIME_SERIES = [
  'process_cpu_seconds_total',
  'process_cpu_user_seconds_total',
  'process_cpu_system_seconds_total',
  'process_resident_memory_bytes',
  'process_start_time_seconds',
  'nodejs_heap_used_bytes',
  'nodejs_heap_total_bytes',
  'nodejs_external_memory_bytes',
  'nodejs_eventloop_delay_seconds{quantile="0.99"}',
  'nodejs_eventloop_delay_max_seconds',
  'nodejs_eventloop_delay_mean_seconds',
  'nodejs_gc_duration_seconds_count{kind="minor"}',
  'nodejs_gc_duration_seconds_count{kind="major"}',
];

describe('when the service runs with LINKVAULT_METRICS_PORT', () => {
  test('then /metrics is served on that port only, with process and runtime metrics, bound to the service host', async () => {
    const config = loadConfig(
      { LINKVAULT_PORT: '0', LINKVAULT_HOST: '127.0.0.1', LINKVAULT_METRICS_PORT: '0' },
      dir,
    );
    const service = await startService(config, { log: silent() });
    try {
      assert.ok(service.metricsUrl);
      assert.notEqual(service.metricsUrl, service.url);
      // The public port: /metrics is an unknown path there.
      const publicMetrics = await fetch(`${service.url}/metrics`);
      assert.equal(publicMetrics.status, 404);
      assert.equal(((await publicMetrics.json()) as { code: string }).code, 'not_found');
      assert.equal((await fetch(`${service.url}/healthz`)).status, 200);
      // Nor does OPTIONS say that the public port has it.
      assert.equal((await fetch(`${service.url}/metrics`, { method: 'OPTIONS' })).status, 404);

      // Busy work the runtime metrics must see: CPU time and garbage.
      let junk: unknown[] = [];
      for (let i = 0; i < 200_000; i++) junk.push({ i, s: `x${i}` });
      junk = [];
      await new Promise((resolve) => setTimeout(resolve, 50));

      const scrape = await fetch(`${service.metricsUrl}/metrics`);
      assert.equal(scrape.status, 200);
      assert.equal(scrape.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
      const text = await scrape.text();
      const values = samples(text);
      for (const series of RUNTIME_SERIES)
        assert.ok(values.has(series), `${series} is missing from the scrape`);
      assert.ok(values.get('process_cpu_seconds_total')! > 0);
      assert.ok(values.get('process_resident_memory_bytes')! > 1_000_000);
      assert.ok(values.get('nodejs_heap_used_bytes')! > 0);
      assert.ok(values.get('nodejs_eventloop_delay_max_seconds')! >= 0);
      const gcs = [...values]
        .filter(([k]) => k.startsWith('nodejs_gc_duration_seconds_count'))
        .reduce((sum, [, v]) => sum + v, 0);
      assert.ok(gcs > 0, 'no garbage collection was observed');
      assert.ok([...values.keys()].some((k) => k.startsWith('nodejs_active_resources{type=')));
      // The service's own counters are there too, counting the public requests.
      assert.equal(
        values.get('linkvault_http_requests_total{route="/healthz",method="GET",status="200"}'),
        1,
      );
      for (const line of text.split('\n').filter((l) => l.startsWith('# TYPE ')))
        assert.match(line, /^# TYPE [a-z_:][a-z0-9_:]* (counter|gauge|histogram)$/);

      // Only /metrics, only GET and HEAD, on the metrics port.
      const other = await fetch(`${service.metricsUrl}/healthz`);
      assert.equal(other.status, 404);
      assert.equal(other.headers.get('content-type'), 'application/problem+json');
      const post = await fetch(`${service.metricsUrl}/metrics`, { method: 'POST' });
      assert.equal(post.status, 405);
      assert.equal(post.headers.get('allow'), 'GET, HEAD');

      // Bound to LINKVAULT_HOST (127.0.0.1), like the service: not on the IPv6 loopback.
      const metricsPort = new URL(service.metricsUrl).port;
      await assert.rejects(fetch(`http://[::1]:${metricsPort}/metrics`));
    } finally {
      await service.close();
    }
    await assert.rejects(fetch(`${service.metricsUrl}/metrics`), 'the metrics port is closed');
  });

  test('then without it /metrics stays on the public port', async () => {
    const config = loadConfig({ LINKVAULT_PORT: '0', LINKVAULT_HOST: '127.0.0.1' }, dir);
    const service = await startService(config, { log: silent() });
    try {
      assert.equal(service.metricsUrl, null);
      const scrape = await fetch(`${service.url}/metrics`);
      assert.equal(scrape.status, 200);
      assert.ok(samples(await scrape.text()).has('process_cpu_seconds_total'));
    } finally {
      await service.close();
    }
  });

  test('then a metrics port equal to the service port is refused at load', () => {
    assert.throws(
      () => loadConfig({ LINKVAULT_PORT: '3000', LINKVAULT_METRICS_PORT: '3000' }, dir),
      /LINKVAULT_METRICS_PORT: must differ from LINKVAULT_PORT/,
    );
  });
});

test('when runtime sampling is stopped, then the event-loop and GC series are no longer rendered', () => {
  const metrics = new Metrics();
  metrics.runtime.start();
  assert.match(metrics.render(), /^nodejs_eventloop_delay_max_seconds /m);
  metrics.runtime.stop();
  const text = metrics.render();
  assert.doesNotMatch(text, /nodejs_eventloop_delay/);
  assert.match(text, /^process_cpu_seconds_total /m);
});
