/**
 * Post rooms by channel token, in a real browser (Debian's chromium, headless, through
 * playwright-core): the admin and an editor open the same post in the block editor and see
 * each other, each page in the room by a channel token from `fanout/v1/channel-token` (the
 * connection token grants no post room). Then the admin lowers the editor to contributor on
 * the user's profile screen (user-edit.php), as a site owner would: the editor's page is
 * disconnected (4004 `role changed`), comes back with a new connection token, but the room is
 * refused (its channel token revoked, the route answers 403): the page's room subscription
 * ends with `forbidden` and its "who is here" corner empties, and the admin's corner no
 * longer shows the editor.
 *
 * Run by tests/run.php with FANOUT_WP_TEST (JSON: {siteUrl, password, postId, screenshots,
 * users: {admin|editor: {login, name, id}}}) in the environment; CHROMIUM_BIN overrides
 * /usr/bin/chromium. Prints progress lines, `OK` last; exits 1 with the reason on failure.
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

/** The answers of the channel-token route to a page, in order: `<channel> <HTTP status>`. */
function recordChannelTokens(page) {
  const answers = [];
  page.on('response', async (response) => {
    if (!response.url().includes('fanout%2Fv1%2Fchannel-token') && !response.url().includes('fanout/v1/channel-token')) return;
    const channel = JSON.parse(response.request().postData() || '{}').channel;
    answers.push(`${channel} ${response.status()}`);
  });
  return answers;
}

/** Waits until a page's "who is here" corner shows exactly `names` (none: hidden). */
async function corner(page, names, what) {
  await page
    .waitForFunction(
      (expected) => {
        const box = document.querySelector('.fanout-presence');
        const shown = box && !box.hidden ? [...box.querySelectorAll('.fanout-presence-person')].map((p) => p.title) : [];
        return JSON.stringify(shown.sort()) === JSON.stringify(expected);
      },
      [...names].sort(),
      { timeout: WAIT_MS },
    )
    .catch(async () => {
      const shown = await page.$$eval('.fanout-presence:not([hidden]) .fanout-presence-person', (people) => people.map((p) => p.title));
      await fail(`${what}: the corner shows ${JSON.stringify(shown)}, expected ${JSON.stringify(names)}`);
    });
}

try {
  const admin = await loggedIn(test.users.admin);
  const editor = await loggedIn(test.users.editor);
  const editUrl = `${test.siteUrl}/wp-admin/post.php?post=${test.postId}&action=edit`;
  const room = `room:wp1.post-${test.postId}`;

  const adminAnswers = recordChannelTokens(admin.page);
  const editorAnswers = recordChannelTokens(editor.page);
  await admin.page.goto(editUrl);
  await editor.page.goto(editUrl);
  await corner(admin.page, [test.users.editor.name], 'the admin, in the post');
  await corner(editor.page, [test.users.admin.name], 'the editor, in the post');
  for (const [who, answers] of [['admin', adminAnswers], ['editor', editorAnswers]]) {
    if (JSON.stringify(answers) !== JSON.stringify([`${room} 200`])) await fail(`${who}: channel-token answers ${JSON.stringify(answers)}, expected one 200 for ${room}`);
  }
  // What the editor's page does from now on: its room subscription, the disconnect events.
  const subscribed = await editor.page.evaluate((channel) => {
    const client = window.fanoutWP.client;
    const subscription = client.getSubscription(channel);
    window.fanoutTest = { subscription, disconnects: [] };
    client.on('disconnect', (event) => window.fanoutTest.disconnects.push(event));
    return subscription?.state;
  }, room);
  if (subscribed !== 'subscribed') await fail(`the editor's room subscription is ${subscribed}`);
  console.log('who is here: both in the room, each by a channel token');

  // The admin lowers the editor to contributor on the user's profile screen.
  const profile = await admin.context.newPage();
  await profile.goto(`${test.siteUrl}/wp-admin/user-edit.php?user_id=${test.users.editor.id}`);
  await profile.selectOption('#role', 'contributor');
  await Promise.all([
    profile.waitForURL(/user-edit\.php\?.*updated=1/, { timeout: WAIT_MS }).catch(async () => {
      const notice = await profile.$$eval('.notice, .error, #message', (nodes) => nodes.map((n) => n.textContent.trim()).join(' | '));
      await fail(`saving the role on user-edit.php: ${notice || 'no notice'} (${profile.url()})`);
    }),
    profile.click('#submit'),
  ]);
  console.log('the editor is a contributor now');

  await editor.page
    .waitForFunction(() => window.fanoutTest.disconnects.some((d) => d.code === 4004 && d.reason === 'role changed'), null, { timeout: WAIT_MS })
    .catch(async () => fail(`no disconnect (4004, role changed) on the editor's page: ${JSON.stringify(await editor.page.evaluate(() => window.fanoutTest.disconnects))}`));
  const ended = await editor.page
    .waitForFunction(() => window.fanoutTest.subscription.state === 'unsubscribed' && window.fanoutTest.subscription.error?.code, null, { timeout: WAIT_MS })
    .then((handle) => handle.jsonValue())
    .catch(async () => fail(`the editor's room subscription is still ${await editor.page.evaluate(() => window.fanoutTest.subscription.state)}`));
  if (ended !== 'forbidden') await fail(`the editor's room subscription ended with ${ended}, expected forbidden`);
  // (The answer is seen here a moment after the page has it.)
  for (let waited = 0; editorAnswers.at(-1) !== `${room} 403` && waited < WAIT_MS; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
  if (editorAnswers.at(-1) !== `${room} 403`) await fail(`the editor's channel-token answers: ${JSON.stringify(editorAnswers)}, expected a 403 last`);
  await editor.page
    .waitForFunction(() => window.fanoutWP.client.state === 'connected', null, { timeout: WAIT_MS })
    .catch(() => fail('the editor\'s page did not connect again with a new connection token'));
  await corner(editor.page, [], 'the lowered editor');
  console.log('lowered: disconnected, connected again, the room refused (channel token 403, subscription forbidden), the corner empty');

  await corner(admin.page, [], 'the admin, after the editor was lowered');
  await admin.page.screenshot({ path: join(test.screenshots, 'lowered-role.png') });
  console.log('who is here: the admin no longer sees the lowered editor');

  clearTimeout(deadline);
  await cleanup();
  console.log('OK');
} catch (error) {
  await fail(error.stack || String(error));
}
