/**
 * The fanout client: one logical connection to a fanout cluster that survives reconnects,
 * node deaths, token expiry, sleeping laptops, skewed clocks and the loss of WebSockets, and
 * delivers the messages of channels with history exactly once, in order.
 *
 * Layers, from the wire up:
 * - a transport (transports.js) carries frames: WebSocket, or SSE + POST;
 * - this class speaks protocol v1 over it: authentication, request ids and replies,
 *   heartbeats and link checks, token refresh, reconnects with backoff, the `send` queue;
 * - one ChannelSync per channel (channel.js) decides which messages to deliver, and
 *   Subscription objects (subscription.js) carry each caller's handlers and state.
 *
 * @module
 */

import { Backoff } from "./backoff.js";
import { ChannelSync, messageMeta } from "./channel.js";
import { channelTokens, Control, disconnectInfo, PENALTY_CLOSE_CODES, REVOKED_CLOSE_CODE, TOKEN_CLOSE_CODE } from "./control.js";
import { root } from "./env.js";
import { errorText, FanoutError } from "./errors.js";
import { Subscription } from "./subscription.js";
import { tokenExpiry } from "./token.js";
import { SseTransport, WebSocketTransport } from "./transports.js";

/** Close code of a draining node: reconnect soon, the balancer routes elsewhere. */
const DRAIN_CLOSE_CODE = 1012;
/** Close code this client uses when it gives up on a silent connection. */
const STALE_CLOSE_CODE = 4000;
/** Errors of a subscribe that may pass when tried again; others end the subscription. */
const RETRYABLE_SUBSCRIBE_CODES = new Set(["unavailable", "rate_limited", "internal"]);
/** The watch timer ticks this often; a tick this much later than due means timers stopped (sleep, a frozen tab). */
const WATCH_INTERVAL_MS = 2000;
const WATCH_LATE_MS = 3000;
/** Messages buffered for a subscription catching up from its own `since` before it gives up (reload). */
const MAX_CATCH_UP_BUFFER = 10000;

/**
 * @typedef {import("./channel.js").Position} Position
 * @typedef {import("./channel.js").MessageMeta} MessageMeta
 * @typedef {import("./channel.js").ReloadInfo} ReloadInfo
 *
 * @typedef {object} SubscriptionHandlers
 * @property {(data: any, meta: MessageMeta) => void} [onMessage] each message, once, in order (history channels)
 * @property {(info: ReloadInfo) => void} [onReload] (re)load the channel's state: after the
 *   first `subscribed` ("start") and whenever messages may have been lost ("lost")
 * @property {(member: Record<string, any>) => void} [onJoin] a presence `join` event
 * @property {(member: Record<string, any>) => void} [onLeave] a presence `leave` event
 * @property {(member: Record<string, any>) => void} [onStatus] a `presence_update` event
 * @property {(info: { channel: string, epoch?: string, offset?: number, recovered?: boolean }) => void} [onSubscribed]
 *   every `subscribed` reply (after each reconnect too): ask `presence` here
 * @property {(error: FanoutError) => void} [onError] the subscription was refused or ended by the server
 * @property {Position} [since] the position the application already has (e.g. from sessionStorage)
 * @property {(channel: string) => any} [getToken] a channel token for this channel (async; null: none):
 *   the channel is always subscribed with one, renewed before it expires
 */

/** Whether `value` is a plain JSON object (not an array, not null). */
function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** A random id for `send` (crypto.randomUUID where there is one). */
function randomId() {
  const cryptoApi = root.crypto;
  if (cryptoApi && typeof cryptoApi.randomUUID === "function") return cryptoApi.randomUUID();
  const bytes = new Uint8Array(16);
  if (cryptoApi && typeof cryptoApi.getRandomValues === "function") cryptoApi.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The size of a text in UTF-8 bytes, as it is sent (a lone surrogate: the 3 of U+FFFD). */
function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

/**
 * The `/ws` and `/sse` URLs of a gateway from the `url` option: `ws(s)://` or `http(s)://`,
 * absolute or (in a browser) relative to the page; a path ending in `/ws` becomes `/sse`.
 */
function endpointUrls(url, sseUrl) {
  const base = root.location && root.location.href;
  const parsed = new URL(url, base);
  const ws = new URL(parsed.href);
  ws.protocol = ws.protocol.replace(/^http(s?):$/, "ws$1:"); // http: -> ws:, https: -> wss:
  let sse;
  if (sseUrl) {
    sse = new URL(sseUrl, base);
  } else {
    sse = new URL(parsed.href);
    sse.protocol = sse.protocol.replace(/^ws(s?):$/, "http$1:"); // ws: -> http:, wss: -> https:
    // A path ending in /ws (or /ws/) ends in /sse instead; any other gets /sse appended
    // (after its trailing slash, if it has one).
    sse.pathname = sse.pathname.replace(/\/ws\/?$|\/?$/, "/sse");
    sse.search = "";
  }
  return { wsUrl: ws.href, sseUrl: sse.href };
}

/** A positive integer option, or the default. */
function count(value, fallback, name) {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) throw new TypeError(`${name} must be a positive integer (got ${value})`);
  return value;
}

/** The error of a `getToken()` that threw. */
function getTokenFailed(error) {
  return new FanoutError("unauthorized", `getToken() failed: ${errorText(error)}`, { retryable: true, cause: error });
}

/** The options with a plain default (taken for `undefined` and `null`). */
const DEFAULTS = {
  transport: "auto",
  stableAfterMs: 10000,
  drainRetryMs: 1000,
  penaltyMs: 30000,
  connectTimeoutMs: 10000,
  requestTimeoutMs: 10000,
  pongTimeoutMs: 10000,
  verifyTimeoutMs: 1000,
  refreshMarginMs: 60000,
  webSocketFailuresBeforeSse: 2,
  retryWebSocketAfterMs: 300000,
  sendTimeoutMs: 0,
};

/** The error a `send` rejects with when its AbortSignal fires. */
function abortError(signal, channel) {
  return new FanoutError("aborted", "send aborted", { channel, retryable: false, cause: signal.reason });
}

export { Subscription };

/**
 * The client. See docs/client-js.md.
 */
export class Fanout {
  /**
   * @param {import("./index.js").FanoutOptions} options
   */
  constructor(options) {
    if (!options || typeof options.url !== "string") throw new TypeError("new Fanout() needs a url");
    if (typeof options.token !== "string" && typeof options.getToken !== "function") {
      throw new TypeError("new Fanout() needs a token or getToken");
    }
    /** @type {Record<string, any>} */
    const settings = {};
    for (const name in DEFAULTS) settings[name] = options[name] ?? DEFAULTS[name];
    const transport = settings.transport;
    if (!["auto", "websocket", "sse"].includes(transport)) {
      throw new TypeError(`transport must be "auto", "websocket" or "sse" (got ${transport})`);
    }
    const defaultWindow = typeof root.addEventListener === "function" ? root : null;
    this._options = Object.assign(settings, endpointUrls(options.url, options.sseUrl), {
      WebSocket: options.WebSocket ?? root.WebSocket,
      fetch: options.fetch ?? (typeof root.fetch === "function" ? root.fetch.bind(root) : undefined),
      getToken: options.getToken,
      getChannelToken: options.getChannelToken,
      clientMsgIdField: options.clientMsgIdField === undefined ? "client_msg_id" : options.clientMsgIdField,
      sendQueueMaxCount: count(options.sendQueueMaxCount, 1000, "sendQueueMaxCount"),
      sendQueueMaxBytes: count(options.sendQueueMaxBytes, 1048576, "sendQueueMaxBytes"),
      sendWindow: count(options.sendWindow, 8, "sendWindow"),
      networkEventTarget: options.networkEventTarget !== undefined ? options.networkEventTarget : defaultWindow,
      visibilityTarget: options.visibilityTarget !== undefined ? options.visibilityTarget : root.document ?? null,
    });
    const hasWebSocket = typeof this._options.WebSocket === "function";
    const hasFetch = typeof this._options.fetch === "function";
    if ((transport === "websocket" || (transport === "auto" && !hasFetch)) && !hasWebSocket) {
      throw new TypeError("no WebSocket: pass { WebSocket } (e.g. from ws)");
    }
    if (transport === "sse" && !hasFetch) throw new TypeError("no fetch for SSE: pass { fetch }");
    const debug = options.debug;
    /** The debug logger: `debug: true` logs to console.debug, a function gets (message, details). */
    this._log = typeof debug === "function" ? debug : debug ? (message, details) => console.debug(`fanout: ${message}`, details ?? "") : null;
    const backoff = options.backoff ?? {};
    const baseMs = backoff.baseMs ?? 1000;
    const capMs = backoff.capMs ?? 30000;
    this._backoff = new Backoff({ baseMs, capMs, random: backoff.random });
    /** Retries of refused subscribes and sends: their own, shorter backoff. */
    this._retryBackoffOptions = { baseMs, capMs: Math.min(capMs, 30000) };
    this._sendBackoff = new Backoff(this._retryBackoffOptions);

    /** @type {"connecting" | "connected" | "disconnected"} */
    this._state = "disconnected";
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** Whether the application wants a connection (between connect() and close()). */
    this._wanted = false;
    /** The current connection attempt or connection. */
    this._conn = null;
    this._reconnectTimer = undefined;
    /** The network is reported offline: no attempts until it is back. */
    this._offline = false;
    /** A reconnect waits for the network (`online`) rather than for a timer. */
    this._awaitingNetwork = false;
    /** Removes the network, visibility and sleep watchers (set between connect() and close()). */
    this._unwatch = null;
    /** The gateway's clock minus ours, in ms, learnt from `expires_in` (0 until then). */
    this._clockOffsetMs = 0;
    this._token = typeof options.token === "string" ? options.token : undefined;
    /** The gateway refused the current token: get another before connecting again. */
    this._tokenRefused = false;
    /** Tokens the gateway revoked (4003), never used again; the last few. */
    this._revokedTokens = new Set();
    /** The backend's control: close codes, its subscriptions, channel tokens (control.js). */
    this._control = new Control(this);
    /** WebSocket attempts in a row that ended without a connection_ack ("auto" transport). */
    this._webSocketFailures = 0;
    /** Until when "auto" keeps to SSE after WebSockets failed and SSE worked (0: not). */
    this._preferSseUntil = 0;
    /** The transport of the last attempt, to tell when it changes. */
    this._lastTransportKind = undefined;
    this._nextId = 1;
    /**
     * Requests awaiting their reply on the current connection, by id: what to do with the
     * reply (`_reply(frame)`), and, for some, with the end of the connection before it
     * (`_lost(lost)`, `lost()` making the error).
     */
    this._pending = new Map();
    /** Requests made while not connected, sent once connected. */
    this._deferred = [];
    /** `ready()` calls waiting for a connection. */
    this._readyWaiters = new Set();
    /** `send`s in order, unsettled (and settled ones still in flight). */
    this._sendQueue = [];
    /** What the unsettled sends hold: how many, how many bytes. */
    this._sendCount = 0;
    this._sendBytes = 0;
    /** How many sends may be in flight now: `sendWindow`, down to 1 after a retryable refusal. */
    this._sendWindowNow = this._options.sendWindow;
    /** Counts retryable refusals: only sends made after the last one open the window again. */
    this._sendRound = 0;
    this._sendRetryTimer = undefined;
    /**
     * The channels wanted, with their delivery state; `status` is the last status set on the
     * channel and the connection that carries it.
     * @type {Map<string, { channel: string, sync: ChannelSync, subs: Set<Subscription>, subscribed: boolean, state: string, status?: { value: any, conn: object | null }, retryTimer?: any, retryBackoff: Backoff }>}
     */
    this._channels = new Map();
  }

  /** The connection state: `connecting`, `connected` or `disconnected`. */
  get state() {
    return this._state;
  }

  /**
   * The current connection, from its `connection_ack`, or null when not connected.
   * @returns {{ connId: string, user: string, node: string, transport: "websocket" | "sse", heartbeatS: number, expiresAt: number, channels: string[] } | null}
   */
  get connection() {
    const conn = this._conn;
    if (!conn || !conn._ack) return null;
    return {
      connId: conn._ack.conn_id,
      user: conn._ack.user,
      node: conn._ack.node,
      transport: conn._transport._kind,
      heartbeatS: conn._ack.heartbeat_s,
      expiresAt: conn._expiresAt,
      channels: [...(conn._ack.channels || [])],
    };
  }

  /**
   * Listens to an event: `state` (fn(state)), `error` (fn(FanoutError)), `connected`
   * (fn(connection)), `transport` (fn("websocket" | "sse"), when "auto" switches), and the
   * backend's control: `disconnect` (fn({ code, reason, reconnect })), `serverSubscribed`
   * (fn({ channel, epoch?, offset? })), `serverUnsubscribed` (fn({ channel, reason? })),
   * `publication` (fn(data, meta): a message of a channel the backend subscribed this
   * connection to, when no Subscription takes it).
   * @returns {() => void} a function that removes the listener
   */
  on(event, fn) {
    if (typeof fn !== "function") throw new TypeError("on(event, fn) needs a function");
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (event === "error" && (!set || set.size === 0)) {
      console.warn("fanout:", args[0] && args[0].code, args[0] && args[0].message);
      return;
    }
    for (const fn of [...(set || [])]) {
      if (event === "error") {
        try {
          fn(...args);
        } catch {
          // An error listener that throws has nowhere to report to.
        }
      } else this._guard(fn, args);
    }
  }

  /** Calls an application callback; what it throws is reported (`callback_failed`), not fatal. */
  _guard(fn, args) {
    try {
      fn(...args);
    } catch (error) {
      this._emit("error", new FanoutError("callback_failed", `a callback threw: ${errorText(error)}`, { retryable: false, cause: error }));
    }
  }

  /** Logs through the `debug` option. Never tokens, never payloads. */
  _debug(message, details) {
    if (!this._log) return;
    try {
      this._log(message, details);
    } catch {
      // A logger that throws must not break the client.
    }
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._debug(`state: ${state}`);
    this._emit("state", state);
  }

  /**
   * Opens the connection (and keeps it open, reconnecting, until `close()`).
   * Returns at once; watch `state` or `connected` events, or await `ready()`.
   */
  connect() {
    if (this._wanted) return;
    this._wanted = true;
    this._watch();
    this._open();
  }

  /**
   * Resolves once connected (at once if connected now); rejects with `timeout` after
   * `timeoutMs` (if given), with `closed` on `close()` (or when not connecting at all), and
   * with the error that stopped the client when it cannot go on (a refused static token).
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  ready(timeoutMs) {
    if (this._state === "connected") return Promise.resolve();
    if (!this._wanted) return Promise.reject(new FanoutError("closed", "not connecting: call connect()", { retryable: false }));
    return new Promise((resolve, reject) => {
      const waiter = { _resolve: resolve, _reject: reject, _timer: undefined };
      if (timeoutMs > 0) {
        waiter._timer = setTimeout(() => {
          this._readyWaiters.delete(waiter);
          reject(new FanoutError("timeout", `not connected within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._readyWaiters.add(waiter);
    });
  }

  _settleReady(error) {
    for (const waiter of [...this._readyWaiters]) {
      clearTimeout(waiter._timer);
      if (error) waiter._reject(error);
      else waiter._resolve();
    }
    this._readyWaiters.clear();
  }

  /**
   * Closes the connection and stops reconnecting. Pending requests and queued sends are
   * rejected with `closed`; subscriptions stay registered, and are resubscribed (with
   * `since`) if `connect()` is called again.
   */
  close() {
    const closed = () => new FanoutError("closed", "client closed", { retryable: false });
    this._stop(closed());
    const conn = this._conn;
    if (conn) {
      if (conn._transport) conn._transport._close(1000, "client closed");
      this._connectionEnded(conn, closed);
    }
    this._conn = null;
    for (const request of this._deferred.splice(0)) request._fail(closed());
    clearTimeout(this._sendRetryTimer);
    this._sendRetryTimer = undefined;
    for (const entry of this._sendQueue.slice()) this._settleSend(entry, closed());
    this._sendQueue = [];
    this._setState("disconnected");
  }

  /** No more connecting: after close(), or when the client cannot go on (`error`). */
  _stop(error) {
    this._wanted = false;
    this._awaitingNetwork = false;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = undefined;
    if (this._unwatch) this._unwatch();
    this._unwatch = null;
    this._settleReady(error);
  }

  // ---------------------------------------------------------------- the network

  /**
   * Watches what a browser tab meets: `offline` (no attempts until the network is back,
   * and no backoff spent meanwhile), `online` and the page becoming visible (check the link
   * at once), and timers that stopped (the machine slept, the tab was frozen: check too).
   */
  _watch() {
    const removers = [];
    const listen = (target, type, fn) => {
      if (!target || typeof target.addEventListener !== "function") return;
      target.addEventListener(type, fn);
      removers.push(() => target.removeEventListener(type, fn));
    };
    const network = this._options.networkEventTarget;
    listen(network, "offline", () => this._onOffline());
    listen(network, "online", () => this._onOnline());
    const page = this._options.visibilityTarget;
    listen(page, "visibilitychange", () => {
      if (page.visibilityState === undefined || page.visibilityState === "visible") this._verify("the page became visible");
    });
    if (network === root && root.navigator && root.navigator.onLine === false) this._offline = true;
    let last = Date.now();
    const timer = setInterval(() => {
      const now = Date.now();
      const late = now - last - WATCH_INTERVAL_MS;
      last = now;
      if (late > WATCH_LATE_MS) this._verify(`timers stopped for ${Math.round((late + WATCH_INTERVAL_MS) / 1000)} s (sleep or a frozen tab)`);
    }, WATCH_INTERVAL_MS);
    // In Node, this timer alone does not keep the process alive.
    if (timer.unref) timer.unref();
    removers.push(() => clearInterval(timer));
    this._unwatch = () => removers.forEach((remove) => remove());
  }

  _onOffline() {
    if (this._offline) return;
    this._offline = true;
    this._debug("the network went offline");
    if (this._reconnectTimer !== undefined) {
      // Attempts now would fail and grow the backoff: wait for `online` instead.
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = undefined;
      this._awaitingNetwork = true;
    }
    // A connection may survive a short loss (a network switch): keep it if it answers.
    this._verify("the network went offline");
  }

  _onOnline() {
    this._offline = false;
    this._debug("the network came back");
    if (this._awaitingNetwork) {
      this._awaitingNetwork = false;
      if (this._wanted && !this._conn) this._open();
      return;
    }
    this._verify("the network came back");
  }

  /**
   * Checks the link at once: a `ping`, and if nothing at all arrives within
   * `verifyTimeoutMs`, the connection is dead (the network changed under it, the machine
   * slept): reconnect now. While waiting out a backoff delay, reconnect now instead.
   */
  _verify(reason) {
    if (!this._wanted) return;
    const conn = this._conn;
    if (!conn) {
      if (this._reconnectTimer !== undefined && !this._offline) {
        this._debug("reconnecting now", { reason });
        this._open();
      }
      return;
    }
    if (!conn._ack || conn._verifying) return;
    conn._verifying = true;
    const pingAt = Date.now();
    this._debug("checking the connection", { reason });
    conn._transport._send({ type: "ping" });
    this._timer(conn, this._options.verifyTimeoutMs, () => {
      conn._verifying = false;
      if (conn._lastActivity >= pingAt) return;
      this._debug("no answer to a ping", { reason });
      conn._transport._close(STALE_CLOSE_CODE, "no answer to a ping");
      this._onTransportClose(conn, 4009, `no answer to a ping within ${this._options.verifyTimeoutMs} ms (${reason})`, undefined, true);
    });
  }

  // ---------------------------------------------------------------- connecting

  /** Now by the gateway's clock (ms), as far as `expires_in` told it. */
  _serverNow() {
    return Date.now() + this._clockOffsetMs;
  }

  /** The token for a new connection: the current one unless refused or about to expire. */
  async _tokenForConnect() {
    const getToken = this._options.getToken;
    const exp = this._token === undefined ? undefined : tokenExpiry(this._token);
    const expiring = exp !== undefined && exp * 1000 - this._serverNow() < 5000;
    if (this._token !== undefined && !this._tokenRefused && !expiring) return this._token;
    if (!getToken) {
      throw new FanoutError(this._revokedTokens.has(this._token) ? "revoked" : "unauthorized", this._tokenRefused ? "token refused, no getToken" : "token expired, no getToken", { retryable: false });
    }
    const token = await getToken();
    if (typeof token !== "string" || token === "") throw new FanoutError("unauthorized", "getToken() gave no token", { retryable: true });
    // Never the revoked one again: ask again after a backoff.
    if (this._revokedTokens.has(token)) throw new FanoutError("revoked", "getToken() gave a revoked token", { retryable: true });
    this._token = token;
    this._tokenRefused = false;
    return token;
  }

  /** The transport of the next attempt ("auto": WebSocket unless it keeps failing). */
  _nextTransportKind() {
    const mode = this._options.transport;
    if (mode !== "auto") return mode;
    if (typeof this._options.WebSocket !== "function") return "sse";
    if (typeof this._options.fetch !== "function") return "websocket";
    if (this._preferSseUntil > 0) {
      if (Date.now() < this._preferSseUntil) return "sse";
      // Time to see whether WebSockets pass again.
      this._preferSseUntil = 0;
      this._webSocketFailures = 0;
    }
    return this._webSocketFailures >= this._options.webSocketFailuresBeforeSse ? "sse" : "websocket";
  }

  async _open() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = undefined;
    this._awaitingNetwork = false;
    if (!this._wanted || this._conn) return;
    this._setState("connecting");
    // _serverChannels: those the backend subscribed this connection to; _disconnect: its `disconnect` frame.
    const conn = { _transport: null, _ack: null, _openedAt: 0, _timers: new Set(), _lastActivity: 0, _verifying: false, _expiresAt: undefined, _deadline: undefined, _serverChannels: new Set(), _disconnect: undefined };
    this._conn = conn;
    let token;
    try {
      token = await this._tokenForConnect();
    } catch (error) {
      if (this._conn !== conn) return;
      this._conn = null;
      const fanoutError = error instanceof FanoutError ? error : getTokenFailed(error);
      this._emit("error", fanoutError);
      if (!fanoutError.retryable) {
        this._stop(fanoutError);
        this._setState("disconnected");
        return;
      }
      this._scheduleReconnect(() => this._backoff.next());
      return;
    }
    if (this._conn !== conn || !this._wanted) return;
    const kind = this._nextTransportKind();
    if (this._lastTransportKind !== undefined && kind !== this._lastTransportKind) this._emit("transport", kind);
    this._lastTransportKind = kind;
    const handlers = {
      _onFrame: (frame) => this._conn === conn && this._onFrame(conn, frame),
      _onActivity: () => {
        conn._lastActivity = Date.now();
      },
      _onClose: (code, reason, status) => this._conn === conn && this._onTransportClose(conn, code, reason, status),
    };
    conn._lastActivity = Date.now();
    this._debug("connecting", { transport: kind });
    try {
      conn._transport =
        kind === "sse"
          ? new SseTransport({ url: this._options.sseUrl, token, fetch: this._options.fetch, handlers })
          : new WebSocketTransport({ url: this._options.wsUrl, token, WebSocket: this._options.WebSocket, handlers });
    } catch (error) {
      this._conn = null;
      this._emit("error", new FanoutError("transport", `cannot open a ${kind} connection: ${errorText(error)}`, { cause: error }));
      if (kind === "websocket") this._webSocketFailures += 1;
      this._scheduleReconnect(() => this._backoff.next());
      return;
    }
    conn._token = token;
    this._timer(conn, this._options.connectTimeoutMs, () => {
      if (conn._ack) return;
      conn._transport._close(STALE_CLOSE_CODE, "no connection_ack in time");
      this._onTransportClose(conn, 1006, "no connection_ack in time");
    });
  }

  /** A timer that belongs to a connection and dies with it. */
  _timer(conn, ms, fn) {
    const handle = setTimeout(() => {
      conn._timers.delete(handle);
      fn();
    }, Math.max(0, ms));
    conn._timers.add(handle);
    return handle;
  }

  /**
   * The token's lifetime from a `connection_ack` or `refreshed`: `expires_in` is counted by
   * the gateway's clock, so the refresh is timed right however wrong this machine's clock
   * is (a gateway without it: `expires_at` against our clock, corrected as far as known).
   */
  _noteExpiry(conn, frame) {
    if (typeof frame.expires_at !== "number") return;
    conn._expiresAt = frame.expires_at;
    if (typeof frame.expires_in === "number") {
      // expires_in is rounded down: the gateway's now lies within the second before this.
      this._clockOffsetMs = (frame.expires_at - frame.expires_in) * 1000 - 500 - Date.now();
      conn._deadline = Date.now() + frame.expires_in * 1000;
    } else {
      conn._deadline = frame.expires_at * 1000 - this._clockOffsetMs;
    }
  }

  _onAck(conn, ack) {
    conn._ack = ack;
    conn._openedAt = Date.now();
    this._noteExpiry(conn, ack);
    if (conn._transport._kind === "websocket") this._webSocketFailures = 0;
    else if (this._options.transport === "auto" && this._webSocketFailures >= this._options.webSocketFailuresBeforeSse) {
      this._preferSseUntil = Date.now() + this._options.retryWebSocketAfterMs;
    }
    this._debug("connected", { node: ack.node, connId: ack.conn_id, transport: conn._transport._kind, expiresIn: ack.expires_in });
    this._armHeartbeat(conn, (Number(ack.heartbeat_s) || 25) * 1000);
    this._scheduleRefresh(conn);
    // Resubscribe every channel, with `since`: the automatic ones (broadcast, user:<sub>)
    // recover in place, the others start or recover. Then what waited for the connection.
    // All before the listeners hear of it, so that what they do comes after.
    for (const [channel, entry] of this._channels) this._sendSubscribe(channel, entry);
    for (const request of this._deferred.splice(0)) request._start();
    this._pumpSends();
    this._setState("connected");
    this._settleReady(null);
    this._emit("connected", this.connection);
  }

  /**
   * Heartbeat: after `heartbeat_s` without any sign of life, send a `ping`; if nothing at
   * all arrives within `pongTimeoutMs` after it, the connection is dead (a half-open TCP
   * connection, a frozen proxy): close it and reconnect.
   */
  _armHeartbeat(conn, heartbeatMs) {
    const check = () => {
      const silentFor = Date.now() - conn._lastActivity;
      if (silentFor < heartbeatMs) {
        this._timer(conn, heartbeatMs - silentFor, check);
        return;
      }
      const pingAt = Date.now();
      conn._transport._send({ type: "ping" });
      this._timer(conn, this._options.pongTimeoutMs, () => {
        if (conn._lastActivity >= pingAt) {
          check();
          return;
        }
        conn._transport._close(STALE_CLOSE_CODE, "no sign of life");
        this._onTransportClose(conn, 4009, "no sign of life");
      });
    };
    this._timer(conn, heartbeatMs, check);
  }

  /** Milliseconds the connection's token has left, by the gateway's account. */
  _tokenLeft(conn) {
    return conn._deadline - Date.now();
  }

  /** Schedules a `refresh` before the token expires (only with getToken). */
  _scheduleRefresh(conn) {
    const getToken = this._options.getToken;
    if (!getToken || typeof conn._deadline !== "number") return;
    clearTimeout(conn._refreshTimer);
    const remaining = this._tokenLeft(conn);
    const margin = Math.min(this._options.refreshMarginMs, remaining / 3);
    conn._refreshTimer = this._timer(conn, remaining - margin, async () => {
      let token;
      try {
        token = await getToken();
      } catch (error) {
        this._emit("error", getTokenFailed(error));
      }
      if (this._conn !== conn) return;
      const exp = token === undefined ? undefined : tokenExpiry(token);
      if (typeof token !== "string" || (exp !== undefined && exp <= conn._expiresAt)) {
        // No token, or no later one yet: try again a bit later, while time is left.
        if (this._tokenLeft(conn) > 1000) {
          conn._refreshTimer = this._timer(conn, Math.max(500, this._tokenLeft(conn) / 4), () => this._scheduleRefresh(conn));
        }
        return;
      }
      this._debug("refreshing the token", { leftMs: Math.round(this._tokenLeft(conn)) });
      this._ask({ type: "refresh", token }, (frame) => this._onRefreshReply(conn, token, frame));
    });
  }

  _onRefreshReply(conn, token, frame) {
    if (frame.type === "refreshed") {
      this._token = token;
      conn._token = token;
      conn._transport._setToken(token);
      this._noteExpiry(conn, frame);
      this._scheduleRefresh(conn);
      return;
    }
    const error = FanoutError.fromFrame(frame);
    this._emit("error", error);
    if (error.code === "unauthorized") this._tokenRefused = true;
    if (this._tokenLeft(conn) > 1000) {
      conn._refreshTimer = this._timer(conn, Math.max(1000, this._tokenLeft(conn) / 4), () => this._scheduleRefresh(conn));
    }
  }

  /**
   * The end of a connection (or attempt). `immediate`: a link check found it dead, so the
   * network is likely back: reconnect at once, without spending backoff.
   */
  _onTransportClose(conn, code, reason, status, immediate = false) {
    if (this._conn !== conn) return;
    const wasConnected = Boolean(conn._ack);
    const connectedFor = wasConnected ? Date.now() - conn._openedAt : 0;
    immediate = immediate || conn._verifying;
    this._debug("connection closed", { code, reason });
    this._connectionEnded(conn);
    this._conn = null;
    if (!this._wanted) return;

    if (this._options.transport === "auto") {
      if (conn._transport._kind === "websocket" && !wasConnected) {
        this._webSocketFailures += 1;
      } else if (conn._transport._kind === "sse" && !wasConnected) {
        // SSE failed too: the gateway may just be down. Go back to trying WebSockets.
        this._webSocketFailures = 0;
        this._preferSseUntil = 0;
      }
    }
    if (connectedFor >= this._options.stableAfterMs) this._backoff.reset();

    const revoked = code === REVOKED_CLOSE_CODE;
    // Ended by the backend: the `disconnect` event, once, and its `reconnect` is followed.
    const ended = disconnectInfo(code, reason, conn._disconnect);
    const closeError = new FanoutError(
      code === TOKEN_CLOSE_CODE ? "unauthorized" : revoked ? "revoked" : "disconnected",
      `connection closed (${code}${reason ? `: ${reason}` : ""})`,
      { closeCode: code, status, retryable: !revoked && !(ended && !ended.reconnect) },
    );
    // The next backoff delay, unless the close calls for another.
    let delay = () => this._backoff.next();
    if (code === TOKEN_CLOSE_CODE || revoked) {
      // A new token first (after 4003, never the revoked one), or stop without getToken.
      this._tokenRefused = true;
      if (revoked) {
        this._revokedTokens.add(conn._token);
        if (this._revokedTokens.size > 8) this._revokedTokens.delete(this._revokedTokens.values().next().value);
      }
      this._emit("error", closeError);
      if (!this._options.getToken) {
        this._stop(closeError);
        this._setState("disconnected");
        return;
      }
    } else if (ended && !ended.reconnect) {
      // Not by ourselves: a later connect() asks getToken for a token first.
      this._tokenRefused = Boolean(this._options.getToken);
      this._stop(closeError);
      this._setState("disconnected");
      this._emit("disconnect", ended);
      return;
    } else if (ended) {
      // Ended by the backend, to come back: the usual backoff.
    } else if (immediate) {
      delay = () => 0;
    } else if (code === DRAIN_CLOSE_CODE && this._backoff.attempts === 0) {
      delay = () => {
        this._backoff.attempts = 1; // the next failure backs off as usual
        return Math.floor(Math.random() * this._options.drainRetryMs);
      };
    } else if (PENALTY_CLOSE_CODES.has(code)) {
      this._emit("error", closeError);
      delay = () => Math.max(this._backoff.next(), this._options.penaltyMs / 2 + Math.random() * (this._options.penaltyMs / 2));
    }
    this._scheduleReconnect(delay);
    if (ended) this._emit("disconnect", ended);
  }

  /** Reconnects after `delay()` ms; while offline, once the network is back instead. */
  _scheduleReconnect(delay) {
    this._setState("disconnected");
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = undefined;
    if (!this._wanted) return;
    if (this._offline) {
      this._awaitingNetwork = true;
      this._debug("offline: reconnecting when the network is back");
      return;
    }
    const ms = delay();
    this._debug("reconnecting", { inMs: ms });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = undefined;
      this._open();
    }, ms);
  }

  /**
   * Cleans up after a connection: its timers, its requests (failed with `lost()`), the
   * channels' in-flight state.
   */
  _connectionEnded(conn, lost = () => new FanoutError("disconnected", "connection lost before the reply", { retryable: true })) {
    for (const handle of conn._timers) clearTimeout(handle);
    conn._timers.clear();
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const request of pending) if (request._lost) request._lost(lost);
    // Sends in flight go again on the next connection, in order; those given up are dropped.
    this._sendQueue = this._sendQueue.filter((entry) => !entry._settled);
    for (const entry of this._sendQueue) entry._inflight = false;
    const error = lost();
    for (const entry of this._channels.values()) {
      entry._subscribed = false;
      clearTimeout(entry._retryTimer);
      entry._retryTimer = undefined;
      entry._sync._disconnected();
      this._moveChannel(entry, "subscribing", error);
    }
  }

  // ---------------------------------------------------------------- frames

  _onFrame(conn, frame) {
    switch (frame.type) {
      case "connection_ack":
        if (!conn._ack) this._onAck(conn, frame);
        return;
      case "message": {
        const entry = this._channels.get(frame.channel);
        if (entry) entry._sync._onMessage(frame);
        else this._control._strayMessage(conn, frame);
        return;
      }
      case "resync": {
        const entry = this._channels.get(frame.channel);
        if (entry) entry._sync._onResync();
        return;
      }
      case "join":
      case "leave":
      case "presence_update":
        this._onPresenceEvent(frame);
        return;
      case "disconnect":
        // The backend ends the connection; the close follows.
        this._debug("disconnected by the backend", { code: frame.code, reconnect: frame.reconnect });
        conn._disconnect = frame;
        return;
      case "subscribed":
        if (frame.server === true && frame.id === undefined) this._control._serverSubscribed(conn, frame);
        else this._onReply(frame);
        return;
      case "unsubscribed":
        // A notice (no id): the server ended a subscription.
        if (frame.id === undefined && (frame.server === true || frame.reason !== undefined)) this._control._serverUnsubscribed(conn, frame);
        else this._onReply(frame);
        return;
      default:
        if (frame.id !== undefined) this._onReply(frame);
        else if (frame.type === "error") this._emit("error", FanoutError.fromFrame(frame));
    }
  }

  _onReply(frame) {
    const pending = this._pending.get(frame.id);
    if (!pending) return;
    this._pending.delete(frame.id);
    pending._reply(frame);
  }

  // ---------------------------------------------------------------- subscriptions

  /**
   * Subscribes to a channel. Messages are delivered to `onMessage(data, meta)`; on channels
   * with history, each once and in order, across reconnects. `onReload` says when the
   * application must (re)load the channel's state. Several subscriptions to one channel share
   * one subscription on the server; one that joins a running channel with its own `since`
   * gets what it missed from history first.
   * @param {string} channel
   * @param {SubscriptionHandlers} [handlers]
   * @returns {Subscription}
   */
  subscribe(channel, handlers = {}) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("subscribe() needs a channel");
    const sub = new Subscription(this, channel, handlers);
    let entry = this._channels.get(channel);
    if (entry) {
      if (!entry._tokens && typeof handlers.getToken === "function") entry._tokens = channelTokens(handlers.getToken);
      entry._subs.add(sub);
      sub._state = entry._state;
      // The channel runs already: this subscription joins where it stands (once it stands
      // somewhere; otherwise when its first `subscribed` comes).
      if (entry._sync._started) queueMicrotask(() => this._attach(entry, sub, true));
      this._debug(`${channel}: another subscription`);
      return sub;
    }
    sub._attached = true;
    entry = {
      _channel: channel,
      _subs: new Set([sub]),
      _subscribed: false,
      _state: "subscribing",
      _status: undefined,
      _retryTimer: undefined,
      _retryBackoff: new Backoff(this._retryBackoffOptions),
      _sync: null,
      // The channel's channel token (control.js), when it needs one.
      _tokens: typeof handlers.getToken === "function" ? channelTokens(handlers.getToken) : null,
    };
    entry._sync = new ChannelSync(
      channel,
      {
        _deliver: (data, meta) => {
          for (const s of [...entry._subs]) {
            if (!s._attached || s.closed) continue;
            if (s._catchUp) {
              s._catchUp._buffer.push([data, meta]);
              if (s._catchUp._buffer.length > MAX_CATCH_UP_BUFFER) s._catchUp._finish(false);
            } else this._call(s, "onMessage", data, meta);
          }
        },
        _reload: (info) => {
          for (const s of [...entry._subs]) {
            if (!s._attached) {
              // Joined before the channel's start: its own `since` applies from here.
              this._attach(entry, s, false);
              continue;
            }
            s._catchUp = null; // reloading anyway
            this._call(s, "onReload", info);
          }
        },
        _fill: (sinceOffset, limit) => {
          // The reply (or the connection's end) goes to the channel's entry of that moment.
          const failed = () => {
            const current = this._channels.get(channel);
            if (current) current._sync._onHistoryFailed();
          };
          this._ask(
            { type: "history", channel, since: sinceOffset, limit },
            (frame) => {
              const current = this._channels.get(channel);
              if (current && frame.type === "history") current._sync._onHistory(frame);
              else failed();
            },
            failed,
          );
        },
        _recover: () => {
          this._resubscribe(entry);
        },
      },
      { position: sub._since },
    );
    this._channels.set(channel, entry);
    if (this._conn && this._conn._ack) this._sendSubscribe(channel, entry);
    return sub;
  }

  /** Every active subscription, oldest first. */
  subscriptions() {
    const all = [];
    for (const entry of this._channels.values()) for (const sub of entry._subs) if (!sub.closed) all.push(sub);
    return all;
  }

  /** The oldest active subscription of `channel`, or null. */
  getSubscription(channel) {
    const entry = this._channels.get(channel);
    if (!entry) return null;
    for (const sub of entry._subs) if (!sub.closed) return sub;
    return null;
  }

  /**
   * Places a subscription that joined a running channel: from its own `since` (caught up
   * from history when it is behind), or from where the channel stands, with a reload.
   * `announce`: call its `onSubscribed` too (when the channel's reply came before it).
   */
  _attach(entry, sub, announce) {
    if (sub.closed || sub._attached || this._channels.get(entry._channel) !== entry) return;
    sub._attached = true;
    const channel = entry._channel;
    const at = entry._sync._position ? { ...entry._sync._position } : null;
    const since = sub._since;
    if (!since || !at) {
      this._call(sub, "onReload", { channel, reason: "start", ...at });
    } else if (since.epoch === at.epoch && since.offset < at.offset) {
      this._catchUpFrom(entry, sub, since, at);
    } else if (since.epoch !== at.epoch || since.offset > at.offset) {
      this._call(sub, "onReload", { channel, reason: "lost", ...at });
    } // else: it is where the channel is; nothing to load.
    if (announce && entry._subscribed) this._call(sub, "onSubscribed", { channel, ...at });
  }

  /**
   * Delivers to `sub` the messages after its `since` up to `at` (where the channel stands)
   * from history, then what arrived meanwhile; all or nothing: when history no longer has
   * them all, `onReload({ reason: "lost" })` and the messages after `at`.
   */
  _catchUpFrom(entry, sub, since, at) {
    const channel = entry._channel;
    this._debug(`${channel}: catching up`, { from: since.offset, to: at.offset });
    const state = {
      _buffer: [],
      _position: { ...since },
      _finish: (complete, messages = []) => {
        if (sub._catchUp !== state) return;
        sub._catchUp = null;
        if (sub.closed) return;
        if (complete) {
          for (const m of messages) {
            this._call(sub, "onMessage", m.data, messageMeta({ ...m, channel, epoch: at.epoch }));
          }
        } else {
          this._call(sub, "onReload", { channel, reason: "lost", ...at });
        }
        for (const [data, meta] of state._buffer) this._call(sub, "onMessage", data, meta);
      },
    };
    sub._catchUp = state;
    (async () => {
      const messages = [];
      let from = since.offset;
      try {
        while (from < at.offset && sub._catchUp === state) {
          const page = await this.history(channel, { since: from, limit: Math.min(at.offset - from, 1000) });
          if (page.epoch !== at.epoch) return state._finish(false);
          let moved = false;
          for (const m of page.messages) {
            if (m.offset <= from) continue;
            if (m.offset > at.offset) break;
            if (m.offset !== from + 1) return state._finish(false); // trimmed in between
            messages.push(m);
            from = m.offset;
            moved = true;
          }
          if (!moved) return state._finish(false);
        }
      } catch {
        return state._finish(false);
      }
      state._finish(true, messages);
    })();
  }

  _call(sub, name, ...args) {
    const fn = sub._handlers[name];
    if (typeof fn !== "function" || sub.closed) return;
    this._guard(fn, args);
  }

  _position(channel) {
    const entry = this._channels.get(channel);
    const position = entry && entry._sync._position;
    return position ? { ...position } : null;
  }

  /** Moves every subscription of the channel to `state` (because of `error`, or null). */
  _moveChannel(entry, state, error) {
    entry._state = state;
    for (const sub of [...entry._subs]) sub._move(state, error);
  }

  /** Subscribes the channel again, if it is still wanted and there is a connection for it. */
  _resubscribe(entry) {
    if (this._conn && this._conn._ack && this._channels.get(entry._channel) === entry) this._sendSubscribe(entry._channel, entry);
  }

  /** `_resubscribe` after the channel's backoff. */
  _resubscribeLater(entry) {
    clearTimeout(entry._retryTimer);
    entry._retryTimer = setTimeout(() => {
      entry._retryTimer = undefined;
      this._resubscribe(entry);
    }, entry._retryBackoff.next());
  }

  _sendSubscribe(channel, entry) {
    entry._sync._subscribing();
    const send = (token) => {
      const since = entry._sync._since();
      this._debug(`${channel}: subscribe`, { since });
      // Without a channel token, `token` is undefined: not in the JSON.
      this._ask({ type: "subscribe", channel, since, token }, (frame) => this._onSubscribeReply(channel, entry, token, frame));
    };
    if (entry._tokens) this._control._subscribe(channel, entry, send);
    else send(undefined);
  }

  _onSubscribeReply(channel, entry, token, frame) {
    if (this._channels.get(channel) !== entry) {
      // Ended meanwhile (by the server): leave it, if the gateway subscribed it after all.
      const conn = this._conn;
      if (frame.type === "subscribed" && !this._channels.has(channel) && conn && !conn._serverChannels.has(channel)) {
        conn._transport._send({ type: "unsubscribe", channel, id: this._nextId++ });
      }
      return;
    }
    if (frame.type === "subscribed") {
      if (token !== undefined) this._control._renewLater(this._conn, entry);
      entry._subscribed = true;
      entry._retryBackoff.reset();
      this._debug(`${channel}: subscribed`, { offset: frame.offset, recovered: frame.recovered });
      this._moveChannel(entry, "subscribed", null);
      entry._sync._onSubscribed(frame);
      const info = { channel, ...(frame.offset !== undefined ? { epoch: frame.epoch, offset: frame.offset } : {}), ...(frame.recovered !== undefined ? { recovered: frame.recovered } : {}) };
      for (const s of [...entry._subs]) if (s._attached) this._call(s, "onSubscribed", info);
      // A status belongs to the connection: set it again on a new one.
      if (entry._status && entry._status._conn !== this._conn) {
        entry._status._conn = this._conn;
        this._conn._transport._send({ type: "status", channel, status: entry._status._value });
      }
      return;
    }
    entry._sync._recovering = false;
    const error = FanoutError.fromFrame(frame, channel);
    if (this._control._refused(entry, token, error)) return;
    if (RETRYABLE_SUBSCRIBE_CODES.has(error.code)) {
      for (const sub of entry._subs) sub._error = error;
      this._resubscribeLater(entry);
      return;
    }
    // Refused for good (forbidden, bad channel, too many subscriptions).
    this._endChannel(channel, entry, error);
  }

  /** Ends a channel's subscriptions for good, with `onError` (and an `error` event if `report`). */
  _endChannel(channel, entry, error, report = true) {
    this._channels.delete(channel);
    clearTimeout(entry._retryTimer);
    this._debug(`${channel}: ended`, { error: error.code });
    for (const s of [...entry._subs]) {
      this._call(s, "onError", error);
      s._move("unsubscribed", error);
    }
    if (report) this._emit("error", error);
  }

  _unsubscribe(sub) {
    if (sub.closed) return;
    sub._catchUp = null;
    sub._move("unsubscribed", null);
    const entry = this._channels.get(sub.channel);
    if (!entry || !entry._subs.has(sub)) return;
    entry._subs.delete(sub);
    if (entry._subs.size > 0) return;
    this._channels.delete(sub.channel);
    clearTimeout(entry._retryTimer);
    this._debug(`${sub.channel}: unsubscribe`);
    // The gateway leaves the channel, whoever subscribed it (the backend too).
    if (this._conn) this._conn._serverChannels.delete(sub.channel);
    if (this._conn && this._conn._ack) this._conn._transport._send({ type: "unsubscribe", channel: sub.channel, id: this._nextId++ });
  }

  _onPresenceEvent(frame) {
    const entry = this._channels.get(frame.channel);
    if (!entry) return;
    const handler = frame.type === "join" ? "onJoin" : frame.type === "leave" ? "onLeave" : "onStatus";
    const member = { ...frame };
    delete member.type;
    for (const s of [...entry._subs]) if (s._attached) this._call(s, handler, member);
  }

  // ---------------------------------------------------------------- requests

  /**
   * Sends `frame` on the current connection with the next request id; `reply(frame)` gets
   * its reply, `lost(lost)` (if given) the end of the connection before one. Returns the id.
   */
  _ask(frame, reply, lost) {
    const id = this._nextId++;
    this._pending.set(id, { _reply: reply, _lost: lost });
    this._conn._transport._send({ ...frame, id });
    return id;
  }

  /**
   * Sends a request frame and resolves with its reply. Made while not connected (before
   * `connect()` too), it waits for the connection; `requestTimeoutMs` counts from the call.
   */
  _request(frame, channel, onSent) {
    return new Promise((resolve, reject) => {
      let done = false;
      let timer;
      let id;
      const request = {
        _fail: (error) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          const index = this._deferred.indexOf(request);
          if (index !== -1) this._deferred.splice(index, 1);
          if (id !== undefined) this._pending.delete(id);
          reject(error);
        },
        _start: () => {
          if (done) return;
          id = this._ask(
            frame,
            (reply) => {
              if (reply.type === "error") request._fail(FanoutError.fromFrame(reply, channel));
              else if (!done) {
                done = true;
                clearTimeout(timer);
                resolve(reply);
              }
            },
            (lost) => request._fail(lost()),
          );
          if (onSent) onSent();
        },
      };
      timer = setTimeout(() => request._fail(new FanoutError("timeout", `no reply to ${frame.type} within ${this._options.requestTimeoutMs} ms`, { channel })), this._options.requestTimeoutMs);
      if (this._conn && this._conn._ack) request._start();
      else this._deferred.push(request);
    });
  }

  /**
   * Publishes `data` to a channel's subscribers as this user (needs the token's `publish`
   * claim or a namespace with `publish = true`).
   * @returns {Promise<{ channel: string, offset?: number }>}
   */
  async publish(channel, data) {
    const reply = await this._request({ type: "publish", channel, data }, channel);
    return reply.offset === undefined ? { channel: reply.channel } : { channel: reply.channel, offset: reply.offset };
  }

  /**
   * Sends `data` to your backend through the durable inbox. Queued while offline and sent
   * once connected, in order, up to `sendWindow` at a time; sent again after a reconnect
   * when no `sent` reply came (at least once). Each carries a client message id, `msgId` (a
   * random UUID unless given), written into `data` (see docs/client-js.md) so that the
   * backend can skip repeats. A full queue (`sendQueueMaxCount`, `sendQueueMaxBytes`)
   * rejects at once with `queue_full`; `timeoutMs` and `signal` give up on one send.
   * @param {string} channel
   * @param {unknown} data
   * @param {{ msgId?: string, timeoutMs?: number, signal?: AbortSignal }} [options]
   * @returns {Promise<{ channel: string, streamId: string, msgId: string }>}
   */
  send(channel, data, { msgId, timeoutMs, signal } = {}) {
    const field = this._options.clientMsgIdField;
    let id = msgId ?? randomId();
    let payload = data;
    if (field) {
      if (isPlainObject(data) && typeof data.type === "string" && isPlainObject(data.data)) {
        // A catalogue event: its envelope allows no extra keys, its `data` does.
        if (msgId === undefined && typeof data.data[field] === "string") id = data.data[field];
        payload = { ...data, data: { ...data.data, [field]: id } };
      } else if (isPlainObject(data)) {
        if (msgId === undefined && typeof data[field] === "string") id = data[field];
        payload = { ...data, [field]: id };
      }
    }
    return new Promise((resolve, reject) => {
      if (signal && signal.aborted) {
        reject(abortError(signal, channel));
        return;
      }
      const bytes = utf8Length(JSON.stringify(payload) || "null") + utf8Length(String(channel));
      const { sendQueueMaxCount: maxCount, sendQueueMaxBytes: maxBytes } = this._options;
      if (this._sendCount + 1 > maxCount || this._sendBytes + bytes > maxBytes) {
        this._debug("send queue full", { count: this._sendCount, bytes: this._sendBytes });
        reject(
          new FanoutError(
            "queue_full",
            `send queue full: ${this._sendCount} sends (${this._sendBytes} bytes) wait already, this one is ${bytes} bytes; limits are ${maxCount} sends and ${maxBytes} bytes (sendQueueMaxCount, sendQueueMaxBytes)`,
            { channel, retryable: true },
          ),
        );
        return;
      }
      const entry = { _channel: channel, _data: payload, _msgId: id, _bytes: bytes, _resolve: resolve, _reject: reject, _inflight: false, _settled: false, _timer: undefined, _unlisten: undefined };
      const limit = timeoutMs ?? this._options.sendTimeoutMs;
      if (limit > 0) {
        entry._timer = setTimeout(() => this._settleSend(entry, new FanoutError("timeout", `no sent reply within ${limit} ms (it may still be stored)`, { channel })), limit);
      }
      if (signal) {
        const onAbort = () => this._settleSend(entry, abortError(signal, channel));
        signal.addEventListener("abort", onAbort, { once: true });
        entry._unlisten = () => signal.removeEventListener("abort", onAbort);
      }
      this._sendQueue.push(entry);
      this._sendCount += 1;
      this._sendBytes += bytes;
      this._pumpSends();
    });
  }

  /**
   * Settles a send (with an error, or its result). One that is still queued leaves the
   * queue; one in flight stays until its reply, then is dropped (never sent again).
   */
  _settleSend(entry, error, result) {
    if (entry._settled) return;
    entry._settled = true;
    clearTimeout(entry._timer);
    if (entry._unlisten) entry._unlisten();
    this._sendCount -= 1;
    this._sendBytes -= entry._bytes;
    if (!entry._inflight) this._removeSend(entry);
    if (error) entry._reject(error);
    else entry._resolve(result);
  }

  _removeSend(entry) {
    const index = this._sendQueue.indexOf(entry);
    if (index !== -1) this._sendQueue.splice(index, 1);
  }

  /** Sends queued `send`s, in order, while fewer than the window are in flight. */
  _pumpSends() {
    if (this._sendRetryTimer !== undefined || !this._conn || !this._conn._ack) return;
    let inflight = 0;
    for (const entry of this._sendQueue) if (entry._inflight) inflight += 1;
    for (const entry of this._sendQueue) {
      if (inflight >= this._sendWindowNow) return;
      if (entry._inflight || entry._settled) continue;
      entry._inflight = true;
      entry._round = this._sendRound;
      inflight += 1;
      this._ask({ type: "send", channel: entry._channel, data: entry._data }, (frame) => this._onSendReply(entry, frame));
    }
  }

  _onSendReply(entry, frame) {
    entry._inflight = false;
    if (entry._settled) {
      // Given up on (timeout, abort) while in flight: nothing more to do with it.
      this._removeSend(entry);
      this._pumpSends();
      return;
    }
    if (frame.type === "sent") {
      this._sendBackoff.reset();
      if (entry._round === this._sendRound) this._sendWindowNow = Math.min(this._options.sendWindow, this._sendWindowNow + 1);
      this._settleSend(entry, null, { channel: frame.channel, streamId: frame.stream_id, msgId: entry._msgId });
      this._pumpSends();
      return;
    }
    const error = FanoutError.fromFrame(frame, entry._channel);
    if (error.retryable) {
      // Sent again after a backoff, first of those waiting; one at a time until one passes.
      this._sendWindowNow = 1;
      this._sendRound += 1;
      if (this._sendRetryTimer === undefined) {
        this._sendRetryTimer = setTimeout(() => {
          this._sendRetryTimer = undefined;
          this._pumpSends();
        }, this._sendBackoff.next());
      }
      return;
    }
    this._settleSend(entry, error);
    this._pumpSends();
  }

  /**
   * Sets this connection's status on a subscribed channel of a namespace with presence
   * (`null` clears it). It is set again after every reconnect.
   * @returns {Promise<void>}
   */
  async setStatus(channel, status) {
    const entry = this._channels.get(channel);
    const kept = status === null ? undefined : { _value: status, _conn: null };
    if (entry) entry._status = kept;
    await this._request({ type: "status", channel, status }, channel, () => {
      // The connection that carries it has the status: no need to set it again there.
      if (kept) kept._conn = this._conn;
    });
  }

  /**
   * The members of a channel's presence, cluster-wide.
   * @returns {Promise<{ channel: string, members: Array<Record<string, any>>, truncated: boolean }>}
   */
  async presence(channel) {
    const reply = await this._request({ type: "presence", channel }, channel);
    return { channel: reply.channel, members: reply.members || [], truncated: reply.truncated === true };
  }

  /**
   * How many connections and distinct users are in a channel's presence.
   * @returns {Promise<{ channel: string, connections: number, users: number }>}
   */
  async presenceStats(channel) {
    const reply = await this._request({ type: "presence_stats", channel }, channel);
    return { channel: reply.channel, connections: reply.connections, users: reply.users };
  }

  /**
   * Reads a channel's recent messages without subscribing: those after `since` (an offset
   * or a position), at most `limit`.
   * @param {string} channel
   * @param {{ since?: number | Position, limit?: number }} [options]
   * @returns {Promise<{ channel: string, epoch: string, offset: number, messages: Array<{ offset: number, data: any, user?: string }> }>}
   */
  async history(channel, { since, limit } = {}) {
    const frame = { type: "history", channel };
    if (since !== undefined && since !== null) frame.since = since;
    if (limit !== undefined && limit !== null) frame.limit = limit;
    const reply = await this._request(frame, channel);
    return { channel: reply.channel, epoch: reply.epoch, offset: reply.offset, messages: reply.messages || [] };
  }
}
