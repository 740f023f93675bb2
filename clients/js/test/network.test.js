// What a browser tab meets over a day, against the real gateway: a link that dies silently
// (a proxy that stops forwarding without closing: the network changed, the laptop slept)
// found at once on `online`, on the page becoming visible, and after timers stopped (the
// process frozen); and `offline`, which parks reconnects instead of spending backoff.
//
// The gateway's heartbeat is left at its default (25 s, then 10 s for the pong): without
// these checks nothing would notice the dead link for 35 s. Each check must find it and
// have the client reconnected and recovered well before that; the time taken is printed.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { API_KEY, Fanout, killAll, signToken, sleep, startFreezingProxy, startGateway, waitFor } from "./support/harness.js";

after(killAll);

/** What the heartbeat would take to notice a dead link: heartbeat_s + pongTimeoutMs. */
const HEARTBEAT_PATH_MS = 35000;
/** The bound the tests hold each check to: generous, and far below the heartbeat path. */
const CHECK_BOUND_MS = 10000;

async function publish(gateway, channel, data) {
  const response = await fetch(gateway.httpUrl("/api/publish"), {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(response.status, 200, await response.clone().text());
}

describe("a silently dead link", { timeout: 120000 }, () => {
  let gateway;
  let proxy;

  before(async () => {
    gateway = await startGateway({ name: "network" });
    proxy = await startFreezingProxy(gateway.port);
  });
  after(() => proxy.stop());

  /**
   * A client through the freezing proxy on a channel with history, with 3 messages
   * delivered; then the link freezes and 3 more are published, which only a recovery can
   * bring. `trigger(client)` must make the client find out.
   */
  async function frozenThenTriggered(t, channel, options, trigger) {
    const client = new Fanout({ url: proxy.wsUrl, transport: "websocket", token: signToken({ sub: "tab", channels: ["dag:*"] }), ...options });
    t.after(() => client.close());
    const received = [];
    const reloads = [];
    const connections = [];
    client.on("connected", (connection) => connections.push(connection.connId));
    client.subscribe(channel, { onMessage: (data) => received.push(data), onReload: (info) => reloads.push(info) });
    client.connect();
    await waitFor("subscribed", () => reloads.length === 1);
    for (let n = 1; n <= 3; n++) await publish(gateway, channel, n);
    await waitFor("three messages", () => received.length === 3);

    proxy.freeze();
    for (let n = 4; n <= 6; n++) await publish(gateway, channel, n);
    await sleep(300);
    assert.deepEqual(received, [1, 2, 3], "nothing passes the frozen link");
    assert.equal(client.state, "connected", "and nothing noticed yet");

    await trigger(client);
    const started = Date.now();
    await waitFor("reconnected and recovered", () => connections.length === 2 && received.length === 6, CHECK_BOUND_MS);
    const tookMs = Date.now() - started;
    t.diagnostic(`reconnected and recovered ${tookMs} ms after the trigger (heartbeat path: ${HEARTBEAT_PATH_MS} ms)`);
    await publish(gateway, channel, 7);
    await waitFor("the next live message", () => received.length === 7);
    assert.deepEqual(received, [1, 2, 3, 4, 5, 6, 7], "each once, in order");
    assert.equal(reloads.length, 1, "recovered with since: no reload");
    assert.notEqual(connections[1], connections[0]);
    return tookMs;
  }

  test("`online` checks the link at once, finds it dead, and the client reconnects and recovers", async (t) => {
    const network = new EventTarget();
    await frozenThenTriggered(t, "dag:online", { networkEventTarget: network }, () => network.dispatchEvent(new Event("online")));
  });

  test("the page becoming visible does the same", async (t) => {
    const page = new EventTarget();
    page.visibilityState = "visible";
    await frozenThenTriggered(t, "dag:visible", { visibilityTarget: page, networkEventTarget: null }, () => page.dispatchEvent(new Event("visibilitychange")));
  });

  test("timers that stopped (a frozen process, a sleeping machine) make the client check the link when they run again", async (t) => {
    await frozenThenTriggered(t, "dag:frozen", { networkEventTarget: null }, async () => {
      // Freeze this whole process for 6 s, as a suspended tab or a sleeping laptop is: no
      // timer runs meanwhile, so the client sees the gap when it wakes up.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 6000);
    });
  });

  test("a live link survives `online` and `offline` checks", async (t) => {
    const network = new EventTarget();
    const live = await startGateway({ name: "live" });
    const client = new Fanout({ url: live.wsUrl, transport: "websocket", token: signToken({ sub: "steady" }), networkEventTarget: network });
    t.after(() => client.close());
    const connections = [];
    client.on("connected", (connection) => connections.push(connection.connId));
    client.connect();
    await client.ready(5000);
    network.dispatchEvent(new Event("online"));
    network.dispatchEvent(new Event("offline")); // a spurious one: the link still answers
    await sleep(2000); // longer than verifyTimeoutMs (1000)
    assert.equal(client.state, "connected");
    assert.equal(connections.length, 1, "the connection was kept");
  });
});

describe("offline", { timeout: 60000 }, () => {
  test("while offline nothing is attempted and no backoff is spent; `online` reconnects at once", async (t) => {
    let gateway = await startGateway({ name: "offline-1" });
    const port = gateway.port;
    const network = new EventTarget();
    const log = [];
    const client = new Fanout({
      url: gateway.wsUrl,
      transport: "websocket",
      token: signToken({ sub: "commuter" }),
      networkEventTarget: network,
      // Retries would come within 100 ms: a second offline shows plenty of them.
      backoff: { baseMs: 100, capMs: 100 },
      debug: (message, details) => log.push({ message, details }),
    });
    t.after(() => client.close());
    client.connect();
    await client.ready(5000);

    network.dispatchEvent(new Event("offline"));
    await gateway.kill("SIGKILL");
    await waitFor("the client to notice the loss", () => client.state === "disconnected");
    const attemptsBefore = log.filter((l) => l.message === "connecting").length;
    await sleep(1500);
    assert.equal(log.filter((l) => l.message === "connecting").length, attemptsBefore, "no attempt while offline");
    assert.ok(!log.some((l) => l.message === "reconnecting"), "no backoff delay drawn while offline");
    assert.ok(log.some((l) => l.message === "offline: reconnecting when the network is back"));

    gateway = await startGateway({ name: "offline-2", port });
    const back = Date.now();
    network.dispatchEvent(new Event("online"));
    await client.ready(CHECK_BOUND_MS);
    t.diagnostic(`connected ${Date.now() - back} ms after online`);
    assert.equal(log.filter((l) => l.message === "connecting").length, attemptsBefore + 1, "one attempt, at once");
    assert.equal(client.connection.node, "offline-2");
  });
});
