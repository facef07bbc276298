/**
 * A GCRA throttle per key (a token bucket kept as one timestamp per key). `delayMs` says how long
 * a call must wait; `take` books the next slot. `slowDown` (a 429 or 503) pauses the key and halves
 * its rate; the rate then climbs back linearly, by a tenth of the configured rate per second
 * without another slow-down (additive increase, multiplicative decrease).
 */
export class Throttle {
  readonly #states = new Map<
    string,
    { tatMs: number; pausedUntilMs: number; floorRate: number; slowedAtMs: number }
  >();

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number,
  ) {}

  #state(key: string) {
    let s = this.#states.get(key);
    if (!s) {
      s = { tatMs: 0, pausedUntilMs: 0, floorRate: this.ratePerSecond, slowedAtMs: 0 };
      this.#states.set(key, s);
    }
    return s;
  }

  /** The rate in force now (calls per second). */
  rate(key: string): number {
    const s = this.#state(key);
    const recovered =
      s.floorRate +
      (this.ratePerSecond / 10) *
        (Math.max(0, this.now() - Math.max(s.slowedAtMs, s.pausedUntilMs)) / 1000);
    return Math.min(this.ratePerSecond, recovered);
  }

  /** Earliest time (ms) a call may go. */
  #earliest(key: string): number {
    const s = this.#state(key);
    const intervalMs = 1000 / this.rate(key);
    const toleranceMs = intervalMs * Math.max(0, this.burst - 1);
    return Math.max(this.now(), s.tatMs - toleranceMs, s.pausedUntilMs);
  }

  /** How long (ms) a call for `key` would wait now; books nothing. */
  delayMs(key: string): number {
    return Math.max(0, this.#earliest(key) - this.now());
  }

  /** Books a slot; returns the delay (ms) until it. */
  take(key: string): number {
    const s = this.#state(key);
    const at = this.#earliest(key);
    s.tatMs = Math.max(s.tatMs, at) + 1000 / this.rate(key);
    return Math.max(0, at - this.now());
  }

  /** Pauses `key` for `pauseMs` and halves its rate (a 429 or 503 answer). */
  slowDown(key: string, pauseMs: number): void {
    const s = this.#state(key);
    const nowMs = this.now();
    // Several calls in flight may each come back 429: halve once per pause, not once per answer.
    if (nowMs >= s.pausedUntilMs)
      s.floorRate = Math.max(this.ratePerSecond / 16, this.rate(key) / 2);
    s.slowedAtMs = nowMs;
    s.pausedUntilMs = Math.max(s.pausedUntilMs, nowMs + pauseMs);
    s.tatMs = Math.max(s.tatMs, s.pausedUntilMs);
  }
}
