/**
 * Who is in a channel's presence, kept current: the one presence helper of the client, used
 * by `usePresence` (React), the demo dashboard and the WordPress roster.
 *
 * It subscribes to the channel (which makes this connection a member), asks `presence`
 * after every `subscribed` (the first, and after each reconnect: presence events are never
 * replayed), and applies `join`, `leave` and `presence_update` on top. Events that arrive
 * while the `presence` request is out are applied at once and kept, then applied again on
 * the reply, which may predate them: a member who left just before the reply was read is not
 * brought back. A failed request keeps nothing (the members stay as the events left them)
 * and is asked again, with backoff, while the subscription lasts.
 *
 * @module
 */

import { Backoff } from "./backoff.js";

/** A member without the event's `channel` and `type`, and without a cleared status. */
function asMember(event, previous) {
  const member = { ...previous, ...event };
  delete member.channel;
  delete member.type;
  if (member.status === null || member.status === undefined) delete member.status;
  return member;
}

export class PresenceTracker {
  /**
   * @param {import("./client.js").Fanout} client
   * @param {string} channel a channel of a namespace with presence
   * @param {{ onChange?: (members: Array<Record<string, any>>) => void, onError?: (error: import("./errors.js").FanoutError) => void }} [handlers]
   */
  constructor(client, channel, handlers = {}) {
    this._client = client;
    this.channel = channel;
    this._handlers = handlers;
    /** @type {Map<string, Record<string, any>>} by conn_id */
    this._members = new Map();
    /** Whether a `presence` reply has been applied since the last (re)subscribe. */
    this.ready = false;
    /** The last error (a failed `presence` request, or the subscription's end), or null. */
    this.error = null;
    this.closed = false;
    /** Events received while a `presence` request is out (null: none is out). */
    this._sinceRequest = null;
    this._asked = 0;
    this._retry = undefined;
    this._backoff = new Backoff({ baseMs: 1000, capMs: 30000 });
    this.subscription = client.subscribe(channel, {
      onSubscribed: () => {
        this.ready = false;
        this._ask();
      },
      onJoin: (event) => this._event("join", event),
      onLeave: (event) => this._event("leave", event),
      onStatus: (event) => this._event("presence_update", event),
      onError: (error) => {
        this.error = error;
        this._call("onError", error);
        this._changed();
      },
    });
  }

  /** The members, one per connection (`user`, `conn_id`, `node`, `info`, `status`). */
  get members() {
    return [...this._members.values()];
  }

  /** Stops tracking and unsubscribes. */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._retry);
    this._sinceRequest = null;
    this.subscription.unsubscribe();
  }

  _apply(type, event) {
    if (type === "leave") this._members.delete(event.conn_id);
    else this._members.set(event.conn_id, asMember(event, this._members.get(event.conn_id)));
  }

  _event(type, event) {
    if (this.closed || !event || typeof event.conn_id !== "string") return;
    if (this._sinceRequest) this._sinceRequest.push([type, event]);
    this._apply(type, event);
    this._changed();
  }

  async _ask() {
    clearTimeout(this._retry);
    this._retry = undefined;
    const asked = ++this._asked;
    this._sinceRequest = [];
    try {
      const reply = await this._client.presence(this.channel);
      if (this.closed || asked !== this._asked) return;
      this._members = new Map(reply.members.map((m) => [m.conn_id, asMember(m)]));
      for (const [type, event] of this._sinceRequest || []) this._apply(type, event);
      this._sinceRequest = null;
      this.ready = true;
      this.error = null;
      this._backoff.reset();
      this._changed();
    } catch (error) {
      if (this.closed || asked !== this._asked) return;
      // Nothing kept: the events are applied already, and no reply will replay them.
      this._sinceRequest = null;
      this.error = error;
      this._call("onError", error);
      this._changed();
      // Lost with the connection: the next `subscribed` asks again. Otherwise (the broker
      // was unavailable, a timeout) ask again later, while subscribed.
      if (error && error.retryable && error.code !== "disconnected" && this.subscription.state === "subscribed") {
        this._retry = setTimeout(() => {
          if (!this.closed && this.subscription.state === "subscribed") this._ask();
        }, this._backoff.next());
      }
    }
  }

  _changed() {
    if (!this.closed) this._call("onChange", this.members);
  }

  /** Calls a handler through the client's guard (a throwing handler is reported, not fatal). */
  _call(name, arg) {
    const fn = this._handlers[name];
    if (typeof fn === "function") this._client._guard(fn, [arg]);
  }
}

/**
 * Tracks who is in `channel`'s presence through `client`; see {@link PresenceTracker}.
 * `onChange(members)` runs after every change. Call `close()` on the result to stop.
 * @param {import("./client.js").Fanout} client
 * @param {string} channel
 * @param {{ onChange?: (members: Array<Record<string, any>>) => void, onError?: (error: import("./errors.js").FanoutError) => void }} [handlers]
 * @returns {PresenceTracker}
 */
export function trackPresence(client, channel, handlers) {
  return new PresenceTracker(client, channel, handlers);
}
