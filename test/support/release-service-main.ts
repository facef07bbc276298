/**
 * A child-process entry point for multi-replica tests and the benchmark: the real token-release
 * feature on the configured store (Redis in those tests), wired the way main.ts is expected to
 * wire it (see the H5 report), configured only through loadConfig(process.env). Logs JSON lines
 * to stdout, the first of interest being `linkvault listening on port N` (as main.ts does).
 *
 * Run: node --import tsx test/support/release-service-main.ts
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createGrantRouter } from '../../src/http/grant-routes.js';
import { createServiceAuth } from '../../src/http/service-auth.js';
import { createTokenFastPath } from '../../src/http/token-fast-path.js';
import { createTokenRouter } from '../../src/http/token-routes.js';
import { createKeyProvider } from '../../src/keys/create-key-provider.js';
import { createVault } from '../../src/keys/vault.js';
import { auditKeyLoader, createAudit } from '../../src/links/audit.js';
import { createBackgroundRefresher } from '../../src/links/background-refresher.js';
import { loadCatalogue } from '../../src/links/catalogue.js';
import { createGrants } from '../../src/links/grants.js';
import { createRefreshCoordinator } from '../../src/links/refresh-coordinator.js';
import { createTokenRelease } from '../../src/links/token-release.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import { createStore } from '../../src/store/create-store.js';

const config = loadConfig(process.env, process.cwd());
const log = createLogger({ level: config.logLevel });
const metrics = new Metrics();
const now = Date.now;
const store = await createStore(config.store, { metrics, log });
const keys = await createKeyProvider(config.keys, { metrics, log });
const vault = createVault({ keys, metrics, maxEntries: config.keyCache.maxEntries, maxAgeMs: config.keyCache.maxAgeMs });
const catalogue = loadCatalogue({ builtinFile: join(import.meta.dirname, '../../config/providers.json'), config });
const oauth = createOAuthClient({ catalogue, config, log });
const auth = createServiceAuth({ services: config.services, audience: config.audience });
// A loader, not an awaited key: a key service that is down at start fails releases closed (503) instead of the start.
const audit = createAudit({ store, hmacKey: auditKeyLoader({ store, vault, currentKeyId: () => keys.currentKeyId(), now }), now });
const serviceIds = new Set(config.services.map((s) => s.id));
const grants = createGrants({ store, audit, isService: (id) => serviceIds.has(id), now });
const coordinator = createRefreshCoordinator({ store, vault, oauth, audit, metrics, log, now, lockTtlMs: config.refreshLockTtlMs });
const release = createTokenRelease({ store, vault, coordinator, audit, metrics, log, now });
const refresher = createBackgroundRefresher({ store, coordinator, log, now, intervalMs: config.backgroundRefreshIntervalMs, leadMs: config.refreshLeadMs });
if (config.backgroundRefresh) refresher.start();

const app = createApp({ config, store, keys, metrics, log, routers: [createTokenRouter({ auth, release }), createGrantRouter({ auth, grants })] });
// The hot path skips Express for the plain case (LV_TEST_FAST_PATH=false measures without it).
const fastPath = process.env.LV_TEST_FAST_PATH === 'false' ? () => false : createTokenFastPath({ auth, release, metrics, log, hsts: config.publicUrl.startsWith('https:') });
const server = createServer((req, res) => {
  if (!fastPath(req, res)) app(req, res);
});
server.keepAliveTimeout = 65_000;
await new Promise<void>((resolve) => server.listen(config.port, config.host ?? '127.0.0.1', resolve));
const port = (server.address() as AddressInfo).port;
// Written directly (not through the logger) so that the parent sees it at any log level.
process.stdout.write(`${JSON.stringify({ msg: `linkvault listening on port ${port}`, port, pid: process.pid })}\n`);

async function shutdown(): Promise<void> {
  await refresher.stop();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await store.close();
  process.exit(0);
}
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());
