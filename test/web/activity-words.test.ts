import assert from 'node:assert/strict';
import { test } from 'node:test';

/**
 * The Activity section's "when" words (src/web/activity-view.js, browser code loaded here as the
 * module it is: relativeTime touches no DOM). The rendering itself is tested in Chromium
 * (test/web/browser/manage-activity.test.ts).
 */

type RelativeTime = (rfc3339: unknown, nowMs?: number) => string | null;
const modulePath = '../../src/web/activity-view.js';
const { relativeTime } = (await import(modulePath)) as { relativeTime: RelativeTime };

const NOW = Date.parse('2026-12-04T12:00:00Z');
const ago = (seconds: number): string => new Date(NOW - seconds * 1000).toISOString();

test('when an event happened moments, minutes, hours or days ago, then the words say so plainly', () => {
  assert.equal(relativeTime(ago(0), NOW), 'just now');
  assert.equal(relativeTime(ago(44), NOW), 'just now');
  assert.equal(relativeTime(ago(50), NOW), '1 minute ago');
  assert.equal(relativeTime(ago(120), NOW), '2 minutes ago');
  assert.equal(relativeTime(ago(3 * 3600), NOW), '3 hours ago');
  assert.equal(relativeTime(ago(24 * 3600), NOW), 'yesterday');
  assert.equal(relativeTime(ago(3 * 24 * 3600), NOW), '3 days ago');
  assert.equal(relativeTime(ago(14 * 24 * 3600), NOW), '2 weeks ago');
  assert.equal(relativeTime(ago(400 * 24 * 3600), NOW), 'last year');
});

test('when the time is missing or malformed, then there are no words (the page says "at an unknown time")', () => {
  for (const bad of [undefined, null, '', 'yesterday', 42, '2026-13-45T00:00:00Z'])
    assert.equal(relativeTime(bad, NOW), null, String(bad));
});
