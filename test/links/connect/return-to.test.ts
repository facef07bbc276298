import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { checkReturnTo, withResult } from '../../../src/links/connect/return-to.js';
import {
  APP_ORIGIN,
  startConnectHarness,
  type ConnectHarness,
} from '../../support/connect-harness.js';

/** Open-redirect vectors against return_to (RFC 9700 §4.11): exact origin match, no repair. */

const REFUSED: Record<string, unknown> = {
  'scheme-relative': '//evil.com',
  'another origin': 'https://evil.com',
  'allowed host as a prefix of another host': 'https://app.example.com.evil.com',
  'allowed host as userinfo': 'https://app.example.com@evil.com',
  'upper-case scheme with userinfo': 'HTTPS://app.example.com@evil.com',
  'encoded slash in userinfo': 'https://app.example.com%2F@evil.com',
  'backslash after the scheme': 'https:/\\evil.com',
  'backslash authority': 'https:\\\\evil.com',
  'slash-backslash relative': '/\\evil.com',
  'javascript:': 'javascript:alert(document.cookie)',
  'javascript: with the allowed host in a comment': 'javascript://app.example.com/%0aalert(1)',
  'data:': 'data:text/html,<script>alert(1)</script>',
  'scheme mismatch': 'http://app.example.com',
  'port mismatch': 'https://app.example.com:444',
  'explicit default port': 'https://app.example.com:443/',
  'encoded scheme-relative': '%2F%2Fevil.com',
  'special scheme without slashes': 'https:evil.com',
  'special scheme without slashes, allowed host': 'https:app.example.com',
  'tab inside the host': 'https://app.exa\tmple.com',
  'newline inside the host': 'https://evil.com\n.app.example.com',
  'carriage return': 'https://app.example.com/\r\nSet-Cookie: x=1',
  'leading space': ' https://app.example.com',
  'trailing dot host': 'https://app.example.com./',
  'encoded hash in host': 'https://evil.com%23.app.example.com',
  'allowed origin only in the fragment': 'https://evil.com#https://app.example.com',
  'allowed origin only in the query': 'https://evil.com/?https://app.example.com',
  'encoded control character': 'https://app.example.com/%0d%0aLocation:%20https://evil.com',
  'encoded backslash': 'https://app.example.com/%5c%5cevil.com',
  'homoglyph host': 'https://app.exam\u0440le.com',
  'relative path': '/settings',
  'empty string': '',
  'over 2048 characters': `${APP_ORIGIN}/${'a'.repeat(2048)}`,
  'a number': 42,
  null: null,
  'an array': [`${APP_ORIGIN}/ok`],
  'an object': { href: `${APP_ORIGIN}/ok` },
};

const ACCEPTED = [
  APP_ORIGIN,
  `${APP_ORIGIN}/`,
  `${APP_ORIGIN}/settings/integrations?tab=crm#top`,
  'https://APP.example.com/x',
];

describe('when a session asks for a return_to', () => {
  let h: ConnectHarness;
  before(async () => {
    h = await startConnectHarness();
  });
  after(() => h.close());

  for (const [name, value] of Object.entries(REFUSED)) {
    test(`then ${name} (${JSON.stringify(value)?.slice(0, 60)}) is refused with 400 invalid_return_to`, async () => {
      const answer = await h.request('/v1/sessions', {
        method: 'POST',
        headers: { authorization: h.services.bearer('crm-hs'), 'content-type': 'application/json' },
        body: JSON.stringify({ tenant_id: 't', user_id: 'u', return_to: value }),
      });
      assert.equal(answer.status, 400, answer.text);
      assert.equal(answer.json?.code, 'invalid_return_to');
      assert.ok(!answer.text.includes('evil.com'), 'the refused value is not echoed');
      assert.throws(
        () => checkReturnTo(value, [APP_ORIGIN]),
        (err: { code?: string }) => err.code === 'invalid_return_to',
      );
    });
  }

  for (const value of ACCEPTED) {
    test(`then ${value} on the allowlisted origin is accepted as written`, async () => {
      const answer = await h.request('/v1/sessions', {
        method: 'POST',
        headers: { authorization: h.services.bearer('crm-hs'), 'content-type': 'application/json' },
        body: JSON.stringify({ tenant_id: 't', user_id: 'u', return_to: value }),
      });
      assert.equal(answer.status, 201, answer.text);
      assert.equal(checkReturnTo(value, [APP_ORIGIN]), value);
    });
  }

  test('then the result parameters replace any of the same name already in return_to', () => {
    assert.equal(
      withResult(`${APP_ORIGIN}/cb?status=forged&keep=1#frag`, {
        status: 'error',
        error: 'invalid_state',
      }),
      `${APP_ORIGIN}/cb?status=error&keep=1&error=invalid_state#frag`,
    );
  });
});
