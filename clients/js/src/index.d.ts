// Declarations of @fanout/client (hand-written; the implementation is src/*.js).

export * from "./events.js";

/** The connection state. */
export type ConnectionState = "connecting" | "connected" | "disconnected";

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
  fetch?: typeof fetch;
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

/** Error codes: the protocol's, and the client's own (disconnected, timeout, closed, transport, callback_failed). */
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

export class Subscription {
  readonly channel: string;
  /** True after unsubscribe() or when the server ended it. */
  readonly closed: boolean;
  /** The position of the last message delivered (channels with history), or null. */
  readonly position: Position | null;
  unsubscribe(): void;
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
  close(): void;
  subscribe<T = any>(channel: string, handlers?: SubscriptionHandlers<T>): Subscription;
  publish(channel: string, data: unknown): Promise<{ channel: string; offset?: number }>;
  send(channel: string, data: unknown, options?: { msgId?: string }): Promise<{ channel: string; streamId: string; msgId: string }>;
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

/** A JWT's `exp` (Unix seconds), read without verifying; undefined if none. */
export function tokenExpiry(token: string): number | undefined;
