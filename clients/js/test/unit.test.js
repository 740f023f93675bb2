// Unit tests of the parts that need no gateway: backoff bounds, JWT expiry, the SSE parser,
// and the exactly-once algorithm driven through a fake WebSocket (in addition to, not
// instead of, the real-gateway tests).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Backoff, tokenExpiry, trackPresence } from "../src/index.js";
import { SseParser } from "../src/transports.js";
import { Fanout, signToken } from "./support/harness.js";

describe("backoff with full jitter", () => {
  test("each delay lies in [0, min(cap, base * 2^n)) and the ceiling stops at the cap", () => {
    const backoff = new Backoff({ baseMs: 100, capMs: 5000 });
    const ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
    for (let round = 0; round < 200; round++) {
      backoff.reset();
      for (const ceiling of ceilings) {
        assert.equal(backoff.ceiling(), ceiling);
        const delay = backoff.next();
        assert.ok(delay >= 0 && delay < ceiling, `${delay} within [0, ${ceiling})`);
      }
    }
  });

  test("the extremes of the random source map to the ends of the interval", () => {
    const low = new Backoff({ baseMs: 1000, capMs: 30000, random: () => 0 });
    const high = new Backoff({ baseMs: 1000, capMs: 30000, random: () => 0.999999 });
    assert.deepEqual([low.next(), low.next(), low.next()], [0, 0, 0]);
    assert.deepEqual([high.next(), high.next(), high.next(), high.next(), high.next(), high.next()], [999, 1999, 3999, 7999, 15999, 29999]);
    high.reset();
    assert.equal(high.next(), 999, "reset starts again from the base");
  });

  test("delays are spread over the interval, not bunched at its end", () => {
    const backoff = new Backoff({ baseMs: 1000, capMs: 1000 });
    const delays = Array.from({ length: 2000 }, () => backoff.next());
    assert.ok(delays.filter((d) => d < 500).length > 800, "about half below the middle");
    assert.ok(delays.filter((d) => d >= 500).length > 800, "about half above it");
  });

  test("nonsensical settings are refused", () => {
    assert.throws(() => new Backoff({ baseMs: 0 }), RangeError);
    assert.throws(() => new Backoff({ baseMs: 100, capMs: 50 }), RangeError);
  });
});

test("tokenExpiry reads exp without verifying, and undefined for what is not a JWT", () => {
  const token = signToken({ sub: "x", ttlS: 60 });
  const exp = tokenExpiry(token);
  assert.ok(Math.abs(exp - (Date.now() / 1000 + 60)) < 5);
  assert.equal(tokenExpiry("not a token"), undefined);
  assert.equal(tokenExpiry("a.b.c"), undefined);
  assert.equal(tokenExpiry(`x.${Buffer.from('{"sub":"1"}').toString("base64url")}.y`), undefined);
  assert.equal(tokenExpiry(`x.${Buffer.from('{"exp":1.5,"name":"Zoë"}').toString("base64url")}.y`), 1.5);
});

test("the SSE parser handles events split anywhere, CRLF and CR line ends, comments and multi-line data", () => {
  const events = [];
  const parser = new SseParser((event) => events.push(event));
  const stream = 'retry: 3000\n\n: ping\n\nevent: connection_ack\ndata: {"type":"connection_ack"}\n\nevent: message\r\nid: p1\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata:x\r\r: ping\n\n';
  for (let i = 0; i < stream.length; i += 3) parser.push(stream.slice(i, i + 3));
  assert.deepEqual(events, [
    { event: "connection_ack", data: '{"type":"connection_ack"}', id: undefined },
    { event: "message", data: '{"a":\n1}', id: "p1" },
    { event: "message", data: "x", id: "p1" },
  ]);
});

/**
 * A WebSocket stand-in: records what the client sends and lets the test play the server.
 * Only the client's side of the protocol is under test here.
 */
class FakeWebSocket {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeWebSocket.instances.push(this);
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  /** Plays a server frame. */
  frame(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  /** Plays the end of the connection. */
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  last(type) {
    return this.sent.filter((f) => f.type === type).at(-1);
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

async function fakeSession() {
  FakeWebSocket.instances = [];
  const client = new Fanout({
    url: "ws://fanout.test/ws",
    token: signToken({ sub: "42" }),
    transport: "websocket",
    WebSocket: FakeWebSocket,
    backoff: { baseMs: 10, capMs: 20 },
  });
  const delivered = [];
  const reloads = [];
  const sub = client.subscribe("dag:7", {
    onMessage: (data, meta) => delivered.push([meta.epoch, meta.offset, data]),
    onReload: (info) => reloads.push(info),
  });
  client.connect();
  await tick();
  const ws = FakeWebSocket.instances[0];
  assert.equal(ws.sent[0].type, "auth");
  ws.frame({ type: "connection_ack", conn_id: "c1", user: "42", node: "n", heartbeat_s: 25, channels: ["broadcast", "user:42"], expires_at: Math.floor(Date.now() / 1000) + 3600 });
  return { client, ws, delivered, reloads, sub };
}

const msg = (offset, epoch = "E") => ({ type: "message", channel: "dag:7", offset, epoch, data: offset });

describe("exactly once on a channel with history (fake transport)", () => {
  test("duplicates are dropped, gaps filled from history, unfillable gaps recovered or reloaded", async () => {
    const { client, ws, delivered, reloads, sub } = await fakeSession();
    const subscribe = ws.last("subscribe");
    assert.deepEqual(subscribe.since, { offset: 0, epoch: "" }, "a first subscribe asks for the current position");
    ws.frame({ type: "subscribed", id: subscribe.id, channel: "dag:7", offset: 5, epoch: "E", recovered: false });
    assert.deepEqual(reloads, [{ channel: "dag:7", reason: "start", epoch: "E", offset: 5 }]);

    for (const offset of [4, 5, 6, 7, 7, 6]) ws.frame(msg(offset));
    assert.deepEqual(delivered.map((d) => d[1]), [6, 7], "at or below the position: dropped");

    // A gap: 9 is held, 8 asked of history.
    ws.frame(msg(9));
    const fill = ws.last("history");
    assert.deepEqual([fill.channel, fill.since, fill.limit], ["dag:7", 7, 1]);
    ws.frame(msg(10));
    assert.deepEqual(delivered.map((d) => d[1]), [6, 7]);
    ws.frame({ type: "history", id: fill.id, channel: "dag:7", offset: 10, epoch: "E", messages: [{ offset: 8, data: 8 }] });
    assert.deepEqual(delivered.map((d) => d[1]), [6, 7, 8, 9, 10]);
    assert.deepEqual(sub.position, { epoch: "E", offset: 10 });

    // A gap history cannot fill (trimmed): recover with since, and reload on recovered:false.
    ws.frame(msg(13));
    const fill2 = ws.last("history");
    assert.equal(fill2.since, 10);
    ws.frame({ type: "history", id: fill2.id, channel: "dag:7", offset: 13, epoch: "E", messages: [{ offset: 12, data: 12 }, { offset: 13, data: 13 }] });
    const recover = ws.last("subscribe");
    assert.deepEqual(recover.since, { offset: 10, epoch: "E" });
    ws.frame({ type: "subscribed", id: recover.id, channel: "dag:7", offset: 13, epoch: "E", recovered: false });
    assert.equal(reloads.at(-1).reason, "lost");
    assert.equal(reloads.at(-1).offset, 13);
    ws.frame(msg(13));
    ws.frame(msg(14));
    assert.deepEqual(delivered.map((d) => d[1]), [6, 7, 8, 9, 10, 14]);

    // Another epoch: the history was lost; recover.
    const subscribes = ws.sent.filter((f) => f.type === "subscribe").length;
    ws.frame(msg(1, "F"));
    const recover2 = ws.last("subscribe");
    assert.equal(ws.sent.filter((f) => f.type === "subscribe").length, subscribes + 1);
    assert.deepEqual(recover2.since, { offset: 14, epoch: "E" });
    ws.frame(msg(2, "F")); // no second recovery while one is under way
    assert.equal(ws.sent.filter((f) => f.type === "subscribe").length, subscribes + 1);
    ws.frame({ type: "subscribed", id: recover2.id, channel: "dag:7", offset: 2, epoch: "F", recovered: false });
    ws.frame(msg(3, "F"));
    assert.deepEqual(delivered.at(-1), ["F", 3, 3]);

    // resync: recover; recovered:true replays what was missed, once.
    ws.frame({ type: "resync", channel: "dag:7" });
    const recover3 = ws.last("subscribe");
    assert.deepEqual(recover3.since, { offset: 3, epoch: "F" });
    ws.frame(msg(5, "F")); // past a gap, before the reply: held, not delivered
    ws.frame({ type: "subscribed", id: recover3.id, channel: "dag:7", offset: 5, epoch: "F", recovered: true });
    ws.frame(msg(4, "F"));
    ws.frame(msg(5, "F"));
    ws.frame(msg(6, "F"));
    assert.deepEqual(delivered.slice(-3).map((d) => d[1]), [4, 5, 6]);
    assert.equal(reloads.length, 3);
    client.close();
  });

  test("after a reconnect every channel is subscribed again with since = the last position", async () => {
    const { client, ws, delivered, reloads } = await fakeSession();
    const subscribe = ws.last("subscribe");
    ws.frame({ type: "subscribed", id: subscribe.id, channel: "dag:7", offset: 0, epoch: "E", recovered: false });
    ws.frame(msg(1));
    ws.frame(msg(2));
    ws.drop(1006);
    assert.equal(client.state, "disconnected");
    await waitForInstance(2);
    const ws2 = FakeWebSocket.instances[1];
    await tick();
    ws2.frame({ type: "connection_ack", conn_id: "c2", user: "42", node: "m", heartbeat_s: 25, channels: [], expires_at: Math.floor(Date.now() / 1000) + 3600 });
    const resubscribe = ws2.last("subscribe");
    assert.deepEqual(resubscribe.since, { offset: 2, epoch: "E" });
    ws2.frame({ type: "subscribed", id: resubscribe.id, channel: "dag:7", offset: 4, epoch: "E", recovered: true });
    for (const offset of [3, 4, 5]) ws2.frame(msg(offset));
    assert.deepEqual(delivered.map((d) => d[1]), [1, 2, 3, 4, 5]);
    assert.equal(reloads.length, 1);
    client.close();
  });

  test("an unavailable subscribe is retried; a forbidden one ends the subscription", async () => {
    const { client, ws } = await fakeSession();
    const errors = [];
    client.subscribe("room:x", { onError: (error) => errors.push(error) });
    const first = ws.last("subscribe");
    assert.equal(first.channel, "room:x");
    ws.frame({ type: "error", id: first.id, code: "unavailable", message: "broker unavailable: test" });
    await waitFor(() => ws.last("subscribe").id !== first.id);
    const second = ws.last("subscribe");
    assert.equal(second.channel, "room:x");
    ws.frame({ type: "error", id: second.id, code: "forbidden", message: "token does not grant channel room:x" });
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, "forbidden");
    client.close();
  });
});

test("a WebSocket that fails before opening and never fires close (Node 20) still leads to a retry", async () => {
  const attempts = [];
  class ErrorOnlyWebSocket {
    constructor(url) {
      this.readyState = 0;
      attempts.push(url);
      queueMicrotask(() => this.onerror?.({}));
    }
    send() {}
    close() {}
  }
  const client = new Fanout({ url: "ws://fanout.test/ws", token: signToken({ sub: "42" }), transport: "websocket", WebSocket: ErrorOnlyWebSocket, backoff: { baseMs: 10, capMs: 20 } });
  const states = [];
  client.on("state", (state) => states.push(state));
  client.connect();
  await waitFor(() => attempts.length >= 3);
  client.close();
  assert.deepEqual(states.slice(0, 4), ["connecting", "disconnected", "connecting", "disconnected"]);
});

describe("reconnect delays by close code (fake transport)", () => {
  const connectWith = async (options) => {
    FakeWebSocket.instances = [];
    const client = new Fanout({ url: "ws://fanout.test/ws", token: signToken({ sub: "42" }), transport: "websocket", WebSocket: FakeWebSocket, ...options });
    const errors = [];
    client.on("error", (error) => errors.push(error));
    client.connect();
    await tick();
    FakeWebSocket.instances[0].frame({ type: "connection_ack", conn_id: "c1", user: "42", node: "n", heartbeat_s: 25, channels: [], expires_at: Math.floor(Date.now() / 1000) + 3600 });
    return { client, errors };
  };

  test("a drain close (1012) is retried at once, although the backoff would wait long", async () => {
    // The backoff's random source at its top: an ordinary retry would wait 9.9 s.
    const { client } = await connectWith({ backoff: { baseMs: 10000, capMs: 10000, random: () => 0.99 }, drainRetryMs: 50 });
    FakeWebSocket.instances[0].drop(1012);
    await waitFor(() => FakeWebSocket.instances.length === 2);
    client.close();
  });

  test("closes that ask for a long backoff (4029) wait for it, and are reported", async () => {
    const { client, errors } = await connectWith({ backoff: { baseMs: 10, capMs: 20 }, penaltyMs: 60000 });
    FakeWebSocket.instances[0].drop(4029);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(FakeWebSocket.instances.length, 1, "no quick retry");
    assert.equal(errors.length, 1);
    assert.equal(errors[0].closeCode, 4029);
    assert.equal(client.state, "disconnected");
    client.close();
  });
});

async function waitFor(check) {
  for (let i = 0; i < 600 && !check(); i++) await tick();
  assert.ok(check());
}

async function waitForInstance(n) {
  await waitFor(() => FakeWebSocket.instances.length >= n);
}

/** A session on the fake transport with the options given, connected. */
async function fakeConnected(options = {}) {
  FakeWebSocket.instances = [];
  const client = new Fanout({
    url: "ws://fanout.test/ws",
    token: signToken({ sub: "42" }),
    transport: "websocket",
    WebSocket: FakeWebSocket,
    backoff: { baseMs: 10, capMs: 20 },
    ...options,
  });
  client.connect();
  await tick();
  const ws = FakeWebSocket.instances[0];
  ws.frame({ type: "connection_ack", conn_id: "c1", user: "42", node: "n", heartbeat_s: 25, channels: [], expires_at: Math.floor(Date.now() / 1000) + 3600, expires_in: 3600 });
  return { client, ws };
}

const sends = (ws) => ws.sent.filter((f) => f.type === "send");
const settled = (promise) => promise.then((value) => ({ value }), (error) => ({ error }));

describe("send (fake transport)", () => {
  test("several frames in flight, up to the window; replies matched in order; the next go as replies come", async () => {
    const { client, ws } = await fakeConnected({ sendWindow: 3 });
    const results = Array.from({ length: 7 }, (_, i) => client.send("dag:1", { n: i + 1 }));
    assert.deepEqual(sends(ws).map((f) => f.data.n), [1, 2, 3], "three in flight before any reply");
    const [a, b] = sends(ws);
    ws.frame({ type: "sent", id: a.id, channel: "dag:1", stream_id: "1-0" });
    ws.frame({ type: "sent", id: b.id, channel: "dag:1", stream_id: "2-0" });
    assert.deepEqual(sends(ws).map((f) => f.data.n), [1, 2, 3, 4, 5]);
    for (const frame of sends(ws).slice(2)) ws.frame({ type: "sent", id: frame.id, channel: "dag:1", stream_id: `${frame.data.n}-0` });
    for (const frame of sends(ws).slice(5)) ws.frame({ type: "sent", id: frame.id, channel: "dag:1", stream_id: `${frame.data.n}-0` });
    const done = await Promise.all(results);
    assert.deepEqual(done.map((r) => r.streamId), ["1-0", "2-0", "3-0", "4-0", "5-0", "6-0", "7-0"]);
    assert.deepEqual(sends(ws).map((f) => f.data.n), [1, 2, 3, 4, 5, 6, 7], "each sent once, in order");
    client.close();
  });

  test("a full queue refuses at once with queue_full, by count and by bytes", async () => {
    FakeWebSocket.instances = [];
    const client = new Fanout({ url: "ws://fanout.test/ws", token: signToken({ sub: "42" }), transport: "websocket", WebSocket: FakeWebSocket, sendQueueMaxCount: 2, sendQueueMaxBytes: 200 });
    const first = settled(client.send("dag:1", { n: 1 }));
    const second = settled(client.send("dag:1", { n: 2 }));
    const third = await settled(client.send("dag:1", { n: 3 }));
    assert.equal(third.error.code, "queue_full");
    assert.equal(third.error.retryable, true);
    assert.match(third.error.message, /2 sends .* wait already.*limits are 2 sends and 200 bytes/);
    client.close();
    assert.equal((await first).error.code, "closed");
    assert.equal((await second).error.code, "closed");

    const bytes = new Fanout({ url: "ws://fanout.test/ws", token: signToken({ sub: "42" }), transport: "websocket", WebSocket: FakeWebSocket, sendQueueMaxBytes: 200, clientMsgIdField: null });
    const small = settled(bytes.send("dag:1", "x".repeat(100)));
    const big = await settled(bytes.send("dag:1", "é".repeat(60))); // 120 bytes in UTF-8 + quotes: over what is left
    assert.equal(big.error.code, "queue_full");
    bytes.close();
    assert.equal((await small).error.code, "closed");
  });

  test("a timeout or an abort drops a queued send (never sent); one in flight is not sent again", async () => {
    const { client, ws } = await fakeConnected({ sendWindow: 1 });
    const controller = new AbortController();
    const inFlight = settled(client.send("dag:1", { n: 1 }, { signal: controller.signal }));
    const timedOut = settled(client.send("dag:1", { n: 2 }, { timeoutMs: 30 }));
    const abortedEarly = new AbortController();
    abortedEarly.abort();
    assert.equal((await settled(client.send("dag:1", { n: 3 }, { signal: abortedEarly.signal }))).error.code, "aborted");
    const queuedAbort = new AbortController();
    const aborted = settled(client.send("dag:1", { n: 4 }, { signal: queuedAbort.signal }));
    const last = client.send("dag:1", { n: 5 });
    queuedAbort.abort();
    assert.equal((await aborted).error.code, "aborted");
    assert.equal((await timedOut).error.code, "timeout");
    controller.abort();
    const first = await inFlight;
    assert.equal(first.error.code, "aborted");
    assert.equal(first.error.retryable, false);
    // The reply of the aborted one frees the window: the next is 5 (2 and 4 were dropped).
    ws.frame({ type: "sent", id: sends(ws)[0].id, channel: "dag:1", stream_id: "1-0" });
    assert.deepEqual(sends(ws).map((f) => f.data.n), [1, 5]);
    // A reconnect sends again only what is still wanted.
    ws.drop(1006);
    await waitForInstance(2);
    await tick();
    const ws2 = FakeWebSocket.instances[1];
    ws2.frame({ type: "connection_ack", conn_id: "c2", user: "42", node: "n", heartbeat_s: 25, channels: [], expires_at: Math.floor(Date.now() / 1000) + 3600, expires_in: 3600 });
    assert.deepEqual(sends(ws2).map((f) => f.data.n), [5]);
    ws2.frame({ type: "sent", id: sends(ws2)[0].id, channel: "dag:1", stream_id: "5-0" });
    assert.equal((await last).streamId, "5-0");
    client.close();
  });

  test("a retryable refusal sends it again after a backoff, one at a time until one passes", async () => {
    const { client, ws } = await fakeConnected({ sendWindow: 4 });
    const results = [1, 2, 3].map((n) => client.send("dag:1", { n }));
    const [one, two, three] = sends(ws);
    ws.frame({ type: "error", id: one.id, code: "rate_limited", message: "more than 10 publish, send or status frames per second" });
    ws.frame({ type: "sent", id: two.id, channel: "dag:1", stream_id: "2-0" });
    ws.frame({ type: "sent", id: three.id, channel: "dag:1", stream_id: "3-0" });
    await waitFor(() => sends(ws).length === 4);
    assert.equal(sends(ws)[3].data.n, 1, "the refused one again");
    const more = [4, 5].map((n) => client.send("dag:1", { n }));
    assert.equal(sends(ws).length, 4, "one at a time after a refusal");
    ws.frame({ type: "sent", id: sends(ws)[3].id, channel: "dag:1", stream_id: "1-0" });
    assert.deepEqual(sends(ws).slice(4).map((f) => f.data.n), [4, 5], "the window opens again");
    for (const frame of sends(ws).slice(4)) ws.frame({ type: "sent", id: frame.id, channel: "dag:1", stream_id: `${frame.data.n}-0` });
    assert.deepEqual((await Promise.all([...results, ...more])).map((r) => r.streamId), ["1-0", "2-0", "3-0", "4-0", "5-0"]);
    client.close();
  });
});

describe("trackPresence (fake transport)", () => {
  test("events that race the presence reply are applied on top of it; a failed request keeps nothing and is asked again", async () => {
    const { client, ws } = await fakeConnected();
    const tracker = trackPresence(client, "room:x");
    const subscribe = ws.last("subscribe");
    ws.frame({ type: "subscribed", id: subscribe.id, channel: "room:x", recovered: false });
    const ask = ws.last("presence");
    // Before the reply: carol joins, bob leaves (the reply, read earlier, still has bob).
    ws.frame({ type: "join", channel: "room:x", user: "carol", conn_id: "c" });
    ws.frame({ type: "leave", channel: "room:x", user: "bob", conn_id: "b" });
    ws.frame({ type: "presence", id: ask.id, channel: "room:x", members: [{ user: "me", conn_id: "m" }, { user: "bob", conn_id: "b" }] });
    await tick();
    assert.equal(tracker.ready, true);
    assert.deepEqual(tracker.members.map((m) => m.user).sort(), ["carol", "me"]);
    ws.frame({ type: "presence_update", channel: "room:x", user: "carol", conn_id: "c", status: { state: "typing" } });
    assert.deepEqual(tracker.members.find((m) => m.user === "carol").status, { state: "typing" });
    ws.frame({ type: "presence_update", channel: "room:x", user: "carol", conn_id: "c", status: null });
    assert.equal(tracker.members.find((m) => m.user === "carol").status, undefined, "a cleared status");

    // A reconnect asks again; this time the request fails: nothing is kept for it.
    ws.drop(1006);
    await waitForInstance(2);
    await tick();
    const ws2 = FakeWebSocket.instances[1];
    ws2.frame({ type: "connection_ack", conn_id: "c2", user: "42", node: "n", heartbeat_s: 25, channels: [], expires_at: Math.floor(Date.now() / 1000) + 3600, expires_in: 3600 });
    ws2.frame({ type: "subscribed", id: ws2.last("subscribe").id, channel: "room:x", recovered: false });
    const failed = ws2.last("presence");
    ws2.frame({ type: "error", id: failed.id, code: "unavailable", message: "broker unavailable: test" });
    await tick();
    assert.equal(tracker.error.code, "unavailable");
    assert.equal(tracker._sinceRequest, null, "no buffer left growing");
    for (let i = 0; i < 50; i++) ws2.frame({ type: "join", channel: "room:x", user: `u${i}`, conn_id: `k${i}` });
    assert.equal(tracker._sinceRequest, null, "events are applied, not buffered, while no request is out");
    assert.equal(tracker.members.length, 52);
    // Asked again after a backoff (the test's backoff is short), and the reply replaces all.
    await waitFor(() => ws2.sent.filter((f) => f.type === "presence").length === 2);
    ws2.frame({ type: "presence", id: ws2.last("presence").id, channel: "room:x", members: [{ user: "me", conn_id: "m" }] });
    await tick();
    assert.deepEqual(tracker.members.map((m) => m.user), ["me"]);
    assert.equal(tracker.error, null);
    tracker.close();
    client.close();
  });
});
