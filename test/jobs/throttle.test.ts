import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Throttle } from '../../src/jobs/throttle.js';

const T0 = 1_700_000_000_000;

function setUp(ratePerSecond = 10, burst = 3) {
  const clock = { nowMs: T0 };
  return { clock, throttle: new Throttle(ratePerSecond, burst, () => clock.nowMs) };
}

describe('Throttle', () => {
  it('when calls come faster than the rate, then a burst goes at once and the rest are spaced by the interval', () => {
    const { throttle } = setUp(10, 3);
    assert.deepEqual([throttle.take('a'), throttle.take('a'), throttle.take('a')], [0, 0, 0]);
    assert.equal(throttle.delayMs('a'), 100);
    assert.equal(throttle.take('a'), 100);
    assert.equal(throttle.delayMs('a'), 200);
  });

  it('when one key is busy, then another key is not held back', () => {
    const { throttle } = setUp(10, 1);
    throttle.take('a');
    assert.equal(throttle.delayMs('a'), 100);
    assert.equal(throttle.delayMs('b'), 0);
  });

  it('when delayMs is asked, then no slot is booked', () => {
    const { throttle } = setUp(10, 1);
    throttle.take('a');
    assert.equal(throttle.delayMs('a'), 100);
    assert.equal(throttle.delayMs('a'), 100);
  });

  it('when a key is slowed down, then it pauses for the given time at half the rate, halved once per pause', () => {
    const { clock, throttle } = setUp(10, 3);
    throttle.slowDown('a', 1_000);
    assert.equal(throttle.delayMs('a'), 1_000);
    assert.equal(throttle.rate('a'), 5);
    // Another 429 from a call that was already in flight: the same pause, not a second halving.
    throttle.slowDown('a', 1_000);
    assert.equal(throttle.rate('a'), 5);
    assert.equal(throttle.delayMs('b'), 0);

    clock.nowMs = T0 + 1_000;
    assert.equal(throttle.delayMs('a'), 0);
    assert.equal(throttle.rate('a'), 5);
  });

  it('when a slowed key sees no more slow-downs, then its rate climbs back by a tenth per second, up to the configured rate', () => {
    const { clock, throttle } = setUp(10, 3);
    throttle.slowDown('a', 1_000);
    clock.nowMs = T0 + 3_000;
    assert.equal(throttle.rate('a'), 7);
    clock.nowMs = T0 + 60_000;
    assert.equal(throttle.rate('a'), 10);
  });

  it('when slowed down again after a pause ended, then the rate halves again but never below a sixteenth', () => {
    const { clock, throttle } = setUp(16, 1);
    for (let i = 0; i < 6; i++) {
      throttle.slowDown('a', 1_000);
      clock.nowMs += 1_000;
    }
    assert.equal(throttle.rate('a'), 1);
  });
});
