/**
 * A small Prometheus text-format registry. Label values are never secrets: callers pass
 * provider ids, route templates, outcomes and codes only (no token, code, state or user data).
 */

type LabelValues = Readonly<Record<string, string>>;

function labelKey(names: readonly string[], values: LabelValues): string {
  return names.map((n) => values[n] ?? '').join('\u0000');
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
