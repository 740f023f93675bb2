/**
 * The backend's control of sessions, as the client meets it (docs/protocol.md: "Channel
 * tokens", "Revocation", `subscribed` with `server`, `unsubscribed`, `disconnect`, "Close
 * codes"). It lives apart from client.js, which speaks the rest of the protocol, because it
 * is one subject with its own rules:
 * - what the end of a connection means for reconnecting: a revoked token (4003), an end
 *   decided by the backend (4004, 4005, application codes 4100-4499 with the `reconnect` of
 *   the `disconnect` frame before them);
 * - channels the backend subscribed this connection to (their messages go to the client's
 *   `publication` event unless a Subscription takes them) or took away;
 * - channel tokens: asked of the application when a channel needs one, renewed in place
 *   before they expire, asked again when the gateway ends the grant (expired, revoked).
 *
 * @module
 */

import { messageMeta } from "./channel.js";
import { FanoutError } from "./errors.js";
import { tokenExpiry } from "./token.js";

/** Close code of a token problem (expired, refused): get a new token, then reconnect. */
export const TOKEN_CLOSE_CODE = 4001;
/** Close code of a revoked token: get a new token (never the revoked one), then reconnect. */
export const REVOKED_CLOSE_CODE = 4003;
/**
 * Close codes after which the protocol asks for a long backoff: limits (4010, 4029) and
 * client bugs (1002, 1007, 1009); 1008 is what the SSE transport reports for an HTTP 403
 * (an origin the gateway does not admit), which waiting will not fix soon either.
 */
export const PENALTY_CLOSE_CODES = new Set([4010, 4029, 1002, 1007, 1008, 1009]);

/**
 * The `disconnect` event of a connection's end, `{ code, reason, reconnect }`: from the
 * `disconnect` frame that came before the close, or, without one (lost on the way), from
 * the close code; null when the backend did not end the connection.
 * @param {number} code
 * @param {string} reason
 * @param {{ code?: number, reason?: string, reconnect?: boolean } | undefined} frame
 * @returns {{ code: number, reason: string, reconnect: boolean } | null}
 */
export function disconnectInfo(code, reason, frame) {
  if (frame) return { code: Number(frame.code) || code, reason: String(frame.reason ?? reason), reconnect: frame.reconnect !== false };
  if (code !== 4004 && code !== 4005 && !(code >= 4100 && code <= 4499)) return null;
  // An application code without its frame: reconnect, as after 4004.
  return { code, reason, reconnect: code !== 4005 };
}

/**
 * The channel-token state of a channel that needs one.
 * @param {(channel: string) => any} get the application's `getChannelToken` (or the subscription's `getToken`)
 * @param {FanoutError} [refusal] the refusal that made the client ask for one (`forbidden`)
 */
export function channelTokens(get, refusal) {
  return { _get: get, _refusal: refusal, _token: undefined, _renewAt: 0, _fetching: null, _gen: 0, _timer: undefined };
}

/**
 * The client's side of the backend's control; one per client. (Its members and the state it
 * keeps on connections and channels start with `_`: the build gives them short names.)
 */
export class Control {
  /** @param {import("./client.js").Fanout} client */
  constructor(client) {
    this._client = client;
  }

  // ---------------------------------------------------------------- the backend's channels

  /** A `subscribed` notice with `server: true`: the backend subscribed this connection. */
  _serverSubscribed(conn, frame) {
    const channel = frame.channel;
    conn._serverChannels.add(channel);
    this._client._debug(`${channel}: subscribed by the backend`);
    this._client._emit("serverSubscribed", typeof frame.offset === "number" ? { channel, epoch: frame.epoch, offset: frame.offset } : { channel });
  }

  /** A message of a channel without a Subscription: `publication`, if the backend subscribed it. */
  _strayMessage(conn, frame) {
    if (!conn._serverChannels.has(frame.channel)) return;
    this._client._emit("publication", frame.data, messageMeta(frame));
  }

  /**
   * An `unsubscribed` notice: the backend took the channel away (`server`), a refreshed token
   * no longer grants it (`forbidden`), or its channel token expired or was revoked
   * (`unauthorized`). The last is taken back with a new channel token; the others end the
   * channel's subscriptions, with `onError`, and are told by `serverUnsubscribed`.
   */
  _serverUnsubscribed(conn, frame) {
    const client = this._client;
    const { channel, reason } = frame;
    conn._serverChannels.delete(channel);
    const entry = client._channels.get(channel);
    if (entry && entry._tokens && reason === "unauthorized" && !frame.server) {
      this._retry(entry, new FanoutError(reason, `${channel}: channel token expired or revoked`, { channel }));
      return;
    }
    if (entry) {
      const error = new FanoutError(reason ?? "unsubscribed_by_server", `${channel}: ended by the server`, { channel, retryable: false });
      client._endChannel(channel, entry, error, reason !== undefined);
    }
    client._emit("serverUnsubscribed", reason === undefined ? { channel } : { channel, reason });
  }

  // ---------------------------------------------------------------- channel tokens

  /** Subscribes a channel that needs a channel token: with the one held, or a new one. */
  _subscribe(channel, entry, send) {
    const client = this._client;
    const t = entry._tokens;
    if (t._token !== undefined && client._serverNow() < t._renewAt) {
      send(t._token);
      return;
    }
    const conn = client._conn;
    this._fetch(entry).then(
      (token) => client._conn === conn && conn._ack && client._channels.get(channel) === entry && send(token),
      (error) => client._channels.get(channel) === entry && client._endChannel(channel, entry, error),
    );
  }

  /**
   * A new channel token from the application, one request at a time per channel; rejects
   * with the error that ends the subscription when there is none (null, or it threw).
   */
  _fetch(entry) {
    const t = entry._tokens;
    if (t._fetching) return t._fetching;
    const channel = entry._channel;
    const fetching = (async () => {
      let token;
      let cause;
      try {
        token = await t._get(channel);
      } catch (error) {
        cause = error;
      }
      if (typeof token !== "string" || token === "") {
        // After a refusal (`forbidden`), that refusal; otherwise `unauthorized`.
        throw new FanoutError(t._refusal ? t._refusal.code : "unauthorized", `getChannelToken() gave no channel token for ${channel}`, { channel, retryable: false, cause });
      }
      const exp = tokenExpiry(token);
      const now = this._client._serverNow();
      t._token = token;
      // Renewed a third of its lifetime before the end, at most `refreshMarginMs` before.
      t._renewAt = exp === undefined ? Infinity : exp * 1000 - Math.min(this._client._options.refreshMarginMs, (exp * 1000 - now) / 3);
      return token;
    })();
    t._fetching = fetching;
    const done = () => {
      if (t._fetching === fetching) t._fetching = null;
    };
    fetching.then(done, done);
    return fetching;
  }

  /**
   * A `subscribe` was refused (`token`: the channel token it carried, if any). Without a
   * channel token, `forbidden` with `getChannelToken`
   * set: ask for one and subscribe again with it (once). With one, `unauthorized` (expired,
   * revoked): another, after a backoff. Returns whether it took the refusal in hand.
   */
  _refused(entry, token, error) {
    const getChannelToken = this._client._options.getChannelToken;
    if (token === undefined) {
      if (error.code !== "forbidden" || entry._tokens || typeof getChannelToken !== "function") return false;
      this._client._debug(`${entry._channel}: asking for a channel token`);
      entry._tokens = channelTokens(getChannelToken, error);
      this._client._sendSubscribe(entry._channel, entry);
      return true;
    }
    if (error.code !== "unauthorized") return false;
    this._retry(entry, error);
    return true;
  }

  /** Subscribes again after a backoff, with a new channel token and `since`: nothing lost. */
  _retry(entry, error) {
    const client = this._client;
    client._debug(`${entry._channel}: a new channel token`, { error: error.code });
    entry._subscribed = false;
    entry._tokens._token = undefined;
    entry._tokens._gen += 1; // a renewal on its way is moot
    client._moveChannel(entry, "subscribing", error);
    client._resubscribeLater(entry);
  }

  /** After a `subscribed` with a channel token: renew it in place before it expires. */
  _renewLater(conn, entry, delay) {
    const t = entry._tokens;
    if (!t || t._renewAt === Infinity) return;
    const gen = t._gen;
    clearTimeout(t._timer);
    conn._timers.delete(t._timer);
    t._timer = this._client._timer(conn, delay ?? t._renewAt - this._client._serverNow(), () => this._renew(conn, entry, gen));
  }

  async _renew(conn, entry, gen) {
    const client = this._client;
    const t = entry._tokens;
    const live = () => client._conn === conn && client._channels.get(entry._channel) === entry && t._gen === gen && entry._subscribed;
    if (!live()) return;
    const before = tokenExpiry(t._token);
    t._token = undefined;
    let token;
    try {
      token = await this._fetch(entry);
    } catch (error) {
      if (live()) {
        client._endChannel(entry._channel, entry, error);
        // The gateway still holds the channel (and shows the user in its presence) until
        // the old token runs out: leave it now.
        client._ask({ type: "unsubscribe", channel: entry._channel }, () => {});
      }
      return;
    }
    if (!live()) return;
    if (tokenExpiry(token) <= before) {
      // No later token yet (one the application keeps, say): ask again after a backoff.
      this._renewLater(conn, entry, entry._retryBackoff.next());
      return;
    }
    client._debug(`${entry._channel}: renewing its channel token`);
    // Without `since`: the gateway renews the grant in place and replays nothing.
    client._ask({ type: "subscribe", channel: entry._channel, token }, (frame) => this._renewed(conn, entry, gen, frame));
  }

  /** The reply to a renewal: the next one before the new expiry; refused, again after a backoff. */
  _renewed(conn, entry, gen, frame) {
    if (this._client._channels.get(entry._channel) !== entry || entry._tokens._gen !== gen) return;
    // Refused: again after a backoff while the grant lasts; if it runs out first, the
    // gateway's `unsubscribed` brings the channel back with a new token.
    if (frame.type === "subscribed") entry._retryBackoff.reset();
    this._renewLater(conn, entry, frame.type === "subscribed" ? undefined : entry._retryBackoff.next());
  }
}
