/**
 * The fanout client: one logical connection to a fanout cluster that survives reconnects,
 * node deaths, token expiry and the loss of WebSockets, and delivers the messages of
 * channels with history exactly once, in order.
 *
 * Layers, from the wire up:
 * - a transport (transports.js) carries frames: WebSocket, or SSE + POST;
 * - this class speaks protocol v1 over it: authentication, request ids and replies,
 *   heartbeats, token refresh, reconnects with backoff, the offline `send` queue;
 * - one ChannelSync per channel (channel.js) decides which messages to deliver.
 *
 * @module
 */

import { Backoff } from "./backoff.js";
import { ChannelSync } from "./channel.js";
import { FanoutError } from "./errors.js";
import { tokenExpiry } from "./token.js";
import { SseTransport, WebSocketTransport } from "./transports.js";

/** Close codes after which the protocol asks for a long backoff: limits and client bugs. */
const PENALTY_CLOSE_CODES = new Set([4010, 4029, 1002, 1007, 1009, 4003]);
/** Close code of a token problem (expired, refused). */
const TOKEN_CLOSE_CODE = 4001;
/** Close code of a draining node: reconnect soon, the balancer routes elsewhere. */
const DRAIN_CLOSE_CODE = 1012;
/** Close code this client uses when it gives up on a silent connection. */
const STALE_CLOSE_CODE = 4000;
/** Errors of a subscribe that may pass when tried again; others end the subscription. */
const RETRYABLE_SUBSCRIBE_CODES = new Set(["unavailable", "rate_limited", "internal"]);

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
 */

/** Whether `value` is a plain JSON object (not an array, not null). */
function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** A random id for `send` (crypto.randomUUID where there is one). */
function randomId() {
  const cryptoApi = globalThis.crypto;
  if (typeof cryptoApi?.randomUUID === "function") return cryptoApi.randomUUID();
  const bytes = new Uint8Array(16);
  if (typeof cryptoApi?.getRandomValues === "function") cryptoApi.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The `/ws` and `/sse` URLs of a gateway from the `url` option: `ws(s)://` or `http(s)://`,
 * absolute or (in a browser) relative to the page; a path ending in `/ws` becomes `/sse`.
 */
function endpointUrls(url, sseUrl) {
  const base = globalThis.location?.href;
  const parsed = new URL(url, base);
  const ws = new URL(parsed.href);
  if (ws.protocol === "http:") ws.protocol = "ws:";
  if (ws.protocol === "https:") ws.protocol = "wss:";
  let sse;
  if (sseUrl) {
    sse = new URL(sseUrl, base);
  } else {
    sse = new URL(parsed.href);
    if (sse.protocol === "ws:") sse.protocol = "http:";
    if (sse.protocol === "wss:") sse.protocol = "https:";
    sse.pathname = /\/ws\/?$/.test(sse.pathname) ? sse.pathname.replace(/\/ws\/?$/, "/sse") : `${sse.pathname.replace(/\/$/, "")}/sse`;
    sse.search = "";
  }
  return { wsUrl: ws.href, sseUrl: sse.href };
}

/**
 * A client subscription, as returned by `client.subscribe()`.
 */
export class Subscription {
  /** @param {Fanout} client @param {string} channel @param {SubscriptionHandlers} handlers */
  constructor(client, channel, handlers) {
    this.client = client;
    /** The channel. */
    this.channel = channel;
    /** @internal */
    this.handlers = handlers;
    /** Whether `unsubscribe()` was called or the server ended the subscription. */
    this.closed = false;
  }

  /**
   * The position of the last message delivered on the channel (channels with history), to
   * keep across page loads and give back as `since`; null before the first one.
   * @returns {Position | null}
   */
  get position() {
    return this.client._position(this.channel);
  }

  /** Stops this subscription; the channel is left when no other subscription needs it. */
  unsubscribe() {
    this.client._unsubscribe(this);
  }
}

/**
 * The client. See docs/client-js.md.
 */
export class Fanout {
  /**
   * @param {import("./index.js").FanoutOptions} options
   */
  constructor(options) {
    if (!options || typeof options.url !== "string") throw new TypeError("new Fanout({ url, ... }) needs a url");
    if (typeof options.token !== "string" && typeof options.getToken !== "function") {
      throw new TypeError("new Fanout() needs a token (string) or getToken (async function)");
    }
    const transport = options.transport ?? "auto";
    if (!["auto", "websocket", "sse"].includes(transport)) {
      throw new TypeError(`transport must be "auto", "websocket" or "sse" (got ${transport})`);
    }
    const { wsUrl, sseUrl } = endpointUrls(options.url, options.sseUrl);
    this.options = {
      wsUrl,
      sseUrl,
      transport,
      WebSocket: options.WebSocket ?? globalThis.WebSocket,
      fetch: options.fetch ?? globalThis.fetch?.bind(globalThis),
      getToken: options.getToken,
      stableAfterMs: options.stableAfterMs ?? 10000,
      drainRetryMs: options.drainRetryMs ?? 1000,
      penaltyMs: options.penaltyMs ?? 30000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10000,
      refreshMarginMs: options.refreshMarginMs ?? 60000,
      webSocketFailuresBeforeSse: options.webSocketFailuresBeforeSse ?? 2,
      retryWebSocketAfterMs: options.retryWebSocketAfterMs ?? 300000,
      clientMsgIdField: options.clientMsgIdField === undefined ? "client_msg_id" : options.clientMsgIdField,
    };
    const hasWebSocket = typeof this.options.WebSocket === "function";
    const hasFetch = typeof this.options.fetch === "function";
    if ((transport === "websocket" || (transport === "auto" && !hasFetch)) && !hasWebSocket) {
      throw new TypeError("no WebSocket implementation: pass { WebSocket } (e.g. from the ws package)");
    }
    if (transport === "sse" && !hasFetch) throw new TypeError("no fetch implementation for SSE: pass { fetch }");
    const backoff = options.backoff ?? {};
    this._backoff = new Backoff({ baseMs: backoff.baseMs ?? 1000, capMs: backoff.capMs ?? 30000, random: backoff.random });
    /** Retries of refused subscribes and sends: their own, shorter backoff. */
    this._retryBackoffOptions = { baseMs: backoff.baseMs ?? 1000, capMs: Math.min(backoff.capMs ?? 30000, 30000) };
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
    this._token = typeof options.token === "string" ? options.token : undefined;
    /** The gateway refused the current token: get another before connecting again. */
    this._tokenRefused = false;
    /** WebSocket attempts in a row that ended without a connection_ack ("auto" transport). */
    this._webSocketFailures = 0;
    /** Until when "auto" keeps to SSE after WebSockets failed and SSE worked (0: not). */
    this._preferSseUntil = 0;
    /** The transport of the last attempt, to tell when it changes. */
    this._lastTransportKind = undefined;
    this._nextId = 1;
    /** Requests awaiting their reply on the current connection, by id. */
    this._pending = new Map();
    /** Requests made while not connected, sent once connected. */
    this._deferred = [];
    /** `send`s in order; the first is on its way when `_sendInFlight`. */
    this._sendQueue = [];
    this._sendInFlight = false;
    this._sendRetryTimer = undefined;
    /**
     * The channels wanted, with their delivery state; `status` is the last status set on the
     * channel and the connection that carries it.
     * @type {Map<string, { sync: ChannelSync, subs: Set<Subscription>, subscribed: boolean, status?: { value: any, conn: object | null }, retryTimer?: any, retryBackoff: Backoff }>}
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
    if (!conn?.ack) return null;
    return {
      connId: conn.ack.conn_id,
      user: conn.ack.user,
      node: conn.ack.node,
      transport: conn.transport.kind,
      heartbeatS: conn.ack.heartbeat_s,
      expiresAt: conn.expiresAt,
      channels: [...(conn.ack.channels ?? [])],
    };
  }

  /**
   * Listens to an event: `state` (fn(state)), `error` (fn(FanoutError)), `connected`
   * (fn(connection)), `transport` (fn("websocket" | "sse"), when "auto" switches).
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
      console.warn("fanout:", args[0]?.code, args[0]?.message);
      return;
    }
    for (const fn of [...(set ?? [])]) {
      try {
        fn(...args);
      } catch (error) {
        if (event !== "error") this._callbackFailed(error);
      }
    }
  }

  /** An application callback threw: report it without breaking the client's own state. */
  _callbackFailed(error) {
    this._emit("error", new FanoutError("callback_failed", `a callback threw: ${error?.message ?? error}`, { retryable: false, cause: error }));
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._emit("state", state);
  }

  /**
   * Opens the connection (and keeps it open, reconnecting, until `close()`).
   * Returns at once; watch `state` or `connected` events.
   */
  connect() {
    if (this._wanted) return;
    this._wanted = true;
    this._open();
  }

  /**
   * Closes the connection and stops reconnecting. Pending requests and queued sends are
   * rejected with `closed`; subscriptions stay registered, and are resubscribed (with
   * `since`) if `connect()` is called again.
   */
  close() {
    this._wanted = false;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = undefined;
    const conn = this._conn;
    const closed = () => new FanoutError("closed", "the client was closed", { retryable: false });
    if (conn) {
      conn.transport?.close(1000, "client closed");
      this._connectionEnded(conn, closed);
    }
    this._conn = null;
    for (const request of this._deferred.splice(0)) request.fail(closed());
    clearTimeout(this._sendRetryTimer);
    this._sendRetryTimer = undefined;
    for (const entry of this._sendQueue.splice(0)) entry.reject(closed());
    this._sendInFlight = false;
    this._setState("disconnected");
  }

  // ---------------------------------------------------------------- connecting

  /** The token for a new connection: the current one unless refused or about to expire. */
  async _tokenForConnect() {
    const getToken = this.options.getToken;
    const exp = this._token === undefined ? undefined : tokenExpiry(this._token);
    const expiring = exp !== undefined && exp * 1000 - Date.now() < 5000;
    if (this._token !== undefined && !this._tokenRefused && !expiring) return this._token;
    if (!getToken) {
      throw new FanoutError("unauthorized", this._tokenRefused ? "the token was refused and there is no getToken to get another" : "the token has expired and there is no getToken", { retryable: false });
    }
    const token = await getToken();
    if (typeof token !== "string" || token === "") throw new FanoutError("unauthorized", "getToken() did not return a token", { retryable: true });
    this._token = token;
    this._tokenRefused = false;
    return token;
  }

  /** The transport of the next attempt ("auto": WebSocket unless it keeps failing). */
  _nextTransportKind() {
    const mode = this.options.transport;
    if (mode !== "auto") return mode;
    if (typeof this.options.WebSocket !== "function") return "sse";
    if (typeof this.options.fetch !== "function") return "websocket";
    if (this._preferSseUntil > 0) {
      if (Date.now() < this._preferSseUntil) return "sse";
      // Time to see whether WebSockets pass again.
      this._preferSseUntil = 0;
      this._webSocketFailures = 0;
    }
    return this._webSocketFailures >= this.options.webSocketFailuresBeforeSse ? "sse" : "websocket";
  }

  async _open() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = undefined;
    if (!this._wanted || this._conn) return;
    this._setState("connecting");
    const conn = { transport: null, ack: null, openedAt: 0, timers: new Set() };
    this._conn = conn;
    let token;
    try {
      token = await this._tokenForConnect();
    } catch (error) {
      if (this._conn !== conn) return;
      this._conn = null;
      const fanoutError = error instanceof FanoutError ? error : new FanoutError("unauthorized", `getToken() failed: ${error?.message ?? error}`, { retryable: true, cause: error });
      this._emit("error", fanoutError);
      if (!fanoutError.retryable) {
        this._wanted = false;
        this._setState("disconnected");
        return;
      }
      this._scheduleReconnect(this._backoff.next());
      return;
    }
    if (this._conn !== conn || !this._wanted) return;
    const kind = this._nextTransportKind();
    if (this._lastTransportKind !== undefined && kind !== this._lastTransportKind) this._emit("transport", kind);
    this._lastTransportKind = kind;
    const handlers = {
      onFrame: (frame) => this._conn === conn && this._onFrame(conn, frame),
      onActivity: () => {
        conn.lastActivity = Date.now();
      },
      onClose: (code, reason, status) => this._conn === conn && this._onTransportClose(conn, code, reason, status),
    };
    conn.lastActivity = Date.now();
    try {
      conn.transport =
        kind === "sse"
          ? new SseTransport({ url: this.options.sseUrl, token, fetch: this.options.fetch, handlers })
          : new WebSocketTransport({ url: this.options.wsUrl, token, WebSocket: this.options.WebSocket, handlers });
    } catch (error) {
      this._conn = null;
      this._emit("error", new FanoutError("transport", `cannot open a ${kind} connection: ${error?.message ?? error}`, { cause: error }));
      if (kind === "websocket") this._webSocketFailures += 1;
      this._scheduleReconnect(this._backoff.next());
      return;
    }
    conn.token = token;
    this._timer(conn, this.options.connectTimeoutMs, () => {
      if (conn.ack) return;
      conn.transport.close(STALE_CLOSE_CODE, "no connection_ack in time");
      this._onTransportClose(conn, 1006, "no connection_ack in time");
    });
  }

  /** A timer that belongs to a connection and dies with it. */
  _timer(conn, ms, fn) {
    const handle = setTimeout(() => {
      conn.timers.delete(handle);
      fn();
    }, Math.max(0, ms));
    conn.timers.add(handle);
    return handle;
  }

  _onAck(conn, ack) {
    conn.ack = ack;
    conn.openedAt = Date.now();
    conn.expiresAt = ack.expires_at;
    if (conn.transport.kind === "websocket") this._webSocketFailures = 0;
    else if (this.options.transport === "auto" && this._webSocketFailures >= this.options.webSocketFailuresBeforeSse) {
      this._preferSseUntil = Date.now() + this.options.retryWebSocketAfterMs;
    }
    this._armHeartbeat(conn, (Number(ack.heartbeat_s) || 25) * 1000);
    this._scheduleRefresh(conn);
    // Resubscribe every channel, with `since`: the automatic ones (broadcast, user:<sub>)
    // recover in place, the others start or recover. Then what waited for the connection.
    // All before the listeners hear of it, so that what they do comes after.
    for (const [channel, entry] of this._channels) this._sendSubscribe(channel, entry);
    for (const request of this._deferred.splice(0)) request.start();
    this._pumpSends();
    this._setState("connected");
    this._emit("connected", this.connection);
  }

  /**
   * Heartbeat: after `heartbeat_s` without any sign of life, send a `ping`; if nothing at
   * all arrives within `pongTimeoutMs` after it, the connection is dead (a half-open TCP
   * connection, a frozen proxy): close it and reconnect.
   */
  _armHeartbeat(conn, heartbeatMs) {
    const check = () => {
      const silentFor = Date.now() - conn.lastActivity;
      if (silentFor < heartbeatMs) {
        this._timer(conn, heartbeatMs - silentFor, check);
        return;
      }
      const pingAt = Date.now();
      conn.transport.send({ type: "ping" });
      this._timer(conn, this.options.pongTimeoutMs, () => {
        if (conn.lastActivity >= pingAt) {
          check();
          return;
        }
        conn.transport.close(STALE_CLOSE_CODE, "no sign of life");
        this._onTransportClose(conn, 4009, "no sign of life within the heartbeat timeout");
      });
    };
    this._timer(conn, heartbeatMs, check);
  }

  /** Schedules a `refresh` before the token expires (only with getToken). */
  _scheduleRefresh(conn) {
    const getToken = this.options.getToken;
    if (!getToken || typeof conn.expiresAt !== "number") return;
    clearTimeout(conn.refreshTimer);
    const remaining = conn.expiresAt * 1000 - Date.now();
    const margin = Math.min(this.options.refreshMarginMs, remaining / 3);
    conn.refreshTimer = this._timer(conn, remaining - margin, async () => {
      let token;
      try {
        token = await getToken();
      } catch (error) {
        this._emit("error", new FanoutError("unauthorized", `getToken() failed: ${error?.message ?? error}`, { retryable: true, cause: error }));
      }
      if (this._conn !== conn) return;
      const exp = token === undefined ? undefined : tokenExpiry(token);
      if (typeof token !== "string" || (exp !== undefined && exp <= conn.expiresAt)) {
        // No token, or no later one yet: try again a bit later, while time is left.
        if (conn.expiresAt * 1000 - Date.now() > 1000) {
          conn.refreshTimer = this._timer(conn, Math.max(500, (conn.expiresAt * 1000 - Date.now()) / 4), () => this._scheduleRefresh(conn));
        }
        return;
      }
      const id = this._nextId++;
      this._pending.set(id, { kind: "refresh", token });
      conn.transport.send({ type: "refresh", token, id });
    });
  }

  _onRefreshReply(conn, pending, frame) {
    if (frame.type === "refreshed") {
      this._token = pending.token;
      conn.token = pending.token;
      conn.transport.setToken(pending.token);
      conn.expiresAt = frame.expires_at;
      this._scheduleRefresh(conn);
      return;
    }
    const error = FanoutError.fromFrame(frame);
    this._emit("error", error);
    if (error.code === "unauthorized") this._tokenRefused = true;
    if (conn.expiresAt * 1000 - Date.now() > 1000) {
      conn.refreshTimer = this._timer(conn, Math.max(1000, (conn.expiresAt * 1000 - Date.now()) / 4), () => this._scheduleRefresh(conn));
    }
  }

  _onTransportClose(conn, code, reason, status) {
    if (this._conn !== conn) return;
    const wasConnected = Boolean(conn.ack);
    const connectedFor = wasConnected ? Date.now() - conn.openedAt : 0;
    this._connectionEnded(conn);
    this._conn = null;
    if (!this._wanted) return;

    if (this.options.transport === "auto") {
      if (conn.transport.kind === "websocket" && !wasConnected) {
        this._webSocketFailures += 1;
      } else if (conn.transport.kind === "sse" && !wasConnected) {
        // SSE failed too: the gateway may just be down. Go back to trying WebSockets.
        this._webSocketFailures = 0;
        this._preferSseUntil = 0;
      }
    }
    if (connectedFor >= this.options.stableAfterMs) this._backoff.reset();

    const closeError = new FanoutError(
      code === TOKEN_CLOSE_CODE ? "unauthorized" : code === 4003 ? "forbidden" : "disconnected",
      `connection closed (${code}${reason ? `: ${reason}` : ""})`,
      { closeCode: code, status, retryable: code !== 4003 },
    );
    let delay;
    if (code === TOKEN_CLOSE_CODE) {
      this._tokenRefused = true;
      this._emit("error", closeError);
      if (!this.options.getToken) {
        this._wanted = false;
        this._setState("disconnected");
        return;
      }
      delay = this._backoff.next();
    } else if (code === DRAIN_CLOSE_CODE && this._backoff.attempts === 0) {
      this._backoff.attempts = 1; // the next failure backs off as usual
      delay = Math.floor(Math.random() * this.options.drainRetryMs);
    } else if (PENALTY_CLOSE_CODES.has(code)) {
      this._emit("error", closeError);
      delay = Math.max(this._backoff.next(), this.options.penaltyMs / 2 + Math.random() * (this.options.penaltyMs / 2));
    } else {
      delay = this._backoff.next();
    }
    this._scheduleReconnect(delay);
  }

  _scheduleReconnect(delay) {
    this._setState("disconnected");
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._open(), delay);
  }

  /**
   * Cleans up after a connection: its timers, its requests (failed with `lost()`), the
   * channels' in-flight state.
   */
  _connectionEnded(conn, lost = () => new FanoutError("disconnected", "the connection ended before the reply", { retryable: true })) {
    for (const handle of conn.timers) clearTimeout(handle);
    conn.timers.clear();
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const request of pending) {
      if (request.kind === "request") request.fail(lost());
      else if (request.kind === "fill") this._channels.get(request.channel)?.sync.onHistoryFailed();
    }
    // The send in flight stays first in the queue: it goes again on the next connection.
    this._sendInFlight = false;
    for (const entry of this._channels.values()) {
      entry.subscribed = false;
      clearTimeout(entry.retryTimer);
      entry.retryTimer = undefined;
      entry.sync.disconnected();
    }
  }

  // ---------------------------------------------------------------- frames

  _onFrame(conn, frame) {
    switch (frame.type) {
      case "connection_ack":
        if (!conn.ack) this._onAck(conn, frame);
        return;
      case "message":
        this._channels.get(frame.channel)?.sync.onMessage(frame);
        return;
      case "resync":
        this._channels.get(frame.channel)?.sync.onResync();
        return;
      case "join":
      case "leave":
      case "presence_update":
        this._onPresenceEvent(frame);
        return;
      case "unsubscribed":
        if (frame.reason !== undefined && frame.id === undefined) this._onServerUnsubscribed(frame);
        else this._onReply(conn, frame);
        return;
      default:
        if (frame.id !== undefined) this._onReply(conn, frame);
        else if (frame.type === "error") this._emit("error", FanoutError.fromFrame(frame));
    }
  }

  _onReply(conn, frame) {
    const pending = this._pending.get(frame.id);
    if (!pending) return;
    this._pending.delete(frame.id);
    switch (pending.kind) {
      case "subscribe":
        this._onSubscribeReply(pending, frame);
        return;
      case "fill": {
        const entry = this._channels.get(pending.channel);
        if (!entry) return;
        if (frame.type === "history") entry.sync.onHistory(frame);
        else entry.sync.onHistoryFailed();
        return;
      }
      case "refresh":
        this._onRefreshReply(conn, pending, frame);
        return;
      case "send":
        this._onSendReply(frame);
        return;
      case "request":
        if (frame.type === "error") pending.fail(FanoutError.fromFrame(frame, pending.channel));
        else pending.succeed(frame);
        return;
      default:
    }
  }

  // ---------------------------------------------------------------- subscriptions

  /**
   * Subscribes to a channel. Messages are delivered to `onMessage(data, meta)`; on channels
   * with history, each once and in order, across reconnects. `onReload` says when the
   * application must (re)load the channel's state. Several subscriptions to one channel share
   * one subscription on the server.
   * @param {string} channel
   * @param {SubscriptionHandlers} [handlers]
   * @returns {Subscription}
   */
  subscribe(channel, handlers = {}) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("subscribe(channel) needs a channel name");
    const sub = new Subscription(this, channel, handlers);
    let entry = this._channels.get(channel);
    if (entry) {
      entry.subs.add(sub);
      // The channel runs already: this subscription starts from now, with a reload (and,
      // if the server subscription is up, its `onSubscribed`, e.g. to ask presence).
      queueMicrotask(() => {
        if (!entry.sync.started || this._channels.get(channel) !== entry) return;
        const position = entry.sync.position ? { ...entry.sync.position } : {};
        this._call(sub, "onReload", { channel, reason: "start", ...position });
        if (entry.subscribed) this._call(sub, "onSubscribed", { channel, ...position });
      });
      return sub;
    }
    entry = {
      subs: new Set([sub]),
      subscribed: false,
      status: undefined,
      retryTimer: undefined,
      retryBackoff: new Backoff(this._retryBackoffOptions),
      sync: null,
    };
    entry.sync = new ChannelSync(
      channel,
      {
        deliver: (data, meta) => {
          for (const s of [...entry.subs]) this._call(s, "onMessage", data, meta);
        },
        reload: (info) => {
          for (const s of [...entry.subs]) this._call(s, "onReload", info);
        },
        fill: (sinceOffset, limit) => {
          const id = this._nextId++;
          this._pending.set(id, { kind: "fill", channel });
          this._conn?.transport.send({ type: "history", channel, since: sinceOffset, limit, id });
        },
        recover: () => {
          if (this._conn?.ack && this._channels.get(channel) === entry) this._sendSubscribe(channel, entry);
        },
      },
      { position: handlers.since ?? null },
    );
    this._channels.set(channel, entry);
    if (this._conn?.ack) this._sendSubscribe(channel, entry);
    return sub;
  }

  _call(sub, name, ...args) {
    const fn = sub.handlers[name];
    if (typeof fn !== "function" || sub.closed) return;
    try {
      fn(...args);
    } catch (error) {
      this._callbackFailed(error);
    }
  }

  _position(channel) {
    const position = this._channels.get(channel)?.sync.position;
    return position ? { ...position } : null;
  }

  _sendSubscribe(channel, entry) {
    const id = this._nextId++;
    entry.sync.subscribing();
    this._pending.set(id, { kind: "subscribe", channel, entry });
    this._conn.transport.send({ type: "subscribe", channel, since: entry.sync.since(), id });
  }

  _onSubscribeReply(pending, frame) {
    const { channel, entry } = pending;
    if (this._channels.get(channel) !== entry) return; // unsubscribed meanwhile
    if (frame.type === "subscribed") {
      entry.subscribed = true;
      entry.retryBackoff.reset();
      entry.sync.onSubscribed(frame);
      const info = { channel, ...(frame.offset !== undefined ? { epoch: frame.epoch, offset: frame.offset } : {}), ...(frame.recovered !== undefined ? { recovered: frame.recovered } : {}) };
      for (const s of [...entry.subs]) this._call(s, "onSubscribed", info);
      // A status belongs to the connection: set it again on a new one.
      if (entry.status && entry.status.conn !== this._conn) {
        entry.status.conn = this._conn;
        this._conn.transport.send({ type: "status", channel, status: entry.status.value });
      }
      return;
    }
    entry.sync.recovering = false;
    const error = FanoutError.fromFrame(frame, channel);
    if (RETRYABLE_SUBSCRIBE_CODES.has(error.code)) {
      entry.retryTimer = setTimeout(() => {
        entry.retryTimer = undefined;
        if (this._conn?.ack && this._channels.get(channel) === entry) this._sendSubscribe(channel, entry);
      }, entry.retryBackoff.next());
      return;
    }
    // Refused for good (forbidden, bad channel, too many subscriptions).
    this._endChannel(channel, entry, error);
  }

  _onServerUnsubscribed(frame) {
    const entry = this._channels.get(frame.channel);
    if (!entry) return;
    const error = new FanoutError(frame.reason, `the server ended the subscription to ${frame.channel} (${frame.reason})`, { channel: frame.channel, retryable: false });
    this._endChannel(frame.channel, entry, error);
  }

  _endChannel(channel, entry, error) {
    this._channels.delete(channel);
    clearTimeout(entry.retryTimer);
    for (const s of [...entry.subs]) {
      this._call(s, "onError", error);
      s.closed = true;
    }
    this._emit("error", error);
  }

  _unsubscribe(sub) {
    if (sub.closed) return;
    sub.closed = true;
    const entry = this._channels.get(sub.channel);
    if (!entry || !entry.subs.has(sub)) return;
    entry.subs.delete(sub);
    if (entry.subs.size > 0) return;
    this._channels.delete(sub.channel);
    clearTimeout(entry.retryTimer);
    if (this._conn?.ack) this._conn.transport.send({ type: "unsubscribe", channel: sub.channel, id: this._nextId++ });
  }

  _onPresenceEvent(frame) {
    const entry = this._channels.get(frame.channel);
    if (!entry) return;
    const handler = frame.type === "join" ? "onJoin" : frame.type === "leave" ? "onLeave" : "onStatus";
    const { type, ...member } = frame;
    for (const s of [...entry.subs]) this._call(s, handler, member);
  }

  // ---------------------------------------------------------------- requests

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
        kind: "request",
        channel,
        succeed: (reply) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          resolve(reply);
        },
        fail: (error) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          const index = this._deferred.indexOf(request);
          if (index !== -1) this._deferred.splice(index, 1);
          if (id !== undefined) this._pending.delete(id);
          reject(error);
        },
        start: () => {
          if (done) return;
          id = this._nextId++;
          this._pending.set(id, request);
          this._conn.transport.send({ ...frame, id });
          onSent?.();
        },
      };
      timer = setTimeout(() => request.fail(new FanoutError("timeout", `no reply to ${frame.type} within ${this.options.requestTimeoutMs} ms`, { channel })), this.options.requestTimeoutMs);
      if (this._conn?.ack) request.start();
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
   * once connected, in order; sent again after a reconnect when no `sent` reply came (at
   * least once). Each carries a client message id, `msgId` (a random UUID unless given),
   * written into `data` (see docs/client-js.md) so that the backend can skip repeats.
   * @returns {Promise<{ channel: string, streamId: string, msgId: string }>}
   */
  send(channel, data, { msgId } = {}) {
    const field = this.options.clientMsgIdField;
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
      this._sendQueue.push({ channel, data: payload, msgId: id, resolve, reject });
      this._pumpSends();
    });
  }

  _pumpSends() {
    if (this._sendInFlight || this._sendRetryTimer || !this._conn?.ack || this._sendQueue.length === 0) return;
    const entry = this._sendQueue[0];
    const id = this._nextId++;
    this._sendInFlight = true;
    this._pending.set(id, { kind: "send", entry });
    this._conn.transport.send({ type: "send", channel: entry.channel, data: entry.data, id });
  }

  _onSendReply(frame) {
    this._sendInFlight = false;
    const entry = this._sendQueue[0];
    if (!entry) return;
    if (frame.type === "sent") {
      this._sendQueue.shift();
      this._sendBackoff.reset();
      entry.resolve({ channel: frame.channel, streamId: frame.stream_id, msgId: entry.msgId });
      this._pumpSends();
      return;
    }
    const error = FanoutError.fromFrame(frame, entry.channel);
    if (error.retryable) {
      this._sendRetryTimer = setTimeout(() => {
        this._sendRetryTimer = undefined;
        this._pumpSends();
      }, this._sendBackoff.next());
      return;
    }
    this._sendQueue.shift();
    entry.reject(error);
    this._pumpSends();
  }

  /**
   * Sets this connection's status on a subscribed channel of a namespace with presence
   * (`null` clears it). It is set again after every reconnect.
   * @returns {Promise<void>}
   */
  async setStatus(channel, status) {
    const entry = this._channels.get(channel);
    const kept = status === null ? undefined : { value: status, conn: null };
    if (entry) entry.status = kept;
    await this._request({ type: "status", channel, status }, channel, () => {
      // The connection that carries it has the status: no need to set it again there.
      if (kept) kept.conn = this._conn;
    });
  }

  /**
   * The members of a channel's presence, cluster-wide.
   * @returns {Promise<{ channel: string, members: Array<Record<string, any>>, truncated: boolean }>}
   */
  async presence(channel) {
    const reply = await this._request({ type: "presence", channel }, channel);
    return { channel: reply.channel, members: reply.members ?? [], truncated: reply.truncated === true };
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
    return { channel: reply.channel, epoch: reply.epoch, offset: reply.offset, messages: reply.messages ?? [] };
  }
}
