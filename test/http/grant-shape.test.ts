import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { createReleaseHarness, type ReleaseHarness } from '../support/release-harness.js';
import { expectedProblem } from '../support/problem-body.js';

/**
 * Grants match links by exact equality, so a grant whose tenant or provider no link can have
 * would be stored and never match: it is refused when created, saying why, and nothing is stored.
 */

describe('grants that could never match a link', () => {
  let h: ReleaseHarness;
  let admin: string;
  before(async () => {
    h = await createReleaseHarness();
    admin = h.services.bearer('crm-es');
  });
  after(() => h.close());

  const post = (body: unknown) =>
    request(h.app)
      .post('/v1/grants')
      .set('Authorization', admin)
      .send(body as object);

  it('when a grant names a tenant or provider no link can have, then 422 grant_never_matches saying why (400 when the id is malformed), and no grant is stored', async () => {
    const cases: [body: Record<string, unknown>, parameter: string, detail: string][] = [
      [
        { tenant_id: '*' },
        'tenant_id',
        'tenant_id is an exact tenant id, not a pattern: "*" would match no link (grants have no wildcards)',
      ],
      [
        { tenant_id: 'acme ' },
        'tenant_id',
        'tenant_id starts or ends with white space: no tenant id can, so this grant would match no link',
      ],
      [
        { tenant_id: '\u3000acme' },
        'tenant_id',
        'tenant_id starts or ends with white space: no tenant id can, so this grant would match no link',
      ],
      [
        { tenant_id: 'acme', provider_id: 'HubSpot' },
        'provider_id',
        'provider ids are lower-case: this grant would match no link (did you mean "hubspot"?)',
      ],
      [
        { tenant_id: 'acme', provider_id: 'hub_spot' },
        'provider_id',
        'provider_id is not a provider id (lower-case letters, digits and hyphens): this grant would match no link',
      ],
      [
        { tenant_id: 'acme\u200b' },
        'tenant_id',
        'tenant_id must be a string of 1-256 printable characters',
      ],
    ];
    for (const [fields, parameter, detail] of cases) {
      const res = await post({ service_id: 'billing', purpose: 'sync', ...fields });
      const malformed = detail.startsWith('tenant_id must be');
      assert.equal(res.status, malformed ? 400 : 422, JSON.stringify(fields));
      assert.deepEqual(
        res.body,
        expectedProblem(res, malformed ? 'invalid_request' : 'grant_never_matches', {
          detail,
          parameter,
        }),
      );
    }
    const list = await request(h.app).get('/v1/grants').set('Authorization', admin);
    assert.deepEqual(list.body, { grants: [] });
  });

  it('when the tenant and provider are exact ids, then 201 (the control)', async () => {
    const res = await post({
      service_id: 'billing',
      tenant_id: 'acme',
      provider_id: 'hubspot',
      purpose: 'sync',
    });
    assert.equal(res.status, 201);
    assert.equal(res.body.tenant_id, 'acme');
    assert.equal(res.body.provider_id, 'hubspot');
  });
});
