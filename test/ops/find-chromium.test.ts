import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, test } from 'node:test';
import { ChromiumPathError, findChromium } from '../support/find-chromium.js';

/** Chromium is looked up on PATH (several names) or CHROMIUM_PATH, never at a fixed path. */

const dir = mkdtempSync(join(tmpdir(), 'linkvault-find-chromium-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function fakeBinary(sub: string, name: string, mode = 0o755): string {
  mkdirSync(join(dir, sub), { recursive: true });
  const path = join(dir, sub, name);
  writeFileSync(path, '#!/bin/sh\n');
  chmodSync(path, mode);
  return path;
}

test('when chromium-browser is on PATH (Ubuntu), then it is found', () => {
  const path = fakeBinary('ubuntu', 'chromium-browser');
  assert.equal(
    findChromium({ PATH: [join(dir, 'empty'), join(dir, 'ubuntu')].join(delimiter) }),
    path,
  );
});

test('when several names are on PATH, then chromium wins, whichever directory comes first', () => {
  const chrome = fakeBinary('a', 'google-chrome');
  const chromium = fakeBinary('b', 'chromium');
  const PATH = [join(dir, 'a'), join(dir, 'b')].join(delimiter);
  assert.equal(findChromium({ PATH }), chromium);
  assert.notEqual(findChromium({ PATH }), chrome);
  assert.equal(findChromium({ PATH: join(dir, 'a') }), chrome);
});

test('when a file of that name is not executable, or a directory, then it is skipped', () => {
  fakeBinary('noexec', 'chromium', 0o644);
  mkdirSync(join(dir, 'isdir', 'chromium'), { recursive: true });
  assert.equal(
    findChromium({ PATH: [join(dir, 'noexec'), join(dir, 'isdir')].join(delimiter) }),
    null,
  );
});

test('when nothing is on PATH, then null (the browser tests then skip, or fail under CI)', () => {
  assert.equal(findChromium({ PATH: join(dir, 'empty') }), null);
  assert.equal(findChromium({}), null);
});

test('when CHROMIUM_PATH is set, then it wins over PATH, and a wrong one is an error, not a skip', () => {
  const custom = fakeBinary('custom', 'my-chrome');
  fakeBinary('path', 'chromium');
  assert.equal(findChromium({ CHROMIUM_PATH: custom, PATH: join(dir, 'path') }), custom);
  assert.throws(
    () => findChromium({ CHROMIUM_PATH: join(dir, 'missing'), PATH: join(dir, 'path') }),
    ChromiumPathError,
  );
  assert.throws(() => findChromium({ CHROMIUM_PATH: 'chromium' }), ChromiumPathError);
});
