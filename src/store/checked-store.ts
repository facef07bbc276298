/**
 * The one place Store input is checked: adapters trust what they are given, so sqlite and redis
 * refuse exactly the same input with the same error (the contract suite asserts it). createStore
 * returns every adapter through this wrapper.
 */
import {
  checkAttempts,
  checkAuditEvent,
  checkExpectedVersion,
  checkGrant,
  checkId,
  checkJob,
  checkLimit,
  checkLink,
  checkLinkStatus,
  checkObject,
  checkOptionalId,
  checkPositiveInt,
  checkSession,
  checkTimeMs,
  checkTtlSeconds,
  MAX_LIMIT,
  refuseExpectedGrant,
} from './store-input.js';
import type { Store } from './store.js';

/**
 * `inner` behind the input checks of store-input.ts. A refusal is a rejected promise (never a
 * synchronous throw), as from the adapters themselves. A missing `limit` is passed on as the
 * default the port documents, so adapters never see undefined there.
 */
export function checkedStore(inner: Store): Store {
  return {
    get kind() {
      return inner.kind;
    },
    ping: () => inner.ping(),
    close: () => inner.close(),

    async getLink(id) {
      return inner.getLink(checkId('id', id));
    },
    async listLinks(filter, limit) {
      checkObject('filter', filter);
      const max = checkLimit(limit, 1000);
      checkOptionalId('filter.tenantId', filter.tenantId);
      checkOptionalId('filter.userId', filter.userId);
      checkOptionalId('filter.providerId', filter.providerId);
      if (filter.status !== undefined) checkLinkStatus('filter.status', filter.status);
      checkOptionalId('filter.providerAccountId', filter.providerAccountId);
      return inner.listLinks(filter, max);
    },
    async saveLink(link, expectedVersion) {
      checkLink(link);
      return inner.saveLink(link, checkExpectedVersion(expectedVersion));
    },
    async touchLink(id, lastUsedAtMs) {
      checkId('id', id);
      checkTimeMs('lastUsedAtMs', lastUsedAtMs);
      return inner.touchLink(id, lastUsedAtMs);
    },
    async listLinksExpiringBefore(cutoffMs, limit) {
      checkTimeMs('cutoffMs', cutoffMs);
      checkPositiveInt('limit', limit, MAX_LIMIT);
      return inner.listLinksExpiringBefore(cutoffMs, limit);
    },
    scanLinkIds: () => inner.scanLinkIds(),

    async putFlowState(key, value, ttlSeconds) {
      checkId('key', key);
      checkObject('value', value);
      return inner.putFlowState(key, value, checkTtlSeconds('ttlSeconds', ttlSeconds));
    },
    async takeFlowState(key) {
      return inner.takeFlowState(checkId('key', key));
    },

    async putSession(session) {
      checkSession(session);
      return inner.putSession(session);
    },
    async getSession(id) {
      return inner.getSession(checkId('id', id));
    },
    async deleteSession(id) {
      return inner.deleteSession(checkId('id', id));
    },

    async putGrant(grant) {
      checkGrant(grant);
      return inner.putGrant(grant);
    },
    async getGrant(id) {
      return inner.getGrant(checkId('id', id));
    },
    async listGrants(serviceId) {
      return inner.listGrants(
        serviceId === undefined ? undefined : checkId('serviceId', serviceId),
      );
    },
    async deleteGrant(id) {
      return inner.deleteGrant(checkId('id', id));
    },

    async putRevocation(row) {
      checkObject('row', row);
      checkId('row.linkId', row.linkId);
      checkObject('row.record', row.record);
      return inner.putRevocation(row);
    },
    async getRevocation(linkId) {
      return inner.getRevocation(checkId('linkId', linkId));
    },

    async putJobStatus(row) {
      checkObject('row', row);
      checkId('row.id', row.id);
      checkObject('row.status', row.status);
      return inner.putJobStatus(row);
    },
    async getJobStatus(id) {
      return inner.getJobStatus(checkId('id', id));
    },

    async putWebhookEndpoint(endpoint) {
      checkObject('endpoint', endpoint);
      checkId('endpoint.id', endpoint.id);
      checkObject('endpoint.secret', endpoint.secret);
      return inner.putWebhookEndpoint(endpoint);
    },
    async getWebhookEndpoint(id) {
      return inner.getWebhookEndpoint(checkId('id', id));
    },
    async listWebhookEndpoints() {
      return inner.listWebhookEndpoints();
    },
    async deleteWebhookEndpoint(id) {
      return inner.deleteWebhookEndpoint(checkId('id', id));
    },
    async putWebhookDelivery(delivery) {
      checkObject('delivery', delivery);
      checkId('delivery.endpointId', delivery.endpointId);
      checkId('delivery.eventId', delivery.eventId);
      return inner.putWebhookDelivery(delivery);
    },
    async listWebhookDeliveries(endpointId, limit) {
      return inner.listWebhookDeliveries(
        checkId('endpointId', endpointId),
        checkPositiveInt('limit', limit),
      );
    },

    async trimAuditShard(shard, throughSeq, keep) {
      checkId('shard', shard);
      if (throughSeq !== null) checkId('throughSeq', throughSeq);
      return inner.trimAuditShard(
        shard,
        throughSeq,
        keep === 0 ? 0 : checkPositiveInt('keep', keep),
      );
    },
    async queryAudit(filter, options) {
      checkObject('filter', filter);
      checkObject('options', options);
      return inner.queryAudit(filter, {
        ...options,
        limit: checkPositiveInt('limit', options.limit),
      });
    },

    async acquireLock(name, ttlMs) {
      checkId('name', name);
      return inner.acquireLock(name, checkPositiveInt('ttlMs', ttlMs));
    },
    async extendLock(name, owner, ttlMs) {
      checkId('name', name);
      checkId('owner', owner);
      return inner.extendLock(name, owner, checkPositiveInt('ttlMs', ttlMs));
    },
    async releaseLock(name, owner) {
      checkId('name', name);
      return inner.releaseLock(name, checkId('owner', owner));
    },

    async appendAudit(event) {
      checkAuditEvent(event);
      return inner.appendAudit(event);
    },
    // The cursor's form is the adapter's own (a sqlite rowid, a Redis stream id): it checks that.
    async readAudit(afterSeq, limit) {
      return inner.readAudit(afterSeq, checkLimit(limit, 1000));
    },
    listAuditShards: () => inner.listAuditShards(),
    ...(inner.takeChangedAuditShards === undefined
      ? {}
      : { takeChangedAuditShards: () => inner.takeChangedAuditShards!() }),
    async readAuditShard(shard, afterSeq, limit) {
      return inner.readAuditShard(checkId('shard', shard), afterSeq, checkLimit(limit, 1000));
    },

    async readForRelease(serviceId, linkId) {
      checkId('serviceId', serviceId);
      return inner.readForRelease(serviceId, checkId('linkId', linkId));
    },
    async commitRelease(linkId, grantId, event, expect) {
      checkId('linkId', linkId);
      checkId('grantId', grantId);
      checkAuditEvent(event);
      if (expect === undefined) return inner.commitRelease(linkId, grantId, event);
      checkObject('expect', expect);
      checkPositiveInt('expect.linkVersion', expect.linkVersion);
      checkGrant(expect.grant);
      if (expect.grant.id !== grantId) refuseExpectedGrant();
      return inner.commitRelease(linkId, grantId, event, expect);
    },

    async enqueue(job) {
      checkJob(job);
      return inner.enqueue(job);
    },
    async claimJobs(nowMs, limit, leaseMs) {
      checkTimeMs('nowMs', nowMs);
      checkPositiveInt('limit', limit, 1000);
      return inner.claimJobs(nowMs, limit, checkPositiveInt('leaseMs', leaseMs));
    },
    async completeJob(id, leaseToken) {
      checkId('id', id);
      return inner.completeJob(id, checkId('leaseToken', leaseToken));
    },
    async rescheduleJob(id, leaseToken, runAtMs, attempts, payload) {
      checkId('id', id);
      checkId('leaseToken', leaseToken);
      checkTimeMs('runAtMs', runAtMs);
      checkAttempts(attempts);
      if (payload !== undefined) checkObject('payload', payload);
      return inner.rescheduleJob(id, leaseToken, runAtMs, attempts, payload);
    },
    countJobs: () => inner.countJobs(),
    scanJobs: () => inner.scanJobs(),
    async replaceJobPayload(id, expected, payload) {
      checkId('id', id);
      checkObject('expected', expected);
      checkObject('payload', payload);
      return inner.replaceJobPayload(id, expected, payload);
    },
  };
}
