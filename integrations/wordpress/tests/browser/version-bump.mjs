/**
 * After a plugin update, a browser loads only the new version's modules, in Debian's chromium
 * (headless, through playwright-core). The test site serves the plugin's files with a year of
 * caching (support/router.php, as a CDN or an nginx `expires max` would), so a module whose
 * URL did not change would come from the cache, old, next to new ones.
 *
 * A user opens the dashboard with version `from` installed; the plugin folder is then replaced
 * by a build of version `to` (`build.sh --version`), and the page loaded again in the same
 * browser: every module it loads (Resource Timing, cache hits included) must carry `ver=<to>`,
 * the same modules as before, none of `from`.
 *
 * Run by tests/run.php with FANOUT_WP_TEST (JSON: {siteUrl, password, login, from, to,
 * pluginDir, newBuild}). Prints progress lines, `OK` last; exits 1 with the reason on failure.
 */
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const test = JSON.parse(process.env.FANOUT_WP_TEST);
const WAIT_MS = 30_000;
const profile = mkdtempSync(join(tmpdir(), 'fanout-wp-bump-'));
let context = null;

async function fail(message) {
  console.log(`FAIL: ${message}`);
  await cleanup();
  process.exit(1);
}

async function cleanup() {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

const deadline = setTimeout(() => fail('timed out after 90 s'), 90_000);

/** The plugin's scripts the page loaded, from the cache or not: `{path: ver}`. */
async function modules(page) {
  await page
    .waitForFunction(() => window.fanoutWP?.client?.state === 'connected', null, { timeout: WAIT_MS })
    .catch(() => fail('the page\'s fanout client never connected'));
  const names = await page.evaluate(() => performance.getEntriesByType('resource').map((entry) => entry.name));
  const loaded = {};
  for (const name of names) {
    const url = new URL(name);
    if (!url.pathname.includes('/plugins/fanout/assets/js/')) continue;
    const path = url.pathname.slice(url.pathname.indexOf('/assets/js/') + '/assets/js/'.length);
    if (path in loaded && loaded[path] !== url.searchParams.get('ver')) await fail(`${path} loaded twice, as ${loaded[path]} and ${url.searchParams.get('ver')}`);
    loaded[path] = url.searchParams.get('ver');
  }
  return loaded;
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

  const cached = await page.request.get(`${test.siteUrl}/wp-content/plugins/fanout/assets/js/bell.js?ver=${test.from}`);
  if (!/max-age=\d{6,}/.test(cached.headers()['cache-control'] ?? '')) await fail(`the plugin's files are not served for long caching: ${cached.headers()['cache-control']}`);

  await page.goto(`${test.siteUrl}/wp-admin/`);
  const before = await modules(page);
  const paths = Object.keys(before).sort();
  for (const required of ['fanout-wp.js', 'bell.js', 'notifications.js', 'wp-token.js', 'fanout/index.js', 'fanout/client.js']) {
    if (!paths.includes(required)) await fail(`${required} was not loaded: ${JSON.stringify(before)}`);
  }
  const unversioned = paths.filter((path) => before[path] !== test.from);
  if (unversioned.length > 0) await fail(`modules without ver=${test.from}: ${JSON.stringify(before)}`);
  console.log(`version ${test.from}: ${paths.length} modules, each with ?ver=${test.from}`);

  // The update: the plugin's folder replaced by the new build, as the upgrader does.
  rmSync(test.pluginDir, { recursive: true, force: true });
  cpSync(test.newBuild, test.pluginDir, { recursive: true });

  await page.goto(`${test.siteUrl}/wp-admin/`);
  const after = await modules(page);
  if ((await page.evaluate(() => window.fanoutWP.version)) !== test.to) await fail('the page did not get the new version');
  const stale = Object.entries(after).filter(([, ver]) => ver !== test.to);
  if (stale.length > 0) await fail(`after the update, modules of another version: ${JSON.stringify(stale)}`);
  if (JSON.stringify(Object.keys(after).sort()) !== JSON.stringify(paths)) await fail(`other modules after the update: ${JSON.stringify(Object.keys(after))}`);
  console.log(`version ${test.to}: the same ${paths.length} modules, each with ?ver=${test.to}`);

  clearTimeout(deadline);
  await cleanup();
  console.log('OK');
} catch (error) {
  await fail(error.stack || String(error));
}
