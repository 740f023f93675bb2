// The SSE transport against the real gateway: automatic fallback when `/ws` is refused, and
// exactly-once recovery over SSE through HAProxy while a node is SIGKILLed.
// These need a gateway with SSE (GET /sse, POST /sse/frames).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Fanout } from "./support/harness.js";
import { RespClient, killAll, readStream, signToken, sleep, startGateway, startHaproxy, startNoWebSocketProxy, startRedis, startSplitProxy, waitFor } from "./support/harness.js";

after(killAll);

describe("SSE", { timeout: 120000 }, () => {
  let redis;
  let nodes;

  before(async () => {
    redis = await startRedis();
    nodes = await Promise.all(["s1", "s2"].map((name) => startGateway({ name, redis })));
  });

  test("with /ws refused, transport auto falls back to SSE, and the protocol works the same", async (t) => {
    const proxy = await startNoWebSocketProxy(nodes[0].port);
    t.after(() => proxy.stop());
    const transports = [];
    const client = new Fanout({
      url: proxy.wsUrl,
      getToken: async () => signToken({ sub: "behind-proxy", channels: ["dag:*"], publish: ["dag:sse-fallback"] }),
      backoff: { baseMs: 50, capMs: 200 },
    });
    t.after(() => client.close());
    client.on("transport", (kind) => transports.push(kind));
    const received = [];
    const reloads = [];
    client.subscribe("dag:sse-fallback", { onMessage: (data, meta) => received.push([meta.offset, data, meta.user]), onReload: (info) => reloads.push(info) });
    client.connect();
    await waitFor("connected over SSE", () => client.state === "connected", 20000);
    assert.equal(client.connection.transport, "sse");
    assert.deepEqual(transports, ["sse"]);
    assert.ok(proxy.stats.refusedUpgrades >= 2, `WebSocket was tried first (${proxy.stats.refusedUpgrades} refused)`);
    await waitFor("subscribed", () => reloads.length === 1);

    const publisher = await RespClient.connect(redis.port);
    for (let n = 1; n <= 20; n++) await publisher.command("FCALL", "fanout_publish", 1, "dag:sse-fallback", String(n));
    publisher.close();
    // Frames go by POST: a publish from the client, a send to the inbox.
    assert.deepEqual(await client.publish("dag:sse-fallback", "from the client"), { channel: "dag:sse-fallback", offset: 21 });
    const sent = await client.send("dag:sse-fallback", { type: "prompt", data: { text: "over SSE" } });
    await waitFor("21 messages", () => received.length >= 21);
    await sleep(200);
    assert.deepEqual(received.map((r) => r[0]), Array.from({ length: 21 }, (_, i) => i + 1));
    assert.deepEqual(received.at(-1), [21, "from the client", "behind-proxy"]);
    const inbox = await readStream(redis, "fanout:inbox");
    const entry = inbox.find((e) => e.id === sent.streamId);
    assert.deepEqual(JSON.parse(entry.fields.data), { type: "prompt", data: { text: "over SSE", client_msg_id: sent.msgId } });
    assert.ok(proxy.stats.framePosts >= 3);
  });

  // Sticky balancing: the stream and the POSTs of a session reach the same node. (Without
  // stickiness nodes relay POSTs to the node holding the stream: the last test.)
  test("over SSE through HAProxy, a node killed mid-stream costs a reconnect, not a message", async (t) => {
    const balancer = await startHaproxy(nodes, { balance: "source" });
    t.after(() => balancer.stop());
    const channel = "dag:sse-kill";
    const received = [];
    const reloads = [];
    const client = new Fanout({
      url: balancer.wsUrl,
      transport: "sse",
      getToken: async () => signToken({ sub: "sse-viewer", channels: ["dag:*"] }),
      backoff: { baseMs: 200, capMs: 1000 },
    });
    t.after(() => client.close());
    client.subscribe(channel, { onMessage: (data) => received.push(data), onReload: (info) => reloads.push(info) });
    client.connect();
    await waitFor("subscribed over SSE", () => reloads.length === 1, 20000);
    assert.equal(client.connection.transport, "sse");
    const firstNode = client.connection.node;

    const total = 300;
    const publisher = await RespClient.connect(redis.port);
    const publish = async (n) => assert.equal(await publisher.command("FCALL", "fanout_publish", 1, channel, String(n)), n);
    for (let n = 1; n <= 100; n++) {
      await publish(n);
      if (n % 10 === 0) await sleep(20);
    }
    // Kill the serving node and publish a burst at once: only a recovery can deliver it.
    const exited = nodes.find((node) => node.name === firstNode).kill("SIGKILL");
    await Promise.all([exited, ...Array.from({ length: 50 }, (_, i) => publish(101 + i))]);
    for (let n = 151; n <= total; n++) {
      await publish(n);
      if (n % 10 === 0) await sleep(20);
    }
    publisher.close();
    await waitFor(`all ${total} messages (have ${received.length})`, () => received.length >= total, 30000);
    await sleep(300);
    assert.deepEqual(received, Array.from({ length: total }, (_, i) => i + 1));
    assert.equal(reloads.length, 1, "recovered with since: no reload");
    assert.notEqual(client.connection.node, firstNode);
  });

  // Without stickiness a balancer sends a session's POSTs to any node. Here every POST goes
  // to the node that does NOT hold the stream: each frame reaches the session only if that
  // node relays it (through Redis) to the node that does. A node that answers 404 instead
  // ends the client's connection (it opens a new stream), which the test sees.
  test("over SSE, frames POSTed to a node without the stream are relayed to the session", async (t) => {
    const pair = await Promise.all(["r1", "r2"].map((name) => startGateway({ name, redis })));
    t.after(() => Promise.all(pair.map((node) => node.kill())));
    const proxy = await startSplitProxy(pair[0].port, pair[1].port);
    t.after(() => proxy.stop());
    const client = new Fanout({
      url: proxy.url,
      transport: "sse",
      getToken: async () => signToken({ sub: "split", channels: ["dag:*"], publish: ["dag:relay"] }),
      backoff: { baseMs: 100, capMs: 500 },
    });
    t.after(() => client.close());
    const received = [];
    const connections = [];
    client.on("connected", (connection) => connections.push(connection));
    client.subscribe("dag:relay", { onMessage: (data) => received.push(data) });
    client.connect();
    for (let n = 1; n <= 6; n++) assert.equal((await client.publish("dag:relay", n)).offset, n);
    await waitFor("six messages", () => received.length === 6);
    assert.deepEqual(received, [1, 2, 3, 4, 5, 6]);
    assert.equal(connections.length, 1, "one session throughout");
    assert.equal(connections[0].node, "r1", "the stream is on r1");
    // The subscribe and the six publishes at least, every one of them to r2, and accepted.
    assert.ok(proxy.stats.posts >= 7, `POSTs through the proxy: ${proxy.stats.posts}`);
    assert.deepEqual([...new Set(proxy.stats.postStatuses)], [202], `statuses of the POSTs to r2: ${proxy.stats.postStatuses}`);
  });
});
