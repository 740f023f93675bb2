// A client whose clock is wrong, against the real gateway: ten minutes behind, then ten
// minutes ahead. The client times its token refresh from `expires_in` (the gateway's count
// of the seconds left), not from `expires_at` against its own clock, so it refreshes in
// place, once per lifetime, without a 4001; tokens are minted by the "backend" (this test)
// with the right time.
//
// This file skews `Date.now` for the whole process (the harness keeps the real clock for
// tokens and its own waits); Node runs each test file in a process of its own.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { API_KEY, Fanout, killAll, signToken, sleep, startGateway, waitFor } from "./support/harness.js";

after(killAll);

const realNow = Date.now.bind(Date);
let skewMs = 0;
Date.now = () => realNow() + skewMs;

/** Token lifetime: the client refreshes a third of it before the end. */
const TTL_S = 5;

for (const [name, skew] of [
  ["10 minutes behind", -10 * 60 * 1000],
  ["10 minutes ahead", 10 * 60 * 1000],
]) {
  test(`with its clock ${name}, the client refreshes its token in place: no 4001, one refresh per lifetime`, { timeout: 60000 }, async (t) => {
    skewMs = skew;
    t.after(() => {
      skewMs = 0;
    });
    const gateway = await startGateway({ name: `clock-${skew < 0 ? "behind" : "ahead"}` });
    let issued = 0;
    const errors = [];
    const connections = [];
    const client = new Fanout({
      url: gateway.wsUrl,
      transport: "websocket",
      getToken: async () => {
        issued += 1;
        return signToken({ sub: "skewed", channels: ["dag:*"], ttlS: TTL_S });
      },
      backoff: { baseMs: 100, capMs: 500 },
    });
    t.after(() => client.close());
    client.on("error", (error) => errors.push(error));
    client.on("connected", (connection) => connections.push(connection));
    const received = [];
    client.subscribe("dag:clock", { onMessage: (data) => received.push(data) });
    client.connect();
    await client.ready(10000);
    const firstExpiry = client.connection.expiresAt;

    // Two lifetimes and a half: the gateway closes with 4001 at the first expiry unless the
    // client refreshed in time.
    await sleep(TTL_S * 2500);
    assert.deepEqual(errors.map((e) => `${e.code} ${e.closeCode ?? ""}`), [], "no 4001, no error");
    assert.equal(connections.length, 1, "one connection throughout");
    assert.equal(client.state, "connected");
    assert.ok(client.connection.expiresAt >= firstExpiry + TTL_S, `the expiry moved on (${firstExpiry} -> ${client.connection.expiresAt})`);
    // One token to connect, then a refresh at two thirds of each lifetime: 3 or 4 in 12.5 s,
    // at most 6. (A client timing from its own clock refreshes too late when behind, and
    // every half second, on its retry timer, when ahead: some 25 times.)
    assert.ok(issued >= 3 && issued <= 7, `getToken called ${issued} times`);

    const response = await fetch(gateway.httpUrl("/api/publish"), {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ channel: "dag:clock", data: "after the refreshes" }),
    });
    assert.equal(response.status, 200);
    await waitFor("the message on the refreshed connection", () => received.length === 1);
  });
}
