// The JS client's npm package in a real browser (Debian's chromium): the `npm pack`
// tarball of clients/js installed (offline: it has no dependencies) into
//  - a Vite production build of a React page (React and Vite from this folder's
//    node_modules; Vite transforms the JSX itself), and
//  - a plain page that loads the minified bundle with a <script> tag (the global FanoutClient),
// each served from a static server on loopback and connected to the real gateway: the page
// shows the connection and a message published through the HTTP API.
// (Node and TypeScript projects: clients/js/test/package.test.js.)

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { extname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { API_KEY, REPO, Stack, WAIT_MS, screenshot } from "./support.js";

const HERE = join(REPO, "tests/browser");
const CLIENT = join(REPO, "clients/js");

function run(command, args, options) {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: "pipe", timeout: 180_000, ...options });
  } catch (error) {
    assert.fail(`${command} ${args.join(" ")} failed:\n${error.stdout ?? ""}${error.stderr ?? ""}`);
  }
}

/** Serves a folder's files on a free loopback port. */
async function serve(root) {
  const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css" };
  const server = http.createServer((request, response) => {
    const path = new URL(request.url, "http://x").pathname;
    const file = join(root, path === "/" ? "index.html" : path);
    if (!file.startsWith(root)) return response.writeHead(403).end();
    try {
      const body = readFileSync(file);
      response.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      // The browser keeps its connections open: end them, or close() waits for them.
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

describe("the npm package in a browser", { timeout: 240_000 }, () => {
  const stack = new Stack();
  let gateway;
  let browser;
  let work;
  let tarball;
  const servers = [];

  before(async () => {
    gateway = await stack.gateway(null, "pkg", { config: null });
    browser = await stack.browser();
    // Inside this folder, so that the projects find react, react-dom and vite here.
    mkdirSync(join(HERE, ".pack-test"), { recursive: true });
    work = mkdtempSync(join(HERE, ".pack-test", "run-"));
    const [info] = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", work], { cwd: CLIENT }));
    tarball = join(work, info.filename);
  });

  after(async () => {
    for (const server of servers) await server.close();
    await stack.stop();
    rmSync(work, { recursive: true, force: true });
  });

  /** A project with the tarball installed. */
  function project(name, files) {
    const root = join(work, name);
    mkdirSync(root, { recursive: true });
    writeFileSync(join(root, "package.json"), JSON.stringify({ name: `pack-${name}`, private: true, type: "module" }));
    for (const [file, text] of Object.entries(files)) {
      mkdirSync(join(root, file, ".."), { recursive: true });
      writeFileSync(join(root, file), text);
    }
    run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", tarball], { cwd: root });
    return root;
  }

  /** A demo token for `user` (the gateway runs with --demo), for the pages' query string. */
  async function token(user) {
    const response = await fetch(`${gateway.url}/demo/token?user=${user}`);
    return (await response.json()).token;
  }

  async function publish(channel, data) {
    const response = await fetch(`${gateway.url}/api/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ channel, data }),
    });
    assert.equal(response.status, 200);
  }

  /** Opens `url` and collects console errors and uncaught exceptions in `page.problems`. */
  async function open(url) {
    const page = await browser.newPage();
    page.problems = [];
    page.on("pageerror", (error) => page.problems.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") page.problems.push(`console: ${message.text()}`);
    });
    await page.goto(url);
    return page;
  }

  test("a Vite production build of a React page with the package's hooks connects and shows messages", async () => {
    const root = project("vite-react", {
      "index.html": '<!doctype html><html><head><meta charset="utf-8"><title>vite</title><link rel="icon" href="data:,"></head><body><div id="root"></div><script type="module" src="/src/main.jsx"></script></body></html>',
      "src/main.jsx": `
import { useState } from "react";
import { createRoot } from "react-dom/client";
import { Fanout } from "fanout-client";
import { FanoutProvider, useChannel, useConnectionState } from "fanout-client/react";

const params = new URLSearchParams(location.search);
const client = new Fanout({ url: params.get("gateway"), token: params.get("token") });

function Feed() {
  const state = useConnectionState();
  const [messages, setMessages] = useState([]);
  useChannel("dag:vite", (data, meta) => setMessages((list) => [...list, meta.offset + ":" + data.text]));
  return (
    <main id="app" data-state={state}>
      <ul id="messages">{messages.map((m) => <li key={m}>{m}</li>)}</ul>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<FanoutProvider client={client}><Feed /></FanoutProvider>);
`,
    });
    run(process.execPath, [join(HERE, "node_modules/vite/bin/vite.js"), "build", "--logLevel", "warn"], { cwd: root });
    const assets = readdirSync(join(root, "dist/assets")).filter((f) => f.endsWith(".js"));
    assert.equal(assets.length, 1, assets.join(", "));
    const bundle = readFileSync(join(root, "dist/assets", assets[0]), "utf8");
    assert.match(bundle, /no connection_ack in time/, "the client is in the production bundle");
    const server = await serve(join(root, "dist"));
    servers.push(server);

    const url = new URL(server.url);
    url.searchParams.set("gateway", `ws://${gateway.addr}/ws`);
    url.searchParams.set("token", await token("vite"));
    const page = await open(url.toString());
    await page.locator('#app[data-state="connected"]').waitFor({ state: "attached", timeout: WAIT_MS });
    await publish("dag:vite", { text: "from the API" });
    await page.locator("#messages li", { hasText: "1:from the API" }).waitFor({ timeout: WAIT_MS });
    await screenshot(page, "11-package-vite-react");
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  test("a plain page loads the minified bundle with a <script> tag and uses the global FanoutClient", async () => {
    const root = project("script-tag", {});
    const site = join(root, "site");
    mkdirSync(site);
    copyFileSync(join(root, "node_modules/fanout-client/dist/fanout.min.js"), join(site, "fanout.min.js"));
    writeFileSync(join(site, "index.html"), `<!doctype html>
<html><head><meta charset="utf-8"><title>script</title><link rel="icon" href="data:,"><script src="fanout.min.js"></script></head>
<body><p id="state">not started</p><ol id="messages"></ol>
<script>
  var params = new URLSearchParams(location.search);
  var client = new FanoutClient.Fanout({ url: params.get("gateway"), token: params.get("token") });
  client.on("state", function (state) { document.getElementById("state").textContent = state; });
  var sub = client.subscribe("dag:script", {
    onMessage: function (data, meta) {
      var li = document.createElement("li");
      li.textContent = meta.offset + ":" + data.text;
      document.getElementById("messages").appendChild(li);
    },
  });
  client.connect();
  sub.ready(10000).then(function () { document.body.dataset.subscribed = sub.state; });
</script></body></html>`);
    const server = await serve(site);
    servers.push(server);
    const url = new URL(server.url);
    url.searchParams.set("gateway", `ws://${gateway.addr}/ws`);
    url.searchParams.set("token", await token("script"));
    const page = await open(url.toString());
    await page.locator('body[data-subscribed="subscribed"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator("#state").textContent(), "connected");
    await publish("dag:script", { text: "to a script tag" });
    await page.locator("#messages li", { hasText: "1:to a script tag" }).waitFor({ timeout: WAIT_MS });
    assert.equal(await page.evaluate(() => typeof window.FanoutClient.trackPresence), "function");
    await screenshot(page, "12-package-script-tag");
    assert.deepEqual(page.problems, []);
    await page.close();
  });
});
