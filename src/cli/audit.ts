import type { KeyObject } from 'node:crypto';
import {
  JSON_OPTION,
  stringOption,
  UsageError,
  type CliCommand,
  type CliContext,
} from './command.js';
import { API_OPTIONS, connectApi } from './linkvault-api.js';
import { printJson, printTable } from './output.js';

/**
 * `linkvault audit …`: the exported audit trail (verify, export), token labels (fingerprint) and
 * the retained events over HTTP (list). verify, export and fingerprint work on the files and the
 * configured store directly, like rewrap; list calls GET /v1/audit like the other HTTP groups.
 * The server graph is imported inside `run` (command files import only light modules at the top).
 */

type Row = Record<string, unknown>;

const EVENT_COLUMNS = [
  { header: 'at', value: (e: Row) => e.at },
  { header: 'type', value: (e: Row) => e.type },
  { header: 'tenant', value: (e: Row) => e.tenant_id },
  { header: 'link', value: (e: Row) => e.link_id },
  { header: 'service', value: (e: Row) => e.service_id },
  { header: 'request id', value: (e: Row) => e.request_id },
];

/** An RFC 3339 timestamp with a zone (`2026-01-31T12:00:00Z`, `…+01:00`), as epoch ms; UsageError otherwise. */
function timeOption(value: string | undefined, name: string): number | null {
  if (value === undefined) return null;
  const rfc3339 =
    /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/.test(value);
  const ms = Date.parse(value);
  if (!rfc3339 || Number.isNaN(ms))
    throw new UsageError(`--${name} must be an RFC 3339 time such as 2026-01-31T00:00:00Z`);
  return ms;
}

/**
 * The deployment's audit key, read from the configured store and opened by the key provider. Never
 * creates one: a key made here would sign and label nothing that exists. Rejects when there is none.
 */
async function withAuditKey<T>(ctx: CliContext, use: (key: KeyObject) => Promise<T>): Promise<T> {
  const { loadConfig } = await import('../config.js');
  const config = loadConfig(ctx.env, ctx.cwd);
  const [{ createLogger }, { buildAdapters }, { AUDIT_KEY_ROW_ID, loadAuditKey }] =
    await Promise.all([
      import('../log.js'),
      import('../features.js'),
      import('../links/audit/audit.js'),
    ]);
  // Logs go to stderr so that stdout carries only the result.
  const log = createLogger({ level: config.logLevel, destination: process.stderr });
  const { store, vault, keys, close } = await buildAdapters(config, { log });
  try {
    if (!(await store.getJobStatus(AUDIT_KEY_ROW_ID)))
      throw new Error(
        'the configured store holds no audit key (linkvault has not started on it yet)',
      );
    const key = await loadAuditKey({
      store,
      vault,
      currentKeyId: () => keys.currentKeyId(),
      now: Date.now,
    });
    return await use(key);
  } finally {
    await close();
  }
}

/** What the export directory's head commits: the newest file and its committed lines. */
interface ChainHead {
  readonly file: string;
  readonly lines: number;
  /** Every shard's mark, in heads of the first format only (audit-chain.ts). */
  readonly high_water?: Readonly<Record<string, string>>;
}

/** The head of the chain in `dir` (audit-head.json), or null when nothing was exported there yet. */
async function readChainHead(dir: string): Promise<ChainHead | null> {
  const { readFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  let text: string;
  try {
    text = await readFile(join(dir, 'audit-head.json'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const head = JSON.parse(text) as ChainHead;
  if (typeof head.file !== 'string' || typeof head.lines !== 'number')
    throw new Error(`${join(dir, 'audit-head.json')}: not an audit chain head`);
  return head;
}

/**
 * The event lines of the chain in `dir` after the position `from` commits (the start when null) up to
 * the position `to` commits, in chain order, as public AuditEvents (`prev` and checkpoints left out).
 * Lines after `to` (a batch not yet committed) are not read.
 */
async function* readChainEvents(
  dir: string,
  from: ChainHead | null,
  to: ChainHead,
): AsyncGenerator<Row> {
  const [{ createReadStream }, { createInterface }, { join }, { listChainFiles }] =
    await Promise.all([
      import('node:fs'),
      import('node:readline'),
      import('node:path'),
      import('../links/audit/export/audit-chain.js'),
    ]);
  const files = await listChainFiles(dir);
  const indexOf = (name: string): number => files.find((f) => f.name === name)?.index ?? -1;
  const fromIndex = from === null ? 0 : indexOf(from.file);
  const toIndex = indexOf(to.file);
  if (toIndex < 0 || (from !== null && fromIndex < 0))
    throw new Error(`${dir}: the head names a file that is not there (run linkvault audit verify)`);
  for (const f of files) {
    if (f.index < fromIndex || f.index > toIndex) continue;
    const skip = from !== null && f.index === fromIndex ? from.lines : 0;
    const last = f.index === toIndex ? to.lines : Infinity;
    const lines = createInterface({ input: createReadStream(join(dir, f.name), 'utf8') });
    let n = 0;
    try {
      for await (const line of lines) {
        n++;
        if (n <= skip) continue;
        if (n > last) break;
        let obj: Row;
        try {
          obj = JSON.parse(line) as Row;
        } catch {
          throw new Error(`${f.name}:${n}: not valid JSON (run linkvault audit verify)`);
        }
        if ('checkpoint' in obj) continue;
        const { prev: _prev, seq, shard, ...rest } = obj;
        yield { seq, shard, ...rest };
      }
    } finally {
      lines.close();
    }
  }
}

/** Reads all of stdin as text (the token); one trailing newline (a shell's `echo`, a file) is not part of it. */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  chunks.forEach((c) => c.fill(0));
  return text.replace(/\r?\n$/, '');
}

export const auditCommands: readonly CliCommand[] = [
  {
    name: 'audit verify',
    summary: 'check every chain, checkpoint and signature of an audit export directory',
    arguments: [{ name: 'DIR', description: 'the export directory (LINKVAULT_AUDIT_EXPORT_DIR)' }],
    options: {
      'no-signatures': {
        type: 'boolean',
        description:
          'check only the hash chain (needs no configuration; does not open the store or the key)',
      },
      ...JSON_OPTION,
    },
    details: [
      'Exit 0 when every file is whole; otherwise prints the first bad file and line and exits 1.',
      'Signatures (checkpoints and the head) are checked under the audit key, read from the configured',
      'store and opened by the configured key provider; when that key cannot be had the command fails',
      '(it never reports a chain whole that it did not fully check): pass --no-signatures for the',
      'hash chain alone. docs/operations.md, "Audit trail".',
    ],
    async run(input, ctx) {
      const dir = input.positionals[0]!;
      const { resolve } = await import('node:path');
      const path = resolve(ctx.cwd, dir);
      const { verifyAuditChain } = await import('../links/audit/export/audit-chain.js');
      const signatures = input.options['no-signatures'] !== true;
      const report = signatures
        ? await withAuditKey(ctx, (key) => verifyAuditChain(path, key))
        : await verifyAuditChain(path, null);
      if (input.options.json === true) printJson(ctx, { ...report, signatures });
      else if (report.ok)
        ctx.out(
          `audit chain whole: ${report.files} file(s), ${report.events} event(s)${signatures ? ', signatures checked' : ' (hash chain only, signatures not checked)'}`,
        );
      if (!report.ok) {
        const p = report.problem!;
        ctx.err(
          `linkvault audit verify: ${p.line > 0 ? `${p.file}:${p.line}` : p.file}: ${p.reason}`,
        );
        return 1;
      }
      return 0;
    },
  },
  {
    name: 'audit export',
    summary: 'stream audit events as JSON lines (exported files, then the store) for a SIEM',
    options: {
      since: {
        type: 'string',
        value: 'TIME',
        description: 'events at or after this RFC 3339 time (required)',
      },
      until: { type: 'string', value: 'TIME', description: 'events before this RFC 3339 time' },
      format: { type: 'string', value: 'FORMAT', description: 'jsonl (the only format)' },
      dir: {
        type: 'string',
        value: 'DIR',
        description: 'the export directory (default: LINKVAULT_AUDIT_EXPORT_DIR)',
      },
    },
    details: [
      'One AuditEvent (docs/api.md) per line on stdout: first the events in the export directory, in',
      "chain order, then the configured store's events not yet exported, shard by shard in sequence",
      'order; each event once. `seq` and `shard` name an event uniquely. The directory is read up to',
      'its committed head. If the exporter trimmed events from the store while this ran, so that some',
      'could be missing, the command says so and exits 1: run it again.',
    ],
    async run(input, ctx) {
      const since = timeOption(stringOption(input, 'since'), 'since');
      if (since === null) throw new UsageError('--since is required');
      const until = timeOption(stringOption(input, 'until'), 'until');
      if (until !== null && until <= since) throw new UsageError('--until must be after --since');
      const format = stringOption(input, 'format') ?? 'jsonl';
      if (format !== 'jsonl') throw new UsageError(`--format must be jsonl (not "${format}")`);

      const { loadConfig } = await import('../config.js');
      const config = loadConfig(ctx.env, ctx.cwd);
      const { resolve } = await import('node:path');
      const dirOption = stringOption(input, 'dir');
      const dir = dirOption === undefined ? config.audit.exportDir : resolve(ctx.cwd, dirOption);
      const [{ auditEventJson }, { compareSeq }] = await Promise.all([
        import('../links/audit/export/audit-exporter.js'),
        import('../links/audit/export/audit-chain.js'),
      ]);
      const inRange = (at: unknown): boolean => {
        const ms = typeof at === 'string' ? Date.parse(at) : NaN;
        return ms >= since && (until === null || ms < until);
      };
      const emit = (event: Row): void => {
        if (inRange(event.at)) ctx.out(JSON.stringify(event));
      };

      // 1. The files, up to the head committed when we start.
      const head = dir === null ? null : await readChainHead(dir);
      const fromFiles = new Map<string, string>();
      if (dir !== null && head !== null)
        for await (const event of readChainEvents(dir, null, head)) {
          fromFiles.set(event.shard as string, event.seq as string);
          emit(event);
        }

      // 2. The store, after what the files hold.
      const [{ createStore }, { Metrics }, { createLogger }] = await Promise.all([
        import('../store/create-store.js'),
        import('../metrics.js'),
        import('../log.js'),
      ]);
      const log = createLogger({ level: config.logLevel, destination: process.stderr });
      const store = await createStore(config.store, { metrics: new Metrics(), log });
      const firstFromStore = new Map<string, string>();
      try {
        for (const shard of await store.listAuditShards()) {
          let after = fromFiles.get(shard) ?? head?.high_water?.[shard];
          for (;;) {
            const page = await store.readAuditShard(shard, after, 1000);
            for (const event of page) {
              if (!firstFromStore.has(shard)) firstFromStore.set(shard, event.seq!);
              emit(auditEventJson(shard, event));
            }
            if (page.length < 1000) break;
            after = page.at(-1)!.seq;
          }
        }
      } finally {
        await store.close();
      }

      // 3. Did the exporter move on meanwhile and trim something we had not read yet? Events it
      // exported since our start, in a shard, that come before the first one we read from the store
      // in that shard were in neither place when we looked.
      if (dir !== null) {
        const now = await readChainHead(dir);
        if (now !== null && (head === null || now.lines !== head.lines || now.file !== head.file)) {
          for await (const event of readChainEvents(dir, head, now)) {
            const shard = event.shard as string;
            const first = firstFromStore.get(shard);
            if (first === undefined || compareSeq(event.seq as string, first) < 0) {
              const seen = fromFiles.get(shard);
              if (seen !== undefined && compareSeq(event.seq as string, seen) <= 0) continue;
              ctx.err(
                `linkvault audit export: the exporter exported and trimmed events of shard ${shard} while this ran (from seq ${String(event.seq)}); some may be missing above: run again`,
              );
              return 1;
            }
          }
        }
      }
      return 0;
    },
  },
  {
    name: 'audit fingerprint',
    summary: "print a token's audit label (read from stdin) to find its releases",
    details: [
      'Reads the token from stdin, never from the command line (that would leave it in shell history',
      'and in the process list), e.g. `linkvault audit fingerprint < token.txt`, or type it and press',
      'Ctrl-D. Prints `hmac-sha256/128:<key id>:<mac>`, the label under which the audit trail names this',
      "token under the deployment's audit key (read from the configured store, opened by the key",
      'provider). Search the export files and `linkvault audit list` for it. A trailing newline is',
      'not part of the token.',
    ],
    async run(_input, ctx) {
      const token = await readStdin();
      if (token === '') throw new UsageError('no token on stdin');
      const [{ createAudit }, { Secret }] = await Promise.all([
        import('../links/audit/audit.js'),
        import('../secret.js'),
      ]);
      const label = await withAuditKey(ctx, (key) =>
        createAudit({
          store: {
            appendAudit: () => Promise.reject(new Error('the CLI never appends audit events')),
          },
          hmacKey: key,
          now: Date.now,
        }).fingerprint(new Secret(token)),
      );
      ctx.out(label);
      return 0;
    },
  },
  {
    name: 'audit list',
    summary: 'list retained audit events, filtered (GET /v1/audit; role admin)',
    options: {
      link: { type: 'string', value: 'ID', description: 'only events of this link_id' },
      // Not --service: that option names the calling service (API_OPTIONS), as in `grants list --for`.
      for: { type: 'string', value: 'SERVICE', description: 'only events of this service_id' },
      tenant: { type: 'string', value: 'ID', description: 'only events of this tenant_id' },
      type: { type: 'string', value: 'TYPE', description: 'only this event type' },
      after: { type: 'string', value: 'CURSOR', description: 'the `next` of the previous page' },
      limit: { type: 'string', value: 'N', description: 'events per page (1 to the maximum)' },
      ...JSON_OPTION,
      ...API_OPTIONS,
    },
    details: [
      'Only what the store still holds (LINKVAULT_AUDIT_STORE_MAX_EVENTS); older events are in the',
      'export files (`linkvault audit export`). A tenant-scoped admin must pass --tenant.',
    ],
    async run(input, ctx) {
      const query = new URLSearchParams();
      for (const [option, param] of [
        ['link', 'link_id'],
        ['for', 'service_id'],
        ['tenant', 'tenant_id'],
        ['type', 'type'],
        ['after', 'after'],
        ['limit', 'limit'],
      ] as const) {
        const value = stringOption(input, option);
        if (value !== undefined) query.set(param, value);
      }
      const api = await connectApi(input, ctx);
      const qs = query.toString();
      const answer = (await api.call('GET', `/v1/audit${qs ? `?${qs}` : ''}`)) as {
        events: Row[];
        next: string | null;
      };
      if (input.options.json === true) printJson(ctx, answer);
      else {
        printTable(ctx, EVENT_COLUMNS, answer.events, 'no audit events');
        if (answer.next) ctx.out(`more: --after ${answer.next}`);
      }
      return 0;
    },
  },
];
