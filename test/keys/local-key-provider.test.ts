import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../../src/config.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { Metrics } from '../../src/metrics.js';
import { IDENTITY, rejectsWith, runKeyProviderContract } from './key-provider-contract.js';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lv-local-key-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function writeKey(path: string, bytes: Buffer, mode = 0o600): void {
  writeFileSync(path, bytes, { mode });
  chmodSync(path, mode);
}

function refusedFor(variable: string, pattern: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.variable, variable);
    assert.match(err.problem, pattern);
    assert.doesNotMatch(err.message, /\n/, 'one line');
    return true;
  };
}

runKeyProviderContract('local', async () => {
  const metrics = new Metrics();
  const provider = await LocalKeyProvider.load({
    keyFile: join(tempDir(), 'master.key'),
    mayGenerate: true,
    metrics,
  });
  return {
    provider,
    metrics,
    label: 'local',
    unknownKid: 'local:0123456789abcdef',
    close: async () => undefined,
  };
});

describe('local master key file', () => {
  it('when the key file is missing outside production, then it is created: 32 bytes, mode 0600, its new directory 0700', async () => {
    const dir = join(tempDir(), 'nested', 'data');
    const keyFile = join(dir, 'master.key');
    const first = await LocalKeyProvider.load({
      keyFile,
      mayGenerate: true,
      metrics: new Metrics(),
    });
    assert.equal(first.generated, true);
    const st = statSync(keyFile);
    assert.equal(st.size, 32);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(dir), ['master.key'], 'no temporary file left behind');

    const second = await LocalKeyProvider.load({
      keyFile,
      mayGenerate: true,
      metrics: new Metrics(),
    });
    assert.equal(second.generated, false);
    assert.equal(second.currentKeyId(), first.currentKeyId());
  });

  it('when the kid is derived, then it is "local:" and 16 hex chars of SHA-256(key), and holds nothing of the key', async () => {
    const keyFile = join(tempDir(), 'master.key');
    const key = randomBytes(32);
    writeKey(keyFile, key);
    const provider = await LocalKeyProvider.load({
      keyFile,
      mayGenerate: false,
      metrics: new Metrics(),
    });
    assert.equal(
      provider.currentKeyId(),
      'local:' + createHash('sha256').update(key).digest('hex').slice(0, 16),
    );
    const hex = key.toString('hex');
    for (let i = 0; i + 8 <= hex.length; i += 8)
      assert.equal(provider.currentKeyId().includes(hex.slice(i, i + 8)), false);
  });

  it('when the key file is missing and generating is not allowed (production), then start is refused naming the variable', async () => {
    const keyFile = join(tempDir(), 'master.key');
    await assert.rejects(
      LocalKeyProvider.load({ keyFile, mayGenerate: false, metrics: new Metrics() }),
      refusedFor('LINKVAULT_LOCAL_KEY_FILE', /does not exist/),
    );
  });

  it('when the key file has the wrong size (0, 16, 31, 33, 64 bytes), then it is refused', async () => {
    for (const size of [0, 16, 31, 33, 64]) {
      const keyFile = join(tempDir(), 'master.key');
      writeKey(keyFile, randomBytes(size));
      await assert.rejects(
        LocalKeyProvider.load({ keyFile, mayGenerate: true, metrics: new Metrics() }),
        refusedFor('LINKVAULT_LOCAL_KEY_FILE', new RegExp(`exactly 32 raw bytes, found ${size}`)),
      );
      assert.equal(statSync(keyFile).size, size, 'a refused file is never replaced');
    }
  });

  it('when the key file is readable by group or others (0644, 0640, 0604), then it is refused; 0400 and 0600 are accepted', async () => {
    for (const mode of [0o644, 0o640, 0o604, 0o660]) {
      const keyFile = join(tempDir(), 'master.key');
      writeKey(keyFile, randomBytes(32), mode);
      await assert.rejects(
        LocalKeyProvider.load({ keyFile, mayGenerate: true, metrics: new Metrics() }),
        refusedFor('LINKVAULT_LOCAL_KEY_FILE', new RegExp(`mode 0${mode.toString(8)}.*chmod 600`)),
      );
    }
    for (const mode of [0o400, 0o600]) {
      const keyFile = join(tempDir(), 'master.key');
      writeKey(keyFile, randomBytes(32), mode);
      await LocalKeyProvider.load({ keyFile, mayGenerate: false, metrics: new Metrics() });
    }
  });

  it('when the key file path is a directory, then it is refused', async () => {
    await assert.rejects(
      LocalKeyProvider.load({ keyFile: tempDir(), mayGenerate: true, metrics: new Metrics() }),
      refusedFor('LINKVAULT_LOCAL_KEY_FILE', /not a regular file/),
    );
  });

  it('when a previous key file is bad or missing, then start is refused naming LINKVAULT_LOCAL_PREVIOUS_KEY_FILES', async () => {
    const dir = tempDir();
    const keyFile = join(dir, 'master.key');
    writeKey(keyFile, randomBytes(32));
    const loose = join(dir, 'old.key');
    writeKey(loose, randomBytes(32), 0o644);
    await assert.rejects(
      LocalKeyProvider.load({
        keyFile,
        previousKeyFiles: [loose],
        mayGenerate: false,
        metrics: new Metrics(),
      }),
      refusedFor('LINKVAULT_LOCAL_PREVIOUS_KEY_FILES', /chmod 600/),
    );
    await assert.rejects(
      LocalKeyProvider.load({
        keyFile,
        previousKeyFiles: [join(dir, 'gone.key')],
        mayGenerate: false,
        metrics: new Metrics(),
      }),
      refusedFor('LINKVAULT_LOCAL_PREVIOUS_KEY_FILES', /does not exist/),
    );
  });

  it('when a previous key is loaded, then it unwraps its old data keys but new keys and rewraps use the current key', async () => {
    const dir = tempDir();
    const oldFile = join(dir, 'old.key');
    const newFile = join(dir, 'new.key');
    writeKey(oldFile, randomBytes(32));
    writeKey(newFile, randomBytes(32));
    const before = await LocalKeyProvider.load({
      keyFile: oldFile,
      mayGenerate: false,
      metrics: new Metrics(),
    });
    const old = await before.generateDataKey(IDENTITY);

    const rotated = await LocalKeyProvider.load({
      keyFile: newFile,
      previousKeyFiles: [oldFile],
      mayGenerate: false,
      metrics: new Metrics(),
    });
    assert.notEqual(rotated.currentKeyId(), old.kid);
    assert.deepEqual(await rotated.unwrapDataKey(old.kid, old.wrapped, IDENTITY), old.plaintext);
    assert.equal((await rotated.generateDataKey(IDENTITY)).kid, rotated.currentKeyId());
    const moved = await rotated.rewrapDataKey(old.kid, old.wrapped, IDENTITY);
    assert.equal(moved.kid, rotated.currentKeyId());

    const onlyNew = await LocalKeyProvider.load({
      keyFile: newFile,
      mayGenerate: false,
      metrics: new Metrics(),
    });
    assert.deepEqual(
      await onlyNew.unwrapDataKey(moved.kid, moved.wrapped, IDENTITY),
      old.plaintext,
    );
    await rejectsWith(
      onlyNew.unwrapDataKey(old.kid, old.wrapped, IDENTITY),
      'sealed_record_invalid',
    );
  });

  it('when six processes start together on a missing key file, then exactly one key is generated and all use it', async () => {
    const keyFile = join(tempDir(), 'data', 'master.key');
    const providerModule = fileURLToPath(
      new URL('../../src/keys/local-key-provider.ts', import.meta.url),
    );
    const metricsModule = fileURLToPath(new URL('../../src/metrics.ts', import.meta.url));
    // Each child loads, then waits for "go" on stdin so that all of them race for the same file.
    const script = `
      const { LocalKeyProvider } = await import(${JSON.stringify(providerModule)});
      const { Metrics } = await import(${JSON.stringify(metricsModule)});
      process.stdout.write('ready\\n');
      await new Promise((resolve) => process.stdin.once('data', resolve));
      const p = await LocalKeyProvider.load({ keyFile: process.argv[1], mayGenerate: true, metrics: new Metrics() });
      process.stdout.write(JSON.stringify({ kid: p.currentKeyId(), generated: p.generated }) + '\\n');
      process.exit(0);`;
    const children = Array.from({ length: 6 }, () =>
      spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, keyFile], {
        stdio: ['pipe', 'pipe', 'pipe'],
      }),
    );
    const outputs = children.map(
      (child) =>
        new Promise<string>((resolve, reject) => {
          let out = '';
          let err = '';
          child.stdout.on('data', (d: Buffer) => {
            out += d.toString();
          });
          child.stderr.on('data', (d: Buffer) => {
            err += d.toString();
          });
          child.on('exit', (code) =>
            code === 0 ? resolve(out) : reject(new Error(`child exited ${code}: ${err}`)),
          );
        }),
    );
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            const onData = (d: Buffer) => {
              if (d.toString().includes('ready')) {
                child.stdout.off('data', onData);
                resolve();
              }
            };
            child.stdout.on('data', onData);
          }),
      ),
    );
    for (const child of children) child.stdin.write('go\n');
    const results = (await Promise.all(outputs)).map(
      (out) => JSON.parse(out.trim().split('\n').pop()!) as { kid: string; generated: boolean },
    );

    const kids = new Set(results.map((r) => r.kid));
    assert.equal(kids.size, 1, 'every process uses the same key');
    assert.equal(results.filter((r) => r.generated).length, 1, 'exactly one process generated it');
    const key = readFileSync(keyFile);
    assert.equal(
      [...kids][0],
      'local:' + createHash('sha256').update(key).digest('hex').slice(0, 16),
    );
    assert.deepEqual(readdirSync(join(keyFile, '..')), ['master.key']);
  });
});
