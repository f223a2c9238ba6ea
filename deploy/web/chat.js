// The viewer page's chat panel: a Janus TextRoom room with the broadcast's
// id (the agent makes it with the room, `[room] chat`), reached over a
// WebRTC data channel of its own handle.
//
// viewer.js calls start() when it is in the room (the Janus session is up
// and the broadcast there) and stop() when it leaves it. start() attaches the
// TextRoom plugin, answers its offer (a data channel only) and joins the
// room with a random username and the viewer's display ("[avatar] name",
// see people.js); Janus replays the room's last messages (its `history`)
// before it confirms the join. A connection that fails (attach refused, a
// setup error, WebRTC error, the PeerConnection hung up) is redone after
// RESTART_MIN_MS, doubling up to RESTART_MAX_MS while it keeps failing. The
// panel (#chat) shows one of these states in data-state and window.chatState:
//   "off"          not connected (the page is connecting, or has no room),
//   "connecting"   joining; also while the room is not there yet (the agent
//                  makes the chat last): the join is retried,
//   "open"         joined: messages can be sent,
//   "closed"       the broadcast (and with it the chat room) is closed,
//   "unavailable"  this server or broadcast has no chat (no TextRoom plugin,
//                  no chat room after a while, a PIN refused); still retried
//                  (the join, or the whole connection) until stop().
// Every name and message is shown with textContent, never parsed as HTML;
// messages are cut to MESSAGE_MAX characters, and the panel keeps the last
// LOG_MAX of them.
//
// Who speaks: a message shows its sender's display (people.js parseDisplay,
// which never gives the Pi's name or avatar); the Pi (People.PI) speaks
// only in announcements, which Janus sends for whoever has the room's
// secret (the agent) and never for a participant. A whisper (a message
// Janus marks `whisper`: sent to this viewer alone) is shown with
// data-private="true" and "to you (private)" after the name, never as a
// public message.
//
// Plain ES2017, no build step; needs janus.js and people.js; defines
// window.BroadcastChat.
(function () {
  'use strict';

  const MESSAGE_MAX = 500;   // characters of one message, sent and shown
  const LOG_MAX = 200;       // messages kept in the panel
  const JOIN_RETRY_MS = 500; // while the chat room is not there (yet)
  const NO_CHAT_AFTER = 10;  // failed joins before saying the broadcast has no chat
  const RESTART_MIN_MS = 1000;  // a failed connection is redone after this,
  const RESTART_MAX_MS = 30000; // doubled per failure up to this

  // TextRoom error codes (over the data channel).
  const NO_SUCH_ROOM = 417;
  const UNAUTHORIZED = 419;
  const USERNAME_EXISTS = 420;

  const People = window.BroadcastPeople;

  /**
   * The panel in `els` ({ panel, log, form, input, status }). Returns
   * { start(janus, room, pin, display), stop(), rename(display),
   *   pageState(state) }.
   */
  function create(els) {
    let target = null;         // { janus, room, pin, display } between start() and stop()
    let conn = null;           // the current connection (or the pending restart's), or null
    let restartMs = RESTART_MIN_MS;
    const names = new Map();   // username -> display, of those in the room
    const live = (c) => conn === c && !c.failed; // false once `c` is stopped or failed

    function setState(state, text) {
      window.chatState = state;
      els.panel.dataset.state = state;
      els.status.textContent = text;
      const open = state === 'open';
      els.input.disabled = !open;
      els.form.querySelector('button').disabled = !open;
    }

    function start(janus, room, pin, display) {
      stop();
      target = { janus, room, pin, display };
      restartMs = RESTART_MIN_MS;
      connect();
    }

    // A new connection to `target`.
    function connect() {
      const c = {
        room: target.room, pin: target.pin, display: target.display, handle: null, joined: false,
        failures: 0, timer: null, username: 'v' + Math.random().toString(36).slice(2, 12), seq: 0, pending: {},
        failed: false,
      };
      conn = c;
      const current = () => live(c);
      setState('connecting', 'chat: connecting…');
      target.janus.attach({
        plugin: 'janus.plugin.textroom',
        success: (handle) => {
          if (!current()) { handle.detach(); return; }
          c.handle = handle;
          handle.send({ message: { request: 'setup' } });
        },
        // No TextRoom on this Janus: the rest of the page works without it.
        error: (err) => { if (current()) fail(c, 'unavailable', 'this server has no chat (' + err + ')'); },
        onmessage: (msg, jsep) => {
          if (!current()) return;
          if (msg.error) fail(c, 'unavailable', msg.error);
          else if (jsep) answer(c, jsep);
        },
        ondataopen: () => { if (current()) join(c, true); },
        ondata: (data) => { if (current()) onData(c, data); },
        oncleanup: () => { if (current()) fail(c, 'connecting', 'connection lost'); },
      });
    }

    // Connection `c` cannot go on: drops it and connects again after restartMs.
    function fail(c, state, why) {
      c.failed = true;
      c.joined = false;
      clearTimeout(c.timer);
      hangUp(c);
      setState(state, 'chat: ' + why + '; trying again in ' + Math.round(restartMs / 1000) + ' s');
      c.timer = setTimeout(() => { if (conn === c) connect(); }, restartMs);
      restartMs = Math.min(2 * restartMs, RESTART_MAX_MS);
    }

    function hangUp(c) {
      if (!c.handle) return;
      try { c.handle.hangup(); } catch (e) { /* ignore */ }
      try { c.handle.detach(); } catch (e) { /* ignore */ }
    }

    function answer(c, jsep) {
      c.handle.createAnswer({
        jsep: jsep,
        tracks: [{ type: 'data' }],
        success: (ours) => { if (live(c)) c.handle.send({ message: { request: 'ack' }, jsep: ours }); },
        error: (err) => { if (live(c)) fail(c, 'unavailable', 'WebRTC error: ' + err); },
      });
    }

    // Sends `body` over the data channel; `reply` gets Janus's answer.
    function request(c, body, reply) {
      const transaction = 't' + (++c.seq);
      c.pending[transaction] = reply || (() => {});
      c.handle.data({
        text: JSON.stringify(Object.assign({ transaction: transaction, room: c.room }, body)),
        error: (err) => { if (conn === c) console.warn('[chat] send failed: ' + err); },
      });
    }

    // Joins the room; with `history`, the log is cleared for Janus's replay.
    function join(c, history) {
      clearTimeout(c.timer);
      const body = { textroom: 'join', username: c.username, display: c.display, history: history };
      if (c.pin) body.pin = c.pin;
      if (history) clearLog();
      request(c, body, (reply) => {
        if (reply.textroom === 'success') {
          c.joined = true;
          c.failures = 0;
          restartMs = RESTART_MIN_MS;
          names.clear();
          names.set(c.username, c.display);
          for (const p of reply.participants || []) names.set(p.username, p.display || p.username);
          setState('open', 'chat: ' + names.size + ' here');
          return;
        }
        c.failures++;
        if (reply.error_code === USERNAME_EXISTS) c.username += 'x';
        if (reply.error_code === UNAUTHORIZED) {
          setState('unavailable', 'chat: the PIN was refused');
        } else if (c.failures >= NO_CHAT_AFTER) {
          setState('unavailable', 'chat: this broadcast has no chat (' + (reply.error || reply.error_code) + ')');
        } else if (reply.error_code === NO_SUCH_ROOM) {
          setState('connecting', 'chat: waiting for the chat room…');
        }
        c.timer = setTimeout(() => { if (live(c)) join(c, history); },
          c.failures >= NO_CHAT_AFTER ? 4 * JOIN_RETRY_MS : JOIN_RETRY_MS);
      });
    }

    function onData(c, data) {
      let msg;
      try { msg = JSON.parse(data); } catch (e) { return; }
      if (!msg || typeof msg !== 'object') return;
      const waiting = msg.transaction && c.pending[msg.transaction];
      if (waiting) {
        delete c.pending[msg.transaction];
        waiting(msg);
        return;
      }
      switch (msg.textroom) {
        case 'message':
          return show(msg, People.parseDisplay(msg.display || names.get(msg.from) || msg.from), {
            self: msg.from === c.username, whisper: msg.whisper === true,
          });
        case 'announcement':
          return show(msg, People.PI, {});
        case 'join':
          names.set(msg.username, msg.display || msg.username);
          return setState('open', 'chat: ' + names.size + ' here');
        case 'leave':
        case 'kicked':
          names.delete(msg.username);
          return c.joined && setState('open', 'chat: ' + names.size + ' here');
        case 'destroyed':
          c.joined = false;
          return setState('closed', 'chat: closed with the broadcast');
        default:
      }
    }

    // Appends message `msg` (its from, text and date) to the log, as text,
    // drawn as `who` ({ name, avatar }); `how`: { self, whisper }.
    function show(msg, who, how) {
      const li = document.createElement('li');
      li.dataset.from = msg.from || '';
      li.dataset.name = who.name;
      if (how.self) li.dataset.self = 'true';
      if (how.whisper) li.dataset.private = 'true';
      if (who.imitation) li.dataset.imitation = 'true';
      li.appendChild(People.avatarImage(who.avatar));
      const when = parseDate(msg.date);
      const time = document.createElement('time');
      time.dateTime = when.toISOString();
      time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = who.name;
      li.append(time, name);
      if (how.whisper) {
        const label = document.createElement('span');
        label.className = 'private';
        label.textContent = 'to you (private)';
        li.appendChild(label);
      }
      const body = document.createElement('span');
      body.className = 'text';
      const t = String(msg.text == null ? '' : msg.text);
      body.textContent = t.length > MESSAGE_MAX ? t.slice(0, MESSAGE_MAX) + '…' : t;
      li.appendChild(body);
      const atBottom = els.log.scrollHeight - els.log.scrollTop - els.log.clientHeight < 40;
      els.log.appendChild(li);
      while (els.log.children.length > LOG_MAX) els.log.firstChild.remove();
      if (atBottom || how.self) els.log.scrollTop = els.log.scrollHeight;
    }

    // Janus's "%FT%T%z" (e.g. 2026-12-01T14:55:00+0100); now if unreadable.
    function parseDate(date) {
      const d = new Date(String(date || '').replace(/([+-]\d\d)(\d\d)$/, '$1:$2'));
      return isNaN(d.getTime()) ? new Date() : d;
    }

    function clearLog() {
      while (els.log.firstChild) els.log.firstChild.remove();
    }

    // Ends the connection (the page left the room) and any pending restart.
    function stop() {
      const c = conn;
      conn = null;
      target = null;
      if (!c) return;
      clearTimeout(c.timer);
      hangUp(c);
      names.clear();
      setState('off', 'chat: not connected');
    }

    // The viewer's name or avatar changed: leave and join again under it.
    function rename(display) {
      const c = conn;
      if (!c) return;
      target.display = display;
      c.display = display;
      if (!c.joined) return;
      c.joined = false;
      request(c, { textroom: 'leave' }, () => { if (conn === c) join(c, false); });
    }

    // Shows the page's state while the chat is not connected.
    function pageState(state) {
      if (conn) return;
      if (state === 'closed') setState('closed', 'chat: closed, with the broadcast');
      else if (state === 'pin') setState('off', 'chat: enter the PIN first');
      else setState('off', 'chat: not connected');
    }

    els.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const c = conn;
      const text = els.input.value.trim().slice(0, MESSAGE_MAX);
      if (!c || !c.joined || !text) return;
      els.input.value = '';
      request(c, { textroom: 'message', text: text }, (reply) => {
        if (reply.textroom !== 'success') els.status.textContent = 'chat: not sent (' + (reply.error || '?') + ')';
      });
    });
    els.input.maxLength = MESSAGE_MAX;
    setState('off', 'chat: not connected');
    return { start, stop, rename, pageState };
  }

  window.BroadcastChat = { create, MESSAGE_MAX };
})();
