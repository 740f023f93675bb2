// The client's session behaviour against the real gateway: token refresh, token rejection,
// the offline send queue, heartbeat-based stale detection, requests and typed errors.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { FanoutError } from "../src/index.js";
import { Fanout } from "./support/harness.js";
import { API_KEY, killAll, readStream, signToken, sleep, startFreezingProxy, startGateway, startRedis, waitFor } from "./support/harness.js";

after(killAll);

/** A client that is closed when the test ends. */
function clientFor(t, options) {
  const client = new Fanout({ transport: "websocket", backoff: { baseMs: 100, capMs: 500 }, ...options });
  t.after(() => client.close());
  return client;
}

async function publishHttp(gateway, channel, data) {
  const response = await fetch(gateway.httpUrl("/api/publish"), {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return response.json();
}

describe("tokens", { timeout: 60000 }, () => {
  test("a short-lived token is refreshed on the open connection with new ones from getToken", async (t) => {
    const gateway = await startGateway({ name: "refresh" });
    let issued = 0;
    const states = [];
    const errors = [];
    const client = clientFor(t, {
      url: gateway.wsUrl,
      getToken: async () => {
        issued += 1;
        return signToken({ sub: "refresher", channels: ["dag:*"], ttlS: 4 });
      },
    });
    client.on("state", (state) => states.push(state));
    client.on("error", (error) => errors.push(error));
    const received = [];
    client.subscribe("dag:refresh", { onMessage: (data) => received.push(data) });
    client.connect();
    await waitFor("connected", () => client.state === "connected");
    const { connId, expiresAt } = client.connection;

    // Well past the first token's expiry: the gateway would have closed with 4001.
    await sleep(9000);
    assert.ok(issued >= 3, `getToken called again before each expiry (${issued} times)`);
    assert.equal(client.connection.connId, connId, "still the same connection");
    assert.ok(client.connection.expiresAt > expiresAt + 3, "the expiry moved with the refreshes");
    assert.deepEqual(states, ["connecting", "connected"]);
    assert.deepEqual(errors, []);
    await publishHttp(gateway, "dag:refresh", { after: "refresh" });
    await waitFor("a message on the refreshed connection", () => received.length === 1);
    assert.deepEqual(received, [{ after: "refresh" }]);
  });

  test("a refused token (close 4001) makes the client ask getToken for a new one", async (t) => {
    const gateway = await startGateway({ name: "rejected" });
    let issued = 0;
    const errors = [];
    const client = clientFor(t, {
      url: gateway.wsUrl,
      getToken: async () => {
        issued += 1;
        // The first token expired ten seconds ago.
        return signToken({ sub: "late", ttlS: issued === 1 ? -10 : 3600 });
      },
    });
    client.on("error", (error) => errors.push(error));
    client.connect();
    await waitFor("connected with the second token", () => client.state === "connected");
    assert.equal(issued, 2);
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof FanoutError);
    assert.equal(errors[0].code, "unauthorized");
    assert.equal(errors[0].closeCode, 4001);
  });

  test("an expired static token is not even tried", async (t) => {
    const client = clientFor(t, { url: "ws://127.0.0.1:9/ws", token: signToken({ sub: "late", ttlS: -10 }) });
    const errors = [];
    client.on("error", (error) => errors.push(error));
    client.connect();
    await waitFor("the refusal", () => errors.length === 1);
    assert.equal(errors[0].code, "unauthorized");
    assert.equal(errors[0].retryable, false);
    assert.equal(client.state, "disconnected");
  });

  test("a refused static token stops the client instead of retrying it forever", async (t) => {
    const gateway = await startGateway({ name: "static" });
    const errors = [];
    const client = clientFor(t, { url: gateway.wsUrl, token: signToken({ sub: "forged", secret: "not-the-secret-of-this-gateway-at-all" }) });
    client.on("error", (error) => errors.push(error));
    client.connect();
    await waitFor("the refusal", () => errors.some((e) => e.code === "unauthorized" && e.closeCode === 4001));
    await sleep(500);
    assert.equal(client.state, "disconnected");
    assert.equal(errors.length, 1, "no second attempt with the same token");
  });
});

describe("requests and errors", { timeout: 60000 }, () => {
  test("publish and history replies, and typed refusals", async (t) => {
    const gateway = await startGateway({ name: "requests" });
    const client = clientFor(t, {
      url: gateway.wsUrl,
      token: signToken({ sub: "alice", channels: ["dag:*", "room:*"], publish: ["dag:mine"] }),
    });
    const mine = [];
    client.subscribe("dag:mine", { onMessage: (data, meta) => mine.push({ data, meta }) });
    const refusals = [];
    client.subscribe("dag:secret-but-granted", {});
    const forbidden = client.subscribe("user:bob", { onError: (error) => refusals.push(error) });
    // Requests made before the connection wait for it.
    const published = client.publish("dag:mine", { text: "hi" });
    client.connect();
    assert.deepEqual(await published, { channel: "dag:mine", offset: 1 });
    await waitFor("own message", () => mine.length === 1);
    assert.deepEqual(mine[0], { data: { text: "hi" }, meta: { channel: "dag:mine", offset: 1, epoch: mine[0].meta.epoch, user: "alice" } });

    const history = await client.history("dag:mine", { since: 0 });
    assert.equal(history.offset, 1);
    assert.deepEqual(history.messages.map((m) => [m.offset, m.user, m.data]), [[1, "alice", { text: "hi" }]]);

    await waitFor("refused subscription", () => refusals.length === 1);
    assert.equal(refusals[0].code, "forbidden");
    assert.equal(refusals[0].retryable, false);
    assert.equal(forbidden.closed, true);

    await assert.rejects(client.publish("dag:other", 1), (error) => error instanceof FanoutError && error.code === "forbidden" && !error.retryable && error.channel === "dag:other");
    await assert.rejects(client.history("room:lobby"), (error) => error.code === "bad_request");
  });
});

describe("offline send queue", { timeout: 60000 }, () => {
  test("sends made while the gateway is down are delivered once it is back, each once per id, in order", async (t) => {
    const redis = await startRedis();
    let gateway = await startGateway({ name: "inbox-1", redis });
    const port = gateway.port;
    const client = clientFor(t, { url: gateway.wsUrl, getToken: async () => signToken({ sub: "decider", channels: ["dag:*"] }) });
    client.connect();
    await waitFor("connected", () => client.state === "connected");
    const first = await client.send("dag:7", { type: "human_decision", data: { node_id: "n1", decision: "approve" } });
    assert.match(first.streamId, /^\d+-\d+$/);

    await gateway.kill("SIGKILL");
    await waitFor("the client to notice", () => client.state !== "connected");
    const offline = [
      client.send("dag:7", { type: "human_decision", data: { node_id: "n2", decision: "reject" } }),
      client.send("dag:7", { plain: "object" }, { msgId: "my-own-id" }),
      client.send("dag:7", "a string carries no id"),
    ];
    let settled = 0;
    for (const p of offline) p.then(() => (settled += 1), () => (settled += 1));
    await sleep(1000);
    assert.equal(settled, 0, "nothing is sent while the gateway is down");

    gateway = await startGateway({ name: "inbox-2", redis, port });
    const results = await Promise.all(offline);
    const entries = await readStream(redis, "fanout:inbox");
    assert.deepEqual(entries.map((e) => e.id), [first.streamId, ...results.map((r) => r.streamId)]);
    assert.deepEqual(entries.map((e) => JSON.parse(e.fields.data)), [
      { type: "human_decision", data: { node_id: "n1", decision: "approve", client_msg_id: first.msgId } },
      { type: "human_decision", data: { node_id: "n2", decision: "reject", client_msg_id: results[0].msgId } },
      { plain: "object", client_msg_id: "my-own-id" },
      "a string carries no id",
    ]);
    assert.equal(results[1].msgId, "my-own-id");
    assert.equal(new Set([first.msgId, results[0].msgId]).size, 2, "ids differ");
    assert.ok(entries.every((e) => e.fields.user === "decider" && e.fields.channel === "dag:7"));
    assert.deepEqual(entries.slice(1).map((e) => e.fields.node), ["inbox-2", "inbox-2", "inbox-2"]);
  });
});

describe("send in flight", { timeout: 60000 }, () => {
  test("many sends, several frames in flight at a time, reach the inbox once each, in the order they were made", async (t) => {
    const redis = await startRedis();
    const gateway = await startGateway({ name: "window", redis, args: ["--max-publishes-per-s", "1000"] });
    const client = clientFor(t, { url: gateway.wsUrl, token: signToken({ sub: "burst", channels: ["dag:*"] }), sendWindow: 8 });
    const sent = Array.from({ length: 60 }, (_, i) => client.send("dag:burst", { n: i + 1 }));
    client.connect();
    const results = await Promise.all(sent);
    const entries = await readStream(redis, "fanout:inbox");
    assert.deepEqual(entries.map((e) => JSON.parse(e.fields.data).n), Array.from({ length: 60 }, (_, i) => i + 1));
    assert.deepEqual(entries.map((e) => e.id), results.map((r) => r.streamId), "each promise has its own entry");
  });
});

describe("liveness", { timeout: 60000 }, () => {
  test("a connection that goes silent is found dead by the heartbeat and replaced", async (t) => {
    const gateway = await startGateway({ name: "heartbeat", args: ["--heartbeat-s", "1"] });
    const proxy = await startFreezingProxy(gateway.port);
    t.after(() => proxy.stop());
    const client = clientFor(t, { url: proxy.wsUrl, token: signToken({ sub: "quiet" }), pongTimeoutMs: 1000 });
    const connections = [];
    client.on("connected", (connection) => connections.push(connection.connId));
    client.connect();
    await waitFor("connected", () => connections.length === 1);
    proxy.freeze();
    await waitFor("a new connection after the silence", () => connections.length === 2, 15000);
    assert.notEqual(connections[1], connections[0]);
  });
});

describe("Node", { timeout: 60000 }, () => {
  test("the WebSocket of the ws package can be passed in instead of the global one", async (t) => {
    const { default: WebSocketFromWs } = await import("ws");
    const gateway = await startGateway({ name: "ws-package" });
    const client = clientFor(t, { url: gateway.wsUrl, token: signToken({ sub: "node-service", channels: ["dag:*"] }), WebSocket: WebSocketFromWs });
    const received = [];
    let started = false;
    client.subscribe("dag:ws-package", { onMessage: (data, meta) => received.push([meta.offset, data]), onReload: () => (started = true) });
    client.connect();
    await waitFor("subscribed", () => started);
    await publishHttp(gateway, "dag:ws-package", { from: "http" });
    await waitFor("the message", () => received.length === 1);
    assert.deepEqual(received, [[1, { from: "http" }]]);
  });
});
