import { startRedis, startRedisCluster } from '../test/support/redis-server.js';
import { Redis, Cluster, ReplyError } from 'ioredis';
const t0 = Date.now();
const r = await startRedis({ appendonly: true, appendfsync: 'always' });
console.log('standalone', r.port, r.pid, Date.now() - t0);
const c = await startRedisCluster({ masters: 3 });
console.log('cluster', c.seeds, Date.now() - t0);
const cl = new Cluster(c.seeds as any);
await cl.set('{a}x', '1'); await cl.set('{b}x', '1'); await cl.set('{c}x', '1');
console.log(await cl.get('{a}x'), (await cl.nodes('master')).length);
const rc = new Redis(r.port, { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 1000, autoResendUnfulfilledCommands: false, retryStrategy: (n) => Math.min(50 * 2 ** n, 1000) });
rc.on('error', (e) => console.log('evt', e.constructor.name, e.message));
await new Promise((res) => rc.once('ready', res));
await rc.set('k', 'v');
console.log(await rc.call('CONFIG', 'GET', 'appendonly'), await rc.config('GET', 'maxmemory-policy'));
try { await rc.call('NOSUCHCMD'); } catch (e: any) { console.log('reply err', e instanceof ReplyError, e.constructor.name, Object.keys(e), e.message); }
try { await rc.call('HSET', 'k', 'a', 'b'); } catch (e: any) { console.log('reply err', e instanceof ReplyError, e.constructor.name, e.message, e.command); }
await r.kill();
let t = Date.now();
try { await rc.get('k'); } catch (e: any) { console.log('after kill', Date.now() - t, e.constructor.name, e.message); }
await r.restart();
for (let i = 0; i < 50; i++) { try { console.log('got', await rc.get('k'), i); break; } catch (e: any) { await new Promise(r => setTimeout(r, 100)); } }
rc.disconnect(); cl.disconnect();
await r.stop(); await c.stop();
console.log('done', Date.now() - t0);
