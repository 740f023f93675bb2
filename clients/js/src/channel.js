/**
 * Exactly-once, in-order delivery on one channel: the "client algorithm" of
 * docs/protocol.md ("Client algorithm: exactly once"), kept apart from the connection so
 * that it can be reasoned about (and tested) on its own.
 *
 * On a channel with history every message carries a position (`epoch`, `offset`), offsets
 * going up by exactly 1 per message within an epoch. The channel remembers the position of
 * the last message it delivered and delivers a message only when it is the next one:
 * - an offset at or below the position is a duplicate (a recovery in place, a `history`
 *   reply next to live messages): dropped;
 * - the next offset is delivered, then any held messages that now follow;
 * - an offset that skips ahead is held, and the gap asked of `history`; when history
 *   cannot fill it (trimmed, expired, another epoch), the channel recovers with a
 *   `subscribe` carrying `since`, whose reply either replays the missing messages
 *   (`recovered: true`) or tells the application to reload (`recovered: false`);
 * - a message of another epoch means the history was lost: recover.
 * Messages without an offset (no history, plain Redis `PUBLISH`) are delivered as they come.
 *
 * @module
 */

/**
 * @typedef {{ epoch: string, offset: number }} Position
 * @typedef {{ channel: string, offset?: number, epoch?: string, user?: string }} MessageMeta
 * @typedef {{ channel: string, reason: "start" | "lost", epoch?: string, offset?: number }} ReloadInfo
 *
 * @typedef {object} ChannelHooks
 * @property {(data: unknown, meta: MessageMeta) => void} _deliver hand one message to the application
 * @property {(info: ReloadInfo) => void} _reload the application must (re)load the channel's state
 * @property {(sinceOffset: number, limit: number) => void} _fill ask `history` for the messages after
 *   `sinceOffset`; answer with `_onHistory` or `_onHistoryFailed`
 * @property {(since: Position) => void} _recover send a `subscribe` with this `since`; answer with `_onSubscribed`
 */

/**
 * What comes with a message to the application: its channel, and its position and
 * publisher when it has them.
 * @returns {MessageMeta}
 */
export function messageMeta(frame) {
  const meta = { channel: frame.channel };
  if (typeof frame.offset === "number") {
    meta.offset = frame.offset;
    meta.epoch = frame.epoch;
  }
  if (frame.user !== undefined) meta.user = frame.user;
  return meta;
}

/** A position that matches no epoch: asks a `subscribe` for the channel's current position. */
const NO_POSITION = Object.freeze({ offset: 0, epoch: "" });

/**
 * One channel's delivery state. Internal to the client: its members (and the hooks') start
 * with `_`, which the build gives short names.
 */
export class ChannelSync {
  /**
   * @param {string} channel
   * @param {ChannelHooks} hooks
   * @param {{ position?: Position | null, maxHeld?: number }} [options] `position`: where the
   *   application already is (e.g. kept in sessionStorage); `maxHeld`: most out-of-order
   *   messages held while a gap is filled (beyond: recover instead).
   */
  constructor(channel, hooks, { position = null, maxHeld = 1000 } = {}) {
    this._channel = channel;
    this._hooks = hooks;
    this._maxHeld = maxHeld;
    /** The position of the last message delivered, or null before the first `subscribed`. @type {Position | null} */
    this._position = position ? { epoch: String(position.epoch), offset: Number(position.offset) } : null;
    /** Whether a `subscribed` reply has started this channel (the first reload is a "start", later ones "lost"). */
    this._started = this._position !== null;
    /** A `subscribe` with `since` is on its way: its reply will cover any gap. */
    this._recovering = false;
    /** A `history` request for a gap is on its way. */
    this._filling = false;
    /** Messages past a gap, by offset, all of the position's epoch. @type {Map<number, Record<string, any>>} */
    this._held = new Map();
  }

  /** The `since` of the next `subscribe`: the position, or one matching no epoch. */
  _since() {
    return this._position ? { ...this._position } : { ...NO_POSITION };
  }

  /** A `subscribe` with `_since()` is being sent (after a reconnect, or to recover). */
  _subscribing() {
    this._recovering = true;
  }

  /** The connection ended: requests in flight are lost. The position stays, for `since`. */
  _disconnected() {
    this._recovering = false;
    this._filling = false;
    this._held.clear();
  }

  /** A `message` frame of this channel. */
  _onMessage(frame) {
    if (typeof frame.offset !== "number") {
      this._deliver(frame);
      return;
    }
    const position = this._position;
    // No position yet: the subscription's start (the `subscribed` reply) is still to come,
    // and this message is at or before it (a recovery in place of an automatic channel).
    if (!position) return;
    if (frame.epoch !== position.epoch) {
      this._recover();
      return;
    }
    if (frame.offset <= position.offset) return;
    if (frame.offset === position.offset + 1) {
      this._advance(frame);
      this._drain();
      return;
    }
    if (this._held.size >= this._maxHeld) {
      this._held.clear();
      this._recover();
      return;
    }
    this._held.set(frame.offset, frame);
    if (!this._recovering && !this._filling) {
      this._filling = true;
      this._hooks._fill(position.offset, Math.min(...this._held.keys()) - position.offset - 1);
    }
  }

  /** The `history` reply to a `fill`. */
  _onHistory(reply) {
    this._filling = false;
    const position = this._position;
    if (!position || this._held.size === 0) return;
    if (reply.epoch !== position.epoch) {
      this._recover();
      return;
    }
    const before = position.offset;
    for (const message of reply.messages || []) {
      if (message.offset <= position.offset) continue;
      if (message.offset !== position.offset + 1) break; // trimmed in between
      this._advance({ ...message, channel: this._channel, epoch: reply.epoch });
    }
    this._drain();
    if (this._held.size === 0 || this._recovering) return;
    if (position.offset > before) {
      // A reply may hold fewer messages than asked (it is kept under half the queue): page on.
      this._filling = true;
      this._hooks._fill(position.offset, Math.min(...this._held.keys()) - position.offset - 1);
    } else {
      this._recover(); // history no longer has the gap
    }
  }

  /** The `history` request of a `fill` failed (or the connection ended before its reply). */
  _onHistoryFailed() {
    this._filling = false;
    if (this._held.size > 0) this._recover();
  }

  /** A `resync` notice: the node lost messages of this channel on the way. */
  _onResync() {
    this._recover();
  }

  /** Recovers with a `subscribe` carrying `since`, unless one is on its way. */
  _recover() {
    if (this._recovering) return;
    this._recovering = true;
    this._hooks._recover(this._since());
  }

  /** The `subscribed` reply to a `subscribe` (always sent with `since`). */
  _onSubscribed(reply) {
    this._recovering = false;
    if (reply.recovered === true) {
      // Every message after our position follows the reply, then the live ones.
      this._drain();
      return;
    }
    if (reply.recovered === undefined && typeof reply.offset !== "number") return; // a plain acknowledgement
    // A start, or a recovery that could not replay: the state must be (re)loaded, and
    // delivery continues after the reply's position.
    const reason = this._started ? "lost" : "start";
    this._started = true;
    this._position = typeof reply.offset === "number" ? { epoch: String(reply.epoch), offset: reply.offset } : null;
    this._hooks._reload({
      channel: this._channel,
      reason,
      ...(this._position ? { epoch: this._position.epoch, offset: this._position.offset } : {}),
    });
    this._drain();
  }

  _advance(frame) {
    this._position.offset = frame.offset;
    this._deliver(frame);
  }

  _deliver(frame) {
    this._hooks._deliver(frame.data, messageMeta(frame));
  }

  /** Delivers held messages that now follow the position; forgets those it passed. */
  _drain() {
    const position = this._position;
    if (!position) {
      this._held.clear();
      return;
    }
    for (const [offset, frame] of this._held) {
      if (offset <= position.offset || frame.epoch !== position.epoch) this._held.delete(offset);
    }
    let next = this._held.get(position.offset + 1);
    while (next) {
      this._held.delete(next.offset);
      this._advance(next);
      next = this._held.get(position.offset + 1);
    }
  }
}
