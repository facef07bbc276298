import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startKmsStandIn, type KmsStandIn } from '../support/kms-stand-in.js';
import { startKmsStack, type KmsStack } from './kms-stack.js';

/**
 * GET /readyz is unauthenticated and checks the key service with a KMS DescribeKey: a flood of
 * probes must not become a flood of KMS calls (the KMS request quota is account-wide), whether KMS
 * answers or hangs.
 */

const PROBES = 1000;
const BATCH = 50;
/** "A handful": one DescribeKey per cache period, and the test runs well within two periods. */
const MAX_DESCRIBE_KEY_CALLS = 3;

async function probeReadyz(url: string): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  for (let sent = 0; sent < PROBES; sent += BATCH) {
    const batch = await Promise.all(
      Array.from({ length: BATCH }, async () => {
        const res = await fetch(`${url}/readyz`);
        await res.arrayBuffer();
        return res.status;
      }),
    );
    for (const status of batch) statuses.set(status, (statuses.get(status) ?? 0) + 1);
  }
  return statuses;
}

describe('when /readyz is probed 1,000 times', () => {
  let kms: KmsStandIn;
  before(async () => {
    kms = await startKmsStandIn();
  });
  after(async () => {
    await kms.close();
  });

  it('and KMS answers, then every probe is ready and KMS sees at most a handful of DescribeKey calls', async (t) => {
    const stack: KmsStack = await startKmsStack(kms, { pingCacheMs: 60_000 });
    try {
      const before = kms.calls('DescribeKey');
      const statuses = await probeReadyz(stack.url);
      assert.deepEqual([...statuses], [[200, PROBES]]);
      const calls = kms.calls('DescribeKey') - before;
      t.diagnostic(`${calls} DescribeKey calls for ${PROBES} probes`);
      assert.ok(calls >= 1 && calls <= MAX_DESCRIBE_KEY_CALLS, `${calls} DescribeKey calls`);
    } finally {
      await stack.close();
    }
  });

  it('and KMS hangs, then every probe is not ready and KMS sees at most a handful of DescribeKey calls', async (t) => {
    const stack: KmsStack = await startKmsStack(kms, {
      callBudgetMs: 500,
      pingCacheMs: 60_000,
      breakerOpenMs: 60_000,
    });
    kms.setFault('DescribeKey', 'timeout');
    try {
      const before = kms.calls('DescribeKey');
      const statuses = await probeReadyz(stack.url);
      assert.deepEqual([...statuses], [[503, PROBES]]);
      const calls = kms.calls('DescribeKey') - before;
      t.diagnostic(`${calls} DescribeKey calls for ${PROBES} probes`);
      assert.ok(calls >= 1 && calls <= MAX_DESCRIBE_KEY_CALLS, `${calls} DescribeKey calls`);
    } finally {
      kms.setFault('DescribeKey', null);
      await stack.close();
    }
  });
});
