import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, createSecretKey, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  compareSeq,
  openAuditChain,
  verifyAuditChain,
  type ChainEvent,
} from '../../../src/links/audit/export/audit-chain.js';

const dirs: string[] = [];
function freshDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lv-chain-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const key = createSecretKey(randomBytes(32));
const DAY = 24 * 3600 * 1000;

function eventsFor(shard: string, from: number, count: number): ChainEvent[] {
  return Array.from({ length: count }, (_, i) => ({
    shard,
    seq: String(from + i),
    event: { at: '2026-12-04T00:00:00.000Z', type: 'token.released', data: { n: from + i } },
  }));
}

function linesOf(dir: string): { file: string; lines: string[] }[] {
  return readdirSync(dir)
    .filter((n) => n.endsWith('.jsonl'))
    .sort()
    .map((file) => ({
      file,
      lines: readFileSync(join(dir, file), 'utf8').split('\n').slice(0, -1),
    }));
}

function exportedSeqs(dir: string, shard: string): number[] {
  return linesOf(dir)
    .flatMap((f) => f.lines)
    .map((l) => JSON.parse(l) as { shard?: string; seq?: string })
    .filter((o) => o.shard === shard)
    .map((o) => Number(o.seq));
}

describe('audit chain files', () => {
  it('when seqs are compared, then Redis stream ids and integers order numerically', () => {
    assert.equal(compareSeq('9', '10'), -1);
    assert.equal(compareSeq('1700000000000-10', '1700000000000-9'), 1);
    assert.equal(compareSeq('1700000000001-0', '1700000000000-99'), 1);
    assert.equal(compareSeq('5', '5'), 0);
  });

  it('when events span sizes and days, then files rotate, each closed by a checkpoint, and the chain verifies', async () => {
    const dir = freshDir();
    let now = Date.UTC(2026, 11, 4, 23, 0);
    const chain = await openAuditChain({ dir, key, now: () => now, maxFileBytes: 20_000 });
    assert.equal(await chain.append(eventsFor('a', 1, 300)), 300);
    now += DAY;
    assert.equal(await chain.append([...eventsFor('a', 301, 100), ...eventsFor('b', 1, 50)]), 150);
    const files = linesOf(dir);
    assert.ok(files.length >= 3, `rotated by size: ${files.length} files`);
    assert.ok(files.some((f) => f.file.endsWith('-20261204.jsonl')));
    assert.ok(files.some((f) => f.file.endsWith('-20261205.jsonl')));
    for (const f of files.slice(0, -1))
      assert.ok(f.lines.at(-1)!.startsWith('{"checkpoint"'), `${f.file} ends with a checkpoint`);
    const report = await verifyAuditChain(dir, key);
    assert.deepEqual(report, { ok: true, files: files.length, events: 450, problem: null });
    assert.deepEqual(
      exportedSeqs(dir, 'a'),
      Array.from({ length: 400 }, (_, i) => i + 1),
    );
  });

  it('when events at or below the high water come again, then they are not written twice', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now });
    await chain.append(eventsFor('s', 1, 10));
    assert.equal(await chain.append(eventsFor('s', 5, 10)), 4);
    const again = await openAuditChain({ dir, key, now: Date.now });
    assert.equal(again.highWater().get('s'), '14');
    assert.equal(await again.append(eventsFor('s', 1, 20)), 6);
    assert.deepEqual(
      exportedSeqs(dir, 's'),
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    assert.equal((await verifyAuditChain(dir, key)).ok, true);
  });

  it('when one byte of a line is changed, then verify names that file and line', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now, maxFileBytes: 5_000 });
    await chain.append(eventsFor('a', 1, 100));
    const [first] = linesOf(dir);
    const path = join(dir, first!.file);
    const lines = first!.lines;
    lines[6] = lines[6]!.replace('"n":7', '"n":8');
    writeFileSync(path, lines.join('\n') + '\n');
    const report = await verifyAuditChain(dir, key);
    assert.equal(report.ok, false);
    assert.deepEqual(
      { file: report.problem!.file, line: report.problem!.line },
      { file: first!.file, line: 7 },
    );
  });

  it('when the last line of the newest file is removed, then verify names the missing line', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now });
    await chain.append(eventsFor('a', 1, 30));
    const [only] = linesOf(dir);
    writeFileSync(join(dir, only!.file), only!.lines.slice(0, -1).join('\n') + '\n');
    const report = await verifyAuditChain(dir, key);
    assert.equal(report.ok, false);
    assert.deepEqual(
      { file: report.problem!.file, line: report.problem!.line },
      { file: only!.file, line: 30 },
    );
    assert.match(report.problem!.reason, /missing/);
  });

  it('when a closed file loses its checkpoint or a whole file goes, then verify fails there', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now, maxFileBytes: 3_000 });
    await chain.append(eventsFor('a', 1, 120));
    const files = linesOf(dir);
    assert.ok(files.length >= 3);
    const second = files[1]!;
    const copy = readFileSync(join(dir, second.file), 'utf8');
    writeFileSync(join(dir, second.file), second.lines.slice(0, -1).join('\n') + '\n');
    const cut = await verifyAuditChain(dir, key);
    assert.equal(cut.problem?.file, second.file);
    assert.match(cut.problem!.reason, /checkpoint/);
    writeFileSync(join(dir, second.file), copy);
    assert.equal((await verifyAuditChain(dir, key)).ok, true);
    rmSync(join(dir, second.file));
    const gone = await verifyAuditChain(dir, key);
    assert.match(gone.problem!.reason, /missing/);
  });

  it('when the head is signed with another key, then verify and the writer both refuse it', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now });
    await chain.append(eventsFor('a', 1, 3));
    const other = createSecretKey(randomBytes(32));
    assert.match((await verifyAuditChain(dir, other)).problem!.reason, /signature/);
    assert.equal((await verifyAuditChain(dir, null)).ok, true, 'the hash chain alone is whole');
    await assert.rejects(openAuditChain({ dir, key: other, now: Date.now }), /signature/);
  });

  /**
   * After a crash left an uncommitted batch: the chain reopens at `highWater` (the last committed
   * seq of shard a), the store resends the 5 events after it, and the export holds 1..highWater+5
   * once each, verifiably.
   */
  async function resumesWhole(
    dir: string,
    options: { maxFileBytes?: number },
    highWater: number,
  ): Promise<void> {
    const reopened = await openAuditChain({ dir, key, now: Date.now, ...options });
    assert.equal(reopened.highWater().get('a'), String(highWater));
    await reopened.append(eventsFor('a', highWater + 1, 5));
    assert.deepEqual(
      exportedSeqs(dir, 'a'),
      Array.from({ length: highWater + 5 }, (_, i) => i + 1),
    );
    assert.equal((await verifyAuditChain(dir, key)).ok, true);
  }

  it('when a batch was written but its head never was, then reopening cuts it off and the store resends it once', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now });
    await chain.append(eventsFor('a', 1, 10));
    const [only] = linesOf(dir);
    // What a crash between the file's fsync and the head's rename leaves behind.
    appendFileSync(join(dir, only!.file), '{"shard":"a","seq":"11","prev":"x"}\n{"shard":"a","se');
    assert.equal((await verifyAuditChain(dir, key)).ok, false);
    await resumesWhole(dir, {}, 10);
  });

  it('when events are staged past the write size and never committed, then the marks stay at the last commit and reopening cuts the staged lines off', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now });
    await chain.append(eventsFor('a', 1, 10));
    const committedBytes = readFileSync(join(dir, linesOf(dir)[0]!.file)).length;
    // ~1.6 MB of lines: the first megabyte is written to the file without a head.
    const big = eventsFor('a', 11, 4000).map((e) => ({
      ...e,
      event: { ...e.event, pad: 'x'.repeat(400) },
    }));
    assert.equal(await chain.stage(big), 4000);
    assert.equal(
      chain.highWater().get('a'),
      '10',
      'staged is not exported: nothing may be trimmed',
    );
    assert.ok(
      readFileSync(join(dir, linesOf(dir)[0]!.file)).length > committedBytes,
      'staged lines reached the file',
    );
    assert.equal(await chain.stage(eventsFor('a', 11, 5)), 0, 'staged seqs are not staged twice');
    // The process dies here: the next open finds lines after the head.
    await resumesWhole(dir, {}, 10);
  });

  it('when staged events are committed, then the marks move and the chain verifies', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now });
    assert.equal(await chain.stage(eventsFor('a', 1, 300)), 300);
    assert.equal(await chain.stage(eventsFor('b', 1, 20)), 20);
    assert.equal(chain.highWater().get('a'), undefined);
    await chain.commit();
    assert.equal(chain.highWater().get('a'), '300');
    assert.equal(chain.highWater().get('b'), '20');
    await chain.commit(); // nothing staged: nothing to do
    const report = await verifyAuditChain(dir, key);
    assert.equal(report.ok, true, JSON.stringify(report.problem));
    assert.equal(report.events, 320);
  });

  it('when 2,000 shards have marks and files have rotated, then the head carries no marks, and a reopened chain resumes every shard from the checkpoint and the open file', async () => {
    const dir = freshDir();
    const options = { dir, key, now: Date.now, maxFileBytes: 20_000 };
    const chain = await openAuditChain(options);
    const shards = Array.from({ length: 2000 }, (_, i) => `t:tenant-${i}`);
    // Two events per shard, in 40 batches of 100 (each ~120 bytes: a file rotates every ~160 lines).
    for (let i = 0; i < shards.length; i += 100)
      await chain.append(shards.slice(i, i + 100).flatMap((s) => eventsFor(s, 1, 2)));
    // The open file's last line holds the word a checkpoint line starts with, in its data.
    await chain.append([
      { shard: 't:tenant-7', seq: '3', event: { type: 'x', data: { checkpoint: 'checkpoint' } } },
    ]);
    const head = readFileSync(join(dir, 'audit-head.json'), 'utf8');
    assert.ok(head.length < 400, `the head is ${head.length} bytes, whatever the shards`);
    assert.equal((JSON.parse(head) as { high_water?: unknown }).high_water, undefined);

    const reopened = await openAuditChain(options);
    assert.equal(reopened.highWater().size, 2000);
    for (const [i, s] of shards.entries())
      assert.equal(reopened.highWater().get(s), i === 7 ? '3' : '2', s);
    // Nothing already exported is written again, and what is new is.
    assert.equal(await reopened.append(shards.flatMap((s) => eventsFor(s, 1, 3))), 1999);
    const report = await verifyAuditChain(dir, key);
    assert.equal(report.ok, true, JSON.stringify(report.problem));
    assert.equal(report.events, 2000 * 3);
  });

  it('when the head is of the first format (every mark, signed as such), then the writer resumes from it and writes the new format', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now });
    await chain.append([...eventsFor('a', 1, 10), ...eventsFor('b', 1, 4)]);
    // What a writer before 2026-12-04 left: the same head with every shard's mark, signed under
    // the chain's first context (pinned here on purpose: it is a stored format).
    const { mac: _mac, ...body } = JSON.parse(
      readFileSync(join(dir, 'audit-head.json'), 'utf8'),
    ) as Record<string, unknown>;
    const old = { ...body, high_water: { a: '10', b: '4' } };
    const oldMac = createHmac('sha256', key)
      .update('linkvault-audit-chain-v1\n' + JSON.stringify(old))
      .digest('base64url');
    writeFileSync(join(dir, 'audit-head.json'), JSON.stringify({ ...old, mac: oldMac }) + '\n');
    assert.equal((await verifyAuditChain(dir, key)).ok, true);
    const reopened = await openAuditChain({ dir, key, now: Date.now });
    assert.deepEqual(Object.fromEntries(reopened.highWater()), { a: '10', b: '4' });
    assert.equal(await reopened.append(eventsFor('a', 1, 12)), 2);
    assert.equal(
      (JSON.parse(readFileSync(join(dir, 'audit-head.json'), 'utf8')) as { high_water?: unknown })
        .high_water,
      undefined,
    );
    assert.equal((await verifyAuditChain(dir, key)).ok, true);
  });

  it('when shard names look like numbers, then each checkpoint line is exactly what JSON.stringify writes of it, it verifies, and a reopened chain resumes from it', async () => {
    const dir = freshDir();
    const options = { dir, key, now: Date.now, maxFileBytes: 1_000 };
    const chain = await openAuditChain(options);
    // An object orders array-index names first and ascending: '10' after 'b' in the map, before it in JSON.
    for (const shard of ['b', '10', '9', 'global', '0']) await chain.append(eventsFor(shard, 1, 8));
    const checkpoints = linesOf(dir)
      .flatMap((f) => f.lines)
      .filter((l) => l.startsWith('{"checkpoint":'));
    assert.ok(checkpoints.length >= 2, `${checkpoints.length} files closed`);
    for (const line of checkpoints) assert.equal(JSON.stringify(JSON.parse(line)), line);
    const report = await verifyAuditChain(dir, key);
    assert.equal(report.ok, true, JSON.stringify(report.problem));
    const reopened = await openAuditChain(options);
    assert.deepEqual(Object.fromEntries(reopened.highWater()), {
      0: '8',
      9: '8',
      10: '8',
      b: '8',
      global: '8',
    });
  });

  it('when the checkpoint the head builds on was edited, then the writer refuses to open', async () => {
    const dir = freshDir();
    const options = { dir, key, now: Date.now, maxFileBytes: 2_000 };
    const chain = await openAuditChain(options);
    await chain.append(eventsFor('a', 1, 20)); // past maxFileBytes: a file closes on the way
    const first = linesOf(dir)[0]!;
    // The checkpoint says shard a was exported through 1 only: resuming on it would export again.
    const tampered = first.lines.map((l) =>
      l.includes('"checkpoint"') ? l.replace(/"a":"\d+"/, '"a":"1"') : l,
    );
    assert.notDeepEqual(tampered, first.lines);
    writeFileSync(join(dir, first.file), tampered.join('\n') + '\n');
    await assert.rejects(openAuditChain(options), /checkpoint's signature does not match/);
  });

  it('when 2,000 events are staged, then the event loop turns between every 256 lines', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now });
    let turns = 0;
    let ticking = true;
    const tick = (): void => {
      turns++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const before = turns;
    await chain.stage(eventsFor('a', 1, 2000));
    ticking = false;
    // 2,000 lines in chunks of 256 yield 7 times; a stage that made every line in one turn of the
    // loop, as append did before, lets a replica's releases wait behind all of them.
    assert.ok(turns - before >= 7, `the loop turned ${turns - before} times`);
    await chain.commit();
  });

  it('when the process died after opening the next file but before writing its head, then reopening removes that file and the store resends its events once', async () => {
    const dir = freshDir();
    const chain = await openAuditChain({ dir, key, now: Date.now, maxFileBytes: 2_000 });
    await chain.append(eventsFor('a', 1, 20)); // past maxFileBytes: the next batch opens a new file
    const headBefore = readFileSync(join(dir, 'audit-head.json'));
    const filesBefore = new Set(linesOf(dir).map((l) => l.file)).size;
    await chain.append(eventsFor('a', 21, 5)); // closes the file (checkpoint), opens the next one
    assert.ok(new Set(linesOf(dir).map((l) => l.file)).size > filesBefore);
    // What a crash between the new file's fsync and the head's rename leaves behind: the head as it
    // was before the batch, and a newer file it does not name.
    writeFileSync(join(dir, 'audit-head.json'), headBefore);
    await resumesWhole(dir, { maxFileBytes: 2_000 }, 20);
  });

  it('when the writing process is SIGKILLed mid-file, then resuming loses and duplicates nothing', async () => {
    const dir = freshDir();
    const keyHex = randomBytes(32).toString('hex');
    const childKey = createSecretKey(Buffer.from(keyHex, 'hex'));
    const script = `
      import { createSecretKey } from 'node:crypto';
      import { openAuditChain } from ${JSON.stringify(new URL('../../../src/links/audit/export/audit-chain.ts', import.meta.url).href)};
      const chain = await openAuditChain({ dir: process.argv[1], key: createSecretKey(Buffer.from(process.argv[2], 'hex')), now: Date.now, maxFileBytes: 50_000 });
      let next = Number(chain.highWater().get('a') ?? 0) + 1;
      process.stdout.write('ready\\n');
      for (;;) {
        const batch = Array.from({ length: 7 }, (_, i) => ({ shard: 'a', seq: String(next + i), event: { type: 't', data: { pad: 'x'.repeat(200) } } }));
        await chain.append(batch);
        next += 7;
      }`;
    for (let round = 0; round < 3; round++) {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script, dir, keyHex],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 150 + round * 50));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    const resumed = await openAuditChain({
      dir,
      key: childKey,
      now: Date.now,
      maxFileBytes: 50_000,
    });
    const high = Number(resumed.highWater().get('a'));
    assert.ok(high > 7, `the children wrote something (${high})`);
    const seqs = exportedSeqs(dir, 'a');
    assert.deepEqual(
      seqs,
      Array.from({ length: high }, (_, i) => i + 1),
      'contiguous, no duplicates',
    );
    const report = await verifyAuditChain(dir, childKey);
    assert.equal(report.ok, true, JSON.stringify(report.problem));
    assert.equal(report.events, high);
  });
});
