import {
  constants as perfConstants,
  monitorEventLoopDelay,
  PerformanceObserver,
  type IntervalHistogram,
} from 'node:perf_hooks';

/**
 * A small Prometheus text-format registry. Label values are never secrets: callers pass
 * provider ids, route templates, outcomes and codes only (no token, code, state or user data).
 */

type LabelValues = Readonly<Record<string, string>>;

/** The series key of `values`: the values in label-name order, NUL-separated (no array per call: it runs several times per request). */
function labelKey(names: readonly string[], values: LabelValues): string {
  if (names.length === 0) return '';
  let key = values[names[0]!] ?? '';
  for (let i = 1; i < names.length; i++) key += '\u0000' + (values[names[i]!] ?? '');
  return key;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatLabels(names: readonly string[], key: string, extra?: [string, string]): string {
  const values = key === '' && names.length === 0 ? [] : key.split('\u0000');
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i] ?? '')}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

interface Metric {
  render(): string;
}

export class Counter implements Metric {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
  ) {}

  inc(labels: LabelValues = {}, by = 1): void {
    const key = labelKey(this.labelNames, labels);
    this.#values.set(key, (this.#values.get(key) ?? 0) + by);
  }

  /** Current value for the given labels (0 when never incremented). */
  get(labels: LabelValues = {}): number {
    return this.#values.get(labelKey(this.labelNames, labels)) ?? 0;
  }

  /** Sum over all label combinations. */
  total(): number {
    let sum = 0;
    for (const v of this.#values.values()) sum += v;
    return sum;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.#values.size === 0 && this.labelNames.length === 0) lines.push(`${this.name} 0`);
    for (const [key, value] of this.#values)
      lines.push(`${this.name}${formatLabels(this.labelNames, key)} ${value}`);
    return lines.join('\n');
  }
}

export class Histogram implements Metric {
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
    readonly buckets: readonly number[] = [
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ],
  ) {}

  /** Creates the series for `labels` with no observations, so that it is rendered (count 0). */
  touch(labels: LabelValues = {}): void {
    this.#seriesFor(labels);
  }

  #seriesFor(labels: LabelValues): { counts: number[]; sum: number; count: number } {
    const key = labelKey(this.labelNames, labels);
    let s = this.#series.get(key);
    if (!s) {
      s = { counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    return s;
  }

  observe(value: number, labels: LabelValues = {}): void {
    const key = labelKey(this.labelNames, labels);
    let s = this.#series.get(key);
    if (!s) {
      s = { counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [key, s] of this.#series) {
      this.buckets.forEach((b, i) =>
        lines.push(
          `${this.name}_bucket${formatLabels(this.labelNames, key, ['le', String(b)])} ${s.counts[i]}`,
        ),
      );
      lines.push(
        `${this.name}_bucket${formatLabels(this.labelNames, key, ['le', '+Inf'])} ${s.count}`,
      );
      lines.push(`${this.name}_sum${formatLabels(this.labelNames, key)} ${s.sum}`);
      lines.push(`${this.name}_count${formatLabels(this.labelNames, key)} ${s.count}`);
    }
    return lines.join('\n');
  }
}

function gauge(
  name: string,
  help: string,
  samples: readonly (readonly [string, number])[],
): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`];
  for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  return lines.join('\n');
}

function counter(name: string, help: string, value: number): string {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${value}`].join('\n');
}

/** node:perf_hooks GC kinds, as labels. */
const GC_KINDS: ReadonlyMap<number, string> = new Map([
  [perfConstants.NODE_PERFORMANCE_GC_MINOR, 'minor'],
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR, 'major'],
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL, 'incremental'],
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB, 'weakcb'],
]);

/**
 * Process and runtime metrics, read when scraped: CPU seconds, resident memory, V8 heap, open
 * handles by type, and, once start() has run (main.ts does, for the running service), event-loop
 * delay and garbage collections by kind. Event-loop delay is sampled by
 * perf_hooks.monitorEventLoopDelay (every 20 ms); its gauges describe the delays since the previous
 * scrape (the histogram is reset at each one), so scrape from one Prometheus per replica.
 */
export class RuntimeMetrics implements Metric {
  readonly gcDuration = new Histogram(
    'nodejs_gc_duration_seconds',
    'Garbage collection pauses by kind (minor, major, incremental, weakcb)',
    ['kind'],
    [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
  );
  #loopDelay: IntervalHistogram | null = null;
  #gcObserver: PerformanceObserver | null = null;
  readonly #startTimeSeconds = Math.round(Date.now() / 1000 - process.uptime());

  /** Starts sampling event-loop delay and observing garbage collections. Idempotent. */
  start(): void {
    if (this.#loopDelay) return;
    this.#loopDelay = monitorEventLoopDelay({ resolution: 20 });
    this.#loopDelay.enable();
    // Every kind is rendered from the start (count 0): a rate over a series that appears late is wrong.
    for (const kind of GC_KINDS.values()) this.gcDuration.touch({ kind });
    this.#gcObserver = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        const kind = GC_KINDS.get(
          (entry as { detail?: { kind?: number } | null }).detail?.kind ?? -1,
        );
        this.gcDuration.observe(entry.duration / 1000, { kind: kind ?? 'other' });
      }
    });
    this.#gcObserver.observe({ entryTypes: ['gc'] });
  }

  /** Stops what start() started. */
  stop(): void {
    this.#loopDelay?.disable();
    this.#loopDelay = null;
    this.#gcObserver?.disconnect();
    this.#gcObserver = null;
  }

  render(): string {
    const cpu = process.cpuUsage();
    const memory = process.memoryUsage();
    const resources = new Map<string, number>();
    for (const type of process.getActiveResourcesInfo())
      resources.set(type, (resources.get(type) ?? 0) + 1);
    const parts = [
      counter(
        'process_cpu_user_seconds_total',
        'User CPU time spent by the process, in seconds',
        cpu.user / 1e6,
      ),
      counter(
        'process_cpu_system_seconds_total',
        'System CPU time spent by the process, in seconds',
        cpu.system / 1e6,
      ),
      counter(
        'process_cpu_seconds_total',
        'User and system CPU time spent by the process, in seconds',
        (cpu.user + cpu.system) / 1e6,
      ),
      gauge('process_resident_memory_bytes', 'Resident memory size, in bytes', [['', memory.rss]]),
      gauge('process_start_time_seconds', 'Start time of the process since the Unix epoch', [
        ['', this.#startTimeSeconds],
      ]),
      gauge('nodejs_heap_used_bytes', 'V8 heap in use, in bytes', [['', memory.heapUsed]]),
      gauge('nodejs_heap_total_bytes', 'V8 heap allocated, in bytes', [['', memory.heapTotal]]),
      gauge('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JavaScript, in bytes', [
        ['', memory.external],
      ]),
      gauge(
        'nodejs_active_resources',
        'Resources keeping the event loop alive (sockets, timers, handles) by type',
        [...resources].map(([type, n]) => [`{type="${escapeLabel(type)}"}`, n] as const),
      ),
    ];
    const delay = this.#loopDelay;
    if (delay) {
      // Nanoseconds; NaN/0 before the first sample.
      const s = (ns: number): number => (Number.isFinite(ns) ? ns / 1e9 : 0);
      parts.push(
        gauge(
          'nodejs_eventloop_delay_seconds',
          'Event-loop delay since the previous scrape (monitorEventLoopDelay), by quantile',
          [
            ['{quantile="0.5"}', s(delay.percentile(50))],
            ['{quantile="0.9"}', s(delay.percentile(90))],
            ['{quantile="0.99"}', s(delay.percentile(99))],
          ],
        ),
        gauge(
          'nodejs_eventloop_delay_max_seconds',
          'Longest event-loop delay since the previous scrape',
          [['', s(delay.max)]],
        ),
        gauge(
          'nodejs_eventloop_delay_mean_seconds',
          'Mean event-loop delay since the previous scrape',
          [['', s(delay.mean)]],
        ),
        this.gcDuration.render(),
      );
      delay.reset();
    }
    return parts.join('\n');
  }
}

/** The process's metrics. One instance is built in main and passed to whoever counts. */
export class Metrics {
  readonly #all: Metric[] = [];

  readonly httpRequests = this.add(
    new Counter(
      'linkvault_http_requests_total',
      'HTTP requests by route template, method and status',
      ['route', 'method', 'status'],
    ),
  );
  readonly httpDuration = this.add(
    new Histogram('linkvault_http_request_duration_seconds', 'HTTP request duration', [
      'route',
      'method',
    ]),
  );
  readonly keyServiceCalls = this.add(
    new Counter(
      'linkvault_key_service_calls_total',
      'Calls to the key provider (local or KMS) by operation and outcome',
      ['provider', 'operation', 'outcome'],
    ),
  );
  readonly dataKeyCache = this.add(
    new Counter('linkvault_data_key_cache_total', 'Unwrapped data key cache lookups by result', [
      'result',
    ]),
  );
  readonly storeErrors = this.add(
    new Counter(
      'linkvault_store_errors_total',
      'Store operations that failed because the store was unavailable',
      ['store'],
    ),
  );
  readonly tokenReleases = this.add(
    new Counter('linkvault_token_releases_total', 'Token route outcomes', ['provider', 'outcome']),
  );
  readonly refreshes = this.add(
    new Counter('linkvault_refreshes_total', 'Refresh attempts at the provider by outcome', [
      'provider',
      'outcome',
    ]),
  );
  readonly connects = this.add(
    new Counter('linkvault_connects_total', 'Connect flows by outcome', ['provider', 'outcome']),
  );
  readonly revocations = this.add(
    new Counter('linkvault_revocations_total', 'Revocations by provider outcome', [
      'provider',
      'outcome',
    ]),
  );

  readonly webhookDeliveries = this.add(
    new Counter(
      'linkvault_webhook_deliveries_total',
      'Webhook delivery attempts by outcome (delivered, retry, failed, gone, refused)',
      ['outcome'],
    ),
  );
  readonly webhookEnqueueFailures = this.add(
    new Counter(
      'linkvault_webhook_enqueue_failures_total',
      'Lifecycle events whose webhook jobs could not be queued (the audit record was stored)',
      [],
    ),
  );
  readonly proxyRequests = this.add(
    new Counter(
      'linkvault_proxy_requests_total',
      'Proxied API calls by provider and outcome (the status class of the provider answer, or why none was relayed)',
      ['provider', 'status_class'],
    ),
  );
  /** proxy.completed records that could not be stored: the call has happened, so it is counted and logged. */
  readonly proxyAuditFailures = this.add(
    new Counter(
      'linkvault_proxy_audit_failures_total',
      'proxy.completed audit records that could not be stored (the call was made; the failure is logged)',
      ['provider'],
    ),
  );

  /** Process and runtime metrics; main.ts starts the event-loop and GC sampling. */
  readonly runtime = this.add(new RuntimeMetrics());

  readonly auditExported = this.add(
    new Counter('linkvault_audit_exported_total', 'Audit events written to the export files', []),
  );
  readonly auditTrimmed = this.add(
    new Counter(
      'linkvault_audit_trimmed_total',
      'Audit events removed from the store after export (or by retention)',
      [],
    ),
  );
  readonly auditExportFailures = this.add(
    new Counter(
      'linkvault_audit_export_failures_total',
      'Audit export passes that failed (directory not writable, store or key service down)',
      [],
    ),
  );

  add<M extends Metric>(metric: M): M {
    this.#all.push(metric);
    return metric;
  }

  /** Prometheus text exposition format 0.0.4. */
  render(): string {
    return this.#all.map((m) => m.render()).join('\n') + '\n';
  }
}
