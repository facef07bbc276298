import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFIG_VARIABLES, ConfigError, providerEnvName, type Config } from './config.js';
import { CatalogueError, loadCatalogue, type Catalogue } from './providers/catalogue.js';

/**
 * What `linkvault check-config` says beyond "the configuration parses": settings that load but
 * are almost certainly wrong. A finding is a `warning` (printed, exit 0) or, in production, a
 * `refusal` for what would put tokens at risk (exit 1): the development master key, or a key file
 * others can read. Reads files (the key files' modes, the services file, the catalogue) and never
 * writes, never opens a store or a key service.
 */

export interface ConfigFinding {
  readonly level: 'warning' | 'refusal';
  /** The variable (or file) the finding is about. */
  readonly variable: string;
  readonly message: string;
}

export interface ConfigReport {
  readonly findings: readonly ConfigFinding[];
  /** What the configuration enables, as name/value pairs in reading order. */
  readonly summary: readonly (readonly [string, string])[];
}

export interface CheckConfigOptions {
  /** The built-in catalogue (config/providers.json); default: the one next to this package. */
  readonly builtinCatalogue?: string;
}

/** The directory holding package.json (from src/ through tsx, or dist/src/ compiled). */
function packageRoot(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error('no package.json above src/config-check');
  }
}

/**
 * Optimal-string-alignment distance (Levenshtein plus adjacent transpositions, so `PROT` is one
 * edit from `PORT`).
 */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** The closest candidate, when it is close enough to be a typo of `name` (at most a third of it edited). */
export function nearestName(name: string, candidates: Iterable<string>): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(name, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best !== null && bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
}

const CREDENTIAL = /^LINKVAULT_PROVIDER_([A-Z0-9_]+)_CLIENT_(ID|SECRET)$/;

/** The variable names the services file reads its HMAC secrets from (they may start with LINKVAULT_). */
function secretEnvNames(config: Pick<Config, 'servicesFile'>): string[] {
  if (!config.servicesFile) return [];
  try {
    const json = JSON.parse(readFileSync(config.servicesFile, 'utf8')) as {
      services?: { keys?: { secret_env?: unknown }[] }[];
    };
    return (json.services ?? []).flatMap((s) =>
      (s.keys ?? []).flatMap((k) => (typeof k.secret_env === 'string' ? [k.secret_env] : [])),
    );
  } catch {
    return []; // loadConfig already read and validated it; nothing to add here
  }
}

function loadConfiguredCatalogue(config: Config, builtinFile: string): Catalogue {
  try {
    return loadCatalogue({ builtinFile, config });
  } catch (err) {
    if (err instanceof CatalogueError)
      throw new ConfigError(
        config.providersFile ? 'LINKVAULT_PROVIDERS_FILE' : 'config/providers.json',
        err.message,
      );
    throw err;
  }
}

function unknownVariables(
  env: Readonly<Record<string, string | undefined>>,
  config: Config,
  catalogueIds: readonly string[],
): ConfigFinding[] {
  const known = new Set([...CONFIG_VARIABLES, ...secretEnvNames(config)]);
  const credentialNames = catalogueIds.flatMap((id) => [
    `LINKVAULT_PROVIDER_${providerEnvName(id)}_CLIENT_ID`,
    `LINKVAULT_PROVIDER_${providerEnvName(id)}_CLIENT_SECRET`,
  ]);
  const findings: ConfigFinding[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('LINKVAULT_') || known.has(name)) continue;
    const credential = CREDENTIAL.exec(name);
    if (credential) {
      const envId = credential[1]!;
      if (catalogueIds.some((id) => providerEnvName(id) === envId)) continue;
      const near = nearestName(
        envId,
        catalogueIds.map((id) => providerEnvName(id)),
      );
      findings.push({
        level: 'warning',
        variable: name,
        message: `credentials for a provider that is not in the catalogue (${config.providersFile ? 'config/providers.json + LINKVAULT_PROVIDERS_FILE' : 'config/providers.json'})${near ? `: did you mean ${name.replace(`_${envId}_`, `_${near}_`)}?` : ''}`,
      });
      continue;
    }
    const near = nearestName(name, [...known, ...credentialNames]);
    findings.push({
      level: 'warning',
      variable: name,
      message: `not a linkvault variable, ignored${near ? `: did you mean ${near}?` : ''}`,
    });
  }
  return findings;
}

/** Group/other permission bits on a key file: readable (or writable) by someone else than its owner. */
function keyFileFindings(config: Config): ConfigFinding[] {
  if (config.keys.kind !== 'local') return [];
  const files: [string, string][] = [
    ['LINKVAULT_LOCAL_KEY_FILE', config.keys.localKeyFile],
    ...config.keys.previousKeyFiles.map((f): [string, string] => [
      'LINKVAULT_LOCAL_PREVIOUS_KEY_FILES',
      f,
    ]),
  ];
  const findings: ConfigFinding[] = [];
  for (const [variable, file] of files) {
    let mode: number;
    try {
      mode = statSync(file).mode & 0o777;
    } catch {
      continue; // a missing development key is generated at start (0600); production refused it in loadConfig
    }
    if ((mode & 0o077) !== 0)
      findings.push({
        level: config.production ? 'refusal' : 'warning',
        variable,
        message: `${file} has mode ${mode.toString(8).padStart(4, '0')}: group or others may read the master key (chmod 600 ${file})`,
      });
  }
  return findings;
}

/** Production running on the key a development start generates (data/master.key by default, next to the dev service key). */
function developmentKeyFindings(
  env: Readonly<Record<string, string | undefined>>,
  config: Config,
): ConfigFinding[] {
  if (!config.production || config.keys.kind !== 'local') return [];
  const keyFile = config.keys.localKeyFile;
  const defaulted = (env.LINKVAULT_LOCAL_KEY_FILE ?? '').trim() === '';
  const besideDevKey = existsSync(join(dirname(keyFile), 'dev-service.key'));
  if (!defaulted && !besideDevKey) return [];
  return [
    {
      level: 'refusal',
      variable: 'LINKVAULT_LOCAL_KEY_FILE',
      message: `${keyFile} is the development master key (${defaulted ? 'LINKVAULT_LOCAL_KEY_FILE is not set, so this is the file a development start generates' : 'it sits next to dev-service.key, in a directory a development start used'}); create a key for production (head -c 32 /dev/urandom > key; chmod 600 key) and set LINKVAULT_LOCAL_KEY_FILE, or use LINKVAULT_KEYS=aws-kms`,
    },
  ];
}

function describeStore(config: Config): string {
  if (config.store.kind === 'sqlite') return `sqlite (${config.store.sqlitePath})`;
  if (config.store.clusterNodes)
    return `redis cluster (${config.store.clusterNodes.map((n) => `${n.host}:${n.port}`).join(', ')}; prefix ${config.store.keyPrefix})`;
  // The URL may carry a password: show its host only.
  let where = 'redis';
  try {
    const url = new URL(config.store.redisUrl ?? '');
    where = `${url.protocol}//${url.host}`;
  } catch {
    /* loadConfig validated it */
  }
  return `redis (${where}; prefix ${config.store.keyPrefix})`;
}

function describeKeys(config: Config): string {
  if (config.keys.kind === 'aws-kms')
    return `aws-kms (${config.keys.kmsKeyId}, ${config.keys.region ?? 'no region'}${config.keys.endpoint ? `, endpoint ${config.keys.endpoint}` : ''})`;
  const previous = config.keys.previousKeyFiles.length;
  const generated = !existsSync(config.keys.localKeyFile) ? ', generated at first start' : '';
  return `local (${config.keys.localKeyFile}${generated}${previous ? `; ${previous} previous key file(s)` : ''})`;
}

/**
 * Checks a loaded configuration. `env` is the same object loadConfig read. Throws ConfigError
 * when the catalogue itself is invalid (as the service's start would).
 */
export function checkConfiguration(
  config: Config,
  env: Readonly<Record<string, string | undefined>>,
  options: CheckConfigOptions = {},
): ConfigReport {
  const builtinFile = options.builtinCatalogue ?? join(packageRoot(), 'config', 'providers.json');
  const catalogue = loadConfiguredCatalogue(config, builtinFile);
  const entries = [...catalogueIdsOf(catalogue, builtinFile, config)];
  const enabled = catalogue.enabled().map((e) => e.id);
  if (config.sandbox) enabled.push('sandbox (built-in Sandbox CRM)');

  const findings: ConfigFinding[] = [
    ...unknownVariables(env, config, entries),
    ...developmentKeyFindings(env, config),
    ...keyFileFindings(config),
  ];
  if (config.production && config.services.length === 0)
    findings.push({
      level: 'warning',
      variable: 'LINKVAULT_SERVICES_FILE',
      message: `no services registered${config.servicesFile ? ` in ${config.servicesFile}` : ' (no services file: set LINKVAULT_SERVICES_FILE)'}: no backend can mint a session or obtain a token`,
    });
  if (config.production && enabled.length === 0)
    findings.push({
      level: 'warning',
      variable: 'LINKVAULT_PROVIDER_<ID>_CLIENT_ID',
      message:
        'no provider is enabled: set LINKVAULT_PROVIDER_<ID>_CLIENT_ID and _CLIENT_SECRET for each provider to offer (docs/providers/README.md)',
    });

  const services = config.services.map((s) => `${s.id} (${[...s.roles].join(', ') || 'no roles'})`);
  const summary: [string, string][] = [
    ['environment', config.production ? 'production' : config.nodeEnv],
    ['listen', `${config.host ?? '*'}:${config.port}`],
    ['public url', config.publicUrl],
    ['redirect uris', `${config.publicUrl}/v1/oauth/callback/<provider id>`],
    ['store', describeStore(config)],
    ['keys', describeKeys(config)],
    ['audience', config.audience],
    ['services', services.length ? services.join('; ') : 'none'],
    [
      'providers enabled',
      enabled.length ? enabled.join(', ') : `none (of ${entries.length} in the catalogue)`,
    ],
    ['sandbox', config.sandbox ? 'on (any username signs in: development only)' : 'off'],
  ];
  return { findings, summary };
}

/** Every id in the catalogue (the Catalogue port has no list of all entries, so read them by the files' ids). */
function catalogueIdsOf(catalogue: Catalogue, builtinFile: string, config: Config): Set<string> {
  const ids = new Set<string>();
  for (const file of [builtinFile, config.providersFile]) {
    if (!file) continue;
    const json = JSON.parse(readFileSync(file, 'utf8')) as { providers: { id: string }[] };
    for (const p of json.providers) if (catalogue.get(p.id)) ids.add(p.id);
  }
  return ids;
}
