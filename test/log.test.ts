import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { LinkvaultError } from '../src/errors.js';
import { createLogger } from '../src/log.js';

/** A logger at debug whose lines are parsed into `lines`. */
function capture(): { log: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({
    level: 'debug',
    destination: { write: (s: string) => void lines.push(JSON.parse(s)) },
  });
  return { log, lines };
}

// What a provider answers at its token endpoint, in the shapes libraries attach it to errors.
const ANSWER_TOKEN = 'at-canary-00112233445566778899';
const ANSWER_REFRESH = 'rt-canary-99887766554433221100';
const FORM_BODY = `access_token=${ANSWER_TOKEN}&refresh_token=${ANSWER_REFRESH}&expires_in=3600`;

describe('when an error that carries a provider answer is logged as err', () => {
  test('then the line keeps its type, message, code, status and stack, and nothing of the answer', () => {
    const { log, lines } = capture();
    const libraryError = Object.assign(new Error('unexpected response'), {
      code: 'OAUTH_RESPONSE_IS_NOT_CONFORM',
      // Fields a library may attach, under names no list of secret names knows.
      body: FORM_BODY,
      response: { status: 200, headers: { 'x-debug': ANSWER_TOKEN }, text: FORM_BODY },
      details: [{ raw: { sfdc_token: ANSWER_TOKEN } }],
    });
    const err = new LinkvaultError('provider_unavailable', {
      detail: 'the provider answered badly',
      cause: libraryError,
      extra: { provider_id: 'acme', maybe_delivered: false },
    });
    log.warn({ link_id: 'lnk_1', err }, 'background refresh failed');

    const text = JSON.stringify(lines);
    assert.ok(!text.includes(ANSWER_TOKEN), 'the access token reached the log');
    assert.ok(!text.includes(ANSWER_REFRESH), 'the refresh token reached the log');
    const logged = lines[0]!.err as Record<string, unknown>;
    assert.deepEqual(Object.keys(logged).sort(), [
      'code',
      'extra',
      'message',
      'stack',
      'status',
      'type',
    ]);
    assert.equal(logged.type, 'LinkvaultError');
    assert.equal(
      logged.message,
      'provider_unavailable: the provider answered badly: unexpected response',
    );
    assert.equal(logged.code, 'provider_unavailable');
    assert.equal(logged.status, 503);
    assert.deepEqual(logged.extra, { provider_id: 'acme', maybe_delivered: false });
    assert.match(String(logged.stack), /caused by: Error: unexpected response/);
    assert.equal(lines[0]!.link_id, 'lnk_1');
  });

  test('then a system error keeps its code, errno and syscall', () => {
    const { log, lines } = capture();
    const err = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), {
      code: 'ECONNREFUSED',
      errno: -111,
      syscall: 'connect',
      address: '127.0.0.1',
    });
    log.warn({ err }, 'poll failed');
    const logged = lines[0]!.err as Record<string, unknown>;
    assert.deepEqual(Object.keys(logged).sort(), [
      'code',
      'errno',
      'message',
      'stack',
      'syscall',
      'type',
    ]);
    assert.deepEqual(
      [logged.code, logged.errno, logged.syscall],
      ['ECONNREFUSED', -111, 'connect'],
    );
  });

  test('then a thrown object that is not an error (it may be the whole answer) is not logged', () => {
    const { log, lines } = capture();
    log.error({ err: { access_token: ANSWER_TOKEN, raw: FORM_BODY } }, 'job failed');
    assert.deepEqual(lines[0]!.err, { type: 'non-error object', message: '[not logged]' });
  });
});

describe('when a caller logs what a library handed back under cause, error, response, body or headers', () => {
  test('then errors are reduced as under err and the raw answers are not logged', () => {
    const { log, lines } = capture();
    log.warn(
      {
        cause: { sfdc_token: ANSWER_TOKEN },
        error: new Error('bad answer'),
        response: { text: FORM_BODY },
        body: FORM_BODY,
        headers: { 'x-debug': ANSWER_TOKEN },
      },
      'provider answer',
    );
    assert.ok(!JSON.stringify(lines).includes(ANSWER_TOKEN));
    const { cause, error, response, body, headers } = lines[0]!;
    assert.deepEqual(
      { cause, response, body, headers },
      {
        cause: { type: 'non-error object', message: '[not logged]' },
        response: '[not logged]',
        body: '[not logged]',
        headers: '[not logged]',
      },
    );
    assert.deepEqual(Object.keys(error as object).sort(), ['message', 'stack', 'type']);
  });
});

describe('when a caller puts a well-known secret name at the top of a line', () => {
  test('then its value is censored, and our own top-level code and state are kept', () => {
    const { log, lines } = capture();
    log.info(
      {
        authorization: 'Bearer abc',
        access_token: ANSWER_TOKEN,
        refresh_token: ANSWER_REFRESH,
        'set-cookie': 'lv_bind=xyz',
        client_secret: 'shh',
        code: 'store_unavailable',
        state: 'active',
      },
      'x',
    );
    const { time: _time, pid: _pid, hostname: _hostname, ...rest } = lines[0]!;
    assert.deepEqual(rest, {
      level: 30,
      service: 'linkvault',
      authorization: '[redacted]',
      access_token: '[redacted]',
      refresh_token: '[redacted]',
      'set-cookie': '[redacted]',
      client_secret: '[redacted]',
      code: 'store_unavailable',
      state: 'active',
      msg: 'x',
    });
  });
});

describe('when the logger writes to standard output and the process exits at once', () => {
  test('then every line written before the exit is in the output', async () => {
    const lineCount = 20_000;
    const script = `
      import { createLogger } from ${JSON.stringify(join(import.meta.dirname, '../src/log.ts'))};
      const log = createLogger({ level: 'info' });
      for (let i = 0; i < ${lineCount}; i++) log.info({ request_id: 'req_' + i }, 'request');
      process.exit(0);
    `;
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    assert.equal(code, 0);
    const ids = out
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { request_id: string }).request_id);
    assert.equal(ids.length, lineCount);
    assert.equal(ids.at(-1), `req_${lineCount - 1}`);
  });
});
