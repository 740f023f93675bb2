// The backend in control of sessions, as the client lives it, against the real gateway and
// its HTTP API: connections ended by the backend (4004, 4005, application codes, over
// WebSocket and SSE), revoked tokens (4003), channels the backend subscribes and takes away
// (on two nodes sharing a Redis), and channel tokens asked of the application, renewed in
// place before they expire and replaced when revoked, without losing a message.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { FanoutError } from "../src/index.js";
import { API_KEY, Fanout, killAll, signToken, sleep, startGateway, startRedis, waitFor } from "./support/harness.js";

after(killAll);

/** A call of the backend API; its JSON answer. */
async function api(gateway, path, body) {
  const response = await fetch(gateway.httpUrl(path), {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, `${path}: ${await response.clone().text()}`);
  return response.json();
}

const publish = async (gateway, channel, data) => (await api(gateway, "/api/publish", { channel, data })).offset;

/** Connections (WebSocket upgrades and SSE streams) the gateway accepted so far, from /metrics. */
async function accepted(gateway) {
  const text = await (await fetch(gateway.httpUrl("/metrics"))).text();
  const line = text.split("\n").find((l) => l.startsWith("fanout_connections_accepted_total "));
  assert.ok(line, "fanout_connections_accepted_total in /metrics");
  return Number(line.split(" ")[1]);
}

/** A client that is closed when the test ends, recording its events. */
function clientFor(t, options) {
  const client = new Fanout({ transport: "websocket", backoff: { baseMs: 100, capMs: 500 }, ...options });
  t.after(() => client.close());
  const seen = { errors: [], disconnects: [], connections: [], serverSubscribed: [], serverUnsubscribed: [], publications: [] };
  client.on("error", (error) => seen.errors.push(error));
  client.on("disconnect", (info) => seen.disconnects.push(info));
  client.on("connected", (connection) => seen.connections.push(connection.connId));
  client.on("serverSubscribed", (info) => seen.serverSubscribed.push(info));
  client.on("serverUnsubscribed", (info) => seen.serverUnsubscribed.push(info));
  client.on("publication", (data, meta) => seen.publications.push([meta.channel, data]));
  return { client, seen };
}

/** A subscription recording what it gets: messages as [offset, data], reloads, state moves, errors. */
function watch(client, channel, handlers = {}) {
  const got = { messages: [], reloads: [], moves: [], errors: [] };
  const sub = client.subscribe(channel, {
    onMessage: (data, meta) => got.messages.push([meta.offset, data]),
    onReload: (info) => got.reloads.push(info.reason),
    onError: (error) => got.errors.push(error),
    ...handlers,
  });
  sub.on("state", (state, { error }) => got.moves.push(`${state}${error ? ` (${error.code})` : ""}`));
  return { sub, got };
}

/** Offsets 1..n, each once, in order. */
const upTo = (n) => Array.from({ length: n }, (_, i) => i + 1);

for (const transport of ["websocket", "sse"]) {
  describe(`the backend ends connections (${transport})`, { timeout: 60000 }, () => {
    test(`${transport}: disconnected with reconnect (4004): the disconnect event, then the client comes back by itself, with its subscriptions`, async (t) => {
      const gateway = await startGateway({ name: `bye-${transport}` });
      const { client, seen } = clientFor(t, { url: gateway.wsUrl, transport, getToken: async () => signToken({ sub: "ada", channels: ["dag:*"] }) });
      const { sub, got } = watch(client, "dag:maintenance");
      client.connect();
      await sub.ready(10000);
      await publish(gateway, "dag:maintenance", "before");

      assert.deepEqual(await api(gateway, "/api/disconnect", { user: "ada", reason: "maintenance" }), { ok: true, code: 4004 });
      await waitFor("the disconnect event and a new connection", () => seen.disconnects.length === 1 && seen.connections.length === 2 && sub.state === "subscribed");
      assert.deepEqual(seen.disconnects, [{ code: 4004, reason: "maintenance", reconnect: true }]);
      assert.notEqual(seen.connections[1], seen.connections[0]);

      await publish(gateway, "dag:maintenance", "after");
      await waitFor("the message published after the reconnect", () => got.messages.length === 2);
      assert.deepEqual(got.messages, [[1, "before"], [2, "after"]]);
      assert.deepEqual(got.reloads, ["start"], "recovered with since: nothing to reload");
      assert.deepEqual(seen.errors, [], "an end the backend asked for is an event, not an error");
    });

    test(`${transport}: disconnected for good (4005): the event, no reconnect until connect(), which gets a new token and brings the subscriptions back`, async (t) => {
      const gateway = await startGateway({ name: `gone-${transport}` });
      let issued = 0;
      const getToken = async () => {
        issued += 1;
        return signToken({ sub: "bob", channels: ["dag:*"] });
      };
      const { client, seen } = clientFor(t, { url: gateway.wsUrl, transport, getToken });
      const { sub, got } = watch(client, "dag:logout");
      client.connect();
      await sub.ready(10000);

      assert.deepEqual(await api(gateway, "/api/disconnect", { user: "bob", reason: "logged out", reconnect: false }), { ok: true, code: 4005 });
      await waitFor("the disconnect event", () => seen.disconnects.length === 1);
      assert.deepEqual(seen.disconnects, [{ code: 4005, reason: "logged out", reconnect: false }]);
      assert.equal(client.state, "disconnected");
      assert.equal(client.connection, null);
      await assert.rejects(client.ready(), (error) => error.code === "closed", "not connecting: ready() does not wait");

      // A client that reconnected by itself would have done so several times by now (backoff up to 500 ms).
      const before = await accepted(gateway);
      await sleep(1500);
      assert.equal(await accepted(gateway), before, "no new connection");
      assert.equal(client.state, "disconnected");

      const tokens = issued;
      client.connect();
      await client.ready(10000);
      await sub.ready(10000);
      assert.equal(issued, tokens + 1, "connect() asked getToken for a token first");
      await publish(gateway, "dag:logout", "welcome back");
      await waitFor("a message on the new connection", () => got.messages.length === 1);
      assert.deepEqual(seen.errors, []);
    });

    test(`${transport}: an application close code (4100-4499) follows the reconnect of the disconnect frame`, async (t) => {
      const gateway = await startGateway({ name: `app-code-${transport}` });
      const { client, seen } = clientFor(t, { url: gateway.wsUrl, transport, getToken: async () => signToken({ sub: "cy" }) });
      client.connect();
      await client.ready(10000);

      await api(gateway, "/api/disconnect", { user: "cy", code: 4100, reason: "account suspended", reconnect: false });
      await waitFor("the first disconnect event", () => seen.disconnects.length === 1);
      assert.deepEqual(seen.disconnects[0], { code: 4100, reason: "account suspended", reconnect: false });
      const before = await accepted(gateway);
      await sleep(1500);
      assert.equal(await accepted(gateway), before, "no new connection after reconnect: false");
      assert.equal(client.state, "disconnected");

      client.connect();
      await client.ready(10000);
      await api(gateway, "/api/disconnect", { user: "cy", code: 4321, reason: "moved to another shard", reconnect: true });
      await waitFor("the second disconnect event and a third connection", () => seen.disconnects.length === 2 && seen.connections.length === 3);
      assert.deepEqual(seen.disconnects[1], { code: 4321, reason: "moved to another shard", reconnect: true });
      await client.ready(10000);
      assert.deepEqual(seen.errors, []);
    });

    test(`${transport}: a revoked token (4003) is reported as revoked and replaced by a new one from getToken, issued after the cut-off`, async (t) => {
      const gateway = await startGateway({ name: `revoke-${transport}` });
      const issued = [];
      const getToken = async () => {
        const token = signToken({ sub: "dan", channels: ["dag:*"] });
        issued.push(JSON.parse(Buffer.from(token.split(".")[1], "base64url")).iat);
        return token;
      };
      const { client, seen } = clientFor(t, { url: gateway.wsUrl, transport, getToken });
      const { sub, got } = watch(client, "dag:revoked");
      client.connect();
      await sub.ready(10000);
      await publish(gateway, "dag:revoked", 1);

      const cutOff = Math.floor(Date.now() / 1000) + 1;
      await api(gateway, "/api/revoke", { user: "dan", before: cutOff });
      await waitFor("a new connection", () => seen.connections.length === 2 && sub.state === "subscribed");
      // The close (4003), and, while getToken still mints tokens of before the cut-off
      // (the same token within one second), the client's refusal to use one again.
      assert.ok(seen.errors.every((e) => e instanceof FanoutError && e.code === "revoked"), seen.errors.map((e) => e.message).join("; "));
      const closes = seen.errors.filter((e) => e.closeCode === 4003);
      assert.ok(closes.length >= 1);
      assert.equal(closes[0].retryable, false, "not with that token");
      assert.ok(issued.at(-1) >= cutOff, `the token in use was issued after the cut-off (${issued.at(-1)} >= ${cutOff})`);
      await publish(gateway, "dag:revoked", 2);
      await waitFor("the message after the new connection", () => got.messages.length === 2);
      assert.deepEqual(got.messages, [[1, 1], [2, 2]]);
    });
  });
}

describe("revoked tokens without a way out", { timeout: 60000 }, () => {
  test("without getToken, a revoked token stops the client: a revoked error, state disconnected, no reconnect", async (t) => {
    const gateway = await startGateway({ name: "revoke-static" });
    const { client, seen } = clientFor(t, { url: gateway.wsUrl, token: signToken({ sub: "eve" }) });
    client.connect();
    await client.ready(10000);
    await api(gateway, "/api/revoke", { user: "eve" });
    await waitFor("the revoked error", () => seen.errors.length === 1);
    assert.equal(seen.errors[0].code, "revoked");
    assert.equal(seen.errors[0].closeCode, 4003);
    assert.equal(client.state, "disconnected");
    const before = await accepted(gateway);
    await sleep(1500);
    assert.equal(await accepted(gateway), before, "no new connection");
    assert.equal(seen.errors.length, 1);
    assert.equal(client.state, "disconnected");
  });

  test("a revoked token is refused at connect, after an auth frame (close 4003) and over SSE (HTTP 401), both reported as revoked", async (t) => {
    const gateway = await startGateway({ name: "revoke-at-connect" });
    const token = signToken({ sub: "gil" });
    await api(gateway, "/api/revoke", { user: "gil", before: Math.floor(Date.now() / 1000) + 1 });
    for (const transport of ["websocket", "sse"]) {
      const { client, seen } = clientFor(t, { url: gateway.wsUrl, transport, token });
      client.connect();
      await assert.rejects(client.ready(10000), (error) => error.code === "revoked" && error.closeCode === 4003, transport);
      assert.deepEqual(seen.errors.map((e) => [e.code, e.closeCode, e.status]), [["revoked", 4003, transport === "sse" ? 401 : undefined]]);
      assert.equal(client.state, "disconnected");
    }
  });

  test("a getToken that keeps returning the revoked token is asked again with backoff, and that token is never sent again", async (t) => {
    const gateway = await startGateway({ name: "revoke-same" });
    const token = signToken({ sub: "fay" });
    let asked = 0;
    // The backoff's random source fixed in the middle: 100, 200, 400, 400, ... ms.
    const { client, seen } = clientFor(t, {
      url: gateway.wsUrl,
      getToken: async () => {
        asked += 1;
        return token;
      },
      backoff: { baseMs: 200, capMs: 800, random: () => 0.5 },
    });
    client.connect();
    await client.ready(10000);
    const connections = await accepted(gateway);
    await api(gateway, "/api/revoke", { user: "fay" });
    await waitFor("the revoked close", () => seen.errors.some((e) => e.closeCode === 4003));
    const askedAtRevocation = asked;
    await sleep(3000);
    const askedSince = asked - askedAtRevocation;
    assert.ok(askedSince >= 2, `getToken asked again (${askedSince} times)`);
    assert.ok(askedSince <= 20, `with backoff, not in a loop (${askedSince} times in 3 s)`);
    assert.equal(await accepted(gateway), connections, "the revoked token was never sent again");
    assert.ok(seen.errors.every((e) => e.code === "revoked"), seen.errors.map((e) => e.code).join());
    assert.notEqual(client.state, "connected");
  });
});

describe("channels the backend subscribes and takes away (two nodes, one Redis)", { timeout: 60000 }, () => {
  test("POST /api/subscribe: serverSubscribed, the channel's messages on the publication event, and to a Subscription's handlers once the app subscribes too", async (t) => {
    const redis = await startRedis();
    const [a, b] = await Promise.all(["ctl-a", "ctl-b"].map((name) => startGateway({ name, redis })));
    const { client, seen } = clientFor(t, { url: a.wsUrl, getToken: async () => signToken({ sub: "gus", channels: ["dag:mine"] }) });
    const mine = watch(client, "dag:mine");
    client.connect();
    await mine.sub.ready(10000);

    // The API call reaches the other node; the command reaches the session through Redis.
    await api(b, "/api/subscribe", { user: "gus", channel: "room:ops" });
    await api(b, "/api/subscribe", { user: "gus", channel: "dag:assigned" });
    await waitFor("both serverSubscribed events", () => seen.serverSubscribed.length === 2);
    assert.deepEqual(seen.serverSubscribed[0], { channel: "room:ops" });
    assert.equal(seen.serverSubscribed[1].channel, "dag:assigned");
    assert.equal(seen.serverSubscribed[1].offset, 0);
    assert.equal(typeof seen.serverSubscribed[1].epoch, "string");

    await publish(b, "room:ops", { alert: "disk full" });
    await publish(b, "dag:assigned", "task 1");
    await waitFor("two publications", () => seen.publications.length === 2);
    assert.deepEqual(seen.publications, [["room:ops", { alert: "disk full" }], ["dag:assigned", "task 1"]]);

    // The application subscribes to it as well: its handlers get the messages, each once,
    // and the publication event no longer does.
    const assigned = watch(client, "dag:assigned");
    await assigned.sub.ready(10000);
    await publish(b, "dag:assigned", "task 2");
    await waitFor("the message on the Subscription", () => assigned.got.messages.length === 1);
    await publish(b, "room:ops", { alert: "fixed" });
    await waitFor("the next publication", () => seen.publications.length === 3);
    assert.deepEqual(assigned.got.messages, [[2, "task 2"]]);
    assert.deepEqual(seen.publications.at(-1), ["room:ops", { alert: "fixed" }]);
    assert.equal(seen.publications.length, 3, "task 2 only once, to the Subscription");

    // Backend subscriptions belong to the connection: after a reconnect, room:ops is gone
    // (the client does not subscribe it by itself), and dag:assigned, which the token does
    // not grant, is refused: to keep a channel, the backend puts it in the token or hands
    // out a channel token (getChannelToken).
    await api(b, "/api/disconnect", { user: "gus" });
    await waitFor("back", () => seen.connections.length === 2 && mine.sub.state === "subscribed" && assigned.sub.state === "unsubscribed");
    assert.equal(assigned.sub.error.code, "forbidden");
    await publish(b, "room:ops", { alert: "nobody hears this" });
    await publish(b, "dag:mine", "mine");
    await waitFor("a message of the app's own channel", () => mine.got.messages.length === 1);
    await sleep(200);
    assert.equal(seen.publications.length, 3, "no room:ops after the reconnect");
    assert.deepEqual(assigned.got.messages, [[2, "task 2"]]);
    assert.deepEqual(seen.errors.map((e) => e.code), ["forbidden"]);
  });

  test("POST /api/unsubscribe: the Subscription ends with unsubscribed_by_server and onError; the connection and the other channels stay", async (t) => {
    const redis = await startRedis();
    const [a, b] = await Promise.all(["unsub-a", "unsub-b"].map((name) => startGateway({ name, redis })));
    const { client, seen } = clientFor(t, { url: a.wsUrl, getToken: async () => signToken({ sub: "hal", channels: ["dag:*"] }) });
    const taken = watch(client, "dag:taken");
    const kept = watch(client, "dag:kept");
    client.connect();
    await Promise.all([taken.sub.ready(10000), kept.sub.ready(10000)]);
    const connId = client.connection.connId;

    await api(b, "/api/unsubscribe", { user: "hal", channel: "dag:taken" });
    await waitFor("the subscription ended", () => taken.sub.state === "unsubscribed");
    assert.equal(taken.got.errors.length, 1);
    assert.equal(taken.got.errors[0].code, "unsubscribed_by_server");
    assert.equal(taken.got.errors[0].channel, "dag:taken");
    assert.equal(taken.sub.error.code, "unsubscribed_by_server");
    assert.deepEqual(taken.got.moves, ["subscribed", "unsubscribed (unsubscribed_by_server)"]);
    await assert.rejects(taken.sub.ready(), (error) => error.code === "unsubscribed_by_server");
    await waitFor("serverUnsubscribed", () => seen.serverUnsubscribed.length === 1);
    assert.deepEqual(seen.serverUnsubscribed, [{ channel: "dag:taken" }]);

    await publish(b, "dag:taken", "not for you any more");
    await publish(b, "dag:kept", "still here");
    await waitFor("the other channel's message", () => kept.got.messages.length === 1);
    await sleep(200);
    assert.deepEqual(kept.got.messages, [[1, "still here"]]);
    assert.deepEqual(taken.got.messages, []);
    assert.equal(client.connection.connId, connId, "the same connection");
    assert.equal(kept.sub.state, "subscribed");
    assert.equal(client.getSubscription("dag:taken"), null);
    assert.deepEqual(seen.errors, [], "the backend's decision is an event, not an error");
  });
});

describe("channel tokens", { timeout: 90000 }, () => {
  test("a channel the connection token does not grant is subscribed with a token from getChannelToken; granted ones need none", async (t) => {
    const gateway = await startGateway({ name: "chtok" });
    const asked = [];
    const { client, seen } = clientFor(t, {
      url: gateway.wsUrl,
      getToken: async () => signToken({ sub: "ida", channels: ["room:*"] }),
      getChannelToken: async (channel) => {
        asked.push(channel);
        return signToken({ sub: "ida", channel, ttlS: 600 });
      },
    });
    const invited = watch(client, "dag:invited");
    const lobby = watch(client, "room:lobby");
    client.connect();
    await Promise.all([invited.sub.ready(10000), lobby.sub.ready(10000)]);
    assert.deepEqual(asked, ["dag:invited"]);
    await publish(gateway, "dag:invited", "hello");
    await publish(gateway, "room:lobby", "hi");
    await waitFor("both messages", () => invited.got.messages.length === 1 && lobby.got.messages.length === 1);
    assert.deepEqual(invited.got.messages, [[1, "hello"]]);
    assert.deepEqual(invited.got.moves, ["subscribed"], "no refusal reached the subscription");
    assert.deepEqual(seen.errors, []);
  });

  test("a short-lived channel token is renewed in place before it expires: several renewals, every message once, in order", async (t) => {
    const gateway = await startGateway({ name: "renew" });
    let issued = 0;
    const { client, seen } = clientFor(t, { url: gateway.wsUrl, getToken: async () => signToken({ sub: "jo" }) });
    const { sub, got } = watch(client, "dag:short", {
      getToken: async (channel) => {
        issued += 1;
        return signToken({ sub: "jo", channel, ttlS: 4, jti: `short-${issued}` });
      },
    });
    client.connect();
    await sub.ready(10000);
    // Published for three lifetimes of the token: the gateway would end the subscription
    // after the first unless the client renewed it.
    let sent = 0;
    const until = Date.now() + 12000;
    while (Date.now() < until) {
      sent = await publish(gateway, "dag:short", { n: sent + 1 });
      await sleep(50);
    }
    await waitFor(`all ${sent} messages`, () => got.messages.length >= sent);
    await sleep(200);
    assert.deepEqual(got.messages.map((m) => m[0]), upTo(sent), "every offset once, in order");
    assert.ok(issued >= 4, `a new channel token before each expiry (${issued} issued)`);
    assert.deepEqual(got.moves, ["subscribed"], "never ended by the gateway");
    assert.deepEqual(got.reloads, ["start"]);
    assert.deepEqual(seen.errors, []);
    assert.equal(seen.connections.length, 1);
  });

  test("a channel token revoked by its jti: unsubscribed (unauthorized), then a new one and back with since; after a reconnect, the token held is used", async (t) => {
    const gateway = await startGateway({ name: "revoke-jti" });
    const issued = [];
    const { client, seen } = clientFor(t, {
      url: gateway.wsUrl,
      getToken: async () => signToken({ sub: "kim" }),
      getChannelToken: async (channel) => {
        const jti = `room-key-${issued.length + 1}`;
        issued.push(jti);
        // The second one takes a while: messages are published in between.
        if (issued.length === 2) await sleep(500);
        return signToken({ sub: "kim", channel, ttlS: 3600, jti });
      },
    });
    const { sub, got } = watch(client, "dag:secret");
    client.connect();
    await sub.ready(10000);
    for (let n = 1; n <= 3; n++) await publish(gateway, "dag:secret", n);
    await waitFor("three messages", () => got.messages.length === 3);

    await api(gateway, "/api/revoke", { jti: "room-key-1", expires_at: Math.floor(Date.now() / 1000) + 3600 });
    await waitFor("the subscription to lose its grant", () => got.moves.includes("subscribing (unauthorized)"));
    for (let n = 4; n <= 8; n++) await publish(gateway, "dag:secret", n);
    await waitFor("back, with what was published meanwhile", () => got.messages.length === 8 && sub.state === "subscribed");
    assert.deepEqual(got.messages.map((m) => m[0]), upTo(8), "nothing lost, nothing twice");
    assert.deepEqual(issued, ["room-key-1", "room-key-2"]);
    assert.deepEqual(got.moves, ["subscribed", "subscribing (unauthorized)", "subscribed"]);
    assert.deepEqual(got.reloads, ["start"]);

    // A reconnect: the channel is subscribed again with the token held, with since.
    await api(gateway, "/api/disconnect", { user: "kim" });
    await waitFor("a new connection", () => seen.connections.length === 2);
    for (let n = 9; n <= 10; n++) await publish(gateway, "dag:secret", n);
    await waitFor("the messages after the reconnect", () => got.messages.length === 10 && sub.state === "subscribed");
    assert.deepEqual(got.messages.map((m) => m[0]), upTo(10));
    assert.deepEqual(issued, ["room-key-1", "room-key-2"], "no new channel token needed");
    assert.deepEqual(seen.errors, []);
  });

  test("a renewal refused (the user lost the right): the subscription ends and the gateway lets go of the channel at once, not when the old token runs out", async (t) => {
    const gateway = await startGateway({ name: "lost-right" });
    let allowed = true;
    let expiresAt = 0;
    const { client } = clientFor(t, { url: gateway.wsUrl, getToken: async () => signToken({ sub: "max" }) });
    const { sub, got } = watch(client, "dag:fading", {
      getToken: async (channel) => {
        if (!allowed) return null;
        // Renewed a third of its life before it ends: 8 s in, 4 s before the gateway would end it.
        expiresAt = Date.now() + 12000;
        return signToken({ sub: "max", channel, ttlS: 12 });
      },
    });
    const subscribers = async () => {
      const response = await fetch(gateway.httpUrl("/api/channels?pattern=dag:fading"), { headers: { authorization: `Bearer ${API_KEY}` } });
      const view = await response.json();
      return view.channels.reduce((sum, c) => sum + c.subscribers, 0);
    };
    client.connect();
    await sub.ready(10000);
    assert.equal(await subscribers(), 1);
    allowed = false;
    await waitFor("the renewal refused", () => got.errors.length === 1, 15000);
    assert.equal(sub.state, "unsubscribed");
    await waitFor("the gateway without the channel", async () => (await subscribers()) === 0, 5000);
    assert.ok(Date.now() < expiresAt, "left before the old token ran out");
    assert.equal(client.state, "connected", "the connection stays");
  });

  test("no channel token to be had (getChannelToken returns null): onError, and the subscription unsubscribed", async (t) => {
    const gateway = await startGateway({ name: "no-chtok" });
    const { client, seen } = clientFor(t, { url: gateway.wsUrl, getToken: async () => signToken({ sub: "lee" }), getChannelToken: async () => null });
    const refused = watch(client, "dag:closed-door");
    const alsoRefused = watch(client, "dag:other-door", { getToken: async () => null });
    client.connect();
    await assert.rejects(refused.sub.ready(10000), (error) => error.code === "forbidden" && error.channel === "dag:closed-door");
    await assert.rejects(alsoRefused.sub.ready(10000), (error) => error.code === "unauthorized" && error.channel === "dag:other-door");
    assert.equal(refused.sub.state, "unsubscribed");
    assert.deepEqual(refused.got.errors.map((e) => e.code), ["forbidden"]);
    assert.match(refused.got.errors[0].message, /getChannelToken\(\) gave no channel token/);
    assert.deepEqual(alsoRefused.got.errors.map((e) => e.code), ["unauthorized"]);
    assert.deepEqual(seen.errors.map((e) => e.code).sort(), ["forbidden", "unauthorized"]);
    assert.equal(client.state, "connected", "the connection stays");
  });
});
