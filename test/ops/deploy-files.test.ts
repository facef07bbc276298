import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadConfig } from '../../src/config.js';

/**
 * docker-compose.yml and docs/k8s/*.yaml set only variables linkvault reads (documented in
 * docs/configuration.md, which test/config-docs.test.ts keeps in sync with src/config.ts), or the
 * `secret_env` names of the services file they ship; the files they point at are the ones they
 * mount; and their configuration loads with the service's own loadConfig. The YAML is read simply
 * (line patterns), on purpose: these files are ours and kept in this shape.
 */

const root = join(import.meta.dirname, '..', '..');
const read = (path: string): string => readFileSync(join(root, path), 'utf8');
const dir = mkdtempSync(join(tmpdir(), 'linkvault-deploy-files-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Variables docs/configuration.md documents (first column of its tables). */
function documented(): Set<string> {
  return new Set(
    [...read('docs/configuration.md').matchAll(/^\| `([A-Z][A-Z0-9_]+)` \|/gm)].map((m) => m[1]!),
  );
}

function secretEnvs(servicesJson: string): Set<string> {
  const services = (JSON.parse(servicesJson) as { services: { keys: { secret_env?: string }[] }[] })
    .services;
  return new Set(
    services.flatMap((s) => s.keys.map((k) => k.secret_env)).filter((n): n is string => !!n),
  );
}

/** `KEY: value` lines of an indented YAML block that starts after `header` (uppercase keys only). */
function upperKeysUnder(text: string, header: RegExp): Map<string, string> {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => header.test(l));
  assert.ok(start >= 0, `no ${header}`);
  const out = new Map<string, string>();
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    if (!/^\s/.test(line)) break;
    const m = /^\s+([A-Z][A-Z0-9_]*):\s*(.*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!.replace(/^"(.*)"$/, '$1'));
  }
  return out;
}

/** Compose interpolation: `${VAR:?message}` and `${VAR}` from `given`, `${VAR:-default}` defaulted. */
function interpolate(value: string, given: Record<string, string>): string {
  return value.replace(/\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}/g, (_all, name: string, op, rest) => {
    if (given[name] !== undefined) return given[name];
    if (op === '-') return rest as string;
    throw new Error(`${name} is required by docker-compose.yml and the test gave none`);
  });
}

function keyFile(): string {
  const path = join(dir, `master-${Math.random().toString(36).slice(2)}.key`);
  writeFileSync(path, Buffer.alloc(32, 1), { mode: 0o600 });
  return path;
}

describe('docker-compose.yml', () => {
  const text = read('docker-compose.yml');
  const env = upperKeysUnder(text, /^x-linkvault-environment:/);

  test('then every variable it sets, and every one it interpolates, is one linkvault reads', () => {
    const known = documented();
    assert.ok(env.size >= 8);
    const unknown = [...env.keys()].filter((name) => !known.has(name));
    const interpolated = [...text.matchAll(/^[^#\n]*\$\{([A-Z0-9_]+)/gm)].map((m) => m[1]!);
    unknown.push(...interpolated.filter((name) => !known.has(name)));
    assert.deepEqual(unknown, []);
  });

  test('then the key file and the services file it names are the ones it mounts', () => {
    assert.equal(env.get('LINKVAULT_LOCAL_KEY_FILE'), '/run/secrets/master.key');
    assert.match(text, /source: master_key\n\s+target: master\.key/);
    assert.match(text, /master_key:\n\s+file: \.\/secrets\/master\.key/);
    assert.match(text, new RegExp(`:${env.get('LINKVAULT_SERVICES_FILE')}:ro`));
  });

  test('then its configuration loads, with Redis AOF on and the check run before the service', () => {
    const values: Record<string, string> = {};
    for (const [name, value] of env)
      values[name] = interpolate(value, { LINKVAULT_PUBLIC_URL: 'https://linkvault.example.com' });
    values.LINKVAULT_LOCAL_KEY_FILE = keyFile();
    const services = join(dir, 'compose-services.json');
    copyFileSync(join(root, 'config/services.example.json'), services);
    values.LINKVAULT_SERVICES_FILE = services;
    for (const name of secretEnvs(read('config/services.example.json')))
      values[name] = 'a-secret-of-at-least-thirty-two-bytes-000000';
    const config = loadConfig(values, dir);
    assert.equal(config.production, true);
    assert.equal(config.store.kind, 'redis');
    assert.equal(config.metricsPort, 9464);
    assert.equal(config.host, null);
    assert.match(text, /--appendonly\n\s+- "yes"/);
    assert.match(text, /--maxmemory-policy\n\s+- noeviction/);
    assert.match(text, /check-config:\n\s+condition: service_completed_successfully/);
    assert.match(text, /command: \["node", "bin\/linkvault\.js", "check-config"\]/);
  });
});

describe('docs/k8s', () => {
  const configMap = read('docs/k8s/configmap.yaml');
  const deployment = read('docs/k8s/deployment.yaml');
  const secret = read('docs/k8s/secret.yaml');
  const data = upperKeysUnder(configMap, /^data:/);
  const servicesJson = configMap
    .split('services.json: |\n')[1]!
    .split('\n')
    .map((l) => l.replace(/^ {4}/, ''))
    .join('\n');
  const podEnv = [
    ...deployment.matchAll(/- name: ([A-Z][A-Z0-9_]*)\n\s+(value|valueFrom):\s*(.*)/g),
  ];

  test('then every variable set in the ConfigMap and the Deployment is one linkvault reads, or a secret_env of its services file', () => {
    const allowed = new Set([...documented(), ...secretEnvs(servicesJson)]);
    assert.ok(data.size >= 8 && podEnv.length >= 2);
    const names = [...data.keys(), ...podEnv.map((m) => m[1]!)];
    assert.deepEqual(
      names.filter((name) => !allowed.has(name)),
      [],
    );
  });

  test('then the key file, the services file, the ports and the probes match what the Deployment mounts and serves', () => {
    assert.equal(data.get('LINKVAULT_LOCAL_KEY_FILE'), '/var/run/linkvault-key/master.key');
    assert.match(deployment, /- name: key\n\s+mountPath: \/var\/run\/linkvault-key/);
    assert.match(
      deployment,
      /cp \/var\/run\/linkvault-secret\/master\.key \/var\/run\/linkvault-key\/master\.key/,
    );
    assert.match(deployment, /- name: secret\n\s+mountPath: \/var\/run\/linkvault-secret/);
    assert.match(secret, /^\s+master\.key: /m);
    assert.equal(data.get('LINKVAULT_SERVICES_FILE'), '/etc/linkvault/services.json');
    assert.match(deployment, /- name: config\n\s+mountPath: \/etc\/linkvault/);
    assert.match(deployment, new RegExp(`containerPort: ${data.get('LINKVAULT_PORT')}\\b`));
    assert.match(deployment, new RegExp(`containerPort: ${data.get('LINKVAULT_METRICS_PORT')}\\b`));
    assert.match(deployment, /readinessProbe:\n\s+httpGet:\n\s+path: \/readyz/);
    assert.match(deployment, /livenessProbe:\n\s+httpGet:\n\s+path: \/healthz/);
    for (const ref of deployment.matchAll(
      /secretKeyRef:\n\s+name: linkvault\n\s+key: ([a-z0-9.-]+)/g,
    ))
      assert.match(secret, new RegExp(`^\\s+${ref[1]!.replace('.', '\\.')}: `, 'm'), ref[1]);
  });

  test('then the configuration they describe loads', () => {
    const values: Record<string, string> = Object.fromEntries(data);
    for (const m of podEnv) {
      if (m[2] === 'value') values[m[1]!] = m[3]!.replace(/^"(.*)"$/, '$1');
      else
        values[m[1]!] =
          m[1] === 'LINKVAULT_REDIS_URL'
            ? 'rediss://:pw@redis.internal:6379/0'
            : 'a-secret-of-at-least-thirty-two-bytes-000000';
    }
    values.LINKVAULT_LOCAL_KEY_FILE = keyFile();
    const services = join(dir, 'k8s-services.json');
    writeFileSync(services, servicesJson);
    values.LINKVAULT_SERVICES_FILE = services;
    const config = loadConfig(values, dir);
    assert.equal(config.production, true);
    assert.equal(config.store.kind, 'redis');
    assert.deepEqual(
      config.services.map((s) => s.id),
      ['crm-sync'],
    );
    assert.equal(config.host, '0.0.0.0');
  });
});

describe('the Dockerfile', () => {
  test('then every stage builds FROM one NODE_IMAGE argument, so that pinning by digest is one edit', () => {
    const text = read('Dockerfile');
    const froms = [...text.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]!);
    assert.deepEqual(
      froms.filter((f) => !['${NODE_IMAGE}', 'build-tools'].includes(f)),
      [],
    );
    assert.match(text, /^ARG NODE_IMAGE=node:\d+-bookworm-slim(@sha256:[0-9a-f]{64})?$/m);
  });
});
