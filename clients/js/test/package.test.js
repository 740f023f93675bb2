// The package as people install it: `npm pack` (which builds dist/ with esbuild), then the
// tarball's contents, its size budget and its ES2019 syntax, and the tarball installed (npm
// install, offline: it has no dependencies) into a CommonJS project, an ES module project
// and a TypeScript project per moduleResolution mode (node10, node16, bundler). The Node
// projects connect to the real gateway and receive a message. (A Vite build of a React page
// and a plain <script> page in Chromium: tests/browser/package.test.js.)

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { after, before, describe, test } from "node:test";

import { parse } from "acorn";

import { API_KEY, REPO_ROOT, killAll, signToken, startGateway } from "./support/harness.js";

after(killAll);

const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
/** The size budget of the core (the browser bundle: every export of the root entry), minified and gzipped. */
const CORE_BUDGET_BYTES = 12 * 1024;

/** Runs a command; its output, or a failure with what it printed. */
function run(command, args, options = {}) {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: "pipe", timeout: 120000, ...options });
  } catch (error) {
    assert.fail(`${command} ${args.join(" ")} failed:\n${error.stdout ?? ""}${error.stderr ?? ""}`);
  }
}

/** Runs a Node script to its end; resolves with its stdout, rejects with its output on failure. */
function runNode(args, options) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
    let out = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.stderr.on("data", (chunk) => (out += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30000);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`node ${args.join(" ")} exited with ${code ?? signal}:\n${out}`));
    });
  });
}

describe("the npm package", { timeout: 240000 }, () => {
  // Projects live under clients/js/.pack-test (gitignored), so that TypeScript finds
  // @types/react and the React entry finds react in clients/js/node_modules.
  const work = path.join(PACKAGE_ROOT, ".pack-test");
  let dir;
  let tarball;
  let packed;
  let gateway;

  before(async () => {
    mkdirSync(work, { recursive: true });
    dir = mkdtempSync(path.join(work, "run-"));
    const [info] = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", dir], { cwd: PACKAGE_ROOT }));
    packed = info;
    tarball = path.join(dir, info.filename);
    gateway = await startGateway({ name: "package" });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A project of its own with the tarball installed. */
  function project(name, packageJson, files) {
    const root = path.join(dir, name);
    mkdirSync(root, { recursive: true });
    writeFileSync(path.join(root, "package.json"), JSON.stringify({ name: `pack-test-${name}`, private: true, ...packageJson }, null, 2));
    for (const [file, text] of Object.entries(files)) writeFileSync(path.join(root, file), text);
    run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", tarball], { cwd: root });
    return root;
  }

  test("the tarball: the builds, the declarations, the LICENSE, nothing else; Apache-2.0", () => {
    const files = packed.files.map((f) => f.path).sort();
    assert.deepEqual(files, [
      "LICENSE",
      "README.md",
      ...["events", "index", "react"].flatMap((n) => [`dist/${n}.d.cts`, `dist/${n}.d.mts`, `dist/${n}.d.ts`]),
      "dist/fanout.min.js",
      "dist/index.cjs",
      "dist/index.mjs",
      "dist/react.cjs",
      "dist/react.mjs",
      "package.json",
      "react/package.json",
    ].sort());
    const root = project("contents", {}, {});
    const installed = path.join(root, "node_modules/fanout-client");
    const pkg = JSON.parse(readFileSync(path.join(installed, "package.json"), "utf8"));
    assert.equal(pkg.name, "fanout-client");
    assert.equal(pkg.license, "Apache-2.0");
    assert.equal(readFileSync(path.join(installed, "LICENSE"), "utf8"), readFileSync(path.join(REPO_ROOT, "LICENSE"), "utf8"), "the repository's LICENSE");
    assert.match(readFileSync(path.join(REPO_ROOT, "LICENSE"), "utf8"), /Apache License\s+Version 2\.0/);
  });

  test(`the core, minified and gzipped, is at most ${CORE_BUDGET_BYTES} bytes`, () => {
    const bundle = readFileSync(path.join(PACKAGE_ROOT, "dist/fanout.min.js"));
    const gzipped = gzipSync(bundle, { level: 9 }).length;
    assert.ok(gzipped <= CORE_BUDGET_BYTES, `dist/fanout.min.js: ${bundle.length} bytes, ${gzipped} gzipped: over the budget of ${CORE_BUDGET_BYTES}`);
    // It is the whole root entry (the bundle carries every export), not a part of it.
    for (const name of ["Fanout", "FanoutError", "Subscription", "trackPresence", "PresenceTracker", "Backoff", "tokenExpiry"]) {
      assert.match(bundle.toString(), new RegExp(`\\b${name}:\\s*\\(\\)\\s*=>`), `exports ${name}`);
    }
  });

  test("every built file is ES2019 syntax", () => {
    for (const file of ["index.mjs", "react.mjs", "index.cjs", "react.cjs", "fanout.min.js"]) {
      const code = readFileSync(path.join(PACKAGE_ROOT, "dist", file), "utf8");
      assert.doesNotThrow(() => parse(code, { ecmaVersion: 2019, sourceType: file.endsWith(".mjs") ? "module" : "script" }), `dist/${file}`);
    }
    // And something newer is refused by the check (so that it checks something).
    assert.throws(() => parse("a?.b", { ecmaVersion: 2019 }));
  });

  const script = (moduleSyntax) => `
${moduleSyntax ? 'import { Fanout, FanoutError, trackPresence } from "fanout-client";\nimport { FanoutProvider, usePresence } from "fanout-client/react";' : 'const { Fanout, FanoutError, trackPresence } = require("fanout-client");\nconst { FanoutProvider, usePresence } = require("fanout-client/react");'}
const { url, token, channel, publishUrl, apiKey } = JSON.parse(process.env.PACK_TEST);
if (typeof FanoutProvider !== "function" || typeof usePresence !== "function" || typeof trackPresence !== "function") throw new Error("missing exports");
const client = new Fanout({ url, token, transport: "websocket" });
const received = new Promise((resolve) => client.subscribe(channel, { onMessage: (data, meta) => resolve({ data, offset: meta.offset }) }));
client.connect();
const failing = client.publish(channel, 1).catch((error) => error instanceof FanoutError && error.code);
(async () => {
  await client.getSubscription(channel).ready(10000);
  await fetch(publishUrl, { method: "POST", headers: { authorization: "Bearer " + apiKey, "content-type": "application/json" }, body: JSON.stringify({ channel, data: { from: "${moduleSyntax ? "esm" : "cjs"}" } }) });
  const message = await received;
  console.log(JSON.stringify({ message, refused: await failing }));
  client.close();
})().catch((error) => { console.error(error); process.exit(1); });
`;

  for (const [kind, packageJson, file] of [
    ["commonjs", { type: "commonjs" }, "main.js"],
    ["esm", { type: "module" }, "main.js"],
  ]) {
    test(`installed in a Node project (${kind}), it connects and receives`, async () => {
      const root = project(kind, packageJson, { [file]: script(kind === "esm") });
      const channel = `dag:pack-${kind}`;
      const env = {
        ...process.env,
        PACK_TEST: JSON.stringify({ url: gateway.wsUrl, token: signToken({ sub: kind, channels: ["dag:*"] }), channel, publishUrl: gateway.httpUrl("/api/publish"), apiKey: API_KEY }),
      };
      const out = await runNode(["--experimental-websocket", "--no-warnings", file], { cwd: root, env });
      assert.deepEqual(JSON.parse(out.trim().split("\n").at(-1)), { message: { data: { from: kind === "esm" ? "esm" : "cjs" }, offset: 1 }, refused: "forbidden" });
    });
  }

  test("the minified bundle defines FanoutClient and works (here in Node)", async () => {
    const root = project("bundle", { type: "module" }, {
      "main.js": `
import { readFileSync } from "node:fs";
(0, eval)(readFileSync("node_modules/fanout-client/dist/fanout.min.js", "utf8"));
const { Fanout } = globalThis.FanoutClient;
const { url, token, channel, publishUrl, apiKey } = JSON.parse(process.env.PACK_TEST);
const client = new Fanout({ url, token, transport: "websocket" });
const received = new Promise((resolve) => client.subscribe(channel, { onMessage: (data) => resolve(data) }));
client.connect();
await client.getSubscription(channel).ready(10000);
await fetch(publishUrl, { method: "POST", headers: { authorization: "Bearer " + apiKey, "content-type": "application/json" }, body: JSON.stringify({ channel, data: "bundled" }) });
console.log(JSON.stringify(await received));
client.close();
`,
    });
    const env = {
      ...process.env,
      PACK_TEST: JSON.stringify({ url: gateway.wsUrl, token: signToken({ sub: "bundle", channels: ["dag:*"] }), channel: "dag:pack-bundle", publishUrl: gateway.httpUrl("/api/publish"), apiKey: API_KEY }),
    };
    const out = await runNode(["--experimental-websocket", "--no-warnings", "main.js"], { cwd: root, env });
    assert.equal(out.trim().split("\n").at(-1), '"bundled"');
  });

  const usage = `
import { Fanout, FanoutError, trackPresence, type SubscriptionState, type ServerEvent } from "fanout-client";
import { FanoutProvider, useChannel, usePresence } from "fanout-client/react";

const client = new Fanout({ url: "wss://realtime.example.com/ws", getToken: async () => "t", sendWindow: 4, debug: (message: string) => void message });
const sub = client.subscribe<ServerEvent>("dag:7", { since: { epoch: "e", offset: 1 }, onMessage: (event) => void event.type });
const state: SubscriptionState = sub.state;
sub.on("state", (next, { previous, error }) => void [next, previous, error?.code]);
const ready: Promise<void> = Promise.all([client.ready(1000), sub.ready()]).then(() => undefined);
const tracker = trackPresence(client, "room:x", { onChange: (members) => void members.map((m) => m.user) });
const sent = client.send("dag:7", { text: "hi" }, { timeoutMs: 1000 });
const error: FanoutError = new FanoutError("queue_full", "full");
// @ts-expect-error: no such option
new Fanout({ url: "x", token: "t", noSuchOption: true });
// @ts-expect-error: a subscription state is one of three
const wrong: SubscriptionState = "pending";
void [state, ready, tracker.members, sent, error, wrong, FanoutProvider, useChannel, usePresence, client.subscriptions(), client.getSubscription("dag:7")];
`;

  /** Type-checks a project; returns the declaration files the compiler read from the package. */
  function typecheck(root, compilerOptions, files) {
    const tsc = path.join(PACKAGE_ROOT, "node_modules/typescript/bin/tsc");
    writeFileSync(path.join(root, "tsconfig.json"), JSON.stringify({ compilerOptions: { strict: true, noEmit: true, skipLibCheck: false, target: "es2019", lib: ["es2019", "dom"], types: [], ...compilerOptions }, files }, null, 2));
    const listed = run(process.execPath, [tsc, "-p", "tsconfig.json", "--listFiles"], { cwd: root });
    return listed.split("\n").filter((f) => f.includes("node_modules/fanout-client/")).map((f) => f.slice(f.indexOf("node_modules/fanout-client/") + "node_modules/fanout-client/".length)).sort();
  }

  test("TypeScript, moduleResolution node10: the declarations resolve (main/types and react/package.json)", () => {
    const root = project("ts-node10", {}, { "usage.ts": usage });
    const read = typecheck(root, { module: "commonjs", moduleResolution: "node10" }, ["usage.ts"]);
    assert.deepEqual(read, ["dist/events.d.ts", "dist/index.d.ts", "dist/react.d.ts"]);
  });

  test("TypeScript, moduleResolution node16: import and require each get their own declarations", () => {
    const root = project("ts-node16", { type: "module" }, { "usage.mts": usage, "usage.cts": usage });
    const read = typecheck(root, { module: "node16", moduleResolution: "node16" }, ["usage.mts", "usage.cts"]);
    assert.deepEqual(read, ["dist/events.d.cts", "dist/events.d.mts", "dist/index.d.cts", "dist/index.d.mts", "dist/react.d.cts", "dist/react.d.mts"]);
  });

  test("TypeScript, moduleResolution bundler: the declarations resolve", () => {
    const root = project("ts-bundler", { type: "module" }, { "usage.ts": usage });
    const read = typecheck(root, { module: "esnext", moduleResolution: "bundler" }, ["usage.ts"]);
    assert.deepEqual(read, ["dist/events.d.mts", "dist/index.d.mts", "dist/react.d.mts"]);
  });
});
