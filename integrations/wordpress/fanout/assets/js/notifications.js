/**
 * The bell's list: the latest notifications and how many are unread, kept in
 * `sessionStorage` so that they survive moving between admin pages in the same tab.
 * Pure logic apart from the storage object handed in, so that it runs in Node as well.
 */

/** How many notifications the list keeps. */
export const MAX_ITEMS = 20;

/** Event types the bell shows (docs/events.md "Notifications"). */
const SHOWN_TYPES = new Set(['notification', 'system_announcement']);

export class NotificationStore {
  /**
   * @param {Storage|null} storage `window.sessionStorage`, or null to keep nothing.
   * @param {string} key the storage key, per user (two users may share a browser).
   */
  constructor(storage, key) {
    this.storage = storage;
    this.key = key;
    this.items = [];
    this.unread = 0;
    this.load();
  }

  load() {
    if (!this.storage) return;
    try {
      const saved = JSON.parse(this.storage.getItem(this.key) || 'null');
      if (saved && Array.isArray(saved.items)) {
        this.items = saved.items.slice(0, MAX_ITEMS);
        this.unread = Math.min(Number(saved.unread) || 0, this.items.length);
      }
    } catch {
      // A corrupt entry (another script, a quota error mid-write) just starts empty.
    }
  }

  save() {
    if (!this.storage) return;
    try {
      this.storage.setItem(this.key, JSON.stringify({ items: this.items, unread: this.unread }));
    } catch {
      // Storage full or disabled: the list still works for this page.
    }
  }

  /**
   * Takes one message payload. Returns the new item, or null when it is not a
   * notification or was seen already (history recovery replays messages after a reconnect,
   * and a broadcast may repeat one sent to the user's channel).
   *
   * @param {any} event the message's `data`, e.g. `{"type":"notification","data":{...}}`
   */
  add(event) {
    if (!event || typeof event !== 'object' || !SHOWN_TYPES.has(event.type)) return null;
    const data = event.data && typeof event.data === 'object' ? event.data : {};
    const title = typeof data.title === 'string' ? data.title : (typeof data.message === 'string' ? data.message : '');
    if (title === '') return null;
    const id = typeof data.id === 'string' && data.id !== '' ? data.id : `${event.type}:${title}:${event.timestamp ?? ''}`;
    if (this.items.some((item) => item.id === id)) return null;
    const item = {
      id,
      title,
      message: typeof data.message === 'string' && data.message !== title ? data.message : '',
      url: typeof data.url === 'string' ? data.url : '',
      level: ['info', 'success', 'warning', 'error'].includes(data.level) ? data.level : 'info',
    };
    this.items.unshift(item);
    this.items.length = Math.min(this.items.length, MAX_ITEMS);
    this.unread = Math.min(this.unread + 1, this.items.length);
    this.save();
    return item;
  }

  markRead() {
    this.unread = 0;
    this.save();
  }
}

/**
 * Feeds `store` with what arrives on the user's own channel and on `broadcast`; `onChange()`
 * runs for each new item.
 *
 * @param {import('./fanout/index.js').Fanout} client
 * @param {string} userId the WordPress user id
 * @param {NotificationStore} store
 * @param {(item: object) => void} onChange
 */
export function watchNotifications(client, userId, store, onChange) {
  const onMessage = (data) => {
    const item = store.add(data);
    if (item) onChange(item);
  };
  client.subscribe(`user:${userId}`, { onMessage });
  client.subscribe('broadcast', { onMessage });
}
