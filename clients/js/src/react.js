/**
 * React hooks for `@fanout/client`: `import { FanoutProvider, useChannel } from "@fanout/client/react"`.
 *
 * Written with `React.createElement` (no JSX), so that the package needs no build step.
 * React is a peer dependency (>= 18, for `useSyncExternalStore`).
 *
 * @module
 */

import React from "react";

import { Fanout } from "./client.js";

const FanoutContext = React.createContext(/** @type {Fanout | null} */ (null));

/**
 * Makes a client available to the hooks below it. Give it a `client` you made (it is
 * connected on mount and left open on unmount: you own it), or `options` for one the
 * provider makes, connects and closes with itself.
 * @param {{ client?: Fanout, options?: import("./index.js").FanoutOptions, children?: any }} props
 */
export function FanoutProvider({ client, options, children }) {
  const [own] = React.useState(() => (client ? null : new Fanout(options)));
  const value = client ?? own;
  React.useEffect(() => {
    value.connect();
    if (client) return undefined;
    return () => value.close();
  }, [value, client]);
  return React.createElement(FanoutContext.Provider, { value }, children);
}

/** The client of the nearest `FanoutProvider`. */
export function useFanout() {
  const client = React.useContext(FanoutContext);
  if (!client) throw new Error("useFanout() needs a <FanoutProvider> above it");
  return client;
}

/** The connection state, `connecting`, `connected` or `disconnected`; re-renders on change. */
export function useConnectionState() {
  const client = useFanout();
  const subscribe = React.useCallback((onChange) => client.on("state", onChange), [client]);
  const getState = () => client.state;
  return React.useSyncExternalStore(subscribe, getState, getState);
}

/**
 * Subscribes to `channel` while the component is mounted (a falsy channel subscribes to
 * nothing). `onMessage(data, meta)` gets each message (exactly once, in order, on channels
 * with history); `options` takes the other handlers of `client.subscribe` (`onReload`,
 * `onJoin`, `onLeave`, `onStatus`, `onSubscribed`, `onError`, `since`). The latest handlers
 * are always called; changing them does not resubscribe.
 * @returns {{ publish(data: unknown): Promise<any>, send(data: unknown, options?: { msgId?: string }): Promise<any>, setStatus(status: unknown): Promise<void> }}
 */
export function useChannel(channel, onMessage, options = {}) {
  const client = useFanout();
  const handlers = React.useRef({});
  handlers.current = { ...options, onMessage };
  const since = options.since;
  React.useEffect(() => {
    if (!channel) return undefined;
    const call = (name) => (...args) => handlers.current[name]?.(...args);
    const sub = client.subscribe(channel, {
      onMessage: call("onMessage"),
      onReload: call("onReload"),
      onJoin: call("onJoin"),
      onLeave: call("onLeave"),
      onStatus: call("onStatus"),
      onSubscribed: call("onSubscribed"),
      onError: call("onError"),
      ...(since ? { since } : {}),
    });
    return () => sub.unsubscribe();
    // `since` only matters when the subscription starts.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, channel]);
  return React.useMemo(
    () => ({
      publish: (data) => client.publish(channel, data),
      send: (data, sendOptions) => client.send(channel, data, sendOptions),
      setStatus: (status) => client.setStatus(channel, status),
    }),
    [client, channel],
  );
}

/** A member without the event's `channel` and `type`, and without a cleared status. */
function asMember(event, previous) {
  const { channel: _channel, type: _type, ...member } = { ...previous, ...event };
  if (member.status === null) delete member.status;
  return member;
}

/**
 * The members of a channel's presence, kept current: subscribes to the channel (which
 * makes this connection a member), asks `presence` after every (re)subscribe, and applies
 * `join`, `leave` and `presence_update` events on top (those that arrive while the request
 * is out too, since its reply may have been read before them).
 * @returns {{ members: Array<import("./index.js").PresenceMember>, ready: boolean, error: import("./errors.js").FanoutError | null }}
 */
export function usePresence(channel) {
  const client = useFanout();
  const [state, setState] = React.useState({ members: [], ready: false, error: null });
  React.useEffect(() => {
    if (!channel) return undefined;
    let alive = true;
    let members = new Map();
    let ready = false;
    let generation = 0;
    /** Events that arrived while a `presence` request was out: the reply may predate them. */
    let sinceRequest = null;
    const show = () => alive && setState({ members: [...members.values()], ready, error: null });
    const apply = (event) => {
      if (event.type === "leave") members.delete(event.conn_id);
      else members.set(event.conn_id, asMember(event, members.get(event.conn_id)));
    };
    const onEvent = (type) => (event) => {
      const typed = { ...event, type };
      sinceRequest?.push(typed);
      apply(typed);
      show();
    };
    setState({ members: [], ready: false, error: null });
    const sub = client.subscribe(channel, {
      onSubscribed: async () => {
        const asked = ++generation;
        sinceRequest = [];
        try {
          const reply = await client.presence(channel);
          if (!alive || asked !== generation) return;
          members = new Map(reply.members.map((m) => [m.conn_id, asMember(m)]));
          for (const event of sinceRequest) apply(event);
          sinceRequest = null;
          ready = true;
          show();
        } catch (error) {
          if (alive && asked === generation) setState((s) => ({ ...s, error }));
        }
      },
      onJoin: onEvent("join"),
      onLeave: onEvent("leave"),
      onStatus: onEvent("presence_update"),
      onError: (error) => alive && setState((s) => ({ ...s, error })),
    });
    return () => {
      alive = false;
      sub.unsubscribe();
    };
  }, [client, channel]);
  return state;
}
