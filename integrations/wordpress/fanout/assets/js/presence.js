/**
 * "Who is here" on a post edit screen: everyone else editing the same post, as avatars in a
 * corner of the screen. Every editor subscribes to the post's room (`room:wp1.post-<id>`),
 * with a channel token the client gets from the site for a post the user can edit (the
 * connection token grants no post room; fanout-wp.js gives the client `getChannelToken`).
 * The gateway keeps the room's presence (it must be configured with presence and join/leave
 * events for the `room` namespace, see docs/wordpress.md). When the room is refused or taken
 * away (the user may no longer edit the post), the corner empties.
 */
import { PresenceRoster, watchPresence } from './roster.js';

/**
 * @param {import('./fanout/index.js').Fanout} client
 * @param {{user: string, postRoom: string, i18n: Record<string, string>}} config
 */
export function mountPresence(client, config) {
  const channel = config.postRoom;
  const roster = new PresenceRoster();
  const box = document.createElement('div');
  box.className = 'fanout-presence';
  box.setAttribute('aria-live', 'polite');
  box.hidden = true;
  document.body.append(box);

  function render() {
    const people = roster.people(config.user);
    box.hidden = people.length === 0;
    box.replaceChildren();
    if (people.length === 0) return;
    const label = document.createElement('span');
    label.className = 'fanout-presence-label';
    label.textContent = config.i18n.here;
    box.append(label);
    for (const person of people) {
      box.append(person.avatar ? avatar(person) : initial(person));
    }
  }

  watchPresence(client, channel, roster, render);
}

/** A person as the first letter of their name, in a circle. */
function initial(person) {
  const badge = document.createElement('span');
  badge.className = 'fanout-presence-person';
  badge.title = person.name;
  badge.textContent = person.name.slice(0, 1).toUpperCase();
  return badge;
}

/** A person as their avatar; the initial instead when the image cannot load (e.g. Gravatar unreachable). */
function avatar(person) {
  const image = document.createElement('img');
  image.className = 'fanout-presence-person';
  image.title = person.name;
  image.alt = person.name;
  image.width = 32;
  image.height = 32;
  image.addEventListener('error', () => image.replaceWith(initial(person)), { once: true });
  image.src = person.avatar;
  return image;
}
