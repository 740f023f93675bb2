/**
 * Test harness: the real gateway binary, a real redis-server and a real HAProxy, each
 * started on free loopback ports by the test that needs them and killed when it ends
 * (or when the test process exits, whatever happens).
 */

import { execFile, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach } from "node:test";

import { Fanout as ClientFanout } from "../../src/index.js";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");
export const FANOUT_BIN = path.resolve(REPO_ROOT, process.env.FANOUT_BIN ?? "target/debug/fanout");
export const SECRET = "fanout-js-client-tests-secret-0123456789";
export const API_KEY = "js-test-api-key";

/** The real clock: tests may skew `Date.now` for the client; tokens keep the real time. */
const realDateNow = Date.now.bind(Date);

/**
 * What the client's callbacks threw (assertions among them). The client guards its
 * callbacks and reports what they throw as a `callback_failed` error; in a test, that is a
 * failure: `waitFor` throws it at once, and every test ends with a check.
 */
const callbackFailures = [];

/** Records the callback failures of this client (the test's Fanout does it for itself). */
export function failOnCallbackErrors(client) {
  client.on("error", (error) => {
    if (error.code === "callback_failed") callbackFailures.push(error.cause ?? error);
  });
  return client;
}

/** Throws the first callback failure recorded, if any. */
export function throwCallbackFailure() {
  if (callbackFailures.length > 0) throw callbackFailures.splice(0)[0];
}

afterEach(throwCallbackFailure);

/** The client, with its callbacks' failures failing the test (see `callbackFailures`). */
export class Fanout extends ClientFanout {
  constructor(options) {
    super(options);
    failOnCallbackErrors(this);
  }
}

/** Every child process started by this test file, killed on exit. */
const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** Kills every process this file started (for `after()`). */
export async function killAll() {
  const exits = [...children].map((child) => new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill("SIGKILL");
  }));
  await Promise.all(exits);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection with `message()` after `ms` (the timer does not outlive it). */
export function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message())), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Polls `check` until it returns a truthy value, or throws after `timeoutMs`; throws at
 * once what a client callback threw meanwhile (an assertion in `onMessage`, say).
 */
export async function waitFor(what, check, timeoutMs = 15000) {
  const deadline = realDateNow() + timeoutMs;
  for (;;) {
    throwCallbackFailure();
    const value = await check();
    if (value) return value;
    if (realDateNow() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(25);
  }
}

/** A free loopback TCP port (the kernel's choice). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const base64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/**
 * An HS256 JWT signed with the test secret.
 * @param {{ sub: string, channels?: string[], publish?: string[], ttlS?: number, info?: any, secret?: string }} claims
 */
export function signToken({ sub, channels, publish, ttlS = 3600, info, secret = SECRET }) {
  const now = Math.floor(realDateNow() / 1000);
  const payload = { sub, exp: now + ttlS, iat: now };
  if (channels) payload.channels = channels;
  if (publish) payload.publish = publish;
  if (info !== undefined) payload.info = info;
  const unsigned = `${base64url({ alg: "HS256", typ: "JWT" })}.${base64url(payload)}`;
  const signature = createHmac("sha256", secret).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

/** Runs the real redis-cli; resolves with its trimmed stdout. */
export function redisCli(port, args) {
  return new Promise((resolve, reject) => {
    execFile("redis-cli", ["-h", "127.0.0.1", "-p", String(port), ...args], { timeout: 10000 }, (error, stdout) => {
      if (error) reject(error);
      else resolve(stdout.trim());
    });
  });
}

/** A redis-server of this test's own, without persistence, on a free loopback port. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "fanout-js-redis-"));
  const child = track(
    spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir, "--logfile", ""], {
      stdio: ["ignore", "ignore", "ignore"],
    }),
  );
  child.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  await waitFor("redis-server to answer PING", async () => (await redisCli(port, ["PING"]).catch(() => "")) === "PONG");
  return {
    port,
    url: `redis://127.0.0.1:${port}/`,
    cli: (...args) => redisCli(port, args),
    stop: () => stopChild(child),
  };
}

function stopChild(child, signal = "SIGKILL") {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill(signal);
  });
}

/**
 * The real gateway. `port` 0 lets it choose (read from its "listening" log line); a fixed
 * port restarts a node where clients expect it.
 * @param {{ name?: string, redis?: { url: string }, port?: number, args?: string[] }} [options]
 */
export async function startGateway({ name = "js-node", redis, port = 0, args = [] } = {}) {
  const argv = ["serve", "--listen", `127.0.0.1:${port}`, "--jwt-secret", SECRET, "--api-key", API_KEY, "--node-id", name, "--log-level", "info", ...args];
  if (redis) argv.push("--redis-url", redis.url, "--redis-probe-interval-s", "1");
  // RUST_LOG would override --log-level, and the "listening" line is needed.
  const { RUST_LOG, ...env } = process.env;
  const child = track(spawn(FANOUT_BIN, argv, { stdio: ["ignore", "ignore", "pipe"], env }));
  const logs = [];
  let buffered = "";
  const listening = new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code, signal) => reject(new Error(`fanout exited before listening (${code ?? signal}):\n${logs.join("\n")}`)));
    child.stderr.on("data", (chunk) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (const line of lines) {
        logs.push(line);
        if (logs.length > 500) logs.shift();
        const match = /listening addr=(\S+)/.exec(line);
        if (match) resolve(match[1].replace(/"/g, ""));
      }
    });
  });
  const addr = await withTimeout(listening, 15000, () => `fanout did not listen within 15 s:\n${logs.join("\n")}`);
  const gateway = {
    name,
    addr,
    port: Number(addr.split(":").pop()),
    child,
    logs,
    wsUrl: `ws://${addr}/ws`,
    httpUrl: (p) => `http://${addr}${p}`,
    kill: (signal = "SIGKILL") => stopChild(child, signal),
  };
  await waitFor(`${name} to be ready`, async () => {
    const response = await fetch(gateway.httpUrl("/readyz")).catch(() => null);
    return response?.status === 200;
  });
  return gateway;
}

/** Whether this gateway binary serves the SSE transport (`GET /sse` is not a 404). */
export async function gatewayHasSse(gateway) {
  const response = await fetch(gateway.httpUrl("/sse")).catch(() => null);
  await response?.body?.cancel().catch(() => {});
  return Boolean(response) && response.status !== 404;
}

/**
 * A real HAProxy in front of gateways, as tests/support does for the Rust tests: round
 * robin, `/readyz` health checks every 200 ms, WebSocket tunnels, redispatch on refusal.
 * `balance: "source"` makes it sticky (every request of this client to one node).
 */
export async function startHaproxy(gateways, { balance = "roundrobin" } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "fanout-js-haproxy-"));
  const config = path.join(dir, "haproxy.cfg");
  const servers = gateways.map((g, i) => `  server n${i + 1} ${g.addr} check\n`).join("");
  writeFileSync(
    config,
    "global\n  maxconn 2000\n" +
      "defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  timeout tunnel 1h\n  option redispatch\n  retries 3\n" +
      `frontend ws\n  bind 127.0.0.1:${port}\n  default_backend fanout\n` +
      `backend fanout\n  balance ${balance}\n  option httpchk GET /readyz\n  http-check expect status 200\n  default-server inter 200ms fall 1 rise 2\n${servers}`,
  );
  const child = track(spawn("haproxy", ["-db", "-f", config], { stdio: ["ignore", "ignore", "ignore"] }));
  child.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  // Ready when it routes to every node (sticky: to one node, and every node is up).
  const expected = balance === "roundrobin" ? gateways.length : 1;
  await waitFor("haproxy to route to the nodes", async () => {
    const nodes = new Set();
    for (let i = 0; i < gateways.length * 3; i++) {
      const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null);
      if (response?.status !== 200) return false;
      nodes.add((await response.json()).node);
    }
    return nodes.size === expected;
  });
  if (balance !== "roundrobin") await sleep(600); // health checks: rise 2 × 200 ms for every node
  return { port, wsUrl: `ws://127.0.0.1:${port}/ws`, stop: () => stopChild(child) };
}

/**
 * A minimal Redis client (RESP2) for publishing many messages quickly from a test:
 * one command at a time, each awaited.
 */
export class RespClient {
  static connect(port) {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => resolve(new RespClient(socket)));
      socket.once("error", reject);
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.waiting = [];
    socket.on("data", (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.#drain();
    });
    socket.on("error", (error) => {
      for (const w of this.waiting.splice(0)) w.reject(error);
    });
  }

  /** Sends a command; resolves with an integer, a string or null; rejects on a Redis error. */
  command(...args) {
    const parts = [`*${args.length}\r\n`];
    for (const arg of args) {
      const text = String(arg);
      parts.push(`$${Buffer.byteLength(text)}\r\n${text}\r\n`);
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(parts.join(""));
    });
  }

  #drain() {
    for (;;) {
      const end = this.buffer.indexOf("\r\n");
      if (end === -1 || this.waiting.length === 0) return;
      const head = this.buffer.subarray(0, end).toString();
      let value;
      let consumed = end + 2;
      if (head[0] === "$") {
        const length = Number(head.slice(1));
        if (length === -1) value = null;
        else {
          if (this.buffer.length < consumed + length + 2) return;
          value = this.buffer.subarray(consumed, consumed + length).toString();
          consumed += length + 2;
        }
      } else if (head[0] === ":") value = Number(head.slice(1));
      else if (head[0] === "+") value = head.slice(1);
      else if (head[0] === "-") value = new Error(head.slice(1));
      else throw new Error(`unexpected RESP reply: ${head}`);
      this.buffer = this.buffer.subarray(consumed);
      const w = this.waiting.shift();
      if (value instanceof Error) w.reject(value);
      else w.resolve(value);
    }
  }

  close() {
    this.socket.destroy();
  }
}

/**
 * A TCP proxy in front of a gateway whose existing connections can be frozen: the sockets
 * stay open but nothing flows, which is how a connection dies silently (a half-open TCP
 * connection, a stuck middlebox). New connections pass.
 */
export async function startFreezingProxy(targetPort) {
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream, frozen: false };
    pairs.add(pair);
    const forward = (from, to) => from.on("data", (chunk) => {
      if (!pair.frozen) to.write(chunk);
    });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    port,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    /** Freezes every connection open now. */
    freeze: () => {
      for (const pair of pairs) pair.frozen = true;
    },
    stop: () => {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * An HTTP proxy in front of a gateway that refuses WebSocket upgrades on `/ws` (as some
 * corporate proxies do) and passes every other request through, streaming responses as they
 * come (SSE). Counts the refused upgrades.
 */
export async function startNoWebSocketProxy(targetPort) {
  const http = await import("node:http");
  const stats = { refusedUpgrades: 0, sseStreams: 0, framePosts: 0 };
  const sockets = new Set();
  const server = http.createServer((request, response) => {
    if (request.url.startsWith("/sse/frames")) stats.framePosts += 1;
    else if (request.url.startsWith("/sse")) stats.sseStreams += 1;
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
    stats.refusedUpgrades += 1;
    socket.end("HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 23\r\nconnection: close\r\n\r\nno WebSockets past here");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    port,
    stats,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    stop: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The entries of a Redis stream, read with the real redis-cli: [{ id, fields }]. */
export async function readStream(redis, key) {
  const output = await redis.cli("XRANGE", key, "-", "+");
  const entries = [];
  const lines = output === "" ? [] : output.split("\n");
  for (let i = 0; i < lines.length; ) {
    const id = lines[i++];
    const fields = {};
    while (i < lines.length && !/^\d+-\d+$/.test(lines[i])) {
      fields[lines[i]] = lines[i + 1];
      i += 2;
    }
    entries.push({ id, fields });
  }
  return entries;
}

/**
 * An HTTP proxy that splits a session between two gateways: everything to `streamPort`
 * (the SSE stream, `/ws`), except the frames POSTed to `/sse/frames`, which all go to
 * `postPort`, a node that does not hold the stream: each one has to be relayed by the
 * gateway to reach the session. Counts the POSTs and their statuses.
 */
export async function startSplitProxy(streamPort, postPort) {
  const http = await import("node:http");
  const stats = { posts: 0, postStatuses: [] };
  const sockets = new Set();
  const server = http.createServer((request, response) => {
    const post = request.method === "POST" && request.url.startsWith("/sse/frames");
    if (post) stats.posts += 1;
    const upstream = http.request(
      { host: "127.0.0.1", port: post ? postPort : streamPort, method: request.method, path: request.url, headers: request.headers },
      (answer) => {
        if (post) stats.postStatuses.push(answer.statusCode);
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
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    port,
    stats,
    url: `http://127.0.0.1:${port}/ws`,
    stop: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
