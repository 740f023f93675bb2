/**
 * React hooks for `fanout-client`: `import { FanoutProvider, useChannel } from "fanout-client/react"`.
 *
 * Written with `React.createElement` (no JSX), so that the sources run as they are (the demo
 * and the WordPress plugin load them unbuilt). React is a peer dependency (>= 18, for
 * `useSyncExternalStore`).
 *
 * @module
 */

import React from "react";

// The package's root entry, so that a build of this entry shares the root's classes.
import { Fanout, trackPresence } from "./index.js";

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

/**
 * The members of a channel's presence, kept current (the client's `trackPresence`):
 * subscribes to the channel (which makes this connection a member), asks `presence` after
 * every (re)subscribe, and applies `join`, `leave` and `presence_update` events on top
 * (those that raced the reply too).
 * @returns {{ members: Array<import("./index.js").PresenceMember>, ready: boolean, error: import("./errors.js").FanoutError | null }}
 */
export function usePresence(channel) {
  const client = useFanout();
  const [state, setState] = React.useState({ members: [], ready: false, error: null });
  React.useEffect(() => {
    if (!channel) return undefined;
    setState({ members: [], ready: false, error: null });
    const tracker = trackPresence(client, channel, {
      onChange: (members) => setState({ members, ready: tracker.ready, error: tracker.error }),
    });
    return () => tracker.close();
  }, [client, channel]);
  return state;
}
