/**
 * The Store's input checks, applied for every adapter by checked-store.ts, so that sqlite and redis
 * refuse exactly the same input with the same error (the contract suite asserts it). A refusal is
 * LinkvaultError('invalid_request') naming the parameter; values are never echoed back.
 */
import { LinkvaultError } from '../errors.js';
import type { AuditEvent, QueueJob } from './store.js';
import type { GrantRecord } from '../links/release/grants.js';
import type { LinkRecord, LinkStatus } from '../links/link.js';
import type { SessionRecord } from '../links/connect/sessions.js';

/** Longest id, key or name the store accepts. */
export const MAX_ID_LENGTH = 512;
/** Largest page any list/read/claim call returns. */
export const MAX_LIMIT = 10_000;

const LINK_STATUSES: ReadonlySet<string> = new Set<LinkStatus>([
  'active',
  'needs_reauth',
  'revoked',
  'pending_confirmation',
]);

function refuse(name: string, problem: string): never {
  throw new LinkvaultError('invalid_request', {
    detail: `${name} ${problem}`,
    extra: { parameter: name },
  });
}

/** A non-empty string of at most MAX_ID_LENGTH characters. */
export function checkId(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) refuse(name, 'must be a non-empty string');
  if (value.length > MAX_ID_LENGTH) refuse(name, `must be at most ${MAX_ID_LENGTH} characters`);
  return value;
}

export function checkOptionalId(name: string, value: unknown): string | undefined {
  return value === undefined ? undefined : checkId(name, value);
}

/** Whole milliseconds (since the epoch, or a duration), 0 or more. */
export function checkTimeMs(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    refuse(name, 'must be a whole number of milliseconds, 0 or more');
  return value;
}

export function checkPositiveInt(
  name: string,
  value: unknown,
  max: number = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > max)
    refuse(name, `must be a whole number from 1 to ${max}`);
  return value;
}

/** A duration in seconds; fractions allowed (a flow state may live 0.5 s in a test), at most a day. */
export function checkTtlSeconds(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > 86_400)
    refuse(name, 'must be a number of seconds above 0 and at most 86400');
  return value;
}

export function checkLimit(value: unknown, fallback: number): number {
  return value === undefined ? fallback : checkPositiveInt('limit', value, MAX_LIMIT);
}

/** A JSON object (not an array, not null); what the store keeps as opaque JSON. */
export function checkObject(name: string, value: unknown): Readonly<Record<string, unknown>> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    refuse(name, 'must be an object');
  return value as Readonly<Record<string, unknown>>;
}

export function checkExpectedVersion(value: unknown): number | null {
  if (value === null) return null;
  return checkPositiveInt('expectedVersion', value);
}

function checkNullableTime(name: string, value: unknown): void {
  if (value !== null) checkTimeMs(name, value);
}

export function checkLink(link: LinkRecord): void {
  checkObject('link', link);
  checkId('link.id', link.id);
  checkId('link.tenantId', link.tenantId);
  checkId('link.userId', link.userId);
  checkId('link.providerId', link.providerId);
  if (!LINK_STATUSES.has(link.status))
    refuse('link.status', 'must be active, needs_reauth or revoked');
  if (link.providerAccountId !== null) checkId('link.providerAccountId', link.providerAccountId);
  if (!Array.isArray(link.grantedScopes) || !link.grantedScopes.every((s) => typeof s === 'string'))
    refuse('link.grantedScopes', 'must be an array of strings');
  checkObject('link.metadata', link.metadata);
  checkObject('link.endpointVariables', link.endpointVariables);
  if (link.tokens !== null) checkObject('link.tokens', link.tokens);
  checkNullableTime('link.accessTokenExpiresAtMs', link.accessTokenExpiresAtMs);
  checkTimeMs('link.createdAtMs', link.createdAtMs);
  checkTimeMs('link.updatedAtMs', link.updatedAtMs);
  checkNullableTime('link.lastRefreshedAtMs', link.lastRefreshedAtMs);
  checkNullableTime('link.lastUsedAtMs', link.lastUsedAtMs);
}

export function checkLinkStatus(name: string, value: unknown): LinkStatus {
  if (typeof value !== 'string' || !LINK_STATUSES.has(value))
    refuse(name, 'must be active, needs_reauth or revoked');
  return value as LinkStatus;
}

export function checkSession(session: SessionRecord): void {
  checkObject('session', session);
  checkId('session.id', session.id);
  checkId('session.tenantId', session.tenantId);
  checkId('session.userId', session.userId);
  checkId('session.serviceId', session.serviceId);
  if (!Array.isArray(session.providers)) refuse('session.providers', 'must be an array');
  checkTimeMs('session.createdAtMs', session.createdAtMs);
  checkTimeMs('session.expiresAtMs', session.expiresAtMs);
}

export function checkGrant(grant: GrantRecord): void {
  checkObject('grant', grant);
  checkId('grant.id', grant.id);
  checkId('grant.serviceId', grant.serviceId);
  checkTimeMs('grant.createdAtMs', grant.createdAtMs);
  if (typeof grant.purpose !== 'string') refuse('grant.purpose', 'must be a string');
  checkNullableTime('grant.expiresAtMs', grant.expiresAtMs);
}

export function checkAuditEvent(event: AuditEvent): void {
  checkObject('event', event);
  checkTimeMs('event.atMs', event.atMs);
  checkId('event.type', event.type);
  checkObject('event.data', event.data);
}

export function checkJob(job: Omit<QueueJob, 'leaseToken'>): void {
  checkObject('job', job);
  checkId('job.id', job.id);
  checkId('job.kind', job.kind);
  checkObject('job.payload', job.payload);
  if (!Number.isSafeInteger(job.attempts) || job.attempts < 0)
    refuse('job.attempts', 'must be a whole number, 0 or more');
  checkTimeMs('job.runAtMs', job.runAtMs);
}

export function checkAttempts(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    refuse('attempts', 'must be a whole number, 0 or more');
  return value;
}

/** Refusal for an audit cursor the adapter did not produce. */
export function refuseAuditCursor(): never {
  refuse('afterSeq', 'is not a sequence id this store produced');
}

/** Refusal for a release expectation that names another grant than the one released under. */
export function refuseExpectedGrant(): never {
  refuse('expect.grant', 'must be the grant named by grantId');
}

/** Refusal for an attempt to move a link to another tenant (its tenant is part of its identity). */
export function refuseTenantChange(): never {
  refuse('link.tenantId', 'cannot change for an existing link');
}
