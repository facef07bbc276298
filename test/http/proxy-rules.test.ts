import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import {
  rawRequest,
  startProxyHarness,
  TABLE_RULES,
  type ProxyHarness,
} from '../links/proxy/proxy-harness.js';

/**
 * Grant proxy rules, end to end: a service holding a proxy-only grant with TABLE_RULES calls
 * /v1/links/:id/proxy/... over HTTP; every allowed case reaches the stand-in API with exactly the
 * path it was sent, every refused case is 403 proxy_not_allowed and the API receives nothing.
 * Then the grant route's checks of malformed rules.
 */

type Case = readonly [method: string, path: string, allowed: boolean, why: string];

const CASES: readonly Case[] = [
  ['GET', '/crm/v3/objects/contacts/123', true, '* takes one segment'],
  ['GET', '/crm/v3/objects/contacts/123?properties=email', true, 'the query passes through'],
  ['GET', '/crm/v3/objects/contacts/123?x=/../../admin', true, 'a query never changes the path'],
  ['GET', '/crm/v3/objects/%63ontacts/1', true, 'matched decoded, as the provider reads it'],
  ['GET', '/crm/v3/objects/contacts', false, '* needs a segment'],
  ['GET', '/crm/v3/objects/contacts/', false, '* never takes an empty segment'],
  ['GET', '/crm/v3/objects/contacts/123/', false, 'a trailing slash is significant'],
  ['GET', '/crm/v3/objects/contacts/123/extra', false, '* is one segment only'],
  ['GET', '/CRM/v3/objects/contacts/123', false, 'paths are case-sensitive'],
  ['GET', '/crm/v3/objects/Contacts/123', false, 'paths are case-sensitive (segment)'],
  ['POST', '/crm/v3/objects/contacts/123', false, 'the method must match'],
  ['PATCH', '/crm/v3/objects/contacts/9', false, 'the method must match (PATCH)'],
  ['DELETE', '/crm/v3/objects/contacts/9', true, 'DELETE rule'],
  ['POST', '/crm/v3/objects/notes', true, 'literal template'],
  ['PUT', '/crm/v3/objects/notes', false, 'literal template, other method'],
  ['POST', '/crm/v3/objects/notes/', false, 'literal template with a trailing slash'],
  ['GET', '/crm/v3/objects/contacts/../deals/1', false, 'a .. segment'],
  ['GET', '/crm/v3/objects/contacts/%2e%2e/deals', false, 'an encoded .. segment'],
  ['GET', '/crm/v3/objects/contacts/123/%2E%2E', false, 'an encoded .. segment (upper-case)'],
  ['GET', '/crm/v3/objects/contacts/./123', false, 'a . segment'],
  ['GET', '/crm/v3/objects/contacts/%2e', false, 'an encoded . segment'],
  ['GET', '/crm/v3/objects/contacts/123%2Fassociations', false, 'an encoded slash'],
  ['GET', '/crm/v3/objects/contacts/123%2fassociations', false, 'an encoded slash (lower-case)'],
  ['GET', '/crm/v3/objects/contacts/123%5Cx', false, 'an encoded backslash'],
  ['GET', '/crm/v3/objects/contacts/123\\x', false, 'a raw backslash'],
  ['GET', '/crm//v3/objects/contacts/123', false, 'a double slash'],
  ['GET', '//crm/v3/objects/contacts/123', false, 'a leading double slash'],
  ['GET', '/crm/v3/objects/contacts/123;jsessionid=x', false, 'a ; path parameter'],
  ['GET', '/crm/v3/objects/contacts/123%3Bx', false, 'an encoded ;'],
  ['GET', '/crm/v3/objects/contacts/123%3Fa=1', false, 'an encoded ?'],
  ['GET', '/crm/v3/objects/contacts/123%23frag', false, 'an encoded #'],
  [
    'GET',
    '/crm/v3/objects/deals/1?x=/crm/v3/objects/contacts/1',
    false,
    'a query cannot lend its path',
  ],
  ['GET', '/crm/v3/objects/contacts/%ZZ', false, 'malformed percent-encoding'],
  ['GET', '/crm/v3/objects/contacts/%00', false, 'an encoded NUL'],
  ['GET', '/crm/v3/objects/contacts/123/associations/companies', true, '** takes the rest'],
  ['GET', '/crm/v3/objects/contacts/123/associations/companies/456/labels', true, '** takes many'],
  ['GET', '/crm/v3/objects/contacts/123/associations/x/', true, '** takes a trailing slash'],
  ['GET', '/crm/v3/objects/contacts/123/associations', false, '** needs one segment'],
  ['GET', '/crm/v3/objects/contacts/123/associations/', false, '** never takes only a slash'],
  ['GET', '/crm/v3/objects/contacts/123/associations/a//b', false, 'a double slash under **'],
  ['GET', '/crm/v3/objects/contacts/123/associations/a/../../../../deals', false, '.. under **'],
  ['GET', '/files/a/b/c.txt', true, '** under /files'],
  ['GET', '/files', false, '** needs one segment'],
  ['GET', '/files/%2e%2e/secret', false, 'an encoded .. under **'],
  ['GET', '/files/a%2F..%2Fsecret', false, 'encoded slashes under **'],
  ['GET', '/api/v1/lead/', true, 'a template ending in /'],
  ['GET', '/api/v1/lead', false, 'a template ending in / needs the slash'],
  ['GET', '/', false, 'the root is not allowed'],
];

describe('proxy rules', () => {
  let h: ProxyHarness;
  let linkId: string;

  before(async () => {
    h = await startProxyHarness();
    const link = await h.connect('lnk_proxy_rules');
    linkId = link.id;
    const res = await rawRequest(
      h.stack.publicUrl,
      'POST',
      '/v1/grants',
      { authorization: h.services.bearer('admin-svc'), 'content-type': 'application/json' },
      JSON.stringify({
        service_id: 'worker',
        link_id: linkId,
        purpose: 'CRM contact sync',
        token_release: false,
        proxy: TABLE_RULES,
      }),
    );
    assert.equal(res.status, 201, res.body);
    const grant = JSON.parse(res.body) as Record<string, unknown>;
    assert.equal(grant.token_release, false);
    assert.deepEqual(grant.proxy, TABLE_RULES);
  });
  after(() => h.close());

  it(`when ${CASES.length} method/path cases are proxied, then exactly the allowed ones reach the API, path unchanged`, async () => {
    assert.ok(CASES.length >= 30);
    const mismatches: string[] = [];
    for (const [method, path, allowed, why] of CASES) {
      const before = h.api.received.length;
      const res = await rawRequest(h.stack.publicUrl, method, `/v1/links/${linkId}/proxy${path}`, {
        authorization: h.services.bearer('worker'),
      });
      const seen = h.api.received.slice(before);
      if (allowed) {
        if (
          res.status !== 200 ||
          seen.length !== 1 ||
          seen[0]!.url !== path ||
          seen[0]!.method !== method
        )
          mismatches.push(
            `${method} ${path} (${why}): ${res.status}, API saw ${JSON.stringify(seen.map((s) => `${s.method} ${s.url}`))}`,
          );
      } else {
        const body = res.body ? (JSON.parse(res.body) as { code?: string }) : {};
        if (res.status !== 403 || body.code !== 'proxy_not_allowed' || seen.length !== 0)
          mismatches.push(
            `${method} ${path} (${why}): ${res.status} ${body.code}, API saw ${seen.length}`,
          );
      }
    }
    assert.deepEqual(mismatches, []);
  });

  it('when a grant is posted with malformed proxy rules, then 400 invalid_request or 422 grant_never_matches naming the rule', async () => {
    const cases: [unknown, Record<string, unknown>, number, string, string][] = [
      [{ allow: [] }, {}, 400, 'invalid_request', 'proxy.allow'],
      [[], {}, 400, 'invalid_request', 'proxy'],
      [{ allow: [{ method: 'GET', path: '/a' }], deny: [] }, {}, 400, 'invalid_request', 'proxy'],
      [
        { allow: [{ method: 'get', path: '/a' }] },
        {},
        400,
        'invalid_request',
        'proxy.allow[0].method',
      ],
      [
        { allow: [{ method: 'HEAD', path: '/a' }] },
        {},
        400,
        'invalid_request',
        'proxy.allow[0].method',
      ],
      [
        { allow: [{ method: 'GET', path: 'a/b' }] },
        {},
        400,
        'invalid_request',
        'proxy.allow[0].path',
      ],
      [
        { allow: [{ method: 'GET', path: '/a/**/b' }] },
        {},
        400,
        'invalid_request',
        'proxy.allow[0].path',
      ],
      [
        { allow: [{ method: 'GET', path: '/a/b*' }] },
        {},
        400,
        'invalid_request',
        'proxy.allow[0].path',
      ],
      [
        { allow: [{ method: 'GET', path: '/a b' }] },
        {},
        400,
        'invalid_request',
        'proxy.allow[0].path',
      ],
      [
        { allow: [{ method: 'GET', path: '/a', extra: 1 }] },
        {},
        400,
        'invalid_request',
        'proxy.allow[0]',
      ],
      [
        {
          allow: [
            { method: 'GET', path: '/ok' },
            { method: 'GET', path: '/a/../b' },
          ],
        },
        {},
        422,
        'grant_never_matches',
        'proxy.allow[1].path',
      ],
      [
        { allow: [{ method: 'GET', path: '/a//b' }] },
        {},
        422,
        'grant_never_matches',
        'proxy.allow[0].path',
      ],
      [
        { allow: [{ method: 'GET', path: '/a%2Fb' }] },
        {},
        422,
        'grant_never_matches',
        'proxy.allow[0].path',
      ],
      [
        { allow: [{ method: 'GET', path: '/a;b' }] },
        {},
        422,
        'grant_never_matches',
        'proxy.allow[0].path',
      ],
      [null, { token_release: false }, 400, 'invalid_request', 'proxy'],
      [
        { allow: [{ method: 'GET', path: '/a' }] },
        { token_release: 'no' },
        400,
        'invalid_request',
        'token_release',
      ],
    ];
    for (const [proxy, extra, status, code, parameter] of cases) {
      const res = await rawRequest(
        h.stack.publicUrl,
        'POST',
        '/v1/grants',
        { authorization: h.services.bearer('admin-svc'), 'content-type': 'application/json' },
        JSON.stringify({ service_id: 'worker', link_id: linkId, purpose: 'p', proxy, ...extra }),
      );
      const body = JSON.parse(res.body) as Record<string, unknown>;
      assert.deepEqual(
        [res.status, body.code, body.parameter],
        [status, code, parameter],
        `${JSON.stringify(proxy)} ${JSON.stringify(extra)}: ${res.body}`,
      );
    }
  });
});
