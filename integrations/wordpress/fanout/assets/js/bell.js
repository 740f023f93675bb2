/**
 * The admin-bar bell: a count of unread notifications and a dropdown with the latest ones.
 * The node itself is rendered by PHP (FanoutWP\Assets::addBell); this fills it.
 */
import { NotificationStore, watchNotifications } from './notifications.js';

/** Only links to web pages: a `javascript:` URL in a notification must not become a link. */
function safeHref(url) {
  if (!url) return null;
  try {
    const parsed = new URL(url, window.location.href);
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed.href : null;
  } catch {
    return null;
  }
}

/**
 * "3 unread notifications", translated with plural forms through WordPress's `wp.i18n`
 * (the entry script depends on `wp-i18n`; translations come from
 * languages/fanout-<locale>-fanout-wp.json). English when `wp.i18n` is missing.
 */
export function unreadLabel(count, i18n = globalThis.wp?.i18n) {
  if (i18n) {
    /* translators: %d: number of unread notifications */
    return i18n.sprintf(i18n._n('%d unread notification', '%d unread notifications', count, 'fanout'), count);
  }
  return `${count} unread notification${count === 1 ? '' : 's'}`;
}

/**
 * @param {import('./fanout/index.js').Fanout} client
 * @param {{user: string, userChannel: string, broadcastChannels: string[], i18n: Record<string, string>}} config
 */
export function mountBell(client, config) {
  const node = document.getElementById('wp-admin-bar-fanout-notifications');
  if (!node) return; // no admin bar on this page
  const count = node.querySelector('.fanout-bell-count');
  const list = node.querySelector('.ab-submenu');
  // Per fanout identity (`wp2.7`): the sites of a subdirectory network share an origin, and so
  // `sessionStorage`.
  const store = new NotificationStore(window.sessionStorage ?? null, `fanout-wp-notifications-${config.user}`);

  function render() {
    count.textContent = String(store.unread);
    node.classList.toggle('fanout-bell-unread', store.unread > 0);
    node.setAttribute('aria-label', `${config.i18n.notifications}: ${unreadLabel(store.unread)}`);
    if (!list) return;
    list.replaceChildren();
    const items = store.items.length ? store.items : [{ id: '', title: config.i18n.empty, message: '', url: '', level: 'info' }];
    for (const item of items) {
      const li = document.createElement('li');
      li.className = `fanout-bell-item fanout-level-${item.level}`;
      const href = safeHref(item.url);
      const inner = document.createElement(href ? 'a' : 'div');
      inner.className = 'ab-item';
      if (href) inner.href = href;
      const title = document.createElement('strong');
      title.textContent = item.title;
      inner.append(title);
      if (item.message) {
        const message = document.createElement('span');
        message.className = 'fanout-bell-message';
        message.textContent = item.message;
        inner.append(message);
      }
      li.append(inner);
      list.append(li);
    }
  }

  // Opening the dropdown (hover or keyboard focus) marks everything read.
  const markRead = () => {
    if (store.unread > 0) {
      store.markRead();
      render();
    }
  };
  node.addEventListener('mouseenter', markRead);
  node.addEventListener('focusin', markRead);

  watchNotifications(client, config, store, render);
  client.on('state', (state) => {
    node.classList.toggle('fanout-bell-offline', state === 'disconnected');
  });
  render();
}
