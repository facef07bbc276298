import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { SealedRecord } from '../../keys/sealed-record.js';

/**
 * The rotation spool: a directory on the node holding rotated token sets the store could not take.
 *
 * A refresh that the provider answered with a new refresh token has spent the old one: the new set
 * is the only live credential. When the store refuses the write (Redis restarting or failing over,
 * SQLite's disk full), the set is written here, *sealed* exactly as it would be stored (no plaintext
 * token ever touches the disk), fsynced, and renamed into place, before the refresh's caller is
 * answered; it is removed once the store has it (rotation-pending.ts). What is left here when the
 * process stops or crashes is replayed at the next start and by the periodic replay.
 *
 * One file per link (`<base64url(link id)>.json`, mode 0600, directory 0700): a newer rotation of a
 * link replaces the older entry, which it spent.
 */

/** Fingerprint of a sealed token set: equal when the same sealed set is stored. */
export interface SealedFingerprint {
  readonly ct: string;
  readonly iv: string;
}

/** A rotated token set waiting for the store. No plaintext token material. */
export interface SpooledRotation {
  readonly linkId: string;
  readonly tenantId: string;
  readonly providerId: string;
  /** The stored set whose refresh token this rotation spent: the write applies only over it. */
  readonly previous: SealedFingerprint | null;
  /** The new token set, sealed for the link's identity. */
  readonly sealed: SealedRecord;
  readonly accessTokenExpiresAtMs: number | null;
  /** Scopes the provider granted with the new set (null: unchanged). */
  readonly grantedScopes: readonly string[] | null;
  /** Non-secret metadata captured from the refresh answer (catalogue capture_metadata). */
  readonly capturedMetadata: Readonly<Record<string, string>>;
  readonly rotated: boolean;
  readonly refreshedAtMs: number;
  readonly spooledAtMs: number;
}

export interface RotationSpool {
  /** The directory, for log lines. */
  readonly dir: string;
  /** Writes (replaces) the entry of `entry.linkId` durably: resolves once fsynced and renamed. */
  write(entry: SpooledRotation): Promise<void>;
  /** Removes the entry of `linkId`; a no-op when absent. */
  remove(linkId: string): Promise<void>;
  /** Every entry now in the directory (none when it does not exist); unreadable files are skipped. */
  list(): Promise<SpooledRotation[]>;
}

function fileName(linkId: string): string {
  return `${Buffer.from(linkId, 'utf8').toString('base64url')}.json`;
}

function isEntry(value: unknown): value is SpooledRotation {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  const sealed = v['sealed'] as Record<string, unknown> | undefined;
  return (
    typeof v['linkId'] === 'string' &&
    typeof v['tenantId'] === 'string' &&
    typeof v['providerId'] === 'string' &&
    typeof sealed === 'object' &&
    sealed !== null &&
    typeof sealed['ct'] === 'string' &&
    typeof sealed['iv'] === 'string' &&
    typeof v['refreshedAtMs'] === 'number'
  );
}

/** Syncs the directory so that a rename into it survives a crash. */
function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function createRotationSpool(dir: string): RotationSpool {
  let made = false;
  function ensureDir(): void {
    if (made) return;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    made = true;
  }

  return {
    dir,
    async write(entry) {
      ensureDir();
      const target = join(dir, fileName(entry.linkId));
      const temp = join(dir, `.${randomBytes(8).toString('hex')}.tmp`);
      // Synchronous on purpose: a handful of small files, written only when the store is failing,
      // and the caller must not be answered before the bytes are on the disk.
      const fd = openSync(temp, 'wx', 0o600);
      try {
        writeSync(fd, JSON.stringify(entry));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      try {
        await rename(temp, target);
      } catch (err) {
        await unlink(temp).catch(() => undefined);
        throw err;
      }
      fsyncDir(dir);
    },
    async remove(linkId) {
      try {
        await unlink(join(dir, fileName(linkId)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      fsyncDir(dir);
    },
    async list() {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw err;
      }
      const out: SpooledRotation[] = [];
      for (const name of names) {
        if (!name.endsWith('.json')) continue;
        try {
          const parsed: unknown = JSON.parse(await readFile(join(dir, name), 'utf8'));
          if (isEntry(parsed)) out.push(parsed);
        } catch {
          // A torn or foreign file: a complete entry is only ever renamed into place.
        }
      }
      return out;
    },
  };
}
