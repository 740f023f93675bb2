/**
 * `fanout-client`: the browser and Node client of the fanout gateway.
 *
 * ```js
 * import { Fanout } from "fanout-client";
 * const client = new Fanout({ url: "wss://realtime.example.com/ws", getToken: () => fetch("/token").then((r) => r.text()) });
 * client.connect();
 * client.subscribe("dag:7", { onMessage(data, meta) {}, onReload() {} });
 * ```
 *
 * See docs/client-js.md.
 *
 * @module
 */

export { Fanout, Subscription } from "./client.js";
export { FanoutError } from "./errors.js";
export { PresenceTracker, trackPresence } from "./presence.js";
export { Backoff } from "./backoff.js";
export { tokenExpiry } from "./token.js";
