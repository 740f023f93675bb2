/**
 * Exponential backoff with "full jitter": the n-th delay is drawn uniformly from
 * [0, min(cap, base * 2^n)). Spreading the retries over the whole interval, rather than
 * around its end, is what keeps the clients of a restarted node from coming back in one
 * wave (see "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
 *
 * @module
 */

export class Backoff {
  /**
   * @param {{ baseMs?: number, capMs?: number, random?: () => number }} [options]
   *   `baseMs`: ceiling of the first delay (default 1000); `capMs`: largest ceiling
   *   (default 30000); `random`: a source of numbers in [0, 1), for tests.
   */
  constructor({ baseMs = 1000, capMs = 30000, random = Math.random } = {}) {
    if (!(baseMs > 0) || !(capMs >= baseMs)) {
      throw new RangeError(`backoff needs 0 < baseMs <= capMs (got ${baseMs}, ${capMs})`);
    }
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.random = random;
    /** Delays handed out since the last reset. */
    this.attempts = 0;
  }

  /** The ceiling of the next delay: min(cap, base * 2^attempts). */
  ceiling() {
    // 2^31 is far beyond any cap; bounding the exponent keeps the product finite.
    return Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempts, 31));
  }

  /** The next delay in milliseconds, in [0, ceiling). */
  next() {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempts += 1;
    return delay;
  }

  /** Starts again from the first delay (after a connection proved stable). */
  reset() {
    this.attempts = 0;
  }
}
