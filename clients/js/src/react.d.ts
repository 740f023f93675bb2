// Declarations of fanout-client/react (hand-written; the implementation is src/react.js).

import type { ReactNode, ReactElement } from "react";

import type { ConnectionState, Fanout, FanoutError, FanoutOptions, MessageMeta, PresenceMember, SendOptions, SubscriptionHandlers } from "./index.js";

/** Makes a client available to the hooks: your own `client` (connected on mount), or `options` for one it owns. */
export function FanoutProvider(props: { client: Fanout; children?: ReactNode } | { options: FanoutOptions; children?: ReactNode }): ReactElement;

/** The client of the nearest FanoutProvider. */
export function useFanout(): Fanout;

/** The connection state; re-renders on change. */
export function useConnectionState(): ConnectionState;

/** Subscribes to `channel` while mounted (falsy: nothing). The latest handlers are always called. */
export function useChannel<T = any>(
  channel: string | null | undefined,
  onMessage?: (data: T, meta: MessageMeta) => void,
  options?: Omit<SubscriptionHandlers<T>, "onMessage">,
): {
  publish(data: unknown): Promise<{ channel: string; offset?: number }>;
  send(data: unknown, options?: SendOptions): Promise<{ channel: string; streamId: string; msgId: string }>;
  setStatus(status: unknown): Promise<void>;
};

/** The members of a channel's presence, kept current (subscribing makes this connection one). */
export function usePresence(channel: string | null | undefined): {
  members: PresenceMember[];
  ready: boolean;
  error: FanoutError | null;
};
