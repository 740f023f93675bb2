// Test support for the real-browser tests of the demo dashboard: a real redis-server, the real
// gateway binary with `--demo`, a real HAProxy, Debian's chromium through playwright-core.
// Everything listens on 127.0.0.1, on ports chosen by the OS; everything started is stopped
// by `Stack.stop()` (call it from `after`), even when a test fails.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const FANOUT_BIN = resolve(REPO, process.env.FANOUT_BIN || "target/debug/fanout");
export const DEMO_CONFIG = join(REPO, "examples/simulator/demo.toml");
export const SCREENSHOTS = join(REPO, "target/browser-screenshots");
const SECRET = "browser-test-secret-0123456789abcdef0123";
export const API_KEY = "browser-test-key";
/** How long any single wait may take before the test fails (generous: CI machines are slow). */
export const WAIT_MS = 20_000;

/** redis-cli runs: output as text, errors in the thrown exception rather than on the terminal. */
const CLI_OPTIONS = { encoding: "utf8", timeout: 10_000, stdio: ["ignore", "pipe", "pipe"] };

/** Resolves after `ms`. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a truthy value, or fails after `timeoutMs` with `what`. */
export async function waitFor(what, probe, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

/** A free TCP port on 127.0.0.1 (bound, then released). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** A child process whose stderr and stdout are kept, to print when a test fails. */
class Process {
  constructor(name, command, args, env = {}) {
    this.name = name;
    this.output = [];
    const environment = { ...process.env, ...env };
    // RUST_LOG would override the gateway's --log-level, whose "listening" line we read.
    delete environment.RUST_LOG;
    this.child = spawn(command, args, { env: environment, stdio: ["ignore", "pipe", "pipe"] });
    this.exited = new Promise((r) => this.child.once("exit", (code, signal) => r({ code, signal })));
    this.alive = true;
    this.exited.then(() => {
      this.alive = false;
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      stream.setEncoding("utf8");
      let partial = "";
      stream.on("data", (chunk) => {
        const lines = (partial + chunk).split("\n");
        partial = lines.pop();
        for (const line of lines) {
          this.output.push(line);
          if (this.output.length > 2000) this.output.shift();
          this.onLine?.(line);
        }
      });
    }
  }

  /** Sends a signal (by pid, to this process only) and waits for it to exit. */
  async stop(signal = "SIGTERM", graceMs = 5000) {
    if (!this.alive) return;
    this.child.kill(signal);
    const done = await Promise.race([this.exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!done && this.alive) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }

  log() {
    return `--- ${this.name} ---\n${this.output.slice(-80).join("\n")}`;
  }
}

/**
 * What one test file starts, stopped in reverse order by `stop()`. Use one per `describe`,
 * with `after(() => stack.stop())`.
 */
export class Stack {
  constructor() {
    this.processes = [];
    this.cleanups = [];
    this.dir = mkdtempSync(join(tmpdir(), "fanout-browser-"));
  }

  /** Starts redis-server without persistence on a free port; returns `{ port, url, json, raw }`. */
  async redis() {
    const port = await freePort();
    const p = new Process("redis", "redis-server", [
      "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
      "--dir", this.dir, "--logfile", "",
    ]);
    this.processes.push(p);
    const redis = {
      port,
      url: `redis://127.0.0.1:${port}`,
      /** Runs redis-cli with `--json` (RESP2 replies as JSON text). */
      json: (...args) => execFileSync("redis-cli", ["-p", String(port), "-2", "--json", ...args], CLI_OPTIONS).trim(),
      /** Runs redis-cli and returns its raw output (one value per line). */
      raw: (...args) => execFileSync("redis-cli", ["-p", String(port), "--raw", ...args], CLI_OPTIONS).trim(),
    };
    await waitFor("redis-server to answer PING", () => redis.raw("PING") === "PONG");
    return redis;
  }

  /**
   * Starts the gateway with `--demo` on Redis and the demo's configuration, on a port of its
   * own choosing (read from its "listening" log line); waits until /readyz answers 200.
   * Without `redis`: on the embedded broker, and with `config: null` no configuration file,
   * as the README's first command starts it.
   */
  async gateway(redis, nodeId = "node-a", { config = DEMO_CONFIG } = {}) {
    const p = new Process(`fanout ${nodeId}`, FANOUT_BIN, [
      "serve", "--demo", "--listen", "127.0.0.1:0", "--node-id", nodeId,
      ...(redis ? ["--redis-url", redis.url, "--redis-probe-interval-s", "1"] : []),
      ...(config ? ["--config", config] : []), "--log-level", "info", "--drain-s", "1",
    ], { FANOUT_JWT_SECRET: SECRET, FANOUT_API_KEY: API_KEY });
    this.processes.push(p);
    const addr = await waitFor(`${nodeId} to listen`, () => {
      if (!p.alive) throw new Error(`${nodeId} exited:\n${p.log()}`);
      for (const line of p.output) {
        const m = line.includes("listening") && line.match(/addr=(127\.0\.0\.1:\d+)/);
        if (m) return m[1];
      }
      return null;
    });
    const gateway = {
      nodeId,
      addr,
      url: `http://${addr}`,
      process: p,
      /** The node's /readyz body (its open connections among it). */
      ready: async () => (await fetch(`http://${addr}/readyz`)).json(),
    };
    await waitFor(`${nodeId} to be ready`, async () => (await fetch(`http://${addr}/readyz`)).status === 200);
    return gateway;
  }

  /**
   * Starts HAProxy in front of the gateways, health-checked on /readyz; `balance` is
   * HAProxy's algorithm (`roundrobin`: every request may go to another node; `source`:
   * sticky by client address, i.e. one node for every loopback client). `refuseWebSockets`
   * answers 403 to every `/ws` request, as a proxy that does not pass WebSockets would fail.
   */
  async haproxy(gateways, { balance = "roundrobin", refuseWebSockets = false } = {}) {
    const port = await freePort();
    const config = join(this.dir, `haproxy-${port}.cfg`);
    writeFileSync(config, [
      "global", "  maxconn 2000",
      "defaults", "  mode http", "  timeout connect 2s", "  timeout client 60s", "  timeout server 60s",
      "  timeout tunnel 1h", "  option redispatch", "  retries 3",
      "frontend web", `  bind 127.0.0.1:${port}`,
      ...(refuseWebSockets ? ["  http-request deny deny_status 403 if { path /ws }"] : []),
      "  default_backend fanout",
      "backend fanout", `  balance ${balance}`, "  option httpchk GET /readyz", "  http-check expect status 200",
      "  default-server inter 200ms fall 1 rise 2",
      ...gateways.map((g, i) => `  server n${i + 1} ${g.addr} check`),
      "",
    ].join("\n"));
    const p = new Process("haproxy", "haproxy", ["-db", "-f", config]);
    this.processes.push(p);
    const url = `http://127.0.0.1:${port}`;
    // Ready when the health checks passed on every node (2 × 200 ms) and requests go through.
    await sleep(800);
    await waitFor("haproxy to route requests", async () => (await fetch(`${url}/readyz`)).status === 200);
    return { port, url };
  }

  /**
   * Starts Debian's chromium, headless, with a fresh profile (never a downloaded browser).
   * Returns the browser context; pages opened in it share nothing but the context.
   */
  async browser() {
    const profile = join(this.dir, `chromium-${this.cleanups.length}`);
    mkdirSync(profile);
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
      headless: true,
      viewport: { width: 1360, height: 900 },
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
    });
    this.cleanups.push(() => context.close());
    return context;
  }

  /** Runs `php` with these arguments as a background process; returns it. */
  php(name, args) {
    const p = new Process(name, "php", args);
    this.processes.push(p);
    return p;
  }

  /** Every log kept, for a failure message. */
  logs() {
    return this.processes.map((p) => p.log()).join("\n");
  }

  async stop() {
    for (const cleanup of this.cleanups.reverse()) {
      await cleanup().catch(() => {});
    }
    for (const p of this.processes.reverse()) await p.stop("SIGTERM", 3000);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Opens the demo page as `user` (on `run`, over `transport` if given) and collects the page's console errors and uncaught
 * exceptions in `page.problems` (asserted empty by the tests).
 */
export async function openDashboard(context, baseUrl, { user, name, run = "demo", transport } = {}) {
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (error) => page.problems.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") page.problems.push(`console: ${message.text()}`);
  });
  const url = new URL("/demo/", baseUrl);
  if (user) url.searchParams.set("user", user);
  if (name) url.searchParams.set("name", name);
  url.searchParams.set("run", run);
  if (transport) url.searchParams.set("transport", transport);
  await page.goto(url.toString());
  return page;
}

/** Waits until the page's connection indicator says `state`. */
export async function waitForConnection(page, state = "connected") {
  await page.locator(`#connection[data-state="${state}"]`).waitFor({ timeout: WAIT_MS });
}

/** Saves a full-page screenshot under target/browser-screenshots/<name>.png. */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  // From the top: a full-page capture of a scrolled page draws the sticky header mid-page.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Publishes a catalogue event with history (`FCALL fanout_publish`); returns its offset. */
export function publish(redis, channel, type, data) {
  const payload = JSON.stringify({ type, data, timestamp: Date.now() / 1000 });
  return Number(redis.raw("FCALL", "fanout_publish", "1", channel, payload));
}

/** The entries of a Redis stream (`XRANGE <stream> - +`), parsed: `[{ id, fields: {name: value} }]`. */
export function streamEntries(redis, stream) {
  const reply = JSON.parse(redis.json("XRANGE", stream, "-", "+"));
  return reply.map(([id, pairs]) => {
    const fields = {};
    for (let i = 0; i + 1 < pairs.length; i += 2) fields[pairs[i]] = pairs[i + 1];
    return { id, fields };
  });
}
