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
 * @property {(data: unknown, meta: MessageMeta) => void} deliver hand one message to the application
 * @property {(info: ReloadInfo) => void} reload the application must (re)load the channel's state
 * @property {(sinceOffset: number, limit: number) => void} fill ask `history` for the messages after
 *   `sinceOffset`; answer with `onHistory` or `onHistoryFailed`
 * @property {(since: Position) => void} recover send a `subscribe` with this `since`; answer with `onSubscribed`
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

export class ChannelSync {
  /**
   * @param {string} channel
   * @param {ChannelHooks} hooks
   * @param {{ position?: Position | null, maxHeld?: number }} [options] `position`: where the
   *   application already is (e.g. kept in sessionStorage); `maxHeld`: most out-of-order
   *   messages held while a gap is filled (beyond: recover instead).
   */
  constructor(channel, hooks, { position = null, maxHeld = 1000 } = {}) {
    this.channel = channel;
    this.hooks = hooks;
    this.maxHeld = maxHeld;
    /** The position of the last message delivered, or null before the first `subscribed`. @type {Position | null} */
    this.position = position ? { epoch: String(position.epoch), offset: Number(position.offset) } : null;
    /** Whether a `subscribed` reply has started this channel (the first reload is a "start", later ones "lost"). */
    this.started = this.position !== null;
    /** A `subscribe` with `since` is on its way: its reply will cover any gap. */
    this.recovering = false;
    /** A `history` request for a gap is on its way. */
    this.filling = false;
    /** Messages past a gap, by offset, all of the position's epoch. @type {Map<number, Record<string, any>>} */
    this.held = new Map();
  }

  /** The `since` of the next `subscribe`: the position, or one matching no epoch. */
  since() {
    return this.position ? { ...this.position } : { ...NO_POSITION };
  }

  /** A `subscribe` with `since()` is being sent (after a reconnect, or to recover). */
  subscribing() {
    this.recovering = true;
  }

  /** The connection ended: requests in flight are lost. The position stays, for `since`. */
  disconnected() {
    this.recovering = false;
    this.filling = false;
    this.held.clear();
  }

  /** A `message` frame of this channel. */
  onMessage(frame) {
    if (typeof frame.offset !== "number") {
      this._deliver(frame);
      return;
    }
    const position = this.position;
    // No position yet: the subscription's start (the `subscribed` reply) is still to come,
    // and this message is at or before it (a recovery in place of an automatic channel).
    if (!position) return;
    if (frame.epoch !== position.epoch) {
      this.recover();
      return;
    }
    if (frame.offset <= position.offset) return;
    if (frame.offset === position.offset + 1) {
      this._advance(frame);
      this._drain();
      return;
    }
    if (this.held.size >= this.maxHeld) {
      this.held.clear();
      this.recover();
      return;
    }
    this.held.set(frame.offset, frame);
    if (!this.recovering && !this.filling) {
      this.filling = true;
      this.hooks.fill(position.offset, Math.min(...this.held.keys()) - position.offset - 1);
    }
  }

  /** The `history` reply to a `fill`. */
  onHistory(reply) {
    this.filling = false;
    const position = this.position;
    if (!position || this.held.size === 0) return;
    if (reply.epoch !== position.epoch) {
      this.recover();
      return;
    }
    const before = position.offset;
    for (const message of reply.messages || []) {
      if (message.offset <= position.offset) continue;
      if (message.offset !== position.offset + 1) break; // trimmed in between
      this._advance({ ...message, channel: this.channel, epoch: reply.epoch });
    }
    this._drain();
    if (this.held.size === 0 || this.recovering) return;
    if (position.offset > before) {
      // A reply may hold fewer messages than asked (it is kept under half the queue): page on.
      this.filling = true;
      this.hooks.fill(position.offset, Math.min(...this.held.keys()) - position.offset - 1);
    } else {
      this.recover(); // history no longer has the gap
    }
  }

  /** The `history` request of a `fill` failed (or the connection ended before its reply). */
  onHistoryFailed() {
    this.filling = false;
    if (this.held.size > 0) this.recover();
  }

  /** A `resync` notice: the node lost messages of this channel on the way. */
  onResync() {
    this.recover();
  }

  /** Recovers with a `subscribe` carrying `since`, unless one is on its way. */
  recover() {
    if (this.recovering) return;
    this.recovering = true;
    this.hooks.recover(this.since());
  }

  /** The `subscribed` reply to a `subscribe` (always sent with `since`). */
  onSubscribed(reply) {
    this.recovering = false;
    if (reply.recovered === true) {
      // Every message after our position follows the reply, then the live ones.
      this._drain();
      return;
    }
    if (reply.recovered === undefined && typeof reply.offset !== "number") return; // a plain acknowledgement
    // A start, or a recovery that could not replay: the state must be (re)loaded, and
    // delivery continues after the reply's position.
    const reason = this.started ? "lost" : "start";
    this.started = true;
    this.position = typeof reply.offset === "number" ? { epoch: String(reply.epoch), offset: reply.offset } : null;
    this.hooks.reload({
      channel: this.channel,
      reason,
      ...(this.position ? { epoch: this.position.epoch, offset: this.position.offset } : {}),
    });
    this._drain();
  }

  _advance(frame) {
    this.position.offset = frame.offset;
    this._deliver(frame);
  }

  _deliver(frame) {
    this.hooks.deliver(frame.data, messageMeta(frame));
  }

  /** Delivers held messages that now follow the position; forgets those it passed. */
  _drain() {
    const position = this.position;
    if (!position) {
      this.held.clear();
      return;
    }
    for (const [offset, frame] of this.held) {
      if (offset <= position.offset || frame.epoch !== position.epoch) this.held.delete(offset);
    }
    let next = this.held.get(position.offset + 1);
    while (next) {
      this.held.delete(next.offset);
      this._advance(next);
      next = this.held.get(position.offset + 1);
    }
  }
}
