/**
 * A subscription, as `client.subscribe()` returns it: its state, its events, `ready()`.
 *
 * States (`sub.state`), as a subscription moves between them:
 * - `subscribing`: made, and waiting for the gateway's `subscribed` (before `connect()`,
 *   while disconnected, after a connection was lost, while a refused subscribe is retried);
 * - `subscribed`: the gateway's subscription is in place on the current connection;
 * - `unsubscribed`: ended for good, by `unsubscribe()` (no error) or by the gateway
 *   (refused, or ended by a refresh: the error says why).
 * `sub.on("state", (state, { previous, error }) => ...)` hears every move, with the
 * `FanoutError` that caused it (`disconnected` when a connection was lost, the refusal when
 * the gateway refused), or null.
 *
 * @module
 */

import { FanoutError } from "./errors.js";

export class Subscription {
  /**
   * @param {import("./client.js").Fanout} client
   * @param {string} channel
   * @param {import("./client.js").SubscriptionHandlers} handlers
   */
  constructor(client, channel, handlers) {
    /** @internal */
    this._client = client;
    /** The channel. */
    this.channel = channel;
    /** @internal */
    this._handlers = handlers;
    /** Whether `unsubscribe()` was called or the gateway ended the subscription. */
    this.closed = false;
    /** @internal */
    this._state = "subscribing";
    /** @internal */
    this._error = null;
    /** @internal @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @internal The position this subscription starts from (`since`), if it has one. */
    this._since = handlers.since ? { epoch: String(handlers.since.epoch), offset: Number(handlers.since.offset) } : null;
    /** @internal Receives the channel's messages (a later subscription joins once placed). */
    this._attached = false;
    /** @internal While a later subscription catches up from its own `since`: what arrived meanwhile. */
    this._catchUp = null;
  }

  /** `subscribing`, `subscribed` or `unsubscribed`. */
  get state() {
    return this.closed ? "unsubscribed" : this._state;
  }

  /** The error that moved the subscription to its current state, or null. */
  get error() {
    return this._error;
  }

  /**
   * The position of the last message delivered on the channel (channels with history), to
   * keep across page loads and give back as `since`; null before the first one.
   * @returns {import("./channel.js").Position | null}
   */
  get position() {
    if (this._catchUp) return { ...this._catchUp._position };
    return this._client._position(this.channel);
  }

  /**
   * Listens to `state` (`fn(state, { previous, error })`).
   * @returns {() => void} a function that removes the listener
   */
  on(event, fn) {
    if (typeof fn !== "function") throw new TypeError("on(event, fn) needs a function");
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * Resolves once the subscription is `subscribed` (at once if it is); rejects with the
   * error that ended it if it becomes `unsubscribed`, or with `timeout` after `timeoutMs`
   * (if given).
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  ready(timeoutMs) {
    if (this.state === "subscribed") return Promise.resolve();
    if (this.closed) return Promise.reject(this._endError(this._error));
    return new Promise((resolve, reject) => {
      let timer;
      const off = this.on("state", (state, { error }) => {
        if (state === "subscribed") {
          done();
          resolve();
        } else if (state === "unsubscribed") {
          done();
          reject(this._endError(error));
        }
      });
      const done = () => {
        off();
        clearTimeout(timer);
      };
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          done();
          reject(new FanoutError("timeout", `not subscribed to ${this.channel} within ${timeoutMs} ms`, { channel: this.channel }));
        }, timeoutMs);
      }
    });
  }

  /** Stops this subscription; the channel is left when no other subscription needs it. */
  unsubscribe() {
    this._client._unsubscribe(this);
  }

  /** @internal */
  _endError(error) {
    return error || new FanoutError("unsubscribed", `${this.channel}: unsubscribed`, { channel: this.channel, retryable: false });
  }

  /** @internal Moves to `state` because of `error` (or null), telling the listeners. */
  _move(state, error) {
    const previous = this.state;
    this._error = error;
    if (state === "unsubscribed") this.closed = true;
    else this._state = state;
    if (previous === state) return;
    this._client._debug(`${this.channel}: ${state}`, error ? { error: error.code } : undefined);
    for (const fn of [...(this._listeners.get("state") || [])]) this._client._guard(fn, [state, { previous, error }]);
  }
}
