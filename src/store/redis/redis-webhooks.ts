import {
  WEBHOOK_DELIVERIES_KEPT,
  type WebhookDeliveryRecord,
  type WebhookEndpointRecord,
  type WebhookStore,
} from '../store.js';
import type { RedisClient } from './client.js';

const enc = encodeURIComponent;

/**
 * The WebhookStore part of the Redis adapter. Keys (`P` = keyPrefix):
 *   P:wh:all                        set of endpoint ids
 *   {P:wh:<id>}:ep                  the endpoint JSON
 *   {P:wh:<id>}:dl  {P:wh:<id>}:dlz delivery JSON by event id, and event ids scored by update time
 * One endpoint's keys share a hash tag, so its writes are one MULTI on one slot. The id set is
 * written after the endpoint and cleared before it is deleted: a listing never names a missing
 * endpoint for long, and skips one that is gone. Nothing here is on a token release's path.
 * `call` is the store's guard (fail fast, store_unavailable).
 */
export function createRedisWebhooks(
  client: RedisClient,
  keyPrefix: string,
  call: <T>(op: () => Promise<T>) => Promise<T>,
): WebhookStore {
  const all = `${keyPrefix}:wh:all`;
  const tag = (id: string): string => `{${keyPrefix}:wh:${enc(id)}}`;
  const keysOf = (id: string) => ({
    endpoint: `${tag(id)}:ep`,
    deliveries: `${tag(id)}:dl`,
    recent: `${tag(id)}:dlz`,
  });

  /** A MULTI's replies carry their own errors; one failed command fails the call. */
  async function exec(multi: { exec(): Promise<[Error | null, unknown][] | null> }): Promise<void> {
    const replies = await call(() => multi.exec());
    const failed = replies?.find(([err]) => err !== null);
    if (replies === null || failed) throw failed?.[0] ?? new Error('MULTI was discarded');
  }

  async function getWebhookEndpoint(id: string): Promise<WebhookEndpointRecord | null> {
    const json = await call(() => client.get(keysOf(id).endpoint));
    return json === null ? null : (JSON.parse(json) as WebhookEndpointRecord);
  }

  return {
    async putWebhookEndpoint(endpoint) {
      await call(() => client.set(keysOf(endpoint.id).endpoint, JSON.stringify(endpoint)));
      await call(() => client.sadd(all, endpoint.id));
    },
    getWebhookEndpoint,
    async listWebhookEndpoints() {
      const ids = await call(() => client.smembers(all));
      const found = await Promise.all(ids.map((id) => getWebhookEndpoint(id)));
      return found
        .filter((e): e is WebhookEndpointRecord => e !== null)
        .sort((a, b) => a.createdAtMs - b.createdAtMs || a.id.localeCompare(b.id));
    },
    async deleteWebhookEndpoint(id) {
      await call(() => client.srem(all, id));
      const k = keysOf(id);
      const removed = await call(() => client.del(k.endpoint, k.deliveries, k.recent));
      return removed > 0;
    },
    async putWebhookDelivery(delivery) {
      const k = keysOf(delivery.endpointId);
      await exec(
        client
          .multi()
          .hset(k.deliveries, delivery.eventId, JSON.stringify(delivery))
          .zadd(k.recent, delivery.updatedAtMs, delivery.eventId),
      );
      const stale = await call(() =>
        client.zrange(k.recent, 0, String(-(WEBHOOK_DELIVERIES_KEPT + 1))),
      );
      if (stale.length > 0)
        await exec(
          client
            .multi()
            .hdel(k.deliveries, ...stale)
            .zrem(k.recent, ...stale),
        );
    },
    async listWebhookDeliveries(endpointId, limit) {
      const k = keysOf(endpointId);
      const ids = await call(() => client.zrevrange(k.recent, 0, Math.max(0, limit - 1)));
      if (ids.length === 0) return [];
      const rows = await call(() => client.hmget(k.deliveries, ...ids));
      return rows
        .filter((r): r is string => r !== null)
        .map((r) => JSON.parse(r) as WebhookDeliveryRecord);
    },
  };
}
