// The React hooks against the real gateway, rendered with react-test-renderer (no DOM
// needed): connection state, a channel's messages, presence of two clients, leaving.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";

import React from "react";
import TestRenderer from "react-test-renderer";

import { Fanout } from "./support/harness.js";
import { FanoutProvider, useChannel, useConnectionState, usePresence } from "../src/react.js";
import { API_KEY, killAll, signToken, startGateway, waitFor } from "./support/harness.js";

after(killAll);
// react-test-renderer runs effects synchronously inside act() when this is set.
globalThis.IS_REACT_ACT_ENVIRONMENT = false;

test("hooks: connection state, messages of a channel, presence of two clients", { timeout: 60000 }, async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "fanout-js-react-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const config = path.join(dir, "fanout.toml");
  writeFileSync(config, '[namespaces.room]\npresence = true\njoin_leave = "connection"\n');
  const gateway = await startGateway({ name: "react", args: ["--config", config] });

  const seen = { alice: {}, bob: {} };
  function Dashboard({ who }) {
    const state = useConnectionState();
    const [messages, setMessages] = React.useState([]);
    useChannel("room:lobby", (data) => setMessages((list) => [...list, data]));
    const presence = usePresence("room:lobby");
    seen[who] = { state, messages, presence };
    return React.createElement("p", null, `${state} ${messages.length} ${presence.members.length}`);
  }
  const clientOf = (sub) => new Fanout({ url: gateway.wsUrl, transport: "websocket", token: signToken({ sub, channels: ["room:*"], info: { name: sub } }) });
  const alice = clientOf("alice");
  const bob = clientOf("bob");
  t.after(() => {
    alice.close();
    bob.close();
  });
  const render = (client, who) => TestRenderer.create(React.createElement(FanoutProvider, { client }, React.createElement(Dashboard, { who })));
  const aliceView = render(alice, "alice");
  const bobView = render(bob, "bob");

  await waitFor("both connected", () => seen.alice.state === "connected" && seen.bob.state === "connected");
  await waitFor("two members seen by each", () => seen.alice.presence.members.length === 2 && seen.bob.presence.members.length === 2);
  assert.equal(seen.alice.presence.ready, true);
  assert.deepEqual(seen.alice.presence.members.map((m) => m.user).sort(), ["alice", "bob"]);
  assert.deepEqual(seen.alice.presence.members.find((m) => m.user === "bob").info, { name: "bob" });

  const response = await fetch(gateway.httpUrl("/api/publish"), {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ channel: "room:lobby", data: { hello: "lobby" } }),
  });
  assert.equal(response.status, 200);
  await waitFor("the message in both views", () => seen.alice.messages.length === 1 && seen.bob.messages.length === 1);
  assert.deepEqual(seen.bob.messages, [{ hello: "lobby" }]);

  await alice.setStatus("room:lobby", { state: "typing" });
  await waitFor("alice's status seen by bob", () => seen.bob.presence.members.find((m) => m.user === "alice")?.status?.state === "typing");

  // Bob's view goes away: he leaves the channel, and Alice sees it.
  bobView.unmount();
  await waitFor("bob gone from alice's presence", () => seen.alice.presence.members.length === 1);
  assert.equal(seen.alice.presence.members[0].user, "alice");
  aliceView.unmount();
});
