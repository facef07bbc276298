import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';

/**
 * A full disk for one process, without root: RLIMIT_FSIZE (set on a running process with
 * util-linux `prlimit`) makes every write that would grow a file past the limit fail (EFBIG;
 * Node ignores SIGXFSZ), so the SQLite WAL cannot grow and every commit fails, as on a full
 * filesystem. Unlike `PRAGMA max_page_count`, which SQLite checks while a statement runs, this
 * fails the commit itself, which is where a full filesystem fails a WAL-mode write.
 */

/** Sets the soft RLIMIT_FSIZE of process `pid` to `bytes` (the hard limit is left as it is). */
export function limitFileSize(pid: number, bytes: number): void {
  execFileSync('prlimit', ['--pid', String(pid), `--fsize=${bytes}:`], { stdio: 'pipe' });
}

/** Lifts the soft RLIMIT_FSIZE of process `pid` back to its hard limit: the disk has room again. */
export function liftFileSizeLimit(pid: number): void {
  execFileSync('prlimit', ['--pid', String(pid), '--fsize=unlimited:'], { stdio: 'pipe' });
}

/** The largest of a SQLite database's files (the database and its WAL), in bytes. */
export function sqliteFilesBytes(path: string): number {
  let max = 0;
  for (const file of [path, `${path}-wal`]) {
    try {
      max = Math.max(max, statSync(file).size);
    } catch {
      // not created yet
    }
  }
  return max;
}
