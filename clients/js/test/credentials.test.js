// No credential in a URL (issue 23): against a gateway that refuses tokens in URLs
// (`--allow-query-token false`), the client authenticates WebSockets with the first frame
// and SSE streams with a single-use ticket, POSTs frames with the token in a header, and
// a proxy in front that records every request line sees no token and no `token=`.

import assert from "node:assert/strict";
import http from "node:http";
import { after, test } from "node:test";

import { Fanout } from "../src/index.js";
import { killAll, signToken, startGateway, waitFor } from "./support/harness.js";

after(killAll);

/** A proxy to the gateway that refuses WebSocket upgrades and records every request line. */
async function recordingProxy(targetPort) {
  const lines = [];
  const sockets = new Set();
  const server = http.createServer((request, response) => {
    lines.push(`${request.method} ${request.url}`);
    const upstream = http.request(
      { host: "127.0.0.1", port: targetPort, method: request.method, path: request.url, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode, answer.headers);
        response.flushHeaders();
        answer.pipe(response);
      },
    );
    upstream.on("error", () => response.destroy());
    response.on("close", () => upstream.destroy());
    request.pipe(upstream);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.on("upgrade", (request, socket) => {
    lines.push(`${request.method} ${request.url} (upgrade)`);
    socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    lines,
    wsUrl: `ws://127.0.0.1:${server.address().port}/ws`,
    stop: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

test("no token in any URL: WebSockets by the auth frame, SSE by ticket and header", { timeout: 60000 }, async (t) => {
  const gateway = await startGateway({ name: "no-url-tokens", args: ["--allow-query-token", "false"] });
  const token = signToken({ sub: "careful", channels: ["room:*"], publish: ["room:*"] });

  // WebSocket, straight to the gateway: a token in the URL would be refused with 401.
  const ws = new Fanout({ url: gateway.wsUrl, token });
  t.after(() => ws.close());
  const overWs = [];
  const subscribed = { ws: false, sse: false };
  ws.subscribe("room:careful", { onMessage: (data) => overWs.push(data), onReload: () => (subscribed.ws = true) });
  ws.connect();
  await waitFor("connected over WebSocket", () => ws.state === "connected", 20000);
  assert.equal(ws.connection.transport, "websocket");

  // SSE, through a proxy that refuses WebSockets and records what a log would keep.
  const proxy = await recordingProxy(gateway.port);
  t.after(() => proxy.stop());
  const sse = new Fanout({ url: proxy.wsUrl, token, backoff: { baseMs: 50, capMs: 200 } });
  t.after(() => sse.close());
  const overSse = [];
  sse.subscribe("room:careful", { onMessage: (data) => overSse.push(data), onReload: () => (subscribed.sse = true) });
  sse.connect();
  await waitFor("connected over SSE", () => sse.state === "connected", 20000);
  assert.equal(sse.connection.transport, "sse");
  await waitFor("both subscribed", () => subscribed.ws && subscribed.sse, 10000);
  // A frame POSTed over SSE (publish) reaches both.
  await sse.publish("room:careful", { hello: "from SSE" });
  await waitFor("the message on both", () => overWs.length >= 1 && overSse.length >= 1, 10000);
  assert.deepEqual(overSse.at(-1), { hello: "from SSE" });

  const recorded = proxy.lines.join("\n");
  assert.ok(/^POST \/sse\/ticket$/m.test(recorded), recorded);
  assert.ok(/^GET \/sse\?ticket=[0-9a-f]{32}/m.test(recorded), recorded);
  assert.ok(/^POST \/sse\/frames\?conn_id=/m.test(recorded), recorded);
  assert.ok(!recorded.includes(token) && !recorded.includes("token="), `a token in a URL:\n${recorded}`);
});
