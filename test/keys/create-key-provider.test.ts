import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { AwsKmsKeyProvider } from '../../src/keys/aws-kms-key-provider.js';
import { createKeyProvider } from '../../src/keys/create-key-provider.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { Metrics } from '../../src/metrics.js';
import { startKmsStandIn } from '../support/kms-stand-in.js';

function capturingLogger(): { log: pino.Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return {
    log: pino({ level: 'info' }, stream),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('createKeyProvider', () => {
  it('when a local key is generated, then it warns loudly once; when the key exists, then it does not warn', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lv-create-keys-'));
    dirs.push(dir);
    const config = {
      kind: 'local' as const,
      localKeyFile: join(dir, 'master.key'),
      previousKeyFiles: [],
      mayGenerate: true,
    };
    const first = capturingLogger();
    const provider = await createKeyProvider(config, { metrics: new Metrics(), log: first.log });
    assert.ok(provider instanceof LocalKeyProvider);
    const warnings = first.lines().filter((l) => l.level === 40);
    assert.equal(warnings.length, 1);
    assert.match(String(warnings[0]!.msg), /GENERATED A DEVELOPMENT MASTER KEY/);

    const second = capturingLogger();
    const again = await createKeyProvider(config, { metrics: new Metrics(), log: second.log });
    assert.equal(again.currentKeyId(), provider.currentKeyId());
    assert.equal(second.lines().filter((l) => l.level === 40).length, 0);
  });

  it('when KMS is configured by alias, then the provider learns the key ARN at start; when KMS is down, then start warns and continues', async () => {
    const kms = await startKmsStandIn();
    const arn = kms.createKey('alias/lv');
    // The SDK's default credential chain reads the standard AWS_* variables; this process has none.
    // Setting them keeps the chain from ever trying the instance metadata service (off loopback).
    const saved = {
      id: process.env.AWS_ACCESS_KEY_ID,
      secret: process.env.AWS_SECRET_ACCESS_KEY,
      imds: process.env.AWS_EC2_METADATA_DISABLED,
    };
    process.env.AWS_ACCESS_KEY_ID = 'AKIDSTANDIN';
    process.env.AWS_SECRET_ACCESS_KEY = 'stand-in';
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    try {
      const config = {
        kind: 'aws-kms' as const,
        kmsKeyId: 'alias/lv',
        region: kms.region,
        endpoint: kms.endpoint,
      };
      const provider = await createKeyProvider(config, { metrics: new Metrics() });
      assert.ok(provider instanceof AwsKmsKeyProvider);
      assert.equal(provider.currentKeyId(), arn);
      provider.destroy();

      kms.setFault('DescribeKey', 'internal');
      const { log, lines } = capturingLogger();
      const unready = await createKeyProvider(config, { metrics: new Metrics(), log });
      assert.equal(unready.currentKeyId(), 'alias/lv');
      assert.equal(
        lines().filter((l) => l.level === 40 && /KMS did not answer at start/.test(String(l.msg)))
          .length,
        1,
      );
      (unready as AwsKmsKeyProvider).destroy();
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
      if (saved.imds === undefined) delete process.env.AWS_EC2_METADATA_DISABLED;
      else process.env.AWS_EC2_METADATA_DISABLED = saved.imds;
      await kms.close();
    }
  });
});
