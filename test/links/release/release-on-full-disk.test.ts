import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../../src/config.js';
import { ERROR_CATALOGUE, problemType } from '../../../src/errors.js';
import { createKeyProvider } from '../../../src/keys/create-key-provider.js';
import { createVault } from '../../../src/keys/vault.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import type { Store } from '../../../src/store/store.js';
import { makeTestServices } from '../../support/service-jwt.js';
import {
  startServiceProcess,
  writeServiceConfig,
  type ServiceProcess,
} from '../../support/service-process.js';
import { seedSealedLink } from '../../support/stack.js';
import { testProviderEntry } from '../../support/test-catalogue.js';
import {
  limitFileSize,
  liftFileSizeLimit,
  sqliteFilesBytes,
} from '../../store/sqlite/file-size-limit.js';

/**
 * "No audit record, no token" on a full disk, against the real service process: its SQLite file
 * sits on a disk that fills up (the process's file-size limit, see file-size-limit.ts) while
 * services keep asking for the token. What did each caller get, and is there a `token.released`
 * record behind every 200?
 */

const RELEASES = 300;
const CONCURRENCY = 4;

interface Answer {
  readonly requestId: string;
  readonly status: number;
  readonly retryAfter: string | null;
  readonly body: Record<string, unknown>;
}

describe('token release on a full SQLite disk', () => {
  it(`when the disk fills up during ${RELEASES} releases, then every release answers 200 with its token.released record stored or 503 audit_unavailable, and none answers 200 without a record`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'lv-release-full-'));
    const services = makeTestServices();
    const path = join(dir, 'lv.db');
    const env: Record<string, string> = {
      ...writeServiceConfig({
        dir,
        services,
        providers: [
          {
            entry: testProviderEntry('acme', 'http://127.0.0.1:9'),
            clientId: 'c',
            clientSecret: 's-0123456789',
          },
        ],
      }),
      LINKVAULT_LOG_LEVEL: 'info',
      LINKVAULT_STORE: 'sqlite',
      LINKVAULT_SQLITE_PATH: path,
    };
    const config = loadConfig(env, dir);
    const metrics = new Metrics();
    // The master key is created here, before the service reads it: the test seals the link itself.
    const keys = await createKeyProvider(config.keys, { metrics });
    const vault = createVault({ keys, metrics, maxEntries: 10, maxAgeMs: 60_000 });
    let store: Store | undefined;
    let service: ServiceProcess | undefined;
    try {
      service = await startServiceProcess({ cwd: dir, env });
      store = await createStore(config.store, { metrics });
      const now = Date.now();
      const id = `lnk_${randomUUID()}`;
      await seedSealedLink(
        { store, vault, now: () => now },
        {
          id,
          accessToken: 'at-full-disk',
          refreshToken: 'rt-full-disk',
          grantedScopes: ['api:read'],
        },
      );
      await store.putGrant({
        id: `grt_${randomUUID()}`,
        serviceId: 'crm-sync',
        tenantId: null,
        providerId: null,
        linkId: id,
        scopes: null,
        purpose: 'tests',
        createdAtMs: now,
        expiresAtMs: null,
      });

      const release = async (requestId: string): Promise<Answer> => {
        const res = await fetch(`${service!.url}/v1/links/${id}/token`, {
          method: 'POST',
          headers: {
            authorization: services.bearer('crm-hs'),
            'content-type': 'application/json',
            'x-request-id': requestId,
          },
          body: '{}',
        });
        return {
          requestId,
          status: res.status,
          retryAfter: res.headers.get('retry-after'),
          body: (await res.json()) as Record<string, unknown>,
        };
      };

      // The disk still has room: the audit key is created, one release goes through.
      assert.equal((await release('warm-up')).status, 200);

      // The disk fills up: the service's files may grow by 64 KiB more, then no further.
      limitFileSize(service.pid, sqliteFilesBytes(path) + 64 * 1024);
      const answers: Answer[] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < RELEASES) answers.push(await release(`full-${next++}`));
        }),
      );
      // Room again: the same process releases again, without a restart.
      liftFileSizeLimit(service.pid);
      const afterRoom = await release('after-room');
      await service.stop();

      const recorded = new Set<string>();
      for (let after: string | undefined; ;) {
        const page = await store.readAudit(after, 1000);
        for (const e of page) if (e.type === 'token.released') recorded.add(String(e.requestId));
        if (page.length < 1000) break;
        after = page[page.length - 1]!.seq;
      }
      const ok = answers.filter((a) => a.status === 200);
      const refused = answers.filter((a) => a.status !== 200);
      const okWithoutRecord = ok.filter((a) => !recorded.has(a.requestId)).length;
      t.diagnostic(
        `${RELEASES} releases on a full disk: ${ok.length} x 200, ${refused.length} x 503, ` +
          `${okWithoutRecord} x 200 without a token.released record`,
      );
      assert.equal(okWithoutRecord, 0, '200s without a token.released record');
      assert.ok(ok.length > 0, 'releases went through while there was room');
      assert.ok(refused.length > 0, 'the disk filled up: some releases were refused');
      for (const a of refused) {
        assert.deepEqual(
          { status: a.status, retryAfter: a.retryAfter, body: a.body },
          {
            status: 503,
            retryAfter: '1',
            body: {
              type: problemType('audit_unavailable'),
              title: ERROR_CATALOGUE.audit_unavailable.title,
              status: 503,
              code: 'audit_unavailable',
              request_id: a.requestId,
            },
          },
        );
      }
      assert.equal(afterRoom.status, 200);
      assert.ok(recorded.has('after-room'));
    } finally {
      await service?.stop();
      await store?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
