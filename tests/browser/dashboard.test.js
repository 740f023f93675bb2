// The demo dashboard in a real browser (Debian's chromium), served by the real gateway with
// `--demo` on a real Redis: what a backend publishes with redis-cli shows on the page, two
// tabs see each other in presence, a decision clicked on the page lands in the inbox
// stream (over WebSocket and over SSE), and the PHP simulator plays a whole run driven from
// the page.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { join } from "node:path";
import {
  API_KEY, REPO, Stack, WAIT_MS, openDashboard, publish, screenshot, streamEntries, waitFor, waitForConnection,
} from "./support.js";

/** Waits until the page is subscribed to every one of `channels` (the footer's list). */
async function waitForSubscriptions(page, channels) {
  for (const channel of channels) {
    await page.locator(`#subscriptions li[data-channel="${channel}"][data-state="subscribed"]`).waitFor({ timeout: WAIT_MS });
  }
}

describe("demo dashboard on one gateway", { timeout: 240_000 }, () => {
  const stack = new Stack();
  let redis;
  let gateway;
  let browser;

  before(async () => {
    redis = await stack.redis();
    gateway = await stack.gateway(redis);
    browser = await stack.browser();
  });

  after(() => stack.stop());

  test("connects and shows a notification and a run's events published with redis-cli", async () => {
    const page = await openDashboard(browser, gateway.url, { user: "alice", name: "Alice", run: "r1" });
    await waitForConnection(page);
    assert.equal(await page.locator("#connection").getAttribute("data-node"), "node-a");
    await waitForSubscriptions(page, ["dag:r1", "user:alice", "room:demo", "broadcast"]);

    // A notification on the user's channel: listed under the bell, counted as unread.
    assert.ok(publish(redis, "user:alice", "notification", { id: "ntf-1", title: "Flow completed", message: "Import finished in 42 s.", level: "success" }) > 0);
    const item = page.locator('#notification-list li[data-id="ntf-1"]');
    await item.waitFor({ state: "attached", timeout: WAIT_MS });
    assert.equal(await page.locator("#bell-count").getAttribute("data-count"), "1");
    assert.match(await item.textContent(), /Flow completed.*Import finished in 42 s\./s);

    // The run's events: a node and its state, the graph from depends_on, an edge, the cost.
    publish(redis, "dag:r1", "node_state", { node_id: "n1", state: "completed", label: "Fetch" });
    publish(redis, "dag:r1", "node_state", { node_id: "n2", state: "pending", label: "Summarise", depends_on: ["n1"] });
    publish(redis, "dag:r1", "edge_active", { from: "n1", to: "n2" });
    publish(redis, "dag:r1", "node_state", { node_id: "n2", state: "running" });
    publish(redis, "dag:r1", "cost_update", { spent: 0.25, budget: 5, remaining: 4.75, currency: "USD" });
    await page.locator('#dag g[data-node="n2"][data-state="running"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('#dag g[data-node="n1"]').getAttribute("data-state"), "completed");
    assert.equal(await page.locator('#dag path[data-from="n1"][data-to="n2"]').count(), 1);
    await waitFor("the cost to show", async () => (await page.locator("#cost").getAttribute("data-spent")) === "0.25");
    assert.match(await page.locator("#cost-spent").textContent(), /0\.250/);
    // Console events published on the run's channel show in the agent console.
    publish(redis, "dag:r1", "tool_call", { name: "read_file", input: { path: "src/main.rs" }, call_id: "c-1" });
    publish(redis, "dag:r1", "output", { content: "The build failed because ", message_id: "m-1" });
    publish(redis, "dag:r1", "output", { content: "a test timed out.", message_id: "m-1", done: true });
    const answer = page.locator('#console li[data-message-id="m-1"][data-done="true"]');
    await answer.waitFor({ timeout: WAIT_MS });
    assert.match(await answer.textContent(), /The build failed because a test timed out\./);
    assert.equal(await page.locator('#console li[data-type="output"]').count(), 1, "one entry per streamed answer");
    assert.equal(await page.locator('#console li[data-call-id="c-1"]').count(), 1);
    // Every message is in the event log once, with its offset.
    assert.deepEqual(
      await page.locator('#event-log li[data-channel="dag:r1"]').evaluateAll((items) => items.map((li) => Number(li.dataset.offset))),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );

    await page.locator("#bell-button").click();
    await page.locator("#notifications").waitFor({ state: "visible", timeout: WAIT_MS });
    assert.equal(await page.locator("#bell-count").getAttribute("data-count"), "0", "opening the bell marks them read");
    await screenshot(page, "1-connected-notification-and-run");
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  test("a page opened mid-run shows the run so far, from history", async () => {
    publish(redis, "dag:r2", "node_state", { node_id: "a", state: "completed", label: "First" });
    publish(redis, "dag:r2", "node_state", { node_id: "b", state: "running", label: "Second", depends_on: ["a"] });
    const page = await openDashboard(browser, gateway.url, { user: "frank", run: "r2" });
    await page.locator('#dag g[data-node="b"][data-state="running"]').waitFor({ timeout: WAIT_MS });
    await waitForSubscriptions(page, ["dag:r2"]);
    publish(redis, "dag:r2", "node_state", { node_id: "b", state: "completed" });
    await page.locator('#dag g[data-node="b"][data-state="completed"]').waitFor({ timeout: WAIT_MS });
    const log = page.locator('#event-log li[data-channel="dag:r2"]');
    assert.deepEqual(await log.evaluateAll((items) => items.map((li) => `${li.dataset.offset}:${li.dataset.source}`)), ["1:history", "2:history", "3:live"]);
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  test("two tabs of two users see each other in presence, with their status", async () => {
    const bob = await openDashboard(browser, gateway.url, { user: "bob", name: "Bob" });
    const carol = await openDashboard(browser, gateway.url, { user: "carol", name: "Carol" });
    for (const page of [bob, carol]) {
      await waitForConnection(page);
      for (const user of ["bob", "carol"]) {
        await page.locator(`#presence li[data-user="${user}"]`).waitFor({ timeout: WAIT_MS });
      }
    }
    assert.match(await bob.locator('#presence li[data-user="carol"]').textContent(), /Carol/);
    assert.match(await bob.locator('#presence li[data-user="bob"]').textContent(), /\(you\)/);

    // Carol sets her status; Bob sees it (presence_update).
    await carol.locator("#status-state").selectOption("reviewing");
    await carol.locator("#status-detail").fill("the gate of run 7");
    await carol.locator('#status-form button[type="submit"]').click();
    const carolOnBob = bob.locator('#presence li[data-user="carol"][data-status="reviewing"]');
    await carolOnBob.waitFor({ timeout: WAIT_MS });
    assert.match(await carolOnBob.textContent(), /reviewing · the gate of run 7/);
    await screenshot(bob, "2-presence-bob");
    await screenshot(carol, "2-presence-carol");

    // Carol's tab closes: she leaves Bob's list.
    await carol.close();
    await bob.locator('#presence li[data-user="carol"]').waitFor({ state: "detached", timeout: WAIT_MS });
    assert.deepEqual(bob.problems, []);
    await bob.close();
  });

  test("a gate decision clicked on the page lands in the inbox stream", async () => {
    const page = await openDashboard(browser, gateway.url, { user: "dave", name: "Dave", run: "r3" });
    await waitForConnection(page);
    await waitForSubscriptions(page, ["dag:r3"]);
    publish(redis, "dag:r3", "node_state", { node_id: "review", state: "waiting", label: "Human review" });
    publish(redis, "dag:r3", "human_gate_waiting", {
      node_id: "review",
      presentation: { title: "Publish the report?", body: "Draft attached to node n3.", options: ["approve", "reject"] },
      expires_at: new Date(Date.now() + 3600_000).toISOString(),
    });
    const gate = page.locator('.gate[data-node="review"]');
    await gate.waitFor({ timeout: WAIT_MS });
    assert.match(await gate.textContent(), /Publish the report\?.*Draft attached to node n3\./s);
    await screenshot(page, "3-gate-waiting");

    await gate.locator('button[data-decision="approve"]').click();
    await page.locator('.gate[data-node="review"][data-state="sent"]').waitFor({ timeout: WAIT_MS });
    const shownId = await gate.getAttribute("data-stream-id");

    const entries = streamEntries(redis, "fanout:inbox").filter((e) => e.fields.channel === "dag:r3");
    assert.equal(entries.length, 1, JSON.stringify(entries));
    const [entry] = entries;
    assert.equal(entry.id, shownId, "the page shows the entry id of the sent reply");
    assert.equal(entry.fields.user, "dave", "the sender is the token's user");
    assert.equal(entry.fields.node, "node-a");
    const event = JSON.parse(entry.fields.data);
    assert.equal(event.type, "human_decision");
    assert.equal(event.data.node_id, "review");
    assert.equal(event.data.decision, "approve");
    assert.equal(typeof event.data.client_msg_id, "string", "a client message id to de-duplicate on");

    // The engine acts on it: the gate closes, the node shows who decided.
    publish(redis, "dag:r3", "node_state", { node_id: "review", state: "completed", decided_by: "dave" });
    await gate.waitFor({ state: "detached", timeout: WAIT_MS });
    assert.match(await page.locator('#dag g[data-node="review"]').textContent(), /by dave/);

    // "Cancel run" sends the catalogue's cancel_execution to the inbox too.
    await page.locator("#cancel-run").click();
    const cancel = await waitFor("cancel_execution in the inbox", () =>
      streamEntries(redis, "fanout:inbox").find((e) => e.fields.channel === "dag:r3" && JSON.parse(e.fields.data).type === "cancel_execution"));
    assert.equal(cancel.fields.user, "dave");
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  test("a run rejected at the gate from the page stops: the gate is cancelled, the rest skipped", async () => {
    const simulator = stack.php("simulator (reject)", [
      join(REPO, "examples/simulator/simulate.php"),
      "--redis-url", redis.url, "--run", "sim-reject", "--runs", "1", "--max-seconds", "90", "--step-ms", "30",
    ]);
    const page = await openDashboard(browser, gateway.url, { user: "ivan", run: "sim-reject" });
    const gate = page.locator('.gate[data-node="review"]');
    await gate.waitFor({ timeout: WAIT_MS });
    await gate.locator('button[data-decision="reject"]').click();
    await page.locator('#run-status[data-status="cancelled"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('#dag g[data-node="review"]').getAttribute("data-state"), "cancelled");
    assert.match(await page.locator('#dag g[data-node="review"]').textContent(), /by ivan/);
    assert.equal(await page.locator('#dag g[data-node="publish"]').getAttribute("data-state"), "skipped");
    assert.equal(await gate.count(), 0, "the gate closed");
    await page.locator("#notification-list li", { hasText: "Run sim-reject cancelled" }).waitFor({ state: "attached", timeout: WAIT_MS });
    assert.deepEqual(await simulator.exited, { code: 0, signal: null }, simulator.log());
    await screenshot(page, "5-simulator-run-rejected");
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  test("over Server-Sent Events the page shows what is published and sends decisions", async () => {
    const page = await openDashboard(browser, gateway.url, { user: "hank", name: "Hank", run: "r4", transport: "sse" });
    await page.locator('#connection[data-state="connected"][data-transport="sse"]').waitFor({ timeout: WAIT_MS });
    await waitForSubscriptions(page, ["dag:r4", "user:hank", "room:demo"]);
    publish(redis, "user:hank", "notification", { id: "ntf-sse", title: "Over SSE" });
    await page.locator('#notification-list li[data-id="ntf-sse"]').waitFor({ state: "attached", timeout: WAIT_MS });
    publish(redis, "dag:r4", "human_gate_waiting", { node_id: "g", presentation: { title: "Ship it?", options: ["approve", "reject"] } });
    const gate = page.locator('.gate[data-node="g"]');
    await gate.locator('button[data-decision="reject"]').click();
    await page.locator('.gate[data-node="g"][data-state="sent"]').waitFor({ timeout: WAIT_MS });
    const [entry] = streamEntries(redis, "fanout:inbox").filter((e) => e.fields.channel === "dag:r4");
    assert.equal(entry.fields.user, "hank");
    assert.equal(JSON.parse(entry.fields.data).data.decision, "reject");
    assert.equal(entry.id, await gate.getAttribute("data-stream-id"));
    await page.locator('#presence li[data-user="hank"]').waitFor({ timeout: WAIT_MS });
    await screenshot(page, "4-over-sse");
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  test("where WebSockets are refused the page falls back to Server-Sent Events by itself", async () => {
    const proxy = await stack.haproxy([gateway], { refuseWebSockets: true });
    const page = await openDashboard(browser, proxy.url, { user: "judy", run: "r5" });
    await page.locator('#connection[data-state="connected"][data-transport="sse"]').waitFor({ timeout: WAIT_MS });
    await page.locator(".toast", { hasText: "using Server-Sent Events" }).waitFor({ state: "attached", timeout: WAIT_MS });
    await waitForSubscriptions(page, ["dag:r5"]);
    publish(redis, "dag:r5", "node_state", { node_id: "only", state: "running" });
    await page.locator('#dag g[data-node="only"][data-state="running"]').waitFor({ timeout: WAIT_MS });
    assert.match(await page.locator("#connection-text").textContent(), /SSE/);
    // Chromium logs the refused WebSocket attempts; nothing else may go wrong.
    assert.deepEqual(page.problems.filter((p) => !/WebSocket connection to .* failed/.test(p)), []);
    await page.close();
  });

  test("the PHP simulator plays a run that the page steers: changes, approval, prompt, notification", async () => {
    const simulator = stack.php("simulator", [
      join(REPO, "examples/simulator/simulate.php"),
      "--redis-url", redis.url, "--run", "sim", "--runs", "1", "--max-seconds", "90", "--step-ms", "60",
      "--gate-timeout-s", "60", "--api-url", gateway.url, "--api-key", API_KEY,
    ]);
    const page = await openDashboard(browser, gateway.url, { user: "erin", name: "Erin", run: "sim" });
    await waitForConnection(page);

    // The agent shows in presence with its status, set by the simulator over HTTP.
    await page.locator('#presence li[data-user="sim-agent"]').waitFor({ timeout: WAIT_MS });

    // Ask for changes: the draft is redone with the feedback and the gate asks again.
    const gate = page.locator('.gate[data-node="review"]');
    await gate.waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('#dag g[data-node="draft"]').getAttribute("data-state"), "completed");
    await gate.locator(".gate-feedback").fill("Shorter, please");
    await gate.locator('button[data-decision="modify"]').click();
    await page.locator('#console li[data-type="output"]', { hasText: 'Revised draft ("Shorter, please")' }).waitFor({ timeout: WAIT_MS });
    await page.locator('.gate[data-node="review"][data-state="waiting"]').waitFor({ timeout: WAIT_MS });

    // A prompt from the console box reaches the simulator through the inbox; it answers.
    await page.locator("#prompt-input").fill("Which tickets are new?");
    await page.locator('#prompt-form button[type="submit"]').click();
    await page.locator('#console li[data-type="output"]', { hasText: "@erin asked: Which tickets are new?" }).waitFor({ timeout: WAIT_MS });
    await screenshot(page, "6-simulator-at-gate");

    await page.locator('.gate[data-node="review"] button[data-decision="approve"]').click();
    await page.locator('#run-status[data-status="succeeded"]').waitFor({ timeout: WAIT_MS });
    for (const node of ["fetch", "classify", "embed", "draft", "review", "publish"]) {
      assert.equal(await page.locator(`#dag g[data-node="${node}"]`).getAttribute("data-state"), "completed", node);
    }
    assert.match(await page.locator('#dag g[data-node="review"]').textContent(), /by erin/);
    // The simulator notifies whoever decided, on their own channel.
    await page.locator("#notification-list li", { hasText: "Run sim succeeded" }).waitFor({ state: "attached", timeout: WAIT_MS });
    assert.equal(await page.locator("#bell-count").getAttribute("data-count"), "1");
    assert.equal(await page.locator("#event-log").getAttribute("data-live-duplicates"), "0");
    assert.deepEqual((await simulator.exited), { code: 0, signal: null }, simulator.log());
    await page.locator("#log-details summary").click();
    await screenshot(page, "7-simulator-run-succeeded");
    assert.deepEqual(page.problems, []);
    await page.close();
  });
  // Last: it empties Redis, as a restart without persistence would.
  test("when the channel's history is lost, the page is told to reload and rebuilds the run from it", async () => {
    const page = await openDashboard(browser, gateway.url, { user: "kim", run: "r6" });
    await waitForSubscriptions(page, ["dag:r6"]);
    publish(redis, "dag:r6", "node_state", { node_id: "before", state: "completed" });
    await page.locator('#dag g[data-node="before"]').waitFor({ timeout: WAIT_MS });

    redis.raw("FLUSHALL");
    publish(redis, "dag:r6", "node_state", { node_id: "after", state: "running" });
    // A new epoch: the client cannot recover across it and asks the page to reload.
    await page.locator('#event-log li[data-note="reload"][data-channel="dag:r6"]').waitFor({ state: "attached", timeout: WAIT_MS });
    await page.locator('#dag g[data-node="after"][data-state="running"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('#dag g[data-node="before"]').count(), 0, "the view was rebuilt from the new history");
    assert.deepEqual(
      await page.locator('#event-log li[data-channel="dag:r6"][data-offset]').evaluateAll((items) => items.map((li) => `${li.dataset.offset}:${li.dataset.source}`)),
      ["1:live", "1:history"],
    );
    assert.deepEqual(page.problems, []);
    await page.close();
  });
});
