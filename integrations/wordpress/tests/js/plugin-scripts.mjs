/**
 * The plugin's browser modules with the real JS client (`fanout-client`, as build.sh copies
 * it into the plugin), run in Node 20 (`--experimental-websocket`) the way two browser tabs
 * run them: tokens from the WordPress REST routes with each user's logged-in cookie and
 * nonce, "who is here" on a post's room (with channel tokens: the connection token grants
 * no post room), the bell's notifications; a contributor who may not edit the post gets no
 * channel token, and the room's subscription ends.
 *
 * Run by tests/run.php with, in the environment:
 *   FANOUT_WP_PLUGIN_JS  the built plugin's assets/js folder
 *   FANOUT_WP_PLUGIN_VERSION  its version (the ?ver= of its imports)
 *   FANOUT_WP_TEST       JSON: {siteUrl, tokenUrl, channelTokenUrl, postRoomPrefix, room,
 *                        users: {admin|editor|contributor: {id (the fanout identity, wp1.7), channel, name, cookie, nonce}}}
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
const { fetchChannelToken, fetchToken } = await module('wp-token.js');

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
/** The channel-token requests and their answers: [nonce, channel, HTTP status]. */
const channelTokenRequests = [];
globalThis.fetch = async (url, init = {}) => {
  const nonce = init.headers?.['X-WP-Nonce'];
  const cookie = cookieByNonce.get(nonce);
  const response = await nodeFetch(url, cookie ? { ...init, headers: { ...init.headers, Cookie: cookie } } : init);
  if (url === test.channelTokenUrl) channelTokenRequests.push([nonce, JSON.parse(init.body).channel, response.status]);
  return response;
};
/** The statuses of a user's channel-token requests. */
const channelTokenAnswers = (user) => channelTokenRequests.filter(([nonce]) => nonce === user.nonce).map(([, channel, status]) => `${channel} ${status}`);

/** `sessionStorage` of a tab, which a tab opened next in its place keeps. */
function memoryStorage() {
  const items = new Map();
  return { getItem: (key) => items.get(key) ?? null, setItem: (key, value) => items.set(key, String(value)) };
}

/** A browser tab of one user, with the bell's and the presence indicator's logic. */
function tab(user, storage = memoryStorage()) {
  const getToken = () => fetchToken({ tokenUrl: test.tokenUrl, nonce: user.nonce });
  // As fanout-wp.js does: post rooms come with channel tokens.
  const getChannelToken = (channel) => fetchChannelToken({ channelTokenUrl: test.channelTokenUrl, postRoomPrefix: test.postRoomPrefix, nonce: user.nonce }, channel);
  const client = new Fanout({ url: test.url, getToken, getChannelToken, transport: 'auto' });
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
for (const user of [test.users.admin, test.users.editor]) {
  const answers = channelTokenAnswers(user);
  if (answers.length !== 1 || answers[0] !== `${test.room} 200`) {
    console.log('FAIL:', user.id, 'asked for channel tokens:', JSON.stringify(answers), '(expected one, for the room)');
    process.exit(1);
  }
}
console.log('presence: each sees the other, in the room by a channel token');

// A contributor may not edit the admin's post: the gateway refuses the room, the site gives
// no channel token (403), the subscription ends with the refusal and nobody is shown.
const contributor = tab(test.users.contributor);
const refusal = await contributor.client.getSubscription(test.room).ready().then(() => null, (error) => error);
if (refusal?.code !== 'forbidden' || contributor.roster.members.size !== 0) {
  console.log('FAIL: the contributor\'s room subscription:', refusal ? `${refusal.code} ${refusal.message}` : 'subscribed', 'members', contributor.roster.members.size);
  process.exit(1);
}
const contributorAnswers = channelTokenAnswers(test.users.contributor);
if (contributorAnswers.length !== 1 || contributorAnswers[0] !== `${test.room} 403`) {
  console.log('FAIL: the contributor asked for channel tokens:', JSON.stringify(contributorAnswers), '(expected one, refused)');
  process.exit(1);
}
// The others never saw it in the room.
if (names(admin, test.users.admin.id).includes(test.users.contributor.name)) {
  console.log('FAIL: the admin sees the contributor in the room');
  process.exit(1);
}
contributor.client.close();
console.log('presence: a contributor gets no channel token, its room subscription ends (forbidden)');

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
