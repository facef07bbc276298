import crypto, { createHash, createHmac, timingSafeEqual, type KeyObject } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { mkdir, open, readdir, readFile, rename, stat, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The exported audit trail: hash-chained JSON-lines files in one directory.
 *
 * Layout. Files are named `audit-<index>-<YYYYMMDD>.jsonl`, the index counting up from 1 with no gap,
 * so name order is chain order. Every line is one JSON object with `prev`, the SHA-256 (hex) of the
 * exact bytes of the line before it (across files; the very first line has 64 zeros). An event line
 * carries `shard` and `seq` (the store's sequence id within that shard, strictly increasing per
 * shard) beside the event's own fields. A file is closed by a checkpoint line (`checkpoint`: the
 * file's name, its event count, the per-shard high-water marks) with `mac`, an HMAC-SHA256 under the
 * deployment's audit key; files rotate by size and by UTC day. `audit-head.json`, replaced atomically
 * at every commit, signs the open file's committed length, line count and last hash, so a line
 * removed from the end of the newest file is caught as surely as one edited in the middle. It carries
 * no high-water marks: with a shard per tenant, every commit would write, sign and fsync a mark per
 * tenant. A head of the first format (signed under MAC_CONTEXT, before 2026-12-04) carries every
 * shard's mark and is read as well; a head of this one is signed under HEAD_MAC_CONTEXT, so that an
 * older writer refuses it rather than resume without marks and export everything again.
 *
 * Exactly once. A batch is appended, fsynced, then the head moves; only then may the caller trim the
 * store. On open, bytes after the head's committed length (a batch that crashed before its head was
 * written) are cut off and those events are exported again from the store, which still has them;
 * the newest checkpoint's marks, then the committed lines of the open file after it, say where each
 * shard resumes, so nothing is written twice.
 */

export const GENESIS_HASH = '0'.repeat(64);
const HEAD_FILE = 'audit-head.json';
const FILE_PATTERN = /^audit-(\d{8})-(\d{8})\.jsonl$/;
const MAC_CONTEXT = 'linkvault-audit-chain-v1\n';
/** Heads without marks (see above); checkpoints keep MAC_CONTEXT. */
const HEAD_MAC_CONTEXT = 'linkvault-audit-head-v2\n';

/** One event to export: where it came from (shard, seq) and its public shape (AuditEvent JSON). */
export interface ChainEvent {
  readonly shard: string;
  readonly seq: string;
  readonly event: Readonly<Record<string, unknown>>;
}

export interface AuditChainOptions {
  readonly dir: string;
  /** The audit HMAC key (the same sealed key that labels tokens in audit events). */
  readonly key: KeyObject;
  readonly now: () => number;
  /** A file is closed once it reaches this size (default 64 MiB). */
  readonly maxFileBytes?: number;
}

export interface AuditChainWriter {
  /**
   * Per shard, the last seq that is durably exported (committed): the store resumes after it and
   * may trim up to it. Staged events are not in it until `commit`.
   */
  highWater(): ReadonlyMap<string, string>;
  /** Stages the events, then commits: durable when it resolves. Returns how many were new. */
  append(events: readonly ChainEvent[]): Promise<number>;
  /**
   * Makes the events' lines (oldest first per shard; seqs at or before the shard's last staged one
   * are skipped) and queues them for the open file, yielding to the event loop every few hundred.
   * Not durable until `commit`: a process that dies first leaves bytes after the head, which the next
   * open cuts off, and the store still holds the events. Returns how many were new.
   */
  stage(events: readonly ChainEvent[]): Promise<number>;
  /** Writes what is staged, fsyncs it, and moves the signed head over it. */
  commit(): Promise<void>;
}

interface Head {
  readonly file: string;
  readonly bytes: number;
  readonly lines: number;
  readonly last_hash: string;
  /** Every shard's mark: heads of the first format only. */
  readonly high_water?: Record<string, string>;
  readonly updated_at: string;
  readonly mac?: string;
}

/** A seq of the two plain forms, each part small enough for a double: compared without BigInt. */
const PLAIN_SEQ = /^(\d{1,15})(?:-(\d{1,15}))?(?:\/|$)/;

/** Orders two sequence ids of one shard: `123` (SQLite) or `1700000000000-4[/tenant]` (Redis stream ids). */
export function compareSeq(a: string, b: string): number {
  // The exporter compares every event it writes: the plain forms take no allocation but the match.
  const ma = PLAIN_SEQ.exec(a);
  const mb = ma && PLAIN_SEQ.exec(b);
  if (ma && mb) {
    const x = Number(ma[1]) - Number(mb[1]);
    if (x !== 0) return x < 0 ? -1 : 1;
    const y = Number(ma[2] ?? 0) - Number(mb[2] ?? 0);
    return y < 0 ? -1 : y > 0 ? 1 : 0;
  }
  // A Redis tenant shard's seq carries its tenant after a `/`; within one shard it is the same.
  const pa = a
    .split('/')[0]!
    .split('-')
    .map((p) => BigInt(p));
  const pb = b
    .split('/')[0]!
    .split('-')
    .map((p) => BigInt(p));
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0n;
    const y = pb[i] ?? 0n;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** crypto.hash (Node ≥ 20.12): one call, half the cost of a Hash object per line. */
const oneShotHash = (crypto as { hash?: typeof crypto.hash }).hash;

export function hashLine(line: string): string {
  return oneShotHash !== undefined
    ? oneShotHash('sha256', line, 'hex')
    : createHash('sha256').update(line, 'utf8').digest('hex');
}

function macOf(
  key: KeyObject,
  body: Readonly<Record<string, unknown>>,
  context = MAC_CONTEXT,
): string {
  return createHmac('sha256', key)
    .update(context + JSON.stringify(body))
    .digest('base64url');
}

function macMatches(
  key: KeyObject,
  body: Readonly<Record<string, unknown>>,
  mac: unknown,
  context = MAC_CONTEXT,
): boolean {
  if (typeof mac !== 'string') return false;
  const want = Buffer.from(macOf(key, body, context));
  const got = Buffer.from(mac);
  return want.length === got.length && timingSafeEqual(want, got);
}

/** A head of either format: with marks under MAC_CONTEXT, without under HEAD_MAC_CONTEXT. */
function headMacMatches(
  key: KeyObject,
  body: Readonly<Record<string, unknown>>,
  mac: unknown,
): boolean {
  return 'high_water' in body
    ? macMatches(key, body, mac, MAC_CONTEXT)
    : macMatches(key, body, mac, HEAD_MAC_CONTEXT);
}

const DAY_MS = 86_400_000;
let dayStartMs = NaN;
let dayText = '';

/** The UTC day of `ms` as YYYYMMDD (the last one kept: the exporter asks for every event it writes). */
function dayOf(ms: number): string {
  if (!(ms >= dayStartMs && ms < dayStartMs + DAY_MS)) {
    dayStartMs = ms - (((ms % DAY_MS) + DAY_MS) % DAY_MS);
    dayText = new Date(ms).toISOString().slice(0, 10).replaceAll('-', '');
  }
  return dayText;
}

function fileName(index: number, day: string): string {
  return `audit-${String(index).padStart(8, '0')}-${day}.jsonl`;
}

/** The chain's files in order, with their index; a name that only looks like one is ignored. */
export async function listChainFiles(
  dir: string,
): Promise<{ name: string; index: number; day: string }[]> {
  const names = await readdir(dir);
  return names
    .map((name) => ({ name, m: FILE_PATTERN.exec(name) }))
    .filter((x): x is { name: string; m: RegExpExecArray } => x.m !== null)
    .map(({ name, m }) => ({ name, index: Number(m[1]), day: m[2]! }))
    .sort((a, b) => a.index - b.index);
}

/**
 * Replaces `path` with `text` durably (a temporary file, fsynced, renamed over it, the directory
 * fsynced). Asynchronous: the exporter runs in a replica that is serving releases, and an fsync on
 * the main thread stops every request for as long as the disk takes.
 */
async function writeAtomically(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  const handle = await open(tmp, 'w', 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Lines made between two turns of the event loop (≈ 1 ms of a replica's time). */
const EVENTS_PER_TURN = 256;
/** Staged bytes held before they are written to the file (without an fsync: commit does that). */
const WRITE_BYTES = 1024 * 1024;

/** Whether `name` is an array index, which a JS object orders first and ascending whatever the insertion order. */
function isArrayIndex(name: string): boolean {
  return /^(?:0|[1-9]\d{0,9})$/.test(name) && Number(name) < 4_294_967_295;
}

/**
 * `marks` as JSON.stringify(Object.fromEntries(marks)) writes them (array indexes first, ascending,
 * then insertion order: the order a reader's JSON.parse gives back, which the signature is checked
 * over), in slices of 4,096 with a turn of the loop after each.
 */
async function marksJson(marks: ReadonlyMap<string, string>): Promise<string[]> {
  const indexes = [...marks.keys()].filter(isArrayIndex).sort((a, b) => Number(a) - Number(b));
  const names =
    indexes.length === 0
      ? marks.keys()
      : [...indexes, ...[...marks.keys()].filter((k) => !isArrayIndex(k))];
  const parts: string[] = [];
  let part = '{';
  let n = 0;
  for (const name of names) {
    part += `${n === 0 ? '' : ','}${JSON.stringify(name)}:${JSON.stringify(marks.get(name))}`;
    if (++n % 4096 === 0) {
      parts.push(part);
      part = '';
      await nextTurn();
    }
  }
  parts.push(part + '}');
  return parts;
}

/**
 * The high-water marks of the checkpoint that closes the file at `path` (its last line), checked
 * against its signature. The line is read from the end of the file: a closed file is up to its
 * rotation size, and its checkpoint a mark per shard.
 */
async function checkpointMarks(path: string, key: KeyObject): Promise<Record<string, string>> {
  const handle = await open(path, 'r');
  let tail = Buffer.alloc(0);
  try {
    const size = (await handle.stat()).size;
    // Back from the end until the line before the last one ends (or the file starts). Bytes, not
    // text: a newline byte is never inside a multi-byte character, a chunk boundary may be.
    for (let end = size, chunk = 64 * 1024; end > 0; chunk *= 2) {
      const start = Math.max(0, end - chunk);
      const buffer = Buffer.alloc(end - start);
      await handle.read(buffer, 0, buffer.length, start);
      tail = Buffer.concat([buffer, tail]);
      end = start;
      if (tail.length >= 2 && tail.lastIndexOf(0x0a, tail.length - 2) >= 0) break;
    }
  } finally {
    await handle.close();
  }
  const last = tail
    .subarray(tail.length >= 2 ? tail.lastIndexOf(0x0a, tail.length - 2) + 1 : 0)
    .toString('utf8')
    .trimEnd();
  let parsed: { checkpoint?: { high_water?: unknown }; mac?: unknown };
  try {
    parsed = JSON.parse(last) as typeof parsed;
  } catch {
    throw new Error(`${path}: its last line is not a checkpoint`);
  }
  const { mac, ...body } = parsed;
  const marks = parsed.checkpoint?.high_water;
  if (!macMatches(key, body, mac) || typeof marks !== 'object' || marks === null)
    throw new Error(
      `${path}: its checkpoint's signature does not match (edited, or another audit key)`,
    );
  return marks as Record<string, string>;
}

/**
 * Opens the chain in `dir` for appending (creating the directory with mode 0700), recovering from a
 * crash: an uncommitted tail after the head is cut off. Rejects when the head's signature is wrong
 * (the chain was edited, or the audit key changed): an exporter must not extend a chain it cannot vouch for.
 */
export async function openAuditChain(options: AuditChainOptions): Promise<AuditChainWriter> {
  const { dir, key, now } = options;
  const maxFileBytes = options.maxFileBytes ?? 64 * 1024 * 1024;
  await mkdir(dir, { recursive: true, mode: 0o700 });

  let head: Head | null = null;
  try {
    const raw = JSON.parse(await readFile(join(dir, HEAD_FILE), 'utf8')) as Head;
    const { mac, ...body } = raw;
    if (!headMacMatches(key, body, mac))
      throw new Error(
        `${join(dir, HEAD_FILE)}: signature does not match (edited, or another audit key)`,
      );
    head = raw;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const files = await listChainFiles(dir);
  if (!head && files.length > 0)
    throw new Error(`${dir}: chain files exist but ${HEAD_FILE} is missing`);

  let current = files.at(-1) ?? null;
  let bytes = 0;
  let lines = 0;
  let lastHash = GENESIS_HASH;
  let events = 0;
  /** Every shard's last staged seq (committed ones and those staged since). */
  const highWater = new Map<string, string>();

  if (head && current && head.file !== current.name) {
    const named = files.findIndex((f) => f.name === head.file);
    if (named < 0) throw new Error(`${dir}: ${HEAD_FILE} names ${head.file}, which is missing`);
    // Files after the one the head names were opened by a batch whose head was never written (the
    // process died between the two): uncommitted, like a tail after the head, so they go; the store
    // still holds their events above the head's high water and sends them again.
    for (const later of files.slice(named + 1)) await unlink(join(dir, later.name));
    await fsyncDir(dir);
    current = files[named]!;
  }
  if (head && current) {
    const size = (await stat(join(dir, current.name))).size;
    if (size < head.bytes)
      throw new Error(`${join(dir, current.name)}: shorter than its committed length (truncated)`);
    if (size > head.bytes) await truncate(join(dir, current.name), head.bytes); // a batch that never committed
    bytes = head.bytes;
    lines = head.lines;
    lastHash = head.last_hash;
    const text = await readFile(join(dir, current.name), 'utf8');
    const rows = text.split('\n');
    // A checkpoint line starts so (JSON.stringify of { checkpoint, prev, mac }); an event line
    // starts with its shard, and may hold the word "checkpoint" anywhere in its data.
    const isCheckpoint = (row: string): boolean => row.startsWith('{"checkpoint":');
    const closed = text.endsWith('\n') && isCheckpoint(rows.at(-2) ?? '');
    // Where each shard resumes: the newest checkpoint's marks (this file's when it is closed, else
    // the file's before it), a first-format head's, then the lines of the open file.
    const checkpointFile = closed ? current : files[files.indexOf(current) - 1];
    if (checkpointFile !== undefined)
      for (const [shard, seq] of Object.entries(
        await checkpointMarks(join(dir, checkpointFile.name), key),
      ))
        highWater.set(shard, seq);
    for (const [shard, seq] of Object.entries(head.high_water ?? {})) highWater.set(shard, seq);
    for (const [n, row] of rows.entries()) {
      if (!row || isCheckpoint(row)) continue;
      events++;
      const line = JSON.parse(row) as { shard?: unknown; seq?: unknown };
      if (typeof line.shard === 'string' && typeof line.seq === 'string')
        highWater.set(line.shard, line.seq);
      // Opening reads the whole open file (up to its rotation size): let the loop turn.
      if (n % 4096 === 4095) await nextTurn();
    }
    if (closed) {
      // The newest file is closed: the next batch opens the next one.
      current = { name: '', index: current.index, day: current.day };
    }
  }

  async function writeHead(fileNameNow: string): Promise<void> {
    const body: Omit<Head, 'mac'> = {
      file: fileNameNow,
      bytes,
      lines,
      last_hash: lastHash,
      updated_at: new Date(now()).toISOString(),
    };
    await writeAtomically(
      join(dir, HEAD_FILE),
      JSON.stringify({ ...body, mac: macOf(key, body, HEAD_MAC_CONTEXT) }) + '\n',
    );
    await fsyncDir(dir);
  }

  /** Appends `data` to the file `name`, all of it (writeFile loops over short writes), fsynced or not. */
  async function appendBytes(name: string, data: Buffer, sync: boolean): Promise<void> {
    const handle = await open(join(dir, name), 'a', 0o600);
    try {
      await handle.writeFile(data);
      if (sync) await handle.sync();
    } finally {
      await handle.close();
    }
  }

  /**
   * Staged lines not yet written to the open file, as bytes: a pass stages thousands of lines, and
   * kept as strings they would be copied by every young-generation collection until written.
   */
  let unwritten: Buffer[] = [];
  let unwrittenBytes = 0;
  /**
   * Lines made since the event loop last turned, over stage calls: a store that answers without
   * I/O (SQLite) gives the loop no turn between the pages it is read in.
   */
  let sinceTurn = 0;
  /** The marks the head commits (what highWater() answers); `highWater` runs ahead while staging. */
  const committedMarks = new Map(highWater);
  /** The marks staged since the last commit (none: nothing to commit): what a commit moves into committedMarks. */
  const stagedMarks = new Map<string, string>();

  function markCommitted(): void {
    for (const [shard, seq] of stagedMarks) committedMarks.set(shard, seq);
    stagedMarks.clear();
  }

  function holdUnwritten(text: string): void {
    if (text.length === 0) return;
    const chunk = Buffer.from(text, 'utf8');
    unwritten.push(chunk);
    unwrittenBytes += chunk.length;
  }

  async function writeUnwritten(sync: boolean): Promise<void> {
    if (!current?.name) return;
    const chunks = unwritten;
    unwritten = [];
    unwrittenBytes = 0;
    const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    if (data.length > 0 || sync) await appendBytes(current.name, data, sync);
  }

  async function commit(): Promise<void> {
    if (stagedMarks.size === 0 || !current?.name) return;
    await writeUnwritten(true);
    await writeHead(current.name);
    markCommitted();
  }

  function lineOf(body: Record<string, unknown>): string {
    body.prev = lastHash;
    const line = JSON.stringify(body);
    lastHash = hashLine(line);
    lines++;
    bytes += Buffer.byteLength(line) + 1;
    return line + '\n';
  }

  /**
   * Closes `name` with its checkpoint line. The line holds a mark per shard, so it is made, signed and
   * hashed a slice at a time with turns of the loop between: made at once with JSON.stringify, 100,000
   * marks held the loop ~190 ms. The text is exactly JSON.stringify's of { checkpoint, prev, mac }.
   */
  async function closeFile(name: string): Promise<void> {
    const chunks = [
      `{"checkpoint":{"file":${JSON.stringify(name)},"events":${events},"high_water":`,
      ...(await marksJson(highWater)),
      `,"closed_at":${JSON.stringify(new Date(now()).toISOString())}},"prev":${JSON.stringify(lastHash)}}`,
    ];
    const hmac = createHmac('sha256', key).update(MAC_CONTEXT);
    for (const chunk of chunks) {
      hmac.update(chunk);
      await nextTurn();
    }
    // The body's closing brace gives way to the signature.
    chunks[chunks.length - 1] =
      chunks.at(-1)!.slice(0, -1) + `,"mac":"${hmac.digest('base64url')}"}`;
    const hash = createHash('sha256');
    const bytesOf: Buffer[] = [];
    for (const chunk of chunks) {
      const b = Buffer.from(chunk, 'utf8');
      hash.update(b);
      bytesOf.push(b);
      await nextTurn();
    }
    lastHash = hash.digest('hex');
    lines++;
    bytesOf.push(Buffer.from('\n'));
    const line = Buffer.concat(bytesOf);
    bytes += line.length;
    await appendBytes(name, line, true);
    await writeHead(name);
    markCommitted();
  }

  async function stage(batch: readonly ChainEvent[]): Promise<number> {
    let written = 0;
    let text = '';
    for (const item of batch) {
      if (++sinceTurn > EVENTS_PER_TURN) {
        // Let the releases waiting on this replica's event loop run (only this pass appends).
        sinceTurn = 0;
        holdUnwritten(text);
        text = '';
        if (unwrittenBytes >= WRITE_BYTES) await writeUnwritten(false);
        await nextTurn();
      }
      const last = highWater.get(item.shard);
      if (last !== undefined && compareSeq(item.seq, last) <= 0) continue; // already exported
      const day = dayOf(now());
      if (current?.name && (current.day !== day || bytes >= maxFileBytes)) {
        holdUnwritten(text);
        text = '';
        await commit();
        await closeFile(current.name);
        current = { name: '', index: current.index, day: current.day };
      }
      if (!current?.name) {
        const index = (current?.index ?? 0) + 1;
        current = { name: fileName(index, day), index, day };
        bytes = 0;
        lines = 0;
        events = 0;
      }
      // Key order as always: shard, seq, the event's own members, prev (lineOf sets it last).
      text += lineOf({ shard: item.shard, seq: item.seq, ...item.event });
      events++;
      highWater.set(item.shard, item.seq);
      stagedMarks.set(item.shard, item.seq);
      written++;
    }
    holdUnwritten(text);
    if (unwrittenBytes >= WRITE_BYTES) await writeUnwritten(false);
    return written;
  }

  async function append(batch: readonly ChainEvent[]): Promise<number> {
    const written = await stage(batch);
    await commit();
    return written;
  }

  // A live view, which each commit moves (no copy of every tenant's mark per call).
  return { highWater: () => committedMarks, append, stage, commit };
}

export interface ChainProblem {
  readonly file: string;
  /** 1-based line number in `file`, or 0 for the file as a whole. */
  readonly line: number;
  readonly reason: string;
}

export interface ChainReport {
  readonly ok: boolean;
  readonly files: number;
  readonly events: number;
  /** The first problem found, in chain order; null when the chain is whole. */
  readonly problem: ChainProblem | null;
}

/**
 * Checks every file, line, hash link, per-shard order, checkpoint and the head. With `key` null only
 * the hash chain is checked (anyone can recompute it); with the key, every signature too.
 */
export async function verifyAuditChain(dir: string, key: KeyObject | null): Promise<ChainReport> {
  let files: Awaited<ReturnType<typeof listChainFiles>>;
  try {
    files = await listChainFiles(dir);
  } catch (err) {
    return {
      ok: false,
      files: 0,
      events: 0,
      problem: { file: dir, line: 0, reason: `cannot read: ${(err as Error).message}` },
    };
  }
  let events = 0;
  const fail = (file: string, line: number, reason: string): ChainReport => ({
    ok: false,
    files: files.length,
    events,
    problem: { file, line, reason },
  });

  let prev = GENESIS_HASH;
  const highWater = new Map<string, string>();
  let lastLines = 0;
  let lastBytes = 0;
  for (const [i, f] of files.entries()) {
    if (f.index !== i + 1) return fail(fileName(i + 1, '*'), 0, 'file missing from the chain');
    const text = await readFile(join(dir, f.name), 'utf8');
    if (text.length > 0 && !text.endsWith('\n'))
      return fail(f.name, text.split('\n').length, 'last line is incomplete');
    const rows = text.split('\n').slice(0, -1);
    let fileEvents = 0;
    let closed = false;
    for (const [n, line] of rows.entries()) {
      const lineNo = n + 1;
      if (closed) return fail(f.name, lineNo, 'line after the checkpoint');
      let obj: Record<string, unknown>;
      try {
        obj = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return fail(f.name, lineNo, 'not valid JSON');
      }
      if (obj.prev !== prev)
        return fail(
          f.name,
          lineNo === 1 ? 1 : lineNo - 1,
          lineNo === 1
            ? 'does not continue the previous file (prev hash mismatch)'
            : 'line does not hash to the prev recorded on the next line (altered)',
        );
      if ('checkpoint' in obj) {
        const { mac, ...body } = obj;
        const cp = obj.checkpoint as Record<string, unknown>;
        if (cp.file !== f.name) return fail(f.name, lineNo, 'checkpoint names another file');
        if (cp.events !== fileEvents) return fail(f.name, lineNo, 'checkpoint event count differs');
        if (key && !macMatches(key, body, mac))
          return fail(f.name, lineNo, 'checkpoint signature does not match');
        closed = true;
      } else {
        if (typeof obj.shard !== 'string' || typeof obj.seq !== 'string')
          return fail(f.name, lineNo, 'event line without shard and seq');
        const last = highWater.get(obj.shard);
        try {
          if (last !== undefined && compareSeq(obj.seq, last) <= 0)
            return fail(
              f.name,
              lineNo,
              `seq ${obj.seq} not after ${last} in shard ${obj.shard} (duplicate or reordered)`,
            );
        } catch {
          return fail(f.name, lineNo, 'malformed seq');
        }
        highWater.set(obj.shard, obj.seq);
        fileEvents++;
        events++;
      }
      prev = hashLine(line);
    }
    if (!closed && i < files.length - 1)
      return fail(f.name, rows.length, 'closed file has no checkpoint (truncated)');
    lastLines = rows.length;
    lastBytes = Buffer.byteLength(text);
  }

  let head: Record<string, unknown> | null = null;
  try {
    head = JSON.parse(await readFile(join(dir, HEAD_FILE), 'utf8')) as Record<string, unknown>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || files.length > 0)
      return fail(HEAD_FILE, 0, 'missing or unreadable');
  }
  if (head) {
    const newest = files.at(-1);
    if (!newest) return fail(HEAD_FILE, 0, 'names a file that does not exist');
    if (key) {
      const { mac, ...body } = head;
      if (!headMacMatches(key, body, mac)) return fail(HEAD_FILE, 0, 'signature does not match');
    }
    if (head.file !== newest.name)
      return fail(newest.name, 0, `not the file the head names (${String(head.file)})`);
    if (typeof head.lines === 'number' && lastLines < head.lines)
      return fail(newest.name, lastLines + 1, `line missing: the head commits ${head.lines} lines`);
    if (typeof head.lines === 'number' && lastLines > head.lines)
      return fail(
        newest.name,
        head.lines + 1,
        'line after the committed head (uncommitted or appended)',
      );
    if (head.last_hash !== prev)
      return fail(newest.name, lastLines, 'last line does not hash to the head (altered)');
    if (head.lines !== lastLines || head.bytes !== lastBytes)
      return fail(newest.name, 0, 'length differs from the head');
  }
  return { ok: true, files: files.length, events, problem: null };
}
