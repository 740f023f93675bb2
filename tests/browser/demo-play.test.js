// The demo alive on the embedded default: the gateway started as the README's first command
// starts it, plus `--demo` (no Redis, no configuration file, no backend, no simulator), and
// the page in Chromium. The gateway plays the sample run on dag:demo itself (demo_play): the
// graph fills in, the agent console streams, the human gate waits for a click; a prompt typed
// on the page is answered, the approval finishes the run, and whoever decided gets a
// notification under the bell.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Stack, WAIT_MS, openDashboard, screenshot, waitForConnection } from "./support.js";

describe("the demo on the embedded broker, with nothing else running", { timeout: 180_000 }, () => {
  const stack = new Stack();
  let gateway;
  let browser;

  before(async () => {
    gateway = await stack.gateway(null, "solo", { config: null });
    browser = await stack.browser();
  });

  after(() => stack.stop());

  test("the gateway plays the run itself: graph, console, gate, a prompt answered, approval, notification", async () => {
    const page = await openDashboard(browser, gateway.url, { user: "olga", name: "Olga", run: "demo" });
    await waitForConnection(page);
    assert.equal(await page.locator("#connection").getAttribute("data-node"), "solo");

    // The run shows up by itself: nodes from the player's events, the console streaming.
    await page.locator('#dag g[data-node="fetch"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator("#dag-empty").isHidden(), true, "no 'start the simulator' hint: something plays");
    for (const node of ["fetch", "classify", "embed", "draft", "review", "publish"]) {
      await page.locator(`#dag g[data-node="${node}"]`).waitFor({ timeout: WAIT_MS });
    }
    await page.locator('#console li[data-type="tool_call"]').first().waitFor({ timeout: WAIT_MS });
    await page.locator('#console li[data-type="output"]').first().waitFor({ timeout: WAIT_MS });

    // The gate opens and waits for a click; meanwhile a prompt from the console is answered.
    const gate = page.locator('.gate[data-node="review"]');
    await gate.waitFor({ timeout: WAIT_MS });
    assert.match(await gate.textContent(), /Publish the daily support report\?/);
    assert.equal(await page.locator('#dag g[data-node="draft"]').getAttribute("data-state"), "completed");
    await page.locator("#prompt-input").fill("What is the riskiest claim?");
    await page.locator('#prompt-form button[type="submit"]').click();
    await page.locator('#console li[data-type="output"]', { hasText: "@olga asked: What is the riskiest claim?" }).waitFor({ timeout: WAIT_MS });
    // Presence is off without a configuration file: the page says how to turn it on.
    assert.match(await page.locator("#presence li.member-hint").textContent(), /Presence is off on this gateway.*demo\.toml/);
    await screenshot(page, "9-demo-play-at-gate");

    await gate.locator('button[data-decision="approve"]').click();
    await page.locator('.gate[data-node="review"][data-state="sent"]').waitFor({ state: "attached", timeout: WAIT_MS }).catch(() => {});
    await page.locator('#run-status[data-status="succeeded"]').waitFor({ timeout: WAIT_MS });
    for (const node of ["fetch", "classify", "embed", "draft", "review", "publish"]) {
      assert.equal(await page.locator(`#dag g[data-node="${node}"]`).getAttribute("data-state"), "completed", node);
    }
    assert.match(await page.locator('#dag g[data-node="review"]').textContent(), /by olga/);
    await page.locator("#console li", { hasText: "olga chose “approve”" }).waitFor({ state: "attached", timeout: WAIT_MS });
    // The decider is notified on user:olga.
    await page.locator("#notification-list li", { hasText: "Run demo succeeded" }).waitFor({ state: "attached", timeout: WAIT_MS });
    assert.equal(await page.locator("#bell-count").getAttribute("data-count"), "1");
    assert.equal(await page.locator("#event-log").getAttribute("data-live-duplicates"), "0");
    await page.locator("#log-details summary").click();
    await screenshot(page, "10-demo-play-succeeded");
    assert.deepEqual(page.problems, []);
    await page.close();
  });
});
