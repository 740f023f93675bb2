// Reconnect and recover exactly once, against real gateways behind a real HAProxy, while
// the node serving the client is SIGKILLed in the middle of a stream of messages.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Fanout } from "./support/harness.js";
import { RespClient, killAll, signToken, sleep, startGateway, startHaproxy, startRedis, waitFor } from "./support/harness.js";

after(killAll);

describe("through HAProxy in front of three nodes", { timeout: 120000 }, () => {
  let redis;
  let nodes;
  let balancer;

  before(async () => {
    redis = await startRedis();
    nodes = await Promise.all(["n1", "n2", "n3"].map((name) => startGateway({ name, redis })));
    balancer = await startHaproxy(nodes);
  });

  test("a node killed mid-stream costs a reconnect, not a message: each delivered exactly once, in order", async () => {
    const channel = "dag:kill-mid-stream";
    // The user's own channel is subscribed by the gateway itself: it recovers in place.
    const personal = "user:viewer";
    const personalReceived = [];
    const received = [];
    const reloads = [];
    const states = [];
    const client = new Fanout({
      url: balancer.wsUrl,
      transport: "websocket",
      getToken: async () => signToken({ sub: "viewer", channels: ["dag:*"] }),
      backoff: { baseMs: 200, capMs: 1000 },
    });
    let published = 0;
    let receivedWhenDisconnected;
    let publishedWhenReconnected;
    client.on("state", (state) => {
      states.push(state);
      if (state === "disconnected" && receivedWhenDisconnected === undefined) receivedWhenDisconnected = received.length;
    });
    client.on("connected", () => {
      if (receivedWhenDisconnected !== undefined && publishedWhenReconnected === undefined) publishedWhenReconnected = published;
    });
    client.subscribe(channel, {
      onMessage: (data, meta) => {
        assert.equal(meta.channel, channel);
        assert.equal(meta.offset, data, "offset and payload number agree (first publish is 1)");
        received.push(data);
      },
      onReload: (info) => reloads.push(info),
    });
    client.subscribe(personal, {
      onMessage: (data) => personalReceived.push(data),
      onReload: (info) => reloads.push(info),
    });
    client.connect();
    try {
      await waitFor("the subscriptions to start", () => reloads.length === 2);
      assert.deepEqual(reloads.map((r) => r.reason), ["start", "start"]);
      const firstNode = client.connection.node;

      const total = 400;
      const publisher = await RespClient.connect(redis.port);
      let killed;
      const publish = async (n) => {
        assert.equal(await publisher.command("FCALL", "fanout_publish", 1, channel, String(n)), n);
        // Fewer on the user channel: it keeps 100 messages, and all of them must stay recoverable.
        if (n % 5 === 0) await publisher.command("FCALL", "fanout_publish", 1, personal, String(n / 5));
        published = Math.max(published, n);
      };
      const publishPaced = async (from, to) => {
        for (let n = from; n <= to; n++) {
          await publish(n);
          if (n % 10 === 0) await sleep(20);
        }
      };
      const publishing = (async () => {
        await publishPaced(1, 150);
        // Kill the serving node, and at once publish a burst (pipelined) that the client can
        // only get by recovery: it cannot have reconnected yet.
        killed = nodes.find((node) => node.name === firstNode);
        const exited = killed.kill("SIGKILL");
        const burst = Array.from({ length: 50 }, (_, i) => publish(151 + i));
        await Promise.all([...burst, exited]);
        await publishPaced(201, total);
      })();
      await publishing;
      publisher.close();
      await waitFor(`all ${total} messages (have ${received.length})`, () => received.length >= total && personalReceived.length >= total / 5, 30000);
      await sleep(300); // any duplicate would arrive now

      assert.deepEqual(received, Array.from({ length: total }, (_, i) => i + 1));
      assert.deepEqual(personalReceived, Array.from({ length: total / 5 }, (_, i) => i + 1));
      assert.equal(reloads.length, 2, "the recoveries replayed the gaps: no reload");
      assert.ok(killed, "the serving node was killed");
      assert.notEqual(client.connection.node, firstNode, "reconnected to a surviving node");
      assert.ok(states.includes("disconnected"), `went through a reconnect: ${states.join(",")}`);
      assert.ok(
        publishedWhenReconnected > receivedWhenDisconnected,
        `messages published while disconnected (${receivedWhenDisconnected + 1} to ${publishedWhenReconnected}) came by recovery`,
      );
      assert.equal(client.state, "connected");
    } finally {
      client.close();
    }
  });
});

describe("positions and lost history, on one node", { timeout: 60000 }, () => {
  let redis;
  let gateway;

  before(async () => {
    redis = await startRedis();
    gateway = await startGateway({ name: "positions", redis });
  });

  const clientFor = (t, handlersOptions) => {
    const client = new Fanout({ url: gateway.wsUrl, transport: "websocket", token: signToken({ sub: "keeper", channels: ["dag:*"] }), ...handlersOptions });
    t.after(() => client.close());
    return client;
  };

  test("a position kept across clients (as across page loads) recovers what was missed, without a reload", async (t) => {
    const channel = "dag:kept-position";
    const publisher = await RespClient.connect(redis.port);
    t.after(() => publisher.close());
    const first = clientFor(t);
    const seen = [];
    let started = false;
    const sub = first.subscribe(channel, { onMessage: (data) => seen.push(data), onReload: () => (started = true) });
    first.connect();
    await waitFor("first subscription", () => started);
    for (let n = 1; n <= 5; n++) await publisher.command("FCALL", "fanout_publish", 1, channel, String(n));
    await waitFor("five messages", () => seen.length === 5);
    const kept = sub.position;
    assert.equal(kept.offset, 5);
    first.close();

    for (let n = 6; n <= 10; n++) await publisher.command("FCALL", "fanout_publish", 1, channel, String(n));
    const second = clientFor(t);
    const later = [];
    const reloads = [];
    second.subscribe(channel, { since: kept, onMessage: (data) => later.push(data), onReload: (info) => reloads.push(info) });
    second.connect();
    await waitFor("the five missed messages", () => later.length === 5);
    await publisher.command("FCALL", "fanout_publish", 1, channel, "11");
    await waitFor("the live one", () => later.length === 6);
    assert.deepEqual(later, [6, 7, 8, 9, 10, 11]);
    assert.deepEqual(reloads, []);
  });

  test("when the history is lost (a new epoch), onReload says so and delivery goes on from the new position", async (t) => {
    const channel = "dag:lost-history";
    const publisher = await RespClient.connect(redis.port);
    t.after(() => publisher.close());
    const client = clientFor(t);
    const seen = [];
    const reloads = [];
    client.subscribe(channel, { onMessage: (data, meta) => seen.push([meta.epoch, meta.offset, data]), onReload: (info) => reloads.push(info) });
    client.connect();
    await waitFor("subscribed", () => reloads.length === 1);
    for (let n = 1; n <= 3; n++) await publisher.command("FCALL", "fanout_publish", 1, channel, String(n));
    await waitFor("three messages", () => seen.length === 3);
    const oldEpoch = seen[0][0];

    // Redis loses the data (as a restart without persistence would); the next publish starts
    // a new epoch at offset 1.
    await redis.cli("FLUSHALL");
    await publisher.command("FCALL", "fanout_publish", 1, channel, "4");
    await waitFor("a reload for the lost history", () => reloads.length === 2);
    assert.equal(reloads[1].reason, "lost");
    assert.notEqual(reloads[1].epoch, oldEpoch);
    await publisher.command("FCALL", "fanout_publish", 1, channel, "5");
    await waitFor("the next message, in the new epoch", () => seen.some((s) => s[2] === 5));
    assert.deepEqual(seen.slice(0, 3).map((s) => s[2]), [1, 2, 3]);
    const after = seen.slice(3);
    assert.ok(after.every(([epoch]) => epoch === reloads[1].epoch), "later messages are of the new epoch");
    assert.deepEqual(after.map((s) => s[2]).filter((n) => n === 5), [5], "delivered once");
    assert.ok(!after.some((s) => s[1] <= reloads[1].offset), "nothing at or before the reload's position");
  });
});
