/**
 * Real redis-server processes for tests: each on a free loopback port with its own temp dir.
 *
 * Usage:
 * ```ts
 * const redis = await startRedis();            // standalone, no persistence
 * after(() => redis.stop());
 * const cluster = await startRedisCluster({ masters: 3 });
 * after(() => cluster.stop());
 * ```
 * Every process started here is also SIGKILLed (and its dir removed) when the test process exits,
 * so a failing test never leaves a server behind. Never touches the shared Redis on :6379.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Redis } from 'ioredis';

export interface StartRedisOptions {
  /** `appendonly yes` (AOF) when true; default false. */
  readonly appendonly?: boolean;
  /** `always`, `everysec` or `no`; default Redis's own (everysec). */
  readonly appendfsync?: string;
  /** e.g. `noeviction` (Redis's default) or `allkeys-lru`. */
  readonly maxmemoryPolicy?: string;
  /** Further redis-server arguments, e.g. `['--rename-command', 'CONFIG', '']` to disable CONFIG. */
  readonly extraArgs?: readonly string[];
}

/** One running (or stopped) redis-server process. */
export interface RedisServerHandle {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  /** Pid of the current process (changes on restart). */
  readonly pid: number;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
  /**
   * Sends `signal` (default SIGKILL) and resolves when the process has exited; the dir is kept.
   * SIGSTOP and SIGCONT freeze and thaw the server (a hung Redis) and resolve at once.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and dir (after kill, or stops it first); resolves when ready. */
  restart(): Promise<void>;
}

export interface RedisClusterHandle {
  /** Seed nodes for `new Cluster(seeds)`. */
  readonly seeds: readonly { host: string; port: number }[];
  /** The master processes, in slot order (node 0 owns the lowest slots). */
  readonly nodes: readonly RedisServerHandle[];
  /** The replica processes (`replicasPerMaster`), replicas[i] replicating nodes[i % masters]. */
  readonly replicas: readonly RedisServerHandle[];
  /** Stops every node and removes their dirs. Idempotent. */
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';
const live = new Set<ChildProcess>();
const dirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last line of defence: a test that crashed before its after() hook must not leave servers running.
  process.on('exit', () => {
    for (const child of live) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
}

function findRedisServer(): string {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, 'redis-server');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(
    'redis-server not found on PATH: install it with `apt-get install -y redis-server`',
  );
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });
}

/** A free loopback port; with `busPort`, port + 10000 (the cluster bus) is free as well. */
async function findFreePort(busPort: boolean): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, HOST, () => {
        const address = server.address();
        const p = typeof address === 'object' && address ? address.port : 0;
        server.close(() => resolve(p));
      });
    });
    if (!busPort) return port;
    if (port + 10000 <= 65535 && (await canListen(port + 10000))) return port;
  }
  throw new Error('no free loopback port (with a free cluster bus port) found');
}

interface ProcessSpec {
  readonly bin: string;
  readonly port: number;
  readonly dir: string;
  readonly args: readonly string[];
}

/** Spawns redis-server and resolves once it logs that it accepts connections; rejects if it exits first. */
function spawnRedis(spec: ProcessSpec): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      spec.bin,
      [
        '--port',
        String(spec.port),
        '--bind',
        HOST,
        '--dir',
        spec.dir,
        '--daemonize',
        'no',
        '--logfile',
        '',
        '--save',
        '',
        ...spec.args,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    live.add(child);
    let tail = '';
    let ready = false;
    const onData = (chunk: Buffer): void => {
      // Keep draining: a full stdout pipe would block the server.
      tail = (tail + chunk.toString('utf8')).slice(-4000);
      if (!ready && tail.includes('Ready to accept connections')) {
        ready = true;
        // Let the test process exit even if a test forgot stop(); the exit hook kills the server.
        child.unref();
        (child.stdout as unknown as { unref(): void }).unref();
        (child.stderr as unknown as { unref(): void }).unref();
        resolve(child);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (err) => {
      live.delete(child);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      live.delete(child);
      if (!ready)
        reject(
          new Error(
            `redis-server on port ${spec.port} exited before ready (code ${code}, signal ${signal}): ${tail.trim().split('\n').slice(-3).join(' | ')}`,
          ),
        );
    });
  });
}

function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  // Keep the event loop alive while we wait (the child is unref'd once ready).
  child.ref();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function startServer(
  bin: string,
  args: readonly string[],
  busPort: boolean,
): Promise<RedisServerHandle> {
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'linkvault-redis-'));
  dirs.add(dir);
  let child: ChildProcess | undefined;
  let port = 0;
  // A port found free can be taken by someone else before redis binds it: retry with another.
  for (let attempt = 0; ; attempt++) {
    port = await findFreePort(busPort);
    try {
      child = await spawnRedis({ bin, port, dir, args });
      break;
    } catch (err) {
      if (attempt >= 4) {
        rmSync(dir, { recursive: true, force: true });
        dirs.delete(dir);
        throw err;
      }
    }
  }
  let current: ChildProcess = child;
  let stopped = false;

  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (signal === 'SIGSTOP' || signal === 'SIGCONT') {
      current.kill(signal);
      return;
    }
    const exited = waitForExit(current);
    current.kill(signal);
    await exited;
  };

  const handle: RedisServerHandle = {
    host: HOST,
    port,
    url: `redis://${HOST}:${port}`,
    get pid() {
      return current.pid ?? -1;
    },
    kill,
    async restart() {
      if (stopped) throw new Error('restart after stop()');
      if (current.exitCode === null && current.signalCode === null) {
        current.kill('SIGCONT');
        await kill('SIGTERM');
      }
      current = await spawnRedis({ bin, port, dir, args });
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (current.exitCode === null && current.signalCode === null) {
        const exited = waitForExit(current);
        current.kill('SIGCONT');
        current.kill('SIGTERM');
        const timer = setTimeout(() => current.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    },
  };
  return handle;
}

/**
 * Starts one standalone redis-server on a free loopback port. RDB snapshots are off; AOF is off
 * unless `appendonly` is set. Throws when redis-server is not installed.
 */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisServerHandle> {
  const bin = findRedisServer();
  const args: string[] = ['--appendonly', opts.appendonly ? 'yes' : 'no'];
  if (opts.appendfsync) args.push('--appendfsync', opts.appendfsync);
  if (opts.maxmemoryPolicy) args.push('--maxmemory-policy', opts.maxmemoryPolicy);
  if (opts.extraArgs) args.push(...opts.extraArgs);
  return startServer(bin, args, false);
}

async function clusterInfo(client: Redis): Promise<Record<string, string>> {
  const text = String(await client.call('CLUSTER', 'INFO'));
  const info: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) info[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return info;
}

/**
 * Starts a Redis Cluster of `masters` master nodes, slots split evenly, with `replicasPerMaster`
 * replicas each (default 0), and resolves once every node reports cluster_state:ok with all nodes
 * known (and every replica in sync). `extraArgs` go to every node (e.g. `--cluster-require-full-coverage
 * no`). On failure every node is stopped.
 */
export async function startRedisCluster(
  opts: { masters: number; replicasPerMaster?: number; extraArgs?: readonly string[] } = {
    masters: 3,
  },
): Promise<RedisClusterHandle> {
  const bin = findRedisServer();
  const nodes: RedisServerHandle[] = [];
  const replicas: RedisServerHandle[] = [];
  const clients: Redis[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all([...nodes, ...replicas].map((n) => n.stop()));
  };
  try {
    const args = [
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      'nodes.conf',
      '--cluster-node-timeout',
      '2000',
      '--appendonly',
      'no',
      ...(opts.extraArgs ?? []),
    ];
    for (let i = 0; i < opts.masters; i++) nodes.push(await startServer(bin, args, true));
    for (const node of nodes) {
      clients.push(
        new Redis({
          host: HOST,
          port: node.port,
          lazyConnect: true,
          maxRetriesPerRequest: 0,
          retryStrategy: () => null,
        }),
      );
    }
    await Promise.all(clients.map((c) => c.connect()));

    const slotsPerNode = Math.ceil(16384 / opts.masters);
    for (let i = 0; i < clients.length; i++) {
      const first = i * slotsPerNode;
      const last = Math.min(16383, first + slotsPerNode - 1);
      // Distinct config epochs up front, as redis-cli --cluster create does, so no epoch collision has to resolve.
      await clients[i]!.call('CLUSTER', 'SET-CONFIG-EPOCH', String(i + 1));
      await clients[i]!.call('CLUSTER', 'ADDSLOTSRANGE', String(first), String(last));
    }
    for (const node of nodes.slice(1))
      await clients[0]!.call('CLUSTER', 'MEET', HOST, String(node.port));

    const deadline = Date.now() + 30_000;
    for (;;) {
      const infos = await Promise.all(clients.map((c) => clusterInfo(c)));
      const converged = infos.every(
        (info) =>
          info['cluster_state'] === 'ok' &&
          info['cluster_known_nodes'] === String(opts.masters) &&
          info['cluster_slots_ok'] === '16384',
      );
      if (converged) break;
      if (Date.now() > deadline)
        throw new Error(
          `cluster did not converge: ${JSON.stringify(infos.map((i) => i['cluster_state']))}`,
        );
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const perMaster = opts.replicasPerMaster ?? 0;
    if (perMaster > 0) {
      const masterIds = await Promise.all(
        clients.map(async (c) => String(await c.call('CLUSTER', 'MYID'))),
      );
      for (let r = 0; r < perMaster * opts.masters; r++) {
        const replica = await startServer(bin, args, true);
        replicas.push(replica);
        const client = new Redis({
          host: HOST,
          port: replica.port,
          lazyConnect: true,
          maxRetriesPerRequest: 0,
          retryStrategy: () => null,
        });
        clients.push(client);
        await client.connect();
        await client.call('CLUSTER', 'MEET', HOST, String(nodes[0]!.port));
        const masterId = masterIds[r % opts.masters]!;
        // CLUSTER REPLICATE needs the master known to the new node: poll its view of the cluster.
        const deadline = Date.now() + 30_000;
        for (;;) {
          if (String(await client.call('CLUSTER', 'NODES')).includes(masterId)) break;
          if (Date.now() > deadline) throw new Error('replica did not learn its master');
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        await client.call('CLUSTER', 'REPLICATE', masterId);
      }
      const total = String(opts.masters * (1 + perMaster));
      const deadline = Date.now() + 30_000;
      for (;;) {
        const infos = await Promise.all(clients.map((c) => clusterInfo(c)));
        const links = await Promise.all(
          clients.slice(opts.masters).map((c) => c.info('replication')),
        );
        if (
          infos.every(
            (info) => info['cluster_state'] === 'ok' && info['cluster_known_nodes'] === total,
          ) &&
          links.every((text) => /^master_link_status:up/m.test(text))
        )
          break;
        if (Date.now() > deadline) throw new Error('cluster replicas did not converge');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  } catch (err) {
    clients.forEach((c) => c.disconnect());
    await stop();
    throw err;
  }
  clients.forEach((c) => c.disconnect());
  return { seeds: nodes.map((n) => ({ host: HOST, port: n.port })), nodes, replicas, stop };
}

/**
 * Starts a standalone redis-server replicating `master` (`--replicaof`), and resolves once the
 * replica reports `master_link_status:up` and the master counts it in `connected_slaves`.
 */
export async function startRedisReplica(
  master: RedisServerHandle,
  opts: StartRedisOptions = {},
): Promise<RedisServerHandle> {
  const replica = await startRedis({
    ...opts,
    extraArgs: [...(opts.extraArgs ?? []), '--replicaof', master.host, String(master.port)],
  });
  const replicaClient = new Redis(replica.port, replica.host, { lazyConnect: true });
  const masterClient = new Redis(master.port, master.host, { lazyConnect: true });
  try {
    await Promise.all([replicaClient.connect(), masterClient.connect()]);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const [own, masters] = await Promise.all([
        replicaClient.info('replication'),
        masterClient.info('replication'),
      ]);
      if (
        /^master_link_status:up/m.test(own) &&
        new RegExp(`^slave\\d+:ip=${HOST},port=${replica.port},state=online`, 'm').test(masters)
      )
        return replica;
      if (Date.now() > deadline) {
        await replica.stop();
        throw new Error(`replica on port ${replica.port} did not sync with ${master.url} in 10 s`);
      }
      // Polling Redis's own status: there is no event to await for a finished sync.
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    replicaClient.disconnect();
    masterClient.disconnect();
  }
}
