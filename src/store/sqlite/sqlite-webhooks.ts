import type Database from 'better-sqlite3';
import {
  WEBHOOK_DELIVERIES_KEPT,
  type WebhookDeliveryRecord,
  type WebhookEndpointRecord,
  type WebhookStore,
} from '../store.js';

/**
 * The WebhookStore part of the SQLite adapter (tables of migration 3). `run` is the store's own
 * wrapper, which translates sqlite failures (SQLITE_FULL included) into store_unavailable.
 */
export function createSqliteWebhooks(
  db: Database.Database,
  run: <T>(fn: () => T) => Promise<T>,
): WebhookStore {
  const putEndpoint = db.prepare<[string, number, string]>(
    'INSERT OR REPLACE INTO webhook_endpoints (id, created_at_ms, body) VALUES (?, ?, ?)',
  );
  const getEndpoint = db.prepare<[string], { body: string }>(
    'SELECT body FROM webhook_endpoints WHERE id = ?',
  );
  const listEndpoints = db.prepare<[], { body: string }>(
    'SELECT body FROM webhook_endpoints ORDER BY created_at_ms, id',
  );
  const deleteEndpoint = db.prepare<[string]>('DELETE FROM webhook_endpoints WHERE id = ?');
  const deleteDeliveries = db.prepare<[string]>(
    'DELETE FROM webhook_deliveries WHERE endpoint_id = ?',
  );
  const putDelivery = db.prepare<[string, string, number, string]>(
    'INSERT OR REPLACE INTO webhook_deliveries (endpoint_id, event_id, updated_at_ms, body) VALUES (?, ?, ?, ?)',
  );
  const trimDeliveries = db.prepare<[string, string, number]>(
    `DELETE FROM webhook_deliveries WHERE endpoint_id = ? AND event_id NOT IN (
       SELECT event_id FROM webhook_deliveries WHERE endpoint_id = ? ORDER BY updated_at_ms DESC, event_id DESC LIMIT ?)`,
  );
  const listDeliveries = db.prepare<[string, number], { body: string }>(
    'SELECT body FROM webhook_deliveries WHERE endpoint_id = ? ORDER BY updated_at_ms DESC, event_id DESC LIMIT ?',
  );

  const parse = <T>(row: { body: string } | undefined): T | null =>
    row === undefined ? null : (JSON.parse(row.body) as T);

  return {
    putWebhookEndpoint: (endpoint) =>
      run(() => {
        putEndpoint.run(endpoint.id, endpoint.createdAtMs, JSON.stringify(endpoint));
      }),
    getWebhookEndpoint: (id) => run(() => parse<WebhookEndpointRecord>(getEndpoint.get(id))),
    listWebhookEndpoints: () =>
      run(() => listEndpoints.all().map((row) => parse<WebhookEndpointRecord>(row)!)),
    deleteWebhookEndpoint: (id) =>
      run(() =>
        db.transaction(() => {
          deleteDeliveries.run(id);
          return deleteEndpoint.run(id).changes > 0;
        })(),
      ),
    putWebhookDelivery: (delivery) =>
      run(() =>
        db.transaction(() => {
          putDelivery.run(
            delivery.endpointId,
            delivery.eventId,
            delivery.updatedAtMs,
            JSON.stringify(delivery),
          );
          trimDeliveries.run(delivery.endpointId, delivery.endpointId, WEBHOOK_DELIVERIES_KEPT);
        })(),
      ),
    listWebhookDeliveries: (endpointId, limit) =>
      run(() =>
        listDeliveries.all(endpointId, limit).map((row) => parse<WebhookDeliveryRecord>(row)!),
      ),
  };
}
