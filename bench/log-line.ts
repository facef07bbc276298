/**
 * What one log line costs: `tsx bench/log-line.ts` writes LOG_LINES (default 50,000) lines through
 * createLogger (src/log.ts) and prints the CPU time per line for three shapes of line:
 *   - the request line http/observe-requests.ts writes for every request (the hot one),
 *   - a line with an `err` (a LinkvaultError whose cause is a library error),
 *   - the request line written to a real file (pino's destination, asynchronous), flushed.
 * The first two go to a destination that drops the text, so they measure the logger alone
 * (formatting, redaction, serializers); the third adds the write to the file.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type DestinationStream, type Logger } from 'pino';
import { LinkvaultError } from '../src/errors.js';
import { createLogger } from '../src/log.js';

const LINES = Number(process.env.LOG_LINES ?? 50_000);
const dropped: DestinationStream = { write: () => undefined };

function requestLine(log: Logger, i: number): void {
  log.info(
    {
      request_id: `req_${i}`,
      method: 'POST',
      route: '/v1/links/:id/token',
      status: 200,
      duration_ms: 1.234,
      user_agent: 'autocannon',
      request_bytes: 2,
    },
    'request',
  );
}

const cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), {
  code: 'ECONNREFUSED',
});
const failure = new LinkvaultError('provider_unavailable', {
  detail: 'the provider did not answer',
  cause,
  extra: { provider_id: 'hubspot', maybe_delivered: false },
});
function errLine(log: Logger, i: number): void {
  log.warn({ link_id: `lnk_${i}`, err: failure }, 'background refresh failed');
}

/**
 * CPU microseconds per line (user + system, every thread of the process) for LINES calls of
 * `write` after a warm-up, until `settled` resolves (the file written).
 */
async function measure(
  log: Logger,
  write: (log: Logger, i: number) => void,
  settled: () => Promise<void> = async () => undefined,
): Promise<number> {
  for (let i = 0; i < 2000; i++) write(log, i);
  await settled();
  const start = process.cpuUsage();
  for (let i = 0; i < LINES; i++) write(log, i);
  await settled();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / LINES;
}

const dir = mkdtempSync(join(tmpdir(), 'lv-log-line-'));
try {
  const file = join(dir, 'service.log');
  const toFile = pino.destination({ dest: file, sync: false, minLength: 4096 });
  await once(toFile, 'ready');
  const flushed = (): Promise<void> =>
    new Promise((resolve, reject) => toFile.flush((err) => (err ? reject(err) : resolve())));
  const results = {
    'request line': await measure(
      createLogger({ level: 'info', destination: dropped }),
      requestLine,
    ),
    'err line': await measure(createLogger({ level: 'info', destination: dropped }), errLine),
    'request line to a file': await measure(
      createLogger({ level: 'info', destination: toFile }),
      requestLine,
      flushed,
    ),
  };
  const written = readFileSync(file, 'utf8').split('\n').length - 1;
  console.log(`node ${process.version}, ${LINES} lines each (after 2,000 not measured)`);
  for (const [name, us] of Object.entries(results))
    console.log(`${name.padEnd(24)} ${us.toFixed(1).padStart(7)} µs CPU per line`);
  console.log(`lines in the file: ${written}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
