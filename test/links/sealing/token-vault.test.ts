import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { LocalKeyProvider } from '../../../src/keys/local-key-provider.js';
import { createVault, type Vault } from '../../../src/keys/vault.js';
import {
  openTokenSet,
  sealTokenSet,
  tokenSetIdentity,
} from '../../../src/links/sealing/token-vault.js';
import { Metrics } from '../../../src/metrics.js';
import type { TokenSet } from '../../../src/oauth/oauth-client.js';
import { Secret } from '../../../src/secret.js';
import { rejectsWith } from '../../keys/key-provider-contract.js';

const LINK = { id: 'lnk_1', tenantId: 'acme', providerId: 'salesforce' };
const OTHER = { id: 'lnk_2', tenantId: 'acme', providerId: 'salesforce' };

const FULL: TokenSet = {
  accessToken: new Secret('at-canary-3c7e'),
  refreshToken: new Secret('rt-canary-81fa'),
  idToken: new Secret('idt-canary-0b2d'),
  tokenType: 'bearer',
  expiresAtMs: 1_700_000_360_000,
  scopes: ['api', 'refresh_token'],
  extra: { instance_url: 'https://example.my.salesforce.com' },
};

describe('token set sealing', () => {
  let dir: string;
  let vault: Vault;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lv-token-vault-'));
    const metrics = new Metrics();
    const keys = await LocalKeyProvider.load({
      keyFile: join(dir, 'master.key'),
      mayGenerate: true,
      metrics,
    });
    vault = createVault({ keys, metrics, maxEntries: 100, maxAgeMs: 60_000 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("when a link's identity is built, then it names tenant, link, provider and the token_set field", () => {
    assert.deepEqual(tokenSetIdentity(LINK), {
      tenant: 'acme',
      link: 'lnk_1',
      provider: 'salesforce',
      field: 'token_set',
    });
  });

  it('when a full token set is sealed and opened, then every member comes back, secrets wrapped in Secret', async () => {
    const record = await sealTokenSet(vault, LINK, FULL, null);
    const serialised = JSON.stringify(record);
    for (const canary of ['at-canary', 'rt-canary', 'idt-canary'])
      assert.equal(serialised.includes(canary), false);
    const opened = await openTokenSet(vault, LINK, record);
    assert.ok(
      opened.accessToken instanceof Secret &&
        opened.refreshToken instanceof Secret &&
        opened.idToken instanceof Secret,
    );
    assert.deepEqual(
      {
        at: opened.accessToken.reveal(),
        rt: opened.refreshToken.reveal(),
        idt: opened.idToken.reveal(),
        type: opened.tokenType,
        exp: opened.expiresAtMs,
        scopes: opened.scopes,
        extra: opened.extra,
      },
      {
        at: 'at-canary-3c7e',
        rt: 'rt-canary-81fa',
        idt: 'idt-canary-0b2d',
        type: 'bearer',
        exp: 1_700_000_360_000,
        scopes: ['api', 'refresh_token'],
        extra: {},
      },
    );
    assert.equal(inspect(opened).includes('canary'), false);
    assert.equal(JSON.stringify(opened).includes('canary'), false);
  });

  it('when optional members are absent, then they come back null', async () => {
    const minimal: TokenSet = {
      ...FULL,
      refreshToken: null,
      idToken: null,
      expiresAtMs: null,
      scopes: null,
    };
    const opened = await openTokenSet(vault, LINK, await sealTokenSet(vault, LINK, minimal, null));
    assert.deepEqual(
      {
        rt: opened.refreshToken,
        idt: opened.idToken,
        exp: opened.expiresAtMs,
        scopes: opened.scopes,
      },
      { rt: null, idt: null, exp: null, scopes: null },
    );
  });

  it("when re-sealed after a refresh with the previous record, then the link's data key is reused", async () => {
    const first = await sealTokenSet(vault, LINK, FULL, null);
    const second = await sealTokenSet(
      vault,
      LINK,
      { ...FULL, accessToken: new Secret('at-2') },
      first,
    );
    assert.equal(second.edk, first.edk);
    assert.equal((await openTokenSet(vault, LINK, second)).accessToken.reveal(), 'at-2');
  });

  it("when a token set is opened as another link's, then sealed_record_invalid", async () => {
    const record = await sealTokenSet(vault, LINK, FULL, null);
    await rejectsWith(openTokenSet(vault, OTHER, record), 'sealed_record_invalid');
  });

  it('when a record under the right identity holds something that is not a token set, then sealed_record_invalid', async () => {
    for (const body of [
      'not json',
      '[]',
      '{"v":2,"access_token":"x","refresh_token":null,"id_token":null,"token_type":"bearer","expires_at_ms":null,"scopes":null}',
      '{"v":1,"access_token":"","refresh_token":null,"id_token":null,"token_type":"bearer","expires_at_ms":null,"scopes":null}',
      '{"v":1,"access_token":"x","refresh_token":null,"id_token":null,"token_type":"bearer","expires_at_ms":"soon","scopes":null}',
    ]) {
      const record = await vault.seal(tokenSetIdentity(LINK), Buffer.from(body));
      await rejectsWith(openTokenSet(vault, LINK, record), 'sealed_record_invalid');
    }
  });
});
