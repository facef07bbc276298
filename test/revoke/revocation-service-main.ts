/**
 * A child-process entry point for the restart test: the real revocation feature (with token
 * release, link reads and sessions beside it) on the configured store, wired exactly as main.ts
 * is told to wire it (H6 report), configured only through loadConfig(process.env). Logs JSON
 * lines to stdout; the one tests wait for is `linkvault listening on port N`, as main.ts logs it.
 * Once main.ts wires revocation, test/support/service-process.ts (bin/linkvault.js) can replace it.
 *
 * Run: node --import tsx test/revoke/revocation-service-main.ts
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createLinkRouter } from '../../src/http/link-routes.js';
import { createRevocationRouter } from '../../src/http/revocation-routes.js';
import { createServiceAuth } from '../../src/http/service-auth.js';
import { createTokenRouter } from '../../src/http/token-routes.js';
import { createKeyProvider } from '../../src/keys/create-key-provider.js';
import { createVault } from '../../src/keys/vault.js';
import { createAudit, loadAuditKey } from '../../src/links/audit.js';
import { loadCatalogue } from '../../src/links/catalogue.js';
import { createRefreshCoordinator } from '../../src/links/refresh-coordinator.js';
import { createRevocation } from '../../src/links/revocation.js';
import { createRevocationWorker, revocationWorkerOptionsFrom } from '../../src/links/revocation-worker.js';
import { createSessions } from '../../src/links/sessions.js';
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
const audit = createAudit({ store, hmacKey: await loadAuditKey({ store, vault, currentKeyId: () => keys.currentKeyId(), now }), now });
const sessions = createSessions({ config, store, catalogue, now });
const coordinator = createRefreshCoordinator({ store, vault, oauth, audit, metrics, log, now, lockTtlMs: config.refreshLockTtlMs });
const release = createTokenRelease({ store, vault, coordinator, audit, metrics, log, now });

// ---- revocation: the wiring main.ts needs ----
const revocation = createRevocation({ store, vault, catalogue, audit, log, metrics, now });
const revocationWorker = createRevocationWorker({ store, vault, oauth, catalogue, revocation, audit, metrics, log, now, options: revocationWorkerOptionsFrom(config) });
revocationWorker.start();

const app = createApp({
  config,
  store,
  keys,
  metrics,
  log,
  routers: [
    createTokenRouter({ auth, release }),
    createLinkRouter({ store, sessions, serviceAuth: auth }),
    createRevocationRouter({ revocation, auth, sessions }),
  ],
});
const server = createServer(app);
await new Promise<void>((resolve) => server.listen(config.port, config.host ?? '127.0.0.1', resolve));
const port = (server.address() as AddressInfo).port;
log.info({ port, pid: process.pid }, `linkvault listening on port ${port}`);

async function shutdown(): Promise<void> {
  await revocationWorker.stop();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await store.close();
  process.exit(0);
}
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());
