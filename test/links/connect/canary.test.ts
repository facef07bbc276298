import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import {
  APP_ORIGIN,
  startConnectHarnessWithOidc,
  type HttpAnswer,
  type OidcConnectHarness,
} from '../../support/connect-harness.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';

/**
 * The canary: every token the provider issues (captured at the provider, as it answers) plus the
 * flow's own secrets (code, state, session bearer, binding cookie, client secret) are pushed
 * through connect, listing, release, forced refresh (with rotation) and error paths; then the
 * store's raw bytes (the SQLite file with its WAL; every Redis key, DUMPed and read), every log
 * line and every response are searched for them. Only the token route may carry an access token;
 * nothing may carry a refresh token or an ID token.
 */

const CLIENT = { client_id: 'lv-acme', client_secret: 'acme-client-secret-canary-0123456789' };

interface Seen {
  readonly label: string;
  readonly answer: HttpAnswer;
}

function rawOf(answer: HttpAnswer): string {
  const headers = [...answer.headers].map(([k, v]) => `${k}: ${v}`).join('\n');
  return `${answer.status}\n${headers}\n\n${answer.text}`;
}

async function redisBytes(url: string): Promise<Buffer> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await client.connect();
  try {
    const chunks: Buffer[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await client.scanBuffer(cursor, 'COUNT', 1000);
      cursor = next.toString();
      for (const key of keys) {
        chunks.push(key);
        const dumped = await client.dumpBuffer(key);
        if (dumped) chunks.push(dumped);
        const type = await client.type(key);
        if (type === 'string') chunks.push((await client.getBuffer(key)) ?? Buffer.alloc(0));
        else if (type === 'hash')
          chunks.push(
            ...Object.entries(await client.hgetallBuffer(key)).flatMap(([k, v]) => [
              Buffer.from(k),
              v,
            ]),
          );
        else if (type === 'list') chunks.push(...(await client.lrangeBuffer(key, '0', '-1')));
        else if (type === 'set') chunks.push(...(await client.smembersBuffer(key)));
        else if (type === 'zset') chunks.push(...(await client.zrangeBuffer(key, '0', '-1')));
        else if (type === 'stream')
          chunks.push(Buffer.from(JSON.stringify(await client.xrange(key, '-', '+'))));
      }
    } while (cursor !== '0');
    return Buffer.concat(chunks);
  } finally {
    client.disconnect();
  }
}

for (const storeKind of ['sqlite', 'redis'] as const) {
  describe(`when known tokens flow through connect, release and refresh (${storeKind} store)`, () => {
    let redis: RedisServerHandle | undefined;
    let h: OidcConnectHarness;
    const issued = { access: [] as string[], refresh: [] as string[], id: [] as string[] };

    before(async () => {
      // rdbcompression off: DUMP must show string values as stored, not LZF-compressed.
      if (storeKind === 'redis')
        redis = await startRedis({ extraArgs: ['--rdbcompression', 'no'] });
      h = await startConnectHarnessWithOidc(
        { mode: 'oidc', rotateRefreshTokens: true, client: CLIENT },
        redis ? { redisUrl: redis.url } : {},
      );
      // Capture every token exactly as the provider hands it out (the token endpoint's answer body).
      h.oidc.provider.on('grant.success', (ctx: unknown) => {
        const body = (ctx as { body?: unknown }).body;
        if (typeof body !== 'object' || body === null) return;
        const t = body as Record<string, unknown>;
        if (typeof t.access_token === 'string') issued.access.push(t.access_token);
        if (typeof t.refresh_token === 'string') issued.refresh.push(t.refresh_token);
        if (typeof t.id_token === 'string') issued.id.push(t.id_token);
      });
    });
    after(async () => {
      await h?.close();
      await redis?.stop();
    });

    test('then no token or flow secret appears in the store, the logs, or any response but the token route', async () => {
      const seen: Seen[] = [];
      const record = (label: string, answer: HttpAnswer): HttpAnswer => {
        seen.push({ label, answer });
        return answer;
      };
      const admin = {
        authorization: h.services.bearer('crm-hs'),
        'content-type': 'application/json',
      };

      const sessionAnswer = record(
        'create session',
        await h.request('/v1/sessions', {
          method: 'POST',
          headers: admin,
          body: JSON.stringify({
            tenant_id: 'tenant-canary',
            user_id: 'user-canary',
            return_to: `${APP_ORIGIN}/done`,
          }),
        }),
      );
      const sessionToken = String(sessionAnswer.json!.session_token);
      const flow = await h.startFlow('acme', sessionToken);
      record('connect redirect', flow.answer);
      const bindingValue = flow.cookie.split('=')[1]!;
      const callbackUrl = await h.oidc.completeLogin(flow.authorizationUrl, {
        accountId: 'canary-account',
      });
      const code = callbackUrl.searchParams.get('code')!;
      const state = callbackUrl.searchParams.get('state')!;
      const done = record('callback', await h.callback(callbackUrl, flow.cookie));
      const linkId = done.location!.searchParams.get('link_id')!;
      record('callback replay', await h.callback(callbackUrl, flow.cookie));
      record(
        'callback replay json',
        await h.callback(callbackUrl, flow.cookie, { headers: { accept: 'application/json' } }),
      );
      record(
        'callback without cookie',
        await h.callback(`/v1/oauth/callback/acme?code=${code}&state=${state}`, null, {
          headers: { accept: 'text/html' },
        }),
      );

      // Reconnect once more: a second token set, the first refresh token revoked in the background.
      const again = await h.startFlow('acme', sessionToken);
      record('reconnect redirect', again.answer);
      const againCallback = await h.oidc.completeLogin(again.authorizationUrl, {
        accountId: 'canary-account',
      });
      record('reconnect callback', await h.callback(againCallback, again.cookie));
      await h.connect.idle();

      record(
        'grant',
        await h.request('/v1/grants', {
          method: 'POST',
          headers: admin,
          body: JSON.stringify({ service_id: 'billing', link_id: linkId, purpose: 'canary' }),
        }),
      );
      const release = (body: Record<string, unknown>) =>
        h.request(`/v1/links/${linkId}/token`, {
          method: 'POST',
          headers: {
            authorization: h.services.bearer('billing-hs'),
            'content-type': 'application/json',
          },
          body: JSON.stringify(body),
        });
      // A forced refresh right after a refresh is served that refresh's token; move the last
      // refresh back so the second forced call reaches the provider again.
      const refreshedAMinuteAgo = async (): Promise<void> => {
        const current = (await h.store.getLink(linkId))!;
        const saved = await h.store.saveLink(
          { ...current, lastRefreshedAtMs: (current.lastRefreshedAtMs ?? Date.now()) - 60_000 },
          current.version,
        );
        assert.ok(saved);
      };
      const tokenAnswers = [await release({}), await release({ force_refresh: true })];
      await refreshedAMinuteAgo();
      tokenAnswers.push(await release({ force_refresh: true }));
      for (const a of tokenAnswers) assert.equal(a.status, 200, a.text);

      record('link', await h.request(`/v1/links/${linkId}`, { headers: admin }));
      record('links', await h.request('/v1/links?tenant_id=tenant-canary', { headers: admin }));
      record(
        'my links',
        await h.request('/v1/me/links', { headers: { authorization: `Bearer ${sessionToken}` } }),
      );
      record('metrics', await h.request('/metrics'));
      record('providers', await h.request('/v1/providers'));

      assert.ok(
        issued.access.length >= 4 && issued.refresh.length >= 4 && issued.id.length >= 2,
        JSON.stringify({ a: issued.access.length, r: issued.refresh.length, i: issued.id.length }),
      );
      // The token route released exactly the provider's access tokens (the last two after refreshes).
      assert.equal(tokenAnswers[2]!.json!.access_token, issued.access.at(-1));

      const neverAnywhere: Record<string, string[]> = {
        'refresh token': issued.refresh,
        'ID token': issued.id,
        'client secret': [CLIENT.client_secret],
      };
      const neverStoredOrLogged: Record<string, string[]> = {
        ...neverAnywhere,
        'access token': issued.access,
        'authorization code': [code, againCallback.searchParams.get('code')!],
        state: [state, againCallback.searchParams.get('state')!],
        'session token': [sessionToken],
        'binding cookie': [bindingValue, again.cookie.split('=')[1]!],
      };

      let storeBytes: Buffer;
      if (storeKind === 'sqlite') {
        const path = h.sqlitePath!;
        storeBytes = Buffer.concat(
          [path, `${path}-wal`, `${path}-shm`, `${path}-journal`]
            .filter((p) => existsSync(p))
            .map((p) => readFileSync(p)),
        );
      } else {
        storeBytes = await redisBytes(redis!.url);
      }
      assert.ok(storeBytes.length > 1000, 'the store was read');
      const logs = h.logText();
      assert.ok(logs.includes('connect: link stored'), 'the logs were captured');

      for (const [what, values] of Object.entries(neverStoredOrLogged)) {
        for (const value of values) {
          assert.ok(value.length >= 16, `${what} canary is long enough to be meaningful`);
          assert.ok(
            !storeBytes.includes(Buffer.from(value)),
            `${what} found in the ${storeKind} store`,
          );
          assert.ok(!logs.includes(value), `${what} found in the logs`);
        }
      }
      for (const { label, answer } of seen) {
        const raw = rawOf(answer);
        for (const [what, values] of Object.entries({
          ...neverAnywhere,
          'access token': issued.access,
        })) {
          for (const value of values)
            assert.ok(!raw.includes(value), `${what} found in the ${label} response`);
        }
        for (const value of [code, state, bindingValue]) {
          if (label !== 'connect redirect' && label !== 'reconnect redirect')
            assert.ok(!raw.includes(value), `a flow secret found in the ${label} response`);
        }
      }
      for (const answer of tokenAnswers) {
        const raw = rawOf(answer);
        for (const [what, values] of Object.entries(neverAnywhere)) {
          for (const value of values)
            assert.ok(!raw.includes(value), `${what} found in a token route response`);
        }
      }
    });
  });
}
