// Who is who on the viewer page: the viewer's own name and avatar, and the
// list of who is in the room with who is talking.
//
// Identity: a display name (at most NAME_MAX characters) and an avatar from
// AVATARS (the files avatars/<id>.svg next to the page; nothing is fetched
// from elsewhere), remembered in localStorage ("broadcast-viewer-name",
// "broadcast-viewer-avatar"). On Janus both travel as ONE display string,
// the AudioBridge `display` and the TextRoom `display` alike:
//
//     "[<avatar id>] <name>"        e.g. "[fox] Ann"
//
// parseDisplay() reads it back; a display in any other form (another client,
// a SIP/RTP gateway) is shown as it is, with the "guest" avatar.
//
// The Pi's name (PI.name) and avatar ("pi") are the Pi's alone: nobody's
// display can give them (the "pi" avatar is not in AVATARS), a name that
// imitates the Pi's (imitatesPi) is shown with the "guest" avatar and
// " (not the Pi)" after it, and the viewer cannot take one. The page draws
// PI only for what a viewer cannot send: the broadcaster's entry here (the
// broadcast is live) and the chat's announcements (chat.js; they need the
// room's secret, which the agent holds).
//
// The list (#people) holds one <li> per AudioBridge participant, with
// data-id, data-name, data-avatar, data-talking="true|false", data-muted and data-self
// on the viewer's own entry, plus a first entry for the Pi (the broadcaster
// is not an AudioBridge participant: it sends to the mountpoint and hears
// the room through a forwarder). Names are set with textContent only.
//
// Plain ES2017, no build step; defines window.BroadcastPeople.
(function () {
  'use strict';

  const AVATARS = ['fox', 'cat', 'owl', 'frog', 'bear', 'robot'];
  const NAME_MAX = 40;
  const NAME_KEY = 'broadcast-viewer-name';
  const AVATAR_KEY = 'broadcast-viewer-avatar';
  /** Who the Pi is drawn as, and only the Pi. */
  const PI = Object.freeze({ name: 'The Pi (broadcaster)', avatar: 'pi' });
  // Cyrillic and Greek letters that look like Latin ones (after
  // lower-casing), and what looks like an i ("The P1", "The Pl").
  const LOOKALIKES = {
    'а': 'a', 'е': 'e', 'і': 'i', 'ӏ': 'i', 'о': 'o', 'р': 'p', 'т': 't', 'н': 'h', 'с': 'c', 'ѕ': 's',
    'α': 'a', 'ε': 'e', 'η': 'h', 'ι': 'i', 'ο': 'o', 'ρ': 'p', 'τ': 't', 'ı': 'i', '1': 'i', 'l': 'i',
  };

  // Invisible characters that reorder or hide text (bidi controls, zero-width
  // ones): a name with "\u202e" could show reversed text as "The Pi".
  const INVISIBLE = /[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]/g;

  function cleanName(name) {
    return String(name || '').replace(INVISIBLE, '').replace(/\s+/g, ' ').trim().slice(0, NAME_MAX);
  }

  /**
   * Whether `name` could pass for the Pi's: read blind to case, accents,
   * spacing and look-alike letters, it has the word "pi" or "broadcaster"
   * in it, or is "pi" or "the pi" spaced out ("T h e P i").
   */
  function imitatesPi(name) {
    const plain = String(name || '').normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
    const folded = Array.from(plain, (c) => LOOKALIKES[c] || c).join('').replace(/[^a-z0-9]+/g, ' ');
    const words = folded.split(' ').filter(Boolean);
    const joined = words.join('');
    return words.includes('pi') || words.includes('thepi') || joined.includes('broadcaster') ||
      joined === 'pi' || joined === 'thepi';
  }

  // The viewer's own name from `name`: '' when it is empty or the Pi's.
  function ownName(name) {
    const n = cleanName(name);
    return imitatesPi(n) ? '' : n;
  }

  /** The display string Janus carries for `identity` ({ name, avatar }). */
  function encodeDisplay(identity) {
    return '[' + identity.avatar + '] ' + identity.name;
  }

  /**
   * { name, avatar } from a display string of any form; never the Pi's
   * (a name imitating it is marked " (not the Pi)", with `imitation` set).
   */
  function parseDisplay(display) {
    const m = /^\[([a-z]+)\] ([\s\S]+)$/.exec(display || '');
    const who = m && AVATARS.includes(m[1]) ? { avatar: m[1], name: cleanName(m[2]) || 'viewer' }
      : { avatar: 'guest', name: cleanName(display) || 'guest' };
    if (!imitatesPi(who.name)) return who;
    return { avatar: 'guest', name: who.name + ' (not the Pi)', imitation: true };
  }

  /** A new <img> of avatar `id` (one of AVATARS, "guest" or "pi"). */
  function avatarImage(id) {
    const img = document.createElement('img');
    img.className = 'avatar';
    img.src = 'avatars/' + id + '.svg';
    img.alt = '';
    img.width = 28;
    img.height = 28;
    return img;
  }

  // ---- the viewer's identity ------------------------------------------------

  // The remembered identity (`?name=` before the remembered name); what is
  // not remembered yet is made up at random and remembered at once, so the
  // next visit is the same person.
  function storedIdentity(nameParam) {
    let avatar = null;
    let name = null;
    try {
      avatar = localStorage.getItem(AVATAR_KEY);
      name = localStorage.getItem(NAME_KEY);
    } catch (e) { /* storage disabled: a fresh identity each visit */ }
    const identity = {
      name: ownName(nameParam) || ownName(name) || 'viewer-' + Math.floor(Math.random() * 9000 + 1000),
      avatar: AVATARS.includes(avatar) ? avatar : AVATARS[Math.floor(Math.random() * AVATARS.length)],
    };
    if (!ownName(name) && !ownName(nameParam)) remember(NAME_KEY, identity.name);
    if (avatar !== identity.avatar) remember(AVATAR_KEY, identity.avatar);
    return identity;
  }

  function remember(key, value) {
    try { localStorage.setItem(key, value); } catch (e) { /* not remembered, still used */ }
  }

  function saveIdentity(identity) {
    remember(NAME_KEY, identity.name);
    remember(AVATAR_KEY, identity.avatar);
  }

  /**
   * The name input and avatar picker: fills them from storage (or `?name=`),
   * and calls onChange(identity) after each change the viewer makes. A name
   * that imitates the Pi's is refused: the input goes back to the name in
   * use and says why.
   */
  function identityControls(nameInput, picker, nameParam, onChange) {
    const identity = storedIdentity(nameParam);
    nameInput.maxLength = NAME_MAX;
    nameInput.value = identity.name;
    const buttons = AVATARS.map((id) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'avatar-choice';
      b.dataset.avatar = id;
      b.title = id;
      b.setAttribute('role', 'radio');
      b.setAttribute('aria-label', id);
      b.appendChild(avatarImage(id));
      b.addEventListener('click', () => { identity.avatar = id; changed(); });
      picker.appendChild(b);
      return b;
    });
    const show = () => {
      for (const b of buttons) b.setAttribute('aria-checked', String(b.dataset.avatar === identity.avatar));
    };
    const changed = () => {
      if (imitatesPi(cleanName(nameInput.value))) return refuse();
      identity.name = cleanName(nameInput.value) || identity.name;
      nameInput.value = identity.name;
      saveIdentity(identity);
      show();
      onChange(identity);
    };
    // The name in use stays; the input says why until the viewer types again.
    const refuse = () => {
      nameInput.value = identity.name;
      nameInput.setCustomValidity('That name is the Pi\'s; choose another.');
      nameInput.reportValidity();
    };
    nameInput.addEventListener('input', () => nameInput.setCustomValidity(''));
    nameInput.addEventListener('change', changed);
    show();
    return identity;
  }

  // ---- who is in the room ----------------------------------------------------

  /**
   * The participant list in `listEl`. Fed with AudioBridge events: update()
   * with a `participants` array, remove(id), talking(id, on), self(id,
   * display), clear(); broadcaster(on) shows or hides the Pi's entry.
   */
  function participantList(listEl) {
    const entries = new Map(); // participant id -> <li>
    let selfId = null;
    let piEntry = null;

    function entry(id) {
      let li = entries.get(id);
      if (!li) {
        li = document.createElement('li');
        li.dataset.id = String(id);
        li.dataset.talking = 'false';
        li.appendChild(avatarImage('guest'));
        const name = document.createElement('span');
        name.className = 'name';
        li.appendChild(name);
        const talk = document.createElement('span');
        talk.className = 'talk-label';
        li.appendChild(talk);
        entries.set(id, li);
        listEl.appendChild(li);
      }
      return li;
    }

    function show(li) {
      const on = li.dataset.heard === 'true' && li.dataset.muted !== 'true';
      li.dataset.talking = String(on);
      li.querySelector('.talk-label').textContent = on ? 'talking' : '';
    }

    function fill(li, display, extra) {
      const who = parseDisplay(display);
      li.dataset.name = who.name;
      li.dataset.avatar = who.avatar;
      if (who.imitation) li.dataset.imitation = 'true';
      else delete li.dataset.imitation;
      li.querySelector('img').src = 'avatars/' + who.avatar + '.svg';
      li.querySelector('.name').textContent = who.name + (extra || '');
    }

    return {
      update(list) {
        for (const p of list) {
          const li = entry(p.id);
          // A plain-RTP participant (a gateway) may come without a display.
          fill(li, p.display || 'RTP participant ' + p.id, p.id === selfId ? ' (you)' : '');
          if (typeof p.muted === 'boolean') this.muted(p.id, p.muted);
          if (typeof p.talking === 'boolean') this.talking(p.id, p.talking);
        }
      },
      self(id, display) {
        selfId = id;
        const li = entry(id);
        li.dataset.self = 'true';
        fill(li, display, ' (you)');
      },
      remove(id) {
        const li = entries.get(id);
        if (li) li.remove();
        entries.delete(id);
      },
      talking(id, on) {
        const li = entries.get(id);
        if (!li) return;
        li.dataset.heard = String(on);
        show(li);
      },
      // Janus drops a muted participant's audio before it measures it, so
      // its last `talking` stands while muted: a muted one is shown silent.
      muted(id, on) {
        const li = entries.get(id);
        if (!li) return;
        li.dataset.muted = String(on);
        show(li);
      },
      clear() {
        for (const li of entries.values()) li.remove();
        entries.clear();
        selfId = null;
      },
      broadcaster(on) {
        if (on && !piEntry) {
          piEntry = document.createElement('li');
          piEntry.dataset.id = 'pi';
          piEntry.dataset.name = PI.name;
          piEntry.dataset.avatar = PI.avatar;
          piEntry.appendChild(avatarImage(PI.avatar));
          const name = document.createElement('span');
          name.className = 'name';
          name.textContent = PI.name;
          piEntry.appendChild(name);
          listEl.insertBefore(piEntry, listEl.firstChild);
        } else if (!on && piEntry) {
          piEntry.remove();
          piEntry = null;
        }
      },
    };
  }

  window.BroadcastPeople = {
    AVATARS, NAME_MAX, PI, encodeDisplay, parseDisplay, avatarImage, identityControls, participantList,
  };
})();
