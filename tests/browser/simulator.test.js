// The demo simulator (examples/simulator/simulate.php) on its own, against a real Redis and
// the real gateway (which loads the function library the simulator publishes through):
// its options, its timeout at the gate, and how it treats what it reads from the inbox.
// (The browser tests drive it from the page; these cover what a page does not reach.)

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { API_KEY, REPO, Stack, waitFor } from "./support.js";

const SIMULATOR = join(REPO, "examples/simulator/simulate.php");

/** The catalogue events kept in a channel's history, oldest first (GET /api/history). */
async function events(gateway, channel) {
  const response = await fetch(`${gateway.url}/api/history?channel=${channel}&limit=1000`, {
    headers: { authorization: `Bearer ${API_KEY}` },
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).messages.map((m) => m.data);
}

/** Appends an entry to the inbox as the gateway does for a client's `send` (same fields). */
function inboxEntry(redis, channel, user, event) {
  return redis.raw("XADD", "fanout:inbox", "*", "channel", channel, "user", user, "conn_id", "test-conn",
    "node", "node-a", "received_at", String(Date.now()), "data", JSON.stringify(event));
}

describe("the demo simulator", { timeout: 120_000 }, () => {
  const stack = new Stack();
  let redis;
  let gateway;

  before(async () => {
    redis = await stack.redis();
    gateway = await stack.gateway(redis);
  });

  after(() => stack.stop());

  test("--help prints the usage; bad options exit 2", () => {
    const help = spawnSync("php", [SIMULATOR, "--help"], { encoding: "utf8" });
    assert.equal(help.status, 0);
    assert.match(help.stdout, /--redis-url/);
    for (const args of [["--runs", "many"], ["--redis-url", "http://x"], ["--run", "a b"], ["extra"]]) {
      const bad = spawnSync("php", [SIMULATOR, ...args], { encoding: "utf8" });
      assert.equal(bad.status, 2, `${args.join(" ")}: ${bad.stderr}`);
      assert.match(bad.stderr, /^simulate: /);
    }
  });

  test("without a gateway's function library in Redis it gives up after --wait-s", async () => {
    const bare = await stack.redis();
    const run = spawnSync("php", [SIMULATOR, "--redis-url", bare.url, "--wait-s", "1"], { encoding: "utf8", timeout: 30_000 });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /no fanout function library in Redis after 1 s/);
  });

  test("a gate nobody answers decides alone: the gate is cancelled, the rest skipped", async () => {
    const simulator = stack.php("simulator (timeout)", [
      SIMULATOR, "--redis-url", redis.url, "--run", "alone", "--step-ms", "1", "--gate-timeout-s", "1",
    ]);
    assert.deepEqual(await simulator.exited, { code: 0, signal: null }, simulator.log());
    const run = await events(gateway, "dag:alone");
    for (const event of run) {
      assert.deepEqual(Object.keys(event).sort(), ["data", "timestamp", "type"], "the catalogue's envelope");
    }
    const last = (type, nodeId) => run.filter((e) => e.type === type && (!nodeId || e.data.node_id === nodeId)).at(-1);
    assert.deepEqual(last("node_state", "review").data, { node_id: "review", state: "cancelled", error: "no decision before the gate expired" });
    assert.equal(last("node_state", "publish").data.state, "skipped");
    assert.equal(last("execution_complete").data.status, "cancelled");
    assert.equal(run.at(-1).type, "execution_complete", "the last event of the run");
    // The graph travels in the first node_state of each node.
    const pending = run.filter((e) => e.type === "node_state" && e.data.state === "pending" && e.data.label);
    assert.deepEqual(pending.map((e) => [e.data.node_id, e.data.depends_on]), [
      ["fetch", []], ["classify", ["fetch"]], ["embed", ["fetch"]], ["draft", ["classify", "embed"]], ["review", ["draft"]], ["publish", ["review"]],
    ]);
  });

  test("from the inbox it acts on its own run's events once, as the entry's user", async () => {
    // Sent before the simulator's consumer group exists: stale, never acted on.
    inboxEntry(redis, "dag:inbox-run", "early", { type: "human_decision", data: { node_id: "review", decision: "reject" } });
    const simulator = stack.php("simulator (inbox)", [
      SIMULATOR, "--redis-url", redis.url, "--run", "inbox-run", "--step-ms", "1", "--gate-timeout-s", "30",
    ]);
    await waitFor("the gate to open", async () => (await events(gateway, "dag:inbox-run")).some((e) => e.type === "human_gate_waiting"));

    inboxEntry(redis, "dag:other-run", "mallory", { type: "human_decision", data: { node_id: "review", decision: "reject" } });
    inboxEntry(redis, "dag:inbox-run", "mallory", { type: "human_decision", data: { node_id: "draft", decision: "reject" } });
    for (let i = 0; i < 2; i++) {
      // The JS client may send an event again after a reconnect, with the same client_msg_id.
      inboxEntry(redis, "dag:inbox-run", "olga", { type: "prompt", data: { text: "Status?", client_msg_id: "p-1" } });
    }
    inboxEntry(redis, "dag:inbox-run", "olga", { type: "human_decision", data: { node_id: "review", decision: "approve", user: "forged" } });
    assert.deepEqual(await simulator.exited, { code: 0, signal: null }, simulator.log());

    const run = await events(gateway, "dag:inbox-run");
    const answers = run.filter((e) => e.type === "output" && e.data.content.startsWith("@olga asked: Status?"));
    assert.equal(answers.length, 1, "the repeated prompt is answered once");
    const review = run.filter((e) => e.type === "node_state" && e.data.node_id === "review").at(-1);
    assert.deepEqual(review.data, { node_id: "review", state: "completed", output: { decision: "approve" }, decided_by: "olga" });
    assert.equal(run.at(-1).data.status, "succeeded");
    const notifications = await events(gateway, "user:olga");
    assert.equal(notifications.length, 1);
    assert.match(notifications[0].data.title, /Run inbox-run succeeded/);
    assert.deepEqual(await events(gateway, "user:mallory"), [], "mallory decided nothing that counted");
    assert.match(simulator.output.join("\n"), /ignored a human_decision from mallory/);
    // Everything it read is acknowledged in its group; nothing is left pending.
    const [pendingCount] = JSON.parse(redis.json("XPENDING", "fanout:inbox", "dag-simulator"));
    assert.equal(pendingCount, 0);
  });
});
