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
    const received = [];
    const reloads = [];
    const states = [];
    let tokens = 0;
    const client = new Fanout({
      url: balancer.wsUrl,
      transport: "websocket",
      getToken: async () => {
        tokens += 1;
        return signToken({ sub: "viewer", channels: ["dag:*"] });
      },
      backoff: { baseMs: 200, capMs: 1000 },
    });
    client.on("state", (state) => states.push(state));
    client.subscribe(channel, {
      onMessage: (data, meta) => {
        assert.equal(meta.channel, channel);
        assert.equal(meta.offset, data, "offset and payload number agree (first publish is 1)");
        received.push(data);
      },
      onReload: (info) => reloads.push(info),
    });
    client.connect();
    try {
      await waitFor("the subscription to start", () => reloads.length === 1);
      assert.equal(reloads[0].reason, "start");
      const firstNode = client.connection.node;

      const total = 400;
      const publisher = await RespClient.connect(redis.port);
      let killed;
      const publishing = (async () => {
        for (let n = 1; n <= total; n++) {
          assert.equal(await publisher.command("FCALL", "fanout_publish", 1, channel, String(n)), n);
          if (n === 150) {
            killed = nodes.find((node) => node.name === firstNode);
            await killed.kill("SIGKILL");
          }
          if (n % 10 === 0) await sleep(20);
        }
      })();
      await publishing;
      publisher.close();
      await waitFor(`all ${total} messages (have ${received.length})`, () => received.length >= total, 30000);
      await sleep(300); // any duplicate would arrive now

      assert.deepEqual(received, Array.from({ length: total }, (_, i) => i + 1));
      assert.equal(reloads.length, 1, "the recovery replayed the gap: no reload");
      assert.ok(killed, "the serving node was killed");
      assert.notEqual(client.connection.node, firstNode, "reconnected to a surviving node");
      assert.ok(states.includes("disconnected"), `went through a reconnect: ${states.join(",")}`);
      assert.equal(client.state, "connected");
    } finally {
      client.close();
    }
  });
});
