import { trackPresence } from './fanout/index.js';

/**
 * Who is in a presence channel, as people: the members the client's presence helper keeps
 * (a `presence` reply and the `join`/`leave` events around it). Pure logic, no DOM, so that
 * it runs (and is tested) in Node as well.
 *
 * A user with two tabs is two members (two connections) but one person: `people()` lists
 * each user once, as long as one of their connections is there.
 */
export class PresenceRoster {
  constructor() {
    /** @type {Map<string, {user: string, info?: any}>} members by conn_id */
    this.members = new Map();
  }

  /** Replaces everything with a `presence` reply's members (after subscribing or reconnecting). */
  reset(members) {
    this.members.clear();
    for (const member of members || []) this.join(member);
  }

  /** A `join` event (or one member of a reply). */
  join(member) {
    if (member && member.conn_id && member.user !== undefined) {
      this.members.set(member.conn_id, { user: String(member.user), info: member.info });
    }
  }

  /** A `leave` event. */
  leave(member) {
    if (member && member.conn_id) this.members.delete(member.conn_id);
  }

  /**
   * The people present, each user once, optionally without one user (the viewer).
   * @param {string} [exceptUser]
   * @returns {{user: string, name: string, avatar: string|null}[]} sorted by name
   */
  people(exceptUser) {
    const byUser = new Map();
    for (const { user, info } of this.members.values()) {
      if (user === exceptUser || byUser.has(user)) continue;
      const name = info && typeof info.name === 'string' && info.name !== '' ? info.name : `#${user}`;
      const avatar = info && typeof info.avatar === 'string' ? info.avatar : null;
      byUser.set(user, { user, name, avatar });
    }
    return [...byUser.values()].sort((a, b) => a.name.localeCompare(b.name));
  }
}

/**
 * Keeps `roster` current for a presence channel through a fanout client, with the client's
 * presence helper (`trackPresence`): it subscribes, asks the gateway who is there after
 * every `subscribed` (the first and those after each reconnection), and applies the
 * `join`/`leave` events around it, including those that race the answer. `onChange()` runs
 * after each change. When the subscription ends for good (refused: no channel token for the
 * user; or taken away), the roster empties: nobody is shown from a room one is not in.
 *
 * @param {import('./fanout/index.js').Fanout} client
 * @param {string} channel e.g. `room:wp1.post-42`
 * @param {PresenceRoster} roster
 * @param {() => void} onChange
 * @returns {import('./fanout/index.js').PresenceTracker} (`close()` stops it)
 */
export function watchPresence(client, channel, roster, onChange) {
  let ended = false;
  const tracker = trackPresence(client, channel, {
    onChange(members) {
      roster.reset(ended ? [] : members);
      onChange();
    },
    onError(error) {
      // A connection that ended before the reply is no problem: the next `subscribed`, after
      // the reconnection, asks again. Nor is a client closed on purpose (the page unloading).
      if (error?.code !== 'disconnected' && error?.code !== 'closed') {
        console.warn('fanout: presence of', channel, 'unavailable:', error);
      }
    },
  });
  tracker.subscription.on('state', (state) => {
    if (state === 'unsubscribed' && !tracker.closed) {
      ended = true;
      roster.reset([]);
      onChange();
    }
  });
  return tracker;
}
