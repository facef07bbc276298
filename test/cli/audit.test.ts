import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { loadConfig } from '../../src/config.js';
import { createKeyProvider } from '../../src/keys/create-key-provider.js';
import { createVault } from '../../src/keys/vault.js';
import { auditKeyLoader, createAudit } from '../../src/links/audit/audit.js';
import { createAuditExporter } from '../../src/links/audit/export/audit-exporter.js';
import { Metrics } from '../../src/metrics.js';
import { Secret } from '../../src/secret.js';
import { createStore } from '../../src/store/create-store.js';
import type { Store } from '../../src/store/store.js';
import { BIN, runBin, type CliOutcome } from './run-cli.js';

/**
 * `linkvault audit verify|export|fingerprint` as a process, against a real SQLite store and a real
 * export directory written by the exporter: two files (the first closed by a signed checkpoint), the
 * store trimmed to its retention, and events not yet exported.
 */

const DAY = 86_400_000;
const T0 = Date.parse('2026-03-01T10:00:00Z');
const EVENTS = 60;

/** Runs the CLI with `stdin` written to it (then closed). */
function runWithStdin(
  args: readonly string[],
  stdin: string,
  options: { cwd: string; env: Record<string, string> },
): Promise<CliOutcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: options.cwd,
      env: { PATH: process.env.PATH ?? '', ...options.env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

describe('linkvault audit against a real SQLite store and export directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lv-cli-audit-'));
  const exportDir = join(dir, 'export');
  const env: Record<string, string> = {
    LINKVAULT_STORE: 'sqlite',
    LINKVAULT_SQLITE_PATH: join(dir, 'lv.db'),
    LINKVAULT_LOCAL_KEY_FILE: join(dir, 'master.key'),
    LINKVAULT_AUDIT_EXPORT_DIR: exportDir,
  };
  let store: Store;
  /** Every appended event: its seq, time and the token it released. */
  const appended: { seq: string; atMs: number; token: string; label: string }[] = [];

  before(async () => {
    writeFileSync(join(dir, 'master.key'), randomBytes(32), { mode: 0o600 });
    const config = loadConfig(env, dir);
    const metrics = new Metrics();
    const keys = await createKeyProvider(config.keys, { metrics });
    const vault = createVault({ keys, metrics, maxEntries: 10, maxAgeMs: 60_000 });
    store = await createStore(config.store, { metrics });
    let clock = T0;
    const now = (): number => clock;
    const key = auditKeyLoader({ store, vault, currentKeyId: () => keys.currentKeyId(), now });
    const audit = createAudit({ store, hmacKey: key, now });
    const exporter = createAuditExporter({
      store,
      dir: exportDir,
      key,
      maxStoreEvents: 10,
      log: pino({ level: 'silent' }),
      now,
    });
    const append = async (i: number): Promise<void> => {
      clock = T0 + (i < 30 ? i * 60_000 : DAY + i * 60_000);
      const token = `at-${i}-${randomBytes(12).toString('base64url')}`;
      const seq = await audit.record('token.released', {
        tenant_id: 'acme',
        link_id: `lnk_${i}`,
        service_id: 'crm-sync',
        access_token: new Secret(token),
      });
      const [event] = await store.readAuditShard('main', String(BigInt(seq) - 1n), 1);
      appended.push({ seq, atMs: clock, token, label: event!.data.access_token as string });
    };
    // Day 1: 30 events exported into the first file; day 2: 20 more, so the first file is closed
    // by a checkpoint and a second one opened; then 10 that the exporter has not seen.
    for (let i = 0; i < 30; i++) await append(i);
    assert.equal((await exporter.runOnce()).exported, 30);
    for (let i = 30; i < 50; i++) await append(i);
    assert.equal((await exporter.runOnce()).exported, 20);
    for (let i = 50; i < EVENTS; i++) await append(i);
    // The store keeps its retention of exported events (10) and the 10 unexported ones.
    assert.equal((await store.readAuditShard('main', undefined, 1000)).length, 20);
    assert.equal(readdirSync(exportDir).filter((f) => f.endsWith('.jsonl')).length, 2);
  });

  after(async () => {
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function copyOfExport(name: string): { path: string; files: string[] } {
    const path = join(dir, name);
    cpSync(exportDir, path, { recursive: true });
    const files = readdirSync(path)
      .filter((f) => f.endsWith('.jsonl'))
      .sort();
    return { path, files };
  }

  test('when the export is whole, then verify checks the signatures under the stored audit key and exits 0', async () => {
    const out = await runBin(['audit', 'verify', exportDir], { cwd: dir, env });
    assert.equal(out.stderr, '');
    assert.equal(out.code, 0);
    assert.equal(out.stdout, 'audit chain whole: 2 file(s), 50 event(s), signatures checked\n');
    const json = await runBin(['audit', 'verify', exportDir, '--json'], { cwd: dir, env });
    assert.deepEqual(JSON.parse(json.stdout), {
      ok: true,
      files: 2,
      events: 50,
      problem: null,
      signatures: true,
    });
  });

  test('when one byte of a line is changed, then verify names that file and line and exits 1', async () => {
    const { path, files } = copyOfExport('flipped');
    const file = join(path, files[0]!);
    const lines = readFileSync(file, 'utf8').split('\n');
    lines[6] = lines[6]!.replace('lnk_6"', 'lnk_9"'); // line 7: one byte
    writeFileSync(file, lines.join('\n'));
    for (const extra of [[], ['--no-signatures']]) {
      const out = await runBin(['audit', 'verify', path, ...extra], { cwd: dir, env });
      assert.equal(out.code, 1);
      assert.equal(out.stdout, '');
      assert.match(out.stderr, new RegExp(`^linkvault audit verify: ${files[0]}:7: .*altered`));
    }
  });

  test('when the last line of the newest file is removed, then verify names that file and line and exits 1', async () => {
    const { path, files } = copyOfExport('truncated');
    const file = join(path, files[1]!);
    const lines = readFileSync(file, 'utf8').split('\n').slice(0, -1);
    assert.equal(lines.length, 20);
    writeFileSync(file, lines.slice(0, -1).join('\n') + '\n');
    const out = await runBin(['audit', 'verify', path], { cwd: dir, env });
    assert.equal(out.code, 1);
    assert.match(out.stderr, new RegExp(`^linkvault audit verify: ${files[1]}:20: line missing`));
  });

  test('when only the head signature is forged, then --no-signatures passes and the signed check fails', async () => {
    const { path } = copyOfExport('forged');
    const headFile = join(path, 'audit-head.json');
    const head = JSON.parse(readFileSync(headFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(
      headFile,
      JSON.stringify({ ...head, mac: randomBytes(32).toString('base64url') }) + '\n',
    );
    const unsigned = await runBin(['audit', 'verify', path, '--no-signatures'], { cwd: dir, env });
    assert.equal(unsigned.code, 0);
    assert.match(unsigned.stdout, /signatures not checked/);
    const signed = await runBin(['audit', 'verify', path], { cwd: dir, env });
    assert.equal(signed.code, 1);
    assert.equal(
      signed.stderr,
      'linkvault audit verify: audit-head.json: signature does not match\n',
    );
  });

  test('when verify checks signatures but the store holds no audit key, then it fails instead of passing unchecked', async () => {
    const other = mkdtempSync(join(dir, 'other-'));
    writeFileSync(join(other, 'master.key'), randomBytes(32), { mode: 0o600 });
    const out = await runBin(['audit', 'verify', exportDir], {
      cwd: other,
      env: {
        LINKVAULT_STORE: 'sqlite',
        LINKVAULT_SQLITE_PATH: join(other, 'lv.db'),
        LINKVAULT_LOCAL_KEY_FILE: join(other, 'master.key'),
      },
    });
    assert.equal(out.code, 1);
    assert.equal(out.stdout, '');
    assert.match(out.stderr, /holds no audit key/);
  });

  test('when export runs from the start, then every event comes once, files first, in seq order, in the public shape', async () => {
    const out = await runBin(['audit', 'export', '--since', '2000-01-01T00:00:00Z'], {
      cwd: dir,
      env,
    });
    assert.equal(out.stderr, '');
    assert.equal(out.code, 0);
    const events = out.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      events.map((e) => e.seq),
      appended.map((a) => a.seq),
    );
    for (const [i, e] of events.entries()) {
      assert.equal(e.shard, 'main');
      assert.equal(e.at, new Date(appended[i]!.atMs).toISOString());
      assert.equal(e.type, 'token.released');
      assert.equal(e.link_id, `lnk_${i}`);
      assert.equal('prev' in e, false);
      assert.equal((e.data as Record<string, unknown>).access_token, appended[i]!.label);
      assert.doesNotMatch(JSON.stringify(e), new RegExp(appended[i]!.token));
    }
  });

  test('when export is given --since and --until across both files and the store, then it prints exactly the events in range', async () => {
    // From event 20 (day 1, first file) to before event 55 (the store, not yet exported).
    const since = new Date(appended[20]!.atMs).toISOString();
    const until = new Date(appended[55]!.atMs).toISOString().replace('Z', '+00:00');
    // --dir wins over LINKVAULT_AUDIT_EXPORT_DIR.
    const out = await runBin(
      [
        'audit',
        'export',
        '--since',
        since,
        '--until',
        until,
        '--format',
        'jsonl',
        '--dir',
        exportDir,
      ],
      { cwd: dir, env: { ...env, LINKVAULT_AUDIT_EXPORT_DIR: join(dir, 'nowhere') } },
    );
    assert.equal(out.stderr, '');
    assert.equal(out.code, 0);
    const seqs = out.stdout
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as { seq: string }).seq);
    assert.deepEqual(
      seqs,
      appended.slice(20, 55).map((a) => a.seq),
    );
    assert.equal(new Set(seqs).size, 35);
  });

  test('when export is called wrongly, then it exits 2 and prints nothing on stdout', async () => {
    for (const args of [
      ['audit', 'export'],
      ['audit', 'export', '--since', 'yesterday'],
      ['audit', 'export', '--since', '2026-03-01'],
      ['audit', 'export', '--since', '2026-03-01T00:00:00Z', '--format', 'csv'],
      ['audit', 'export', '--since', '2026-03-02T00:00:00Z', '--until', '2026-03-01T00:00:00Z'],
    ]) {
      const out = await runBin(args, { cwd: dir, env });
      assert.equal(out.code, 2, args.join(' '));
      assert.equal(out.stdout, '');
      assert.match(out.stderr, /^linkvault audit export: --(since|until|format) /, args.join(' '));
    }
  });

  test('when a released token is given on stdin, then fingerprint prints the label its audit record carries', async () => {
    const released = appended[42]!;
    for (const stdin of [released.token, `${released.token}\n`]) {
      const out = await runWithStdin(['audit', 'fingerprint'], stdin, { cwd: dir, env });
      assert.equal(out.stderr, '');
      assert.equal(out.code, 0);
      assert.equal(out.stdout, `${released.label}\n`);
      assert.match(out.stdout, /^hmac-sha256\/128:[A-Za-z0-9_-]{8}:[A-Za-z0-9_-]{22}\n$/);
    }
    // The label is found in the export: the operator's search for a leaked token.
    const exported = readdirSync(exportDir)
      .filter((f) => f.endsWith('.jsonl'))
      .map((f) => readFileSync(join(exportDir, f), 'utf8'))
      .join('');
    assert.equal(exported.split(released.label).length - 1, 1);
    const other = await runWithStdin(['audit', 'fingerprint'], 'not-a-released-token', {
      cwd: dir,
      env,
    });
    assert.equal(other.code, 0);
    assert.ok(!appended.some((a) => `${a.label}\n` === other.stdout));
  });

  test('when fingerprint gets the token as an argument or nothing on stdin, then it refuses (exit 2)', async () => {
    const argv = await runWithStdin(['audit', 'fingerprint', appended[0]!.token], '', {
      cwd: dir,
      env,
    });
    assert.equal(argv.code, 2);
    assert.doesNotMatch(argv.stderr + argv.stdout, /hmac-sha256/);
    const empty = await runWithStdin(['audit', 'fingerprint'], '', { cwd: dir, env });
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /no token on stdin/);
  });
});
