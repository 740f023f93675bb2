/**
 * The bell's label in a language with three plural forms, in Debian's chromium (headless,
 * through playwright-core): a user whose locale is pl_PL, the plugin with a Polish translation
 * of its scripts (languages/fanout-pl_PL-fanout-wp.json, from tests/fixtures), notifications
 * sent until the bell counts five; at each count the label must use Polish's form for it
 * (1: powiadomienie, 2-4: powiadomienia, 0 and 5+: powiadomień), through WordPress's wp.i18n.
 *
 * Run by tests/run.php with FANOUT_WP_TEST (JSON: {siteUrl, gatewayApi, password, login,
 * channel}) and FANOUT_WP_TEST_API_KEY. Prints progress lines, `OK` last; exits 1 on failure.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const test = JSON.parse(process.env.FANOUT_WP_TEST);
const WAIT_MS = 30_000;
const profile = mkdtempSync(join(tmpdir(), 'fanout-wp-plural-'));
let context = null;

async function fail(message) {
  console.log(`FAIL: ${message}`);
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
const deadline = setTimeout(() => fail('timed out after 90 s'), 90_000);

/** Polish: one, few (2-4, not 12-14), many. */
function polish(n) {
  if (n === 1) return `${n} nieprzeczytane powiadomienie`;
  if (n % 10 >= 2 && n % 10 <= 4 && (n % 100 < 10 || n % 100 >= 20)) return `${n} nieprzeczytane powiadomienia`;
  return `${n} nieprzeczytanych powiadomień`;
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (error) => console.log(`page error: ${error.message}`));
  await page.goto(`${test.siteUrl}/wp-login.php`);
  await page.fill('#user_login', test.login);
  await page.fill('#user_pass', test.password);
  await Promise.all([page.waitForURL(/\/wp-admin\//, { timeout: WAIT_MS }), page.click('#wp-submit')]);
  await page.goto(`${test.siteUrl}/wp-admin/profile.php`);
  await page
    .waitForFunction(() => window.fanoutWP?.client?.state === 'connected', null, { timeout: WAIT_MS })
    .catch(() => fail('the page\'s fanout client never connected'));

  const bell = page.locator('#wp-admin-bar-fanout-notifications');
  const seen = new Set();
  for (let sent = 0; ; sent++) {
    // The count and the label as one reading (other tests may notify this site meanwhile).
    const { count, label } = await bell.evaluate((node) => ({ count: Number(node.querySelector('.fanout-bell-count').textContent), label: node.getAttribute('aria-label') }));
    if (!label.endsWith(`: ${polish(count)}`)) await fail(`with ${count} unread the label is "${label}", expected "...: ${polish(count)}"`);
    seen.add(polish(count).replace(/^\d+ /, ''));
    if (count >= 5) break;
    if (sent > 10) await fail('the bell never reached five');
    const response = await fetch(`${test.gatewayApi}/api/publish`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${process.env.FANOUT_WP_TEST_API_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel: test.channel, data: { type: 'notification', data: { id: `plural-${sent}`, title: `Powiadomienie ${sent}` } } }),
    });
    if (!response.ok) await fail(`publishing answered HTTP ${response.status}`);
    await page
      .waitForFunction((n) => Number(document.querySelector('#wp-admin-bar-fanout-notifications .fanout-bell-count').textContent) > n, count, { timeout: WAIT_MS })
      .catch(() => fail(`the bell stayed at ${count}`));
  }
  if (seen.size !== 3) await fail(`not every plural form was shown: ${JSON.stringify([...seen])}`);
  console.log(`labels: ${[...seen].join(', ')}`);
  clearTimeout(deadline);
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  console.log('OK');
} catch (error) {
  await fail(error.stack || String(error));
}
