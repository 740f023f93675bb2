// Reconnect and recover exactly once, against real gateways behind a real HAProxy, while
// the node serving the client is SIGKILLed in the middle of a stream of messages.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Fanout } from "../src/index.js";
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
