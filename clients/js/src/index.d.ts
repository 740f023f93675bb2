// Declarations of fanout-client (hand-written; the implementation is src/*.js).

export * from "./events.js";

/** The connection state. */
export type ConnectionState = "connecting" | "connected" | "disconnected";

/** A subscription's state: waiting for the gateway, in place, or ended for good. */
export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";

/** What `online`/`offline` (or `visibilitychange`) events come from: a window, a document, or your own EventTarget. */
export interface EventTargetLike {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

/** An AbortSignal (DOM, Node >= 15). */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason?: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** How frames travel: a WebSocket, or SSE + POST. "auto" starts with WebSocket and falls back to SSE. */
export type TransportKind = "websocket" | "sse";

/** A position in a channel's history: the last message processed. */
export interface Position {
  epoch: string;
  offset: number;
}

/** What comes with each message. */
export interface MessageMeta {
  channel: string;
  /** Channels with history: the message's offset (absent for plain Redis PUBLISH). */
  offset?: number;
  /** With `offset`: the history's epoch. */
  epoch?: string;
  /** Messages a client published: the publisher's user id, from its token. */
  user?: string;
}

/** Why the application must (re)load a channel's state. */
export interface ReloadInfo {
  channel: string;
  /** "start": the subscription started; "lost": messages may have been lost (recovered: false). */
  reason: "start" | "lost";
  /** Channels with history: delivery continues after this position. */
  epoch?: string;
  offset?: number;
}

/** A presence member, or a join / leave / presence_update event about one. */
export interface PresenceMember {
  channel?: string;
  user: string;
  conn_id: string;
  node?: string;
  info?: unknown;
  status?: unknown;
}

export interface SubscribedInfo {
  channel: string;
  epoch?: string;
  offset?: number;
  recovered?: boolean;
}

export interface SubscriptionHandlers<T = any> {
  /** Each message; on channels with history each once, in order, across reconnects. */
  onMessage?(data: T, meta: MessageMeta): void;
  /** (Re)load the channel's state: after the subscription starts, and when messages may have been lost. */
  onReload?(info: ReloadInfo): void;
  /** A presence `join` event. */
  onJoin?(member: PresenceMember): void;
  /** A presence `leave` event. */
  onLeave?(member: PresenceMember): void;
  /** A `presence_update` event (a member's status changed). */
  onStatus?(member: PresenceMember): void;
  /** Every `subscribed` reply, after each reconnect too: the place to ask `presence`. */
  onSubscribed?(info: SubscribedInfo): void;
  /** The subscription was refused (forbidden, invalid channel, limit) or ended by the server. */
  onError?(error: FanoutError): void;
  /** The position the application already has (e.g. kept in sessionStorage): recover from it. */
  since?: Position;
}

export interface FanoutOptions {
  /** The gateway's WebSocket endpoint, `wss://host/ws` (http(s) and, in browsers, relative URLs work too). */
  url: string;
  /** The SSE endpoint; default: `url` with `/ws` replaced by `/sse`, over http(s). */
  sseUrl?: string;
  /** A token (JWT). Without getToken it cannot be refreshed. */
  token?: string;
  /** Returns a fresh token; called before the current one expires (refresh) and after a refusal. */
  getToken?: () => Promise<string> | string;
  /** Default "auto": WebSocket, falling back to SSE when WebSockets cannot connect. */
  transport?: "auto" | TransportKind;
  /** A WebSocket constructor (e.g. from the `ws` package); default: the global one. */
  WebSocket?: unknown;
  /** A fetch implementation for SSE; default: the global one. */
  fetch?: (input: string, init?: any) => Promise<any>;
  /** Reconnect backoff: delays drawn from [0, min(capMs, baseMs * 2^n)). Defaults 1000, 30000. */
  backoff?: { baseMs?: number; capMs?: number; random?: () => number };
  /** A connection up this long resets the backoff. Default 10000. */
  stableAfterMs?: number;
  /** After a drain close (1012), the first retry comes within this. Default 1000. */
  drainRetryMs?: number;
  /** Backoff after limit and client-bug closes (4010, 4029, 1002, 1007, 1009). Default 30000. */
  penaltyMs?: number;
  /** A connection attempt without connection_ack within this fails. Default 10000. */
  connectTimeoutMs?: number;
  /** Requests (publish, presence, history, ...) without a reply within this reject with "timeout". Default 10000. */
  requestTimeoutMs?: number;
  /** After a ping sent because of silence, nothing within this means the connection is dead. Default 10000. */
  pongTimeoutMs?: number;
  /** Refresh the token this long before it expires (at most a third of its remaining life). Default 60000. */
  refreshMarginMs?: number;
  /** "auto": WebSocket attempts in a row without connection_ack before trying SSE. Default 2. */
  webSocketFailuresBeforeSse?: number;
  /** "auto": after falling back, stay on SSE this long before trying WebSockets again. Default 300000. */
  retryWebSocketAfterMs?: number;
  /** The field `send` writes its client message id into; null: none. Default "client_msg_id". */
  clientMsgIdField?: string | null;
  /** After `online`, a visible page or a timer gap, a ping without answer within this means the connection is dead. Default 1000. */
  verifyTimeoutMs?: number;
  /** Where `online` and `offline` come from. Default: the global window in browsers; null: none. */
  networkEventTarget?: EventTargetLike | null;
  /** Where `visibilitychange` comes from (with `visibilityState`). Default: the global document; null: none. */
  visibilityTarget?: (EventTargetLike & { readonly visibilityState?: string }) | null;
  /** Most `send`s waiting (queued or in flight) before `send` rejects with `queue_full`. Default 1000. */
  sendQueueMaxCount?: number;
  /** Most bytes (the JSON of their data) of waiting `send`s before `queue_full`. Default 1048576. */
  sendQueueMaxBytes?: number;
  /** `send`s in flight at a time (replies come in order). Default 8; 1 keeps the inbox in call order even across retries. */
  sendWindow?: number;
  /** Default per-call timeout of `send`, ms; 0: none (a send waits for a connection as long as it takes). Default 0. */
  sendTimeoutMs?: number;
  /** `true`: log what the client does to console.debug; a function: gets each line (never tokens nor payloads). */
  debug?: boolean | ((message: string, details?: Record<string, unknown>) => void);
}

/** The current connection, from its connection_ack. */
export interface ConnectionInfo {
  connId: string;
  user: string;
  node: string;
  transport: TransportKind;
  heartbeatS: number;
  expiresAt: number;
  channels: string[];
}

/** Error codes: the protocol's, and the client's own (disconnected, timeout, closed, transport, callback_failed, queue_full, aborted, unsubscribed). */
export type FanoutErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "too_large"
  | "rate_limited"
  | "limit_exceeded"
  | "unavailable"
  | "unsupported"
  | "internal"
  | "disconnected"
  | "timeout"
  | "closed"
  | "transport"
  | "callback_failed"
  | "queue_full"
  | "aborted"
  | "unsubscribed"
  | (string & {});

export class FanoutError extends Error {
  constructor(code: FanoutErrorCode, message: string, details?: { retryable?: boolean; closeCode?: number; status?: number; channel?: string; cause?: unknown });
  readonly name: "FanoutError";
  /** Switch on this. */
  readonly code: FanoutErrorCode;
  /** Whether the same request may succeed when tried again later. */
  readonly retryable: boolean;
  /** The close code that ended the connection, if any. */
  readonly closeCode?: number;
  /** The HTTP status of a refused SSE request, if any. */
  readonly status?: number;
  /** The channel of the failed request, if any. */
  readonly channel?: string;
  static fromFrame(frame: { code?: string; message?: string }, channel?: string): FanoutError;
}

export interface SubscriptionStateInfo {
  previous: SubscriptionState;
  /** What moved it: `disconnected` (the connection was lost), a refusal or the server's end; null otherwise. */
  error: FanoutError | null;
}

export class Subscription {
  readonly channel: string;
  /** True after unsubscribe() or when the server ended it. */
  readonly closed: boolean;
  /** unsubscribed, subscribing or subscribed. */
  readonly state: SubscriptionState;
  /** The error that moved it to its current state, or null. */
  readonly error: FanoutError | null;
  /** The position of the last message delivered (channels with history), or null. */
  readonly position: Position | null;
  /** Listens to state changes; returns a function that removes the listener. */
  on(event: "state", fn: (state: SubscriptionState, info: SubscriptionStateInfo) => void): () => void;
  /** Resolves once subscribed; rejects if the subscription ends, or with `timeout`. */
  ready(timeoutMs?: number): Promise<void>;
  unsubscribe(): void;
}

export interface SendOptions {
  /** The client message id written into `data`; default a random UUID. */
  msgId?: string;
  /** Give up after this long (ms): rejects with `timeout` (a send already out may still be stored). */
  timeoutMs?: number;
  /** Give up when it aborts: rejects with `aborted`. */
  signal?: AbortSignalLike;
}

export interface HistoryMessage<T = any> {
  offset: number;
  data: T;
  user?: string;
}

export interface FanoutEvents {
  state: (state: ConnectionState) => void;
  error: (error: FanoutError) => void;
  connected: (connection: ConnectionInfo) => void;
  transport: (kind: TransportKind) => void;
}

export class Fanout {
  constructor(options: FanoutOptions);
  readonly state: ConnectionState;
  readonly connection: ConnectionInfo | null;
  on<E extends keyof FanoutEvents>(event: E, fn: FanoutEvents[E]): () => void;
  connect(): void;
  /** Resolves once connected; rejects on close(), when the client stops for good, or with `timeout`. */
  ready(timeoutMs?: number): Promise<void>;
  close(): void;
  subscribe<T = any>(channel: string, handlers?: SubscriptionHandlers<T>): Subscription;
  /** Every active subscription, oldest first. */
  subscriptions(): Subscription[];
  /** The oldest active subscription of a channel, or null. */
  getSubscription(channel: string): Subscription | null;
  publish(channel: string, data: unknown): Promise<{ channel: string; offset?: number }>;
  send(channel: string, data: unknown, options?: SendOptions): Promise<{ channel: string; streamId: string; msgId: string }>;
  setStatus(channel: string, status: unknown): Promise<void>;
  presence(channel: string): Promise<{ channel: string; members: PresenceMember[]; truncated: boolean }>;
  presenceStats(channel: string): Promise<{ channel: string; connections: number; users: number }>;
  history<T = any>(channel: string, options?: { since?: number | Position; limit?: number }): Promise<{ channel: string; epoch: string; offset: number; messages: HistoryMessage<T>[] }>;
}

/** Exponential backoff with full jitter. */
export class Backoff {
  constructor(options?: { baseMs?: number; capMs?: number; random?: () => number });
  readonly baseMs: number;
  readonly capMs: number;
  attempts: number;
  ceiling(): number;
  next(): number;
  reset(): void;
}

/** Who is in a channel's presence, kept current (a snapshot, then the events that follow it). */
export class PresenceTracker {
  constructor(client: Fanout, channel: string, handlers?: PresenceHandlers);
  readonly channel: string;
  /** The members, one per connection. */
  readonly members: PresenceMember[];
  /** Whether a presence reply has been applied since the last (re)subscribe. */
  readonly ready: boolean;
  /** The last error (a failed presence request, or the subscription's end), or null. */
  readonly error: FanoutError | null;
  readonly closed: boolean;
  readonly subscription: Subscription;
  /** Stops tracking and unsubscribes. */
  close(): void;
}

export interface PresenceHandlers {
  onChange?(members: PresenceMember[]): void;
  onError?(error: FanoutError): void;
}

/** Tracks a channel's presence: subscribes, asks `presence` after every subscribed, applies join/leave/presence_update. */
export function trackPresence(client: Fanout, channel: string, handlers?: PresenceHandlers): PresenceTracker;

/** A JWT's `exp` (Unix seconds), read without verifying; undefined if none. */
export function tokenExpiry(token: string): number | undefined;
