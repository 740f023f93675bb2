/**
 * The bell's list: the latest notifications and how many are unread, kept in
 * `sessionStorage` so that they survive moving between admin pages in the same tab, with
 * the position reached on the user's channel, so that the next page recovers what was
 * published while the browser was loading it (the `user:` namespace keeps history).
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
    /** @type {{epoch: string, offset: number}|null} the last position on `user:<id>` */
    this.position = null;
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
      if (saved && saved.position && typeof saved.position.epoch === 'string' && Number.isInteger(saved.position.offset)) {
        this.position = { epoch: saved.position.epoch, offset: saved.position.offset };
      }
    } catch {
      // A corrupt entry (another script, a quota error mid-write) just starts empty.
    }
  }

  save() {
    if (!this.storage) return;
    try {
      this.storage.setItem(this.key, JSON.stringify({ items: this.items, unread: this.unread, position: this.position }));
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

  /** Remembers the position on the user's channel (from a message or a reload). */
  setPosition(epoch, offset) {
    if (typeof epoch === 'string' && Number.isInteger(offset)) {
      this.position = { epoch, offset };
      this.save();
    }
  }
}

/**
 * Feeds `store` with what arrives on the user's own channel and on the broadcast channels
 * (the site's, and the gateway's `broadcast`); `onChange()` runs for each new item. The
 * user's channel is subscribed from the store's position, so that messages published between
 * two pages are recovered.
 *
 * @param {import('./fanout/index.js').Fanout} client
 * @param {{userChannel: string, broadcastChannels: string[]}} channels e.g.
 *   `{userChannel: "user:wp1.7", broadcastChannels: ["user:wp1", "broadcast"]}`
 * @param {NotificationStore} store
 * @param {(item: object) => void} onChange
 */
export function watchNotifications(client, channels, store, onChange) {
  const { userChannel } = channels;
  const broadcasts = (channels.broadcastChannels || []).filter((c) => c !== userChannel);
  const onMessage = (data, meta) => {
    const item = store.add(data);
    if (meta && meta.channel === userChannel) store.setPosition(meta.epoch, meta.offset);
    if (item) onChange(item);
  };
  client.subscribe(userChannel, {
    since: store.position ?? undefined,
    onMessage,
    // The first subscription, or messages lost beyond the history: continue from here.
    onReload: (info) => store.setPosition(info.epoch, info.offset),
  });
  for (const channel of broadcasts) client.subscribe(channel, { onMessage });
}
