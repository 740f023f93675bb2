// Subscriptions as an application sees them, against the real gateway: their states and
// the errors that move them, ready(), the list of subscriptions, the debug log; a second
// subscription to a running channel that starts from its own `since`; presence tracked from
// a snapshot and the events around it.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";

import { FanoutError, trackPresence } from "../src/index.js";
import { API_KEY, Fanout, killAll, signToken, sleep, startGateway, waitFor } from "./support/harness.js";

after(killAll);

async function publish(gateway, channel, data) {
  const response = await fetch(gateway.httpUrl("/api/publish"), {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).offset;
}

describe("subscription states", { timeout: 60000 }, () => {
  test("subscribing, subscribed, subscribing again with the error of a lost connection, subscribed; refusals and unsubscribe end them", async (t) => {
    let gateway = await startGateway({ name: "states-1" });
    const port = gateway.port;
    const token = signToken({ sub: "watcher", channels: ["dag:*"] });
    const log = [];
    const client = new Fanout({ url: gateway.wsUrl, transport: "websocket", token, backoff: { baseMs: 100, capMs: 300 }, debug: (message, details) => log.push(`${message} ${JSON.stringify(details ?? {})}`) });
    t.after(() => client.close());
    const errors = [];
    client.on("error", (error) => errors.push(error));

    const sub = client.subscribe("dag:states");
    const moves = [];
    sub.on("state", (state, { previous, error }) => moves.push([previous, state, error?.code ?? null]));
    assert.equal(sub.state, "subscribing");
    assert.equal(client.getSubscription("dag:states"), sub);
    assert.equal(client.getSubscription("dag:other"), null);
    await assert.rejects(client.ready(), (error) => error.code === "closed", "ready() before connect() refuses to wait");

    client.connect();
    await client.ready(5000);
    await sub.ready(5000);
    assert.equal(sub.state, "subscribed");
    assert.deepEqual(moves, [["subscribing", "subscribed", null]]);

    await gateway.kill("SIGKILL");
    await waitFor("subscribing again", () => sub.state === "subscribing");
    assert.equal(sub.error.code, "disconnected");
    assert.deepEqual(moves.at(-1), ["subscribed", "subscribing", "disconnected"]);
    const waiting = sub.ready(10000);
    gateway = await startGateway({ name: "states-2", port });
    await waiting;
    assert.deepEqual(moves.at(-1), ["subscribing", "subscribed", null]);

    // Refused for good: unsubscribed, with the refusal; ready() rejects with it.
    const refused = client.subscribe("user:someone-else");
    await assert.rejects(refused.ready(5000), (error) => error instanceof FanoutError && error.code === "forbidden");
    assert.equal(refused.state, "unsubscribed");
    assert.equal(refused.error.code, "forbidden");

    // A second subscription of the channel shares it; the list holds each once.
    const second = client.subscribe("dag:states");
    assert.equal(second.state, "subscribed");
    assert.deepEqual(client.subscriptions(), [sub, second]);
    sub.unsubscribe();
    assert.equal(sub.state, "unsubscribed");
    assert.equal(sub.error, null, "ended by the application: no error");
    assert.deepEqual(moves.at(-1), ["subscribed", "unsubscribed", null]);
    assert.deepEqual(client.subscriptions(), [second]);
    assert.equal(client.getSubscription("dag:states"), second);
    await assert.rejects(sub.ready(), (error) => error.code === "unsubscribed");

    assert.deepEqual(errors.map((e) => e.code), ["forbidden"], "the refusal is reported; a lost connection is a state, not an error");
    // The debug log tells the story, without the token.
    assert.ok(log.some((line) => line.startsWith("connected ")), log.join("\n"));
    assert.ok(log.some((line) => line.startsWith("dag:states: subscribed")), log.join("\n"));
    assert.ok(log.some((line) => line.startsWith("connection closed ")), log.join("\n"));
    assert.ok(!log.some((line) => line.includes(token) || line.includes(token.split(".")[2])), "no token in the log");
  });

  test("ready() rejects with the error that stops the client (a refused static token), and on close()", async (t) => {
    const gateway = await startGateway({ name: "ready" });
    const refused = new Fanout({ url: gateway.wsUrl, transport: "websocket", token: signToken({ sub: "x", secret: "not-the-secret-of-this-gateway-at-all" }) });
    t.after(() => refused.close());
    refused.on("error", () => {});
    refused.connect();
    await assert.rejects(refused.ready(5000), (error) => error.code === "unauthorized" && error.closeCode === 4001);
    const closing = new Fanout({ url: "ws://127.0.0.1:9/ws", transport: "websocket", token: signToken({ sub: "y" }) });
    closing.on("error", () => {});
    closing.connect();
    const waiting = closing.ready();
    closing.close();
    await assert.rejects(waiting, (error) => error.code === "closed");
  });
});

describe("a second subscription with its own since", { timeout: 60000 }, () => {
  test("joins a running channel from its own position: the messages it missed from history, then the live ones, once", async (t) => {
    const gateway = await startGateway({ name: "since" });
    const client = new Fanout({ url: gateway.wsUrl, transport: "websocket", token: signToken({ sub: "pages", channels: ["dag:*"] }) });
    t.after(() => client.close());
    const channel = "dag:shared";
    const first = [];
    let started = false;
    const sub = client.subscribe(channel, { onMessage: (data) => first.push(data), onReload: () => (started = true) });
    client.connect();
    await waitFor("the first subscription", () => started);
    for (let n = 1; n <= 10; n++) await publish(gateway, channel, n);
    await waitFor("ten messages", () => first.length === 10);
    const { epoch } = sub.position;

    // Another part of the page kept position 4 (say, in sessionStorage).
    const behind = [];
    const behindReloads = [];
    const laggard = client.subscribe(channel, { since: { epoch, offset: 4 }, onMessage: (data, meta) => behind.push([meta.offset, data]), onReload: (info) => behindReloads.push(info) });
    // One with a position from a lost epoch, one without a position.
    const lostReloads = [];
    client.subscribe(channel, { since: { epoch: "gone", offset: 3 }, onReload: (info) => lostReloads.push(info) });
    const freshReloads = [];
    client.subscribe(channel, { onReload: (info) => freshReloads.push(info) });
    await publish(gateway, channel, 11);
    await waitFor("caught up, then the live one", () => behind.length === 7);
    await sleep(200);
    assert.deepEqual(behind, [[5, 5], [6, 6], [7, 7], [8, 8], [9, 9], [10, 10], [11, 11]]);
    assert.deepEqual(behindReloads, [], "nothing lost: no reload");
    assert.deepEqual(laggard.position, { epoch, offset: 11 });
    assert.deepEqual(lostReloads.map((r) => [r.reason, r.offset]), [["lost", 10]]);
    assert.deepEqual(freshReloads.map((r) => [r.reason, r.offset]), [["start", 10]]);
    assert.deepEqual(first, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "the first one saw each once");
  });
});

describe("presence tracked by the client", { timeout: 60000 }, () => {
  test("trackPresence: a snapshot, then joins, status and leaves of two clients", async (t) => {
    const dir = mkdtempSync(path.join(tmpdir(), "fanout-js-presence-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const config = path.join(dir, "fanout.toml");
    writeFileSync(config, '[namespaces.room]\npresence = true\njoin_leave = "connection"\n');
    const gateway = await startGateway({ name: "presence", args: ["--config", config] });
    const clientOf = (sub) => new Fanout({ url: gateway.wsUrl, transport: "websocket", token: signToken({ sub, channels: ["room:*"], info: { name: sub } }) });
    const alice = clientOf("alice");
    const bob = clientOf("bob");
    t.after(() => {
      alice.close();
      bob.close();
    });
    alice.connect();
    const changes = [];
    const tracker = trackPresence(alice, "room:hall", { onChange: (members) => changes.push(members.map((m) => m.user).sort().join(",")) });
    await waitFor("alice alone", () => tracker.ready && tracker.members.length === 1);
    bob.connect();
    const bobs = trackPresence(bob, "room:hall");
    await waitFor("bob seen by alice", () => tracker.members.length === 2);
    await waitFor("both seen by bob", () => bobs.ready && bobs.members.length === 2);
    await bob.setStatus("room:hall", { state: "typing" });
    await waitFor("bob's status", () => tracker.members.find((m) => m.user === "bob")?.status?.state === "typing");
    assert.deepEqual(tracker.members.find((m) => m.user === "bob").info, { name: "bob" });
    bobs.close();
    await waitFor("bob gone", () => tracker.members.length === 1);
    assert.equal(tracker.members[0].user, "alice");
    assert.equal(tracker.error, null);
    assert.ok(changes.includes("alice,bob"));
    tracker.close();
    assert.equal(alice.getSubscription("room:hall"), null, "closing the tracker unsubscribes");
  });
});
