/**
 * Tabs that stay open longer than their REST nonce lives, in Debian's chromium (headless,
 * through playwright-core): two users whose nonces live 30 s and 100 s (the `nonce_life`
 * filter of fixtures/fanout-test-hooks.php) and whose tokens live 60 s, so that the page's
 * fanout client fetches a new token every ~40 s, each open on an admin page for ~100 s.
 *
 * - `short` (30 s): every token request after the first finds its nonce expired; the tab must
 *   get a new one from admin-ajax.php?action=rest-nonce and go on. Checked: it kept its
 *   connection (same conn_id, refreshed expiry), a notification published after two nonce
 *   lifetimes reached its bell, and the page's first nonce is refused by then.
 * - `long` (100 s): its nonce outlives a refresh, and the `X-WP-Nonce` header of each token
 *   answer is used for the next request: no renewal needed, the last refresh sent a nonce that
 *   was not the page's.
 *
 * Run by tests/run.php (in the background while other tests run) with FANOUT_WP_TEST (JSON:
 * {siteUrl, gatewayApi, password, seconds (how long the tabs stay open once connected), users:
 * {short|long: {login, channel, lifetime}}}) and
 * FANOUT_WP_TEST_API_KEY (the gateway's API key).
 * Prints progress lines, `OK` last; exits 1 with the reason on failure.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const test = JSON.parse(process.env.FANOUT_WP_TEST);
const WAIT_MS = 30_000;
const profiles = mkdtempSync(join(tmpdir(), 'fanout-wp-longtab-'));
const contexts = [];
const started = Date.now();
const elapsed = () => ((Date.now() - started) / 1000).toFixed(1);

async function fail(message) {
  console.log(`FAIL (${elapsed()} s): ${message}`);
  await cleanup();
  process.exit(1);
}

async function cleanup() {
  for (const context of contexts) await context.close().catch(() => {});
  rmSync(profiles, { recursive: true, force: true });
}

const deadline = setTimeout(() => fail("timed out"), (test.seconds + 150) * 1000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A notification to the user's channel, through the gateway's HTTP API: not through the site,
 * whose publishing other tests running meanwhile point at unreachable servers on purpose.
 */
async function notify(user, title) {
  const response = await fetch(`${test.gatewayApi}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${process.env.FANOUT_WP_TEST_API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: user.channel, data: { type: 'notification', data: { id: title, title, level: 'info' } } }),
  });
  if (!response.ok) await fail(`publishing "${title}" answered HTTP ${response.status}`);
}

/** A user's tab on their profile page, with a record of its token and nonce requests. */
async function openTab(name, user) {
  const context = await chromium.launchPersistentContext(join(profiles, user.login), {
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // A background tab's timers must keep running as a visible one's do.
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows'],
  });
  contexts.push(context);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (error) => console.log(`[${name}] page error: ${error.message}`));
  const log = { tokens: [], renewals: [] };
  page.on('response', async (response) => {
    const url = response.url();
    if (url.includes('fanout%2Fv1%2Ftoken') || url.includes('fanout/v1/token')) {
      log.tokens.push({ at: elapsed(), status: response.status(), nonce: response.request().headers()['x-wp-nonce'], fresh: (await response.allHeaders())['x-wp-nonce'] ?? null });
    } else if (url.includes('action=rest-nonce')) {
      log.renewals.push({ at: elapsed(), status: response.status() });
    }
  });
  await page.goto(`${test.siteUrl}/wp-login.php`);
  await page.fill('#user_login', user.login);
  await page.fill('#user_pass', test.password);
  await Promise.all([page.waitForURL(/\/wp-admin\//, { timeout: WAIT_MS }), page.click('#wp-submit')]);
  await page.goto(`${test.siteUrl}/wp-admin/profile.php`);
  await page
    .waitForFunction(() => window.fanoutWP?.client?.state === 'connected', null, { timeout: WAIT_MS })
    .catch(() => fail(`${name}: the page's fanout client never connected`));
  // What reaches the user's channel, as the site's own scripts would listen to it (other tests
  // publish to the site meanwhile, so the bell's count and list are not this test's to read).
  await page.evaluate(() => {
    window.fanoutSeen = [];
    window.fanoutWP.client.subscribe(window.fanoutWP.userChannel, {
      onMessage: (data) => window.fanoutSeen.push(data?.data?.title ?? ''),
    });
  });
  const first = await page.evaluate(() => ({ nonce: window.fanoutWP.nonce, ...window.fanoutWP.client.connection }));
  console.log(`[${name}] connected at ${elapsed()} s: ${first.connId}, token until ${first.expiresAt}`);
  return { name, user, page, log, first, connectedAt: Date.now() };
}

/** Waits until a notification titled `title` reached the tab. */
async function received(tab, title) {
  await tab.page
    .waitForFunction((t) => window.fanoutSeen.includes(t), title, { timeout: WAIT_MS })
    .catch(async () => fail(`${tab.name}: "${title}" never arrived; tokens ${JSON.stringify(tab.log.tokens)}, renewals ${JSON.stringify(tab.log.renewals)}`));
}

try {
  const tabs = await Promise.all([openTab('short', test.users.short), openTab('long', test.users.long)]);
  const send = async (title) => {
    for (const tab of tabs) await notify(tab.user, `${title} for ${tab.name}`);
    for (const tab of tabs) await received(tab, `${title} for ${tab.name}`);
    console.log(`${elapsed()} s: "${title}" reached both tabs`);
  };
  await send('At the start');
  // Past two lifetimes of the short nonce, and one token refresh (tokens live 60 s and are
  // refreshed 20 s before they expire).
  await sleep(Math.max(0, tabs[0].connectedAt + 2 * test.users.short.lifetime * 1000 + 5000 - Date.now()));
  await send('After two nonce lifetimes');
  // Past each tab's second refresh.
  await sleep(Math.max(0, Math.max(...tabs.map((tab) => tab.connectedAt)) + test.seconds * 1000 - Date.now()));
  await send('At the end');

  for (const tab of tabs) {
    const now = await tab.page.evaluate(() => ({ nonce: window.fanoutWP.nonce, ...window.fanoutWP.client.connection }));
    const ok = tab.log.tokens.filter((t) => t.status === 200);
    console.log(`[${tab.name}] tokens ${JSON.stringify(tab.log.tokens)} renewals ${JSON.stringify(tab.log.renewals)}`);
    if (now.connId !== tab.first.connId) await fail(`${tab.name}: the tab reconnected (${tab.first.connId} -> ${now.connId}) instead of refreshing its token`);
    if (ok.length < 3 || !(now.expiresAt >= tab.first.expiresAt + 60)) await fail(`${tab.name}: fewer than two token refreshes (expiry ${tab.first.expiresAt} -> ${now.expiresAt})`);
    if (now.nonce === tab.first.nonce) await fail(`${tab.name}: the page's nonce was never replaced`);
  }
  const [short, long] = tabs;
  // The short tab's nonces ran out and were renewed, after which its token requests succeeded.
  if (!short.log.tokens.some((t) => t.status === 403)) await fail('short: no token request ever found its nonce expired: the test did not test renewal');
  if (!short.log.renewals.some((r) => r.status === 200)) await fail('short: the expired nonce was never renewed');
  const firstRefused = await short.page.evaluate(async ([url, nonce]) => (await fetch(url, { method: 'POST', headers: { 'X-WP-Nonce': nonce } })).status, [await short.page.evaluate(() => window.fanoutWP.tokenUrl), short.first.nonce]);
  if (firstRefused !== 403) await fail(`short: the page's first nonce is still accepted (HTTP ${firstRefused}): the nonce lifetime was not shortened`);
  // The long tab never needed a renewal: each answer's X-WP-Nonce served the next request
  // (the same value within one half-life of the nonce, a new one after it: by the end, the
  // page's nonce was replaced, as checked above).
  if (long.log.renewals.length > 0 || long.log.tokens.some((t) => t.status !== 200)) await fail(`long: a renewal was needed: ${JSON.stringify(long.log)}`);
  const connectedAt = (long.connectedAt - started) / 1000;
  for (let i = 1; i < long.log.tokens.length; i++) {
    if (Number(long.log.tokens[i].at) < connectedAt + 20) continue; // the refreshes, not the requests of connecting
    if (!long.log.tokens[i - 1].fresh || long.log.tokens[i].nonce !== long.log.tokens[i - 1].fresh) {
      await fail(`long: token request ${i} did not send the nonce of the answer before it: ${JSON.stringify(long.log.tokens)}`);
    }
  }
  console.log('both tabs kept receiving past their nonces, on the same connection');

  clearTimeout(deadline);
  await cleanup();
  console.log('OK');
} catch (error) {
  await fail(error.stack || String(error));
}
