/**
 * The plugin's browser modules with the real JS client (`fanout-client`, as build.sh copies
 * it into the plugin), run in Node 20 (`--experimental-websocket`) the way two browser tabs
 * run them: tokens from the WordPress REST route with each user's logged-in cookie and
 * nonce, "who is here" on a post's room, the bell's notifications.
 *
 * Run by tests/run.php with, in the environment:
 *   FANOUT_WP_PLUGIN_JS  the built plugin's assets/js folder
 *   FANOUT_WP_PLUGIN_VERSION  its version (the ?ver= of its imports)
 *   FANOUT_WP_TEST       JSON: {siteUrl, tokenUrl, room, users: {admin|editor: {id (the fanout identity, wp1.7), channel, name, cookie, nonce}}}
 * Prints progress lines; exits 0 when every step passed, 1 with the reason otherwise.
 */
import { pathToFileURL } from 'node:url';

const pluginJs = process.env.FANOUT_WP_PLUGIN_JS;
const test = JSON.parse(process.env.FANOUT_WP_TEST);
// The URLs the plugin's own imports use (build.sh writes ?ver=<version> into them): one
// instance of each module, as in a browser.
const module = (name) => import(`${pathToFileURL(`${pluginJs}/${name}`).href}?ver=${process.env.FANOUT_WP_PLUGIN_VERSION}`);
const { Fanout } = await module('fanout/index.js');
const { PresenceRoster, watchPresence } = await module('roster.js');
const { NotificationStore, watchNotifications } = await module('notifications.js');
const { fetchToken } = await module('wp-token.js');

const deadline = setTimeout(() => {
  // What each tab's roster holds, to tell a missing event from a stale member.
  const rosters = tabs.map((t) => [...t.roster.members.entries()]);
  console.log('FAIL: timed out; rosters (conn_id, member):', JSON.stringify(rosters));
  process.exit(1);
}, 30_000);
const tabs = [];

/** Resolves when `ready()` holds, checked after every change reported through `onChange`. */
function waiter() {
  let pending = [];
  return {
    changed() {
      pending = pending.filter(({ ready, resolve }) => !(ready() && (resolve(), true)));
    },
    until(ready) {
      return new Promise((resolve) => {
        if (ready()) resolve();
        else pending.push({ ready, resolve });
      });
    },
  };
}

/**
 * Node has no cookie jar: the page's `fetch` gets the cookie of the tab's user, as a browser
 * sends it by itself for `credentials: 'same-origin'`. Tabs are told apart by their nonce.
 */
const nodeFetch = globalThis.fetch;
const cookieByNonce = new Map(Object.values(test.users).map((user) => [user.nonce, user.cookie]));
globalThis.fetch = (url, init = {}) => {
  const cookie = cookieByNonce.get(init.headers?.['X-WP-Nonce']);
  return nodeFetch(url, cookie ? { ...init, headers: { ...init.headers, Cookie: cookie } } : init);
};

/** `sessionStorage` of a tab, which a tab opened next in its place keeps. */
function memoryStorage() {
  const items = new Map();
  return { getItem: (key) => items.get(key) ?? null, setItem: (key, value) => items.set(key, String(value)) };
}

/** A browser tab of one user, with the bell's and the presence indicator's logic. */
function tab(user, storage = memoryStorage()) {
  const getToken = () => fetchToken({ tokenUrl: test.tokenUrl, nonce: user.nonce });
  const client = new Fanout({ url: test.url, getToken, transport: 'auto' });
  const roster = new PresenceRoster();
  const store = new NotificationStore(storage, `fanout-wp-notifications-${user.id}`);
  const changes = waiter();
  watchPresence(client, test.room, roster, changes.changed);
  watchNotifications(client, { userChannel: user.channel, broadcastChannels: ['user:wp1', 'broadcast'] }, store, changes.changed);
  client.connect();
  const t = { client, roster, store, changes, storage };
  tabs.push(t);
  return t;
}

const admin = tab(test.users.admin);
const editor = tab(test.users.editor);
const names = (t, self) => t.roster.people(self).map((p) => p.name);

await admin.changes.until(() => names(admin, test.users.admin.id).includes(test.users.editor.name));
await editor.changes.until(() => names(editor, test.users.editor.id).includes(test.users.admin.name));
const seen = admin.roster.people(test.users.admin.id)[0];
if (!seen.avatar || !seen.avatar.startsWith('http')) {
  console.log('FAIL: no avatar in presence:', JSON.stringify(seen));
  process.exit(1);
}
console.log('presence: each sees the other');

/** The admin publishes a post in the browser (the REST API, as the block editor does). */
async function publishPost(title) {
  const response = await fetch(`${test.siteUrl}/?rest_route=/wp/v2/posts`, {
    method: 'POST',
    headers: { 'X-WP-Nonce': test.users.admin.nonce, 'Content-Type': 'application/json' },
    body: JSON.stringify({ title, status: 'publish' }),
  });
  if (response.status !== 201) {
    console.log('FAIL: creating the post answered HTTP', response.status, await response.text());
    process.exit(1);
  }
}

await publishPost('From the browser');
await admin.changes.until(() => admin.store.items.some((item) => item.title === 'Your post “From the browser” is published'));
await editor.changes.until(() => editor.store.items.some((item) => item.title === 'New: From the browser'));
// The site's broadcast and the author's channel are two channels: either may arrive first.
await admin.changes.until(() => admin.store.items.some((item) => item.title === 'New: From the browser'));
if (admin.store.unread !== 2 || admin.store.items.length !== 2) {
  console.log('FAIL: the admin bell has', JSON.stringify(admin.store), '(expected the own and the broadcast notification)');
  process.exit(1);
}
console.log('notifications: the author and everyone got theirs');

// The editor leaves the post: the admin sees it.
editor.client.close();
await admin.changes.until(() => !names(admin, test.users.admin.id).includes(test.users.editor.name));
console.log('presence: the editor left');

// The admin goes to another page: a notification published while the next page loads is
// recovered from the user channel's history, from the position the bell kept.
admin.client.close();
await publishPost('While away');
const next = tab(test.users.admin, admin.storage);
await next.changes.until(() => next.store.items.some((item) => item.title === 'Your post “While away” is published'));
if (next.store.items.length !== 3 || next.store.unread !== 3) {
  console.log('FAIL: after the page change the bell has', JSON.stringify(next.store.items.map((i) => i.title)), 'unread', next.store.unread);
  process.exit(1);
}
console.log('notifications: recovered across a page change');

// Close once the new tab knows who is here (the admin itself), as a page would be left.
await next.changes.until(() => next.roster.members.size > 0);
next.client.close();
clearTimeout(deadline);
console.log('OK');
