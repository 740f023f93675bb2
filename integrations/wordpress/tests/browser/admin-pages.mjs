/**
 * The plugin in a real browser (Debian's chromium, headless, through playwright-core; no
 * browser is downloaded): two users log in on wp-login.php and open the same post in the
 * block editor, and each sees the other in the "who is here" corner; a post published from
 * the admin's dashboard lights up its bell, whose dropdown shows the notification and marks
 * it read; when the editor closes the post, the admin's corner empties.
 *
 * Run by tests/run.php with FANOUT_WP_TEST (JSON: {siteUrl, password, postId, screenshots,
 * users: {admin|editor: {login, name}}}) in the environment; CHROMIUM_BIN overrides
 * /usr/bin/chromium. Screenshots of both steps go to the `screenshots` folder.
 * Prints progress lines, `OK` last; exits 1 with the reason on failure.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const test = JSON.parse(process.env.FANOUT_WP_TEST);
const WAIT_MS = 30_000;
const profiles = mkdtempSync(join(tmpdir(), 'fanout-wp-chromium-'));
const browsers = [];
mkdirSync(test.screenshots, { recursive: true });

async function fail(message) {
  console.log(`FAIL: ${message}`);
  await cleanup();
  process.exit(1);
}

async function cleanup() {
  for (const context of browsers) await context.close().catch(() => {});
  rmSync(profiles, { recursive: true, force: true });
}

const deadline = setTimeout(() => fail('timed out after 150 s'), 150_000);

/** A browser of its own for one user (separate cookies), logged in through wp-login.php. */
async function loggedIn(user) {
  const context = await chromium.launchPersistentContext(join(profiles, user.login), {
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  browsers.push(context);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (error) => console.log(`[${user.login}] page error: ${error.message}`));
  page.on('console', (message) => {
    // Avatars come from gravatar.com, which a test machine does not reach: not worth a line.
    if (message.text().startsWith('Failed to load resource')) return;
    if (message.type() === 'error' || message.text().startsWith('fanout')) console.log(`[${user.login}] console: ${message.text()}`);
  });
  await page.goto(`${test.siteUrl}/wp-login.php`);
  await page.fill('#user_login', user.login);
  await page.fill('#user_pass', test.password);
  await Promise.all([page.waitForURL(/\/wp-admin\//, { timeout: WAIT_MS }), page.click('#wp-submit')]);
  return { context, page };
}

/** Waits until the page's fanout client is connected. */
async function connected(page, who) {
  await page
    .waitForFunction(() => window.fanoutWP?.client?.state === 'connected', null, { timeout: WAIT_MS })
    .catch(() => fail(`${who}: the page's fanout client never connected`));
}

/** The names shown in a page's "who is here" corner. */
const hereNames = (page) => page.$$eval('.fanout-presence:not([hidden]) .fanout-presence-person', (people) => people.map((p) => p.title));

try {
  const admin = await loggedIn(test.users.admin);
  const editor = await loggedIn(test.users.editor);
  const editUrl = `${test.siteUrl}/wp-admin/post.php?post=${test.postId}&action=edit`;

  // Both open the post in the block editor.
  const adminEdit = admin.page;
  await adminEdit.goto(editUrl);
  await connected(adminEdit, 'admin (editor screen)');
  await editor.page.goto(editUrl);
  await connected(editor.page, 'editor (editor screen)');

  await adminEdit
    .waitForFunction((name) => [...document.querySelectorAll('.fanout-presence:not([hidden]) .fanout-presence-person')].some((p) => p.title === name), test.users.editor.name, { timeout: WAIT_MS })
    .catch(async () => fail(`the admin does not see the editor: ${JSON.stringify(await hereNames(adminEdit))}`));
  await editor.page
    .waitForFunction((name) => [...document.querySelectorAll('.fanout-presence:not([hidden]) .fanout-presence-person')].some((p) => p.title === name), test.users.admin.name, { timeout: WAIT_MS })
    .catch(async () => fail(`the editor does not see the admin: ${JSON.stringify(await hereNames(editor.page))}`));
  const adminSees = await hereNames(adminEdit);
  if (adminSees.length !== 1) await fail(`the admin should see exactly the editor, sees ${JSON.stringify(adminSees)}`);
  await adminEdit.screenshot({ path: join(test.screenshots, 'who-is-here.png') });
  console.log('who is here: each editor sees the other');

  // The admin, on the dashboard in another tab, publishes a post: the bell lights up.
  const dashboard = await admin.context.newPage();
  await dashboard.goto(`${test.siteUrl}/wp-admin/`);
  await connected(dashboard, 'admin (dashboard)');
  const count = dashboard.locator('#wp-admin-bar-fanout-notifications .fanout-bell-count');
  if ((await count.textContent()) !== '0') await fail(`the bell starts at ${await count.textContent()}`);
  const status = await dashboard.evaluate(async () => {
    const response = await fetch('/?rest_route=/wp/v2/posts', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-WP-Nonce': window.fanoutWP.nonce, 'Content-Type': 'application/json' },
      body: JSON.stringify({ title: 'Seen in the bell', status: 'publish' }),
    });
    return response.status;
  });
  if (status !== 201) await fail(`publishing the post answered HTTP ${status}`);
  // Two: the author's own notification and the broadcast "New: ..." to everyone.
  await dashboard
    .waitForFunction(() => document.querySelector('#wp-admin-bar-fanout-notifications .fanout-bell-count')?.textContent === '2', null, { timeout: WAIT_MS })
    .catch(async () => fail(`the bell shows ${await count.textContent()}, expected 2`));
  const bell = dashboard.locator('#wp-admin-bar-fanout-notifications');
  if (!(await bell.evaluate((node) => node.classList.contains('fanout-bell-unread')))) await fail('the bell is not marked unread');
  await bell.hover();
  const item = dashboard.locator('#wp-admin-bar-fanout-notifications .fanout-bell-item', { hasText: 'Your post “Seen in the bell” is published' });
  await item.waitFor({ state: 'visible', timeout: WAIT_MS }).catch(() => fail('the notification is not in the opened dropdown'));
  const href = await item.locator('a').getAttribute('href');
  if (!href || !href.startsWith(test.siteUrl)) await fail(`the notification links to ${href}`);
  if ((await count.textContent()) !== '0') await fail(`opening the dropdown left the count at ${await count.textContent()}`);
  await dashboard.screenshot({ path: join(test.screenshots, 'bell.png') });
  console.log('bell: the notification arrived, opening the dropdown marked it read');

  // The editor closes the post: the admin's corner empties.
  await editor.page.goto(`${test.siteUrl}/wp-admin/`);
  await adminEdit
    .waitForFunction(() => document.querySelector('.fanout-presence')?.hidden === true, null, { timeout: WAIT_MS })
    .catch(async () => fail(`the editor left but the admin still sees ${JSON.stringify(await hereNames(adminEdit))}`));
  console.log('who is here: the editor left');

  clearTimeout(deadline);
  await cleanup();
  console.log('OK');
} catch (error) {
  await fail(error.stack || String(error));
}
