import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { runInNewContext } from 'node:vm';
import request from 'supertest';
import {
  buildConnectPackage,
  DOCS_EXAMPLE_URL,
  documentedSdkMarkdown,
} from '../../packages/connect/build.mjs';
import type { LinkvaultConnect, LinkvaultConnectErrorCode } from '../../packages/connect/index.js';
import { connectScriptIntegrity, servedConnectScript } from '../../packages/connect/sri.js';
import { startStack } from '../support/stack.js';

/**
 * @linkvault/connect is the script linkvault serves (src/web/connect.js), copied at build time,
 * plus hand-written types: the copy is byte-identical, the SRI hash in docs/sdk.md is the hash of
 * what a running linkvault serves, and the .d.ts names exactly the members and error codes the
 * script has.
 */

const ROOT = join(import.meta.dirname, '../..');
const SERVED = readFileSync(join(ROOT, 'src/web/connect.js'), 'utf8');
const TYPES = readFileSync(join(ROOT, 'packages/connect/index.d.ts'), 'utf8');

/** The script run as a page would run it, with just enough of a window to define its API. */
function evaluateScript(source: string): LinkvaultConnect {
  const window: { linkvault?: LinkvaultConnect } = {};
  runInNewContext(source, { window });
  assert.ok(window.linkvault, 'the script defines window.linkvault');
  return window.linkvault;
}

describe('@linkvault/connect', () => {
  test('when the package is built, then its script is byte-for-byte the one linkvault serves', () => {
    const out = mkdtempSync(join(tmpdir(), 'lv-connect-'));
    try {
      assert.equal(readFileSync(buildConnectPackage(out), 'utf8'), SERVED);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  test('when a linkvault serves /sdk/connect.v1.js, then its bytes hash to the integrity documented in docs/sdk.md', async () => {
    const stack = await startStack({ env: { LINKVAULT_PUBLIC_URL: DOCS_EXAMPLE_URL } });
    try {
      const res = await request(stack.listener).get('/sdk/connect.v1.js').buffer(true);
      assert.equal(res.status, 200);
      const body = Buffer.isBuffer(res.body) ? res.body.toString('utf8') : res.text;
      assert.equal(body, servedConnectScript(DOCS_EXAMPLE_URL, SERVED));
      const integrity = `sha384-${createHash('sha384').update(body).digest('base64')}`;
      assert.equal(connectScriptIntegrity(DOCS_EXAMPLE_URL, SERVED), integrity);
      const docs = readFileSync(join(ROOT, 'docs/sdk.md'), 'utf8');
      assert.ok(docs.includes(`<!-- sri:connect.v1 -->\`${integrity}\``), 'docs/sdk.md SRI line');
      assert.equal(docs, documentedSdkMarkdown(docs), 'npm run docs:generate');
      // Another deployment serves other bytes: the hash is per public URL.
      assert.notEqual(connectScriptIntegrity('https://other.example', SERVED), integrity);
    } finally {
      await stack.close();
    }
  });

  test('when the script runs, then window.linkvault has exactly the members index.d.ts declares, and its error codes are the declared ones', () => {
    const api = evaluateScript(servedConnectScript(DOCS_EXAMPLE_URL, SERVED));
    assert.equal(api.origin, DOCS_EXAMPLE_URL);
    const declared = /export interface LinkvaultConnect \{([\s\S]*?)\n\}/.exec(TYPES)![1]!;
    const members = [...declared.matchAll(/^\s{2}(?:readonly )?([A-Za-z]+)[(:]/gm)].map(
      (m) => m[1],
    );
    assert.deepEqual(Object.keys(api).sort(), [...members].sort());
    assert.equal(typeof api.connect, 'function');
    assert.equal(typeof api.completeRedirect, 'function');

    const codes = /export type LinkvaultConnectErrorCode =([\s\S]*?);/.exec(TYPES)![1]!;
    const declaredCodes = [...codes.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]);
    const scriptCodes = Object.keys(
      runInNewContext(`(${/var MESSAGES = (\{[\s\S]*?\});/.exec(SERVED)![1]})`) as object,
    );
    assert.deepEqual([...declaredCodes].sort(), [...scriptCodes].sort());
    const code: LinkvaultConnectErrorCode = 'popup_blocked';
    const error = new api.LinkvaultConnectError(code);
    assert.equal(error.name, 'LinkvaultConnectError');
  });
});
