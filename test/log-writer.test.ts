import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LineWriter } from '../src/log.js';

/**
 * The log's default destination (src/log.ts LineWriter): lines go out whole and in order, however
 * the writes are cut; a reader that falls behind loses nothing; what is queued at exit is written.
 */

const dir = mkdtempSync(join(tmpdir(), 'lv-line-writer-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function linesOf(n: number, width = 100): string[] {
  return Array.from({ length: n }, (_, i) => `${JSON.stringify({ i, pad: 'x'.repeat(width) })}\n`);
}

function flushed(writer: LineWriter): Promise<void> {
  return new Promise((resolve) => writer.flush(resolve));
}

describe('LineWriter', () => {
  it('when many lines are written at once to a file, then the file holds every line, whole and in order', async () => {
    const file = join(dir, 'plain.log');
    const fd = openSync(file, 'w');
    const writer = new LineWriter(fd);
    const lines = linesOf(20_000);
    for (const line of lines) writer.write(line);
    await flushed(writer);
    closeSync(fd);
    assert.equal(readFileSync(file, 'utf8'), lines.join(''));
  });

  it('when the reader of a non-blocking pipe falls behind (EAGAIN), then nothing is lost and nothing is doubled', async () => {
    const fifo = join(dir, 'slow.fifo');
    execFileSync('mkfifo', [fifo]);
    // Read-write and non-blocking: the open does not wait for a reader, and a full pipe answers EAGAIN.
    const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
    const writer = new LineWriter(fd);
    // ~2.6 MB: far past a pipe's 64 KiB buffer, so writes are refused until the reader catches up.
    const lines = linesOf(25_000);
    for (const line of lines) writer.write(line);
    // The reader starts late and reads slowly (a child process: `cat` of the pipe into a file).
    await new Promise((r) => setTimeout(r, 200));
    const out = join(dir, 'slow.out');
    const reader = spawn('sh', ['-c', `dd if="${fifo}" bs=4096 2>/dev/null > "${out}"`]);
    await flushed(writer);
    closeSync(fd); // the last writer gone: the reader sees end of file
    await new Promise((resolve) => reader.once('exit', resolve));
    assert.equal(readFileSync(out, 'utf8'), lines.join(''));
  });

  it('when lines are queued and the process exits at once, then they are written before it ends', () => {
    const program = `
      import { createLogger } from ${JSON.stringify(new URL('../src/log.ts', import.meta.url).href)};
      const log = createLogger({ level: 'info' });
      for (let i = 0; i < 5000; i++) log.info({ i }, 'queued');
      process.exit(0);
    `;
    const stdout = execFileSync(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', program],
      {
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    const lines = stdout.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 5000);
    assert.deepEqual(
      lines.map((l) => (JSON.parse(l) as { i: number }).i),
      Array.from({ length: 5000 }, (_, i) => i),
    );
  });

  it('when the descriptor cannot be written (closed under it), then logging stops without throwing and says so once', async () => {
    const program = `
      import { openSync, closeSync } from 'node:fs';
      import { LineWriter } from ${JSON.stringify(new URL('../src/log.ts', import.meta.url).href)};
      const fd = openSync('/dev/null', 'w');
      const writer = new LineWriter(fd);
      closeSync(fd);
      for (let i = 0; i < 100; i++) writer.write('line\\n');
      writer.flush(() => { for (let i = 0; i < 100; i++) writer.write('after\\n'); writer.flush(() => process.stdout.write('done')); });
    `;
    const child = spawn(process.execPath, [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      program,
    ]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, stderr);
    assert.equal(stdout, 'done');
    assert.equal(stderr.match(/the log cannot be written \(EBADF\)/g)?.length, 1, stderr);
  });
});
