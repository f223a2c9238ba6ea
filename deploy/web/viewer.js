// Viewer page for a broadcast-agent broadcast.
//
// The agent creates, on Janus, a Streaming mountpoint and an AudioBridge room
// with the same numeric id. This page
//   * watches the mountpoint (the Pi's video and audio),
//   * joins the room with the viewer's microphone (talk-back to the Pi),
// and shows one of these states in #state[data-state] and window.viewerState:
//   "connecting"  reaching Janus / negotiating / waiting for video frames,
//   "live"        video frames are arriving,
//   "closed"      the room or mountpoint does not exist (the broadcast is
//                 closed); the page asks every CLOSED_POLL_MS whether the
//                 mountpoint is back (one small `info` request) and goes live
//                 by itself when the broadcast comes back,
//   "pin"         the broadcast needs a PIN (missing or wrong),
//   "error"       the page cannot start at all (bad URL, no WebRTC).
//
// Edges (config.js `edges`): the video is watched on an edge Janus, the room
// stays on the page's server (see "the edge" below).
//
// Query parameters: r (room id, required), pin, janus (REST URL), edge (the
// edge asked first, one of config.js `edges`), name
// (display name; else the one remembered), muted=1 (join with the microphone off), delay= (how
// long the browser may hold video back: `sync`, the default, holds it just enough for lip sync
// with the Pi's audio; `0` never; MS at most MS; `auto` the browser's own choice; see "playout
// delay" below), debug=1 (janus.js logging). Defaults come from config.js (window.BROADCAST_CONFIG).
//
// Two parts with lives of their own (see "the room" and "media attempt"):
// being in the room (talk-back, the chat (chat.js), and who is in it
// (people.js), fed by the AudioBridge events: joined, leaving, talking /
// stopped-talking) lasts while the session is up and the broadcast is there;
// the video is a media attempt, redone on its own while it does not play.
//
// Plain ES2017, no build step; needs adapter.js and janus.js loaded first,
// and people.js and chat.js for the name, avatar, participant list and chat
// (without them the page plays and talks back, with none of those).
(function () {
  'use strict';

  const RETRY_MS = 2000;          // retry period after a failure / while the server is down
  const CLOSED_POLL_MS = 400;     // while closed: how often to ask whether the broadcast is back
  const CONNECT_TIMEOUT_MS = 20000; // a media attempt that is not live by then is redone
  const STALL_MS = 4000;          // no video frame for this long while live: "connecting"

  // Janus error codes (plugins answer with plugindata.data.error_code).
  const STREAMING_NO_SUCH_MOUNTPOINT = 455;
  const STREAMING_MISSING_ELEMENT = 453; // e.g. the pin is required but missing
  const STREAMING_UNAUTHORIZED = 457;    // wrong pin
  const AUDIOBRIDGE_NO_SUCH_ROOM = 485;
  const AUDIOBRIDGE_MISSING_ELEMENT = 483; // pin required but missing
  const AUDIOBRIDGE_UNAUTHORIZED = 489;    // wrong pin

  // ---- configuration -------------------------------------------------------

  const params = new URLSearchParams(window.location.search);
  const config = Object.assign({ janus: '/janus', iceServers: [] }, window.BROADCAST_CONFIG || {});
  // `?janus=` may only pick one of the servers config.js lists (by default
  // the configured one): the page must not hand the viewer's PIN and the
  // token to a server named in a link.
  const absolute = (url) => { try { return new URL(url, window.location.href).href; } catch (e) { return null; } };
  const allowedServers = (Array.isArray(config.servers) ? config.servers : [config.janus]).map(absolute);
  const requestedServer = params.get('janus');
  const serverUrl = requestedServer || config.janus;
  const serverAllowed = allowedServers.includes(absolute(serverUrl));
  // Edges: Janus servers that relay the broadcast (a Streaming mountpoint with
  // the room's id, fed by the origin). Unset or empty: the video comes from
  // the page's server, as the room does.
  const edgeList = config.edges === undefined || config.edges === null ? [] : config.edges;
  const edgeUrls = Array.isArray(edgeList) ? edgeList.map(absolute) : [];
  const edgeError = !Array.isArray(edgeList) ? 'config.js `edges` is not a list of URLs'
    : edgeList.filter((_, i) => !edgeUrls[i]).map((u) => 'config.js `edges`: ' + u + ' is not a URL')[0];
  // `?edge=` (support: "try this one"): the edge asked first; one of `edges` only.
  const firstEdge = params.get('edge') ? absolute(params.get('edge')) : null;
  const firstEdgeError = params.get('edge') && !edgeUrls.includes(firstEdge)
    ? 'edge ' + params.get('edge') + ' is not one of this page\'s edges (config.js `edges`): not contacted' : null;
  const roomParam = params.get('r') || params.get('room');
  const roomId = /^\d+$/.test(roomParam || '') ? parseInt(roomParam, 10) : null;
  let pin = params.get('pin') || null;
  let micMuted = params.get('muted') === '1';
  // delay= (see "playout delay" below): `sync` (the default), `0`, MS or `auto`.
  const delayParam = params.get('delay') || 'sync';

  // ---- page elements -------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const stateEl = $('state');
  const stageEl = $('stage');
  const overlayEl = $('overlay');
  const detailEl = $('detail');
  const video = $('video');
  const roomAudio = $('room-audio');
  const soundBtn = $('sound');
  const micBtn = $('mic');
  const pttBtn = $('ptt');
  const nameInput = $('name');
  // people.js and chat.js may be missing (an install that copied only
  // index.html and viewer.js): then every people/chat call does nothing.
  const People = window.BroadcastPeople;
  const nothing = new Proxy({}, { get: () => () => {} });
  const people = People ? People.participantList($('people')) : nothing;
  const chat = window.BroadcastChat && People ? window.BroadcastChat.create({
    panel: $('chat'), log: $('chat-log'), form: $('chat-form'), input: $('chat-input'), status: $('chat-status'),
  }) : nothing;
  if (!People || chat === nothing) {
    console.warn('[viewer] people.js or chat.js not loaded: no chat and no participant list (see README.md)');
    $('room-panel').style.display = 'none'; // (its CSS display beats `hidden`)
  }
  const talkStateEl = $('talk-state');
  const edgeEl = $('edge');
  const pinForm = $('pin-form');
  const pinInput = $('pin');
  const pinError = $('pin-error');

  // Exposed for tests and debugging.
  window.viewerState = 'connecting';
  window.viewerVideo = video;

  const STATE_TEXT = {
    connecting: 'connecting',
    live: 'live',
    closed: 'the broadcast is closed',
    pin: 'PIN required',
    error: 'error',
  };

  // Shows `state` (one of STATE_TEXT's keys) and an optional explanation.
  function setState(state, detail) {
    if (window.viewerState !== state) {
      console.log('[viewer] state ' + window.viewerState + ' -> ' + state + (detail ? ' (' + detail + ')' : ''));
    }
    window.viewerState = state;
    stateEl.dataset.state = state;
    stageEl.dataset.state = state;
    stateEl.textContent = STATE_TEXT[state] || state;
    overlayEl.textContent = detail || (STATE_TEXT[state] + (state === 'closed' ? ': waiting for it to start again…' : '…'));
    detailEl.textContent = detail || '';
    pinForm.hidden = state !== 'pin';
    people.broadcaster(state === 'live');
    chat.pageState(state);
  }

  // ---- Janus session --------------------------------------------------------
  // One Janus session at a time. If it dies (server restart, network), it is
  // dropped and a new one made after RETRY_MS.

  let janus = null;        // the current Janus session object
  let sessionSeq = 0;      // identifies the current session for late callbacks
  let sessionTimer = null; // pending reconnect

  function connectSession() {
    clearTimeout(sessionTimer);
    const seq = ++sessionSeq;
    if (window.viewerState !== 'closed' && window.viewerState !== 'pin') setState('connecting', 'reaching the server…');
    janus = new Janus({
      server: serverUrl,
      iceServers: config.iceServers,
      apisecret: config.apiSecret,
      token: config.token,
      // The REST long-poll keeps the session alive; failed polls report an error.
      success: () => {
        if (seq !== sessionSeq) return;
        startBroadcast();
      },
      error: (err) => {
        if (seq !== sessionSeq) return;
        sessionLost('server unreachable (' + err + '), retrying…');
      },
      destroyed: () => {},
    });
  }

  // The session is gone or unusable: drop everything and start over.
  // With edges the video, on the edge's session, plays on.
  function sessionLost(why) {
    console.warn('[viewer] session lost: ' + why);
    if (!edgeUrls.length) {
      stopMedia();
      stopReopenPoll();
    }
    leaveRoom();
    const old = janus;
    janus = null;
    sessionSeq++;
    if (old && old.destroy) {
      // Frees the PeerConnections locally; the request to Janus may fail, that is fine.
      try { old.destroy({ cleanupHandles: true, notifyDestroyed: false }); } catch (e) { /* ignore */ }
    }
    if (window.viewerState !== 'closed') setState('connecting', why);
    clearTimeout(sessionTimer);
    sessionTimer = setTimeout(connectSession, RETRY_MS);
  }

  // Joins the room and starts a media attempt (the session is up, the
  // broadcast is, or may be, there).
  function startBroadcast() {
    enterRoom();
    if (!(edgeUrls.length && media)) startMedia();
  }

  // ---- the room: talk-back, who is in it, chat -------------------------------
  // In the room = one AudioBridge handle (the viewer's microphone, the room's
  // mix, and the participant list fed by its events) plus the chat. Entered
  // once the session is up; left only when the session is lost, a PIN is
  // needed or the broadcast closes, never when the video is retried (a
  // broadcast without video, a camera restarting, a video that does not
  // decode here). A failed AudioBridge PeerConnection is redone by itself
  // after RETRY_MS; the chat recovers by itself (chat.js).

  let inRoom = false;
  let talk = null;      // the AudioBridge handle's state: { bridge, joined, myId, participants, hasMic, roomStream }
  let talkTimer = null; // pending AudioBridge retry

  function enterRoom() {
    if (inRoom || !janus) return;
    inRoom = true;
    chat.start(janus, roomId, pin, displayName());
    startTalk();
  }

  function leaveRoom() {
    inRoom = false;
    clearTimeout(talkTimer);
    stopTalk();
    chat.stop();
    people.clear();
  }

  function startTalk() {
    if (!inRoom || !janus) return;
    const t = { bridge: null, joined: false, roomStream: new MediaStream() };
    talk = t;
    const current = () => talk === t; // false once this handle is over
    janus.attach({
      plugin: 'janus.plugin.audiobridge',
      success: (handle) => {
        if (!current()) { handle.detach(); return; }
        t.bridge = handle;
        const join = { request: 'join', room: roomId, display: displayName(), muted: micMuted };
        if (pin) join.pin = pin;
        handle.send({ message: join, error: (e) => requestFailed(current, e) });
      },
      error: (err) => { if (current()) sessionLost('cannot attach to the AudioBridge plugin: ' + err); },
      onmessage: (msg, jsep) => { if (current()) onBridgeMessage(t, msg, jsep); },
      onremotetrack: (track, mid, on) => {
        if (!current()) return;
        updateTrack(t.roomStream, track, on);
        if (roomAudio.srcObject !== t.roomStream) roomAudio.srcObject = t.roomStream;
      },
      iceState: (state) => { if (current() && state === 'failed') retryTalk('talk-back: connection failed, reconnecting…'); },
      webrtcState: (up) => {
        if (!current()) return;
        if (up) setTalkState(null); else retryTalk('talk-back: disconnected, reconnecting…');
      },
      oncleanup: () => { if (current() && t.joined) retryTalk('talk-back: disconnected, reconnecting…'); },
    });
  }

  function stopTalk() {
    const t = talk;
    talk = null;
    if (t && t.bridge) {
      try { t.bridge.hangup(); } catch (e) { /* ignore */ }
      try { t.bridge.detach(); } catch (e) { /* ignore */ }
    }
    roomAudio.srcObject = null;
    setTalkState('talk-back: not connected');
    micBtn.disabled = true;
    pttBtn.disabled = true;
  }

  // The AudioBridge PeerConnection failed: a new handle joins after RETRY_MS.
  function retryTalk(text) {
    stopTalk();
    setTalkState(text);
    clearTimeout(talkTimer);
    talkTimer = setTimeout(() => { if (inRoom && !talk) startTalk(); }, RETRY_MS);
  }

  // ---- the edge: where the video comes from ---------------------------------
  // With config.js `edges`, the mountpoint is watched on an edge Janus through
  // a session of its own; the room (talk-back, chat, who is in it) stays on
  // the page's server (`janus`, the origin) and is never touched by what
  // happens to an edge.
  //   Choice: the edges in a random order of this page's own, the first in
  //   it that answers `info` within PROBE_MS (all asked at once). Random, not
  //   "the fastest": viewers spread evenly over the edges without anyone
  //   counting them, where the fastest answer would pile every viewer of a
  //   region onto one edge; an edge that is down is skipped at once.
  //   Failover: the edge's session fails (janus.js's long-poll), or the video
  //   stops (no frame for EDGE_CHECK_MS, ICE disconnected or failed, Janus
  //   hung up) and the edge does not answer `info` within PROBE_MS: the video
  //   moves to the next edge that answers, the one that failed asked last.
  //   An edge that answers keeps the viewer: the broadcaster stalled, or
  //   the broadcast closed, for every edge alike.
  // No edge answers: all are asked again after RETRY_MS. The origin is never
  // used as a fallback: it is what the edges keep from being overloaded.

  const PROBE_MS = 1000;      // an edge not answering `info` by then is passed over
  const EDGE_CHECK_MS = 1000; // no video frame for this long: is the edge still there?

  let edge = null;            // the current edge: { url, janus, up, checkedAt }
  let edgeTimer = null;       // pending retry when no edge answered
  let failedEdge = null;      // the edge that failed last: asked last
  window.viewerEdge = null;   // the URL the video comes from (edges only), for tests

  // The session the video is watched through: the origin's, or the edge's
  // once it is up (null meanwhile: the edge's `success` resumes the video).
  function watchSession() {
    if (!edgeUrls.length) return janus;
    if (!edge) connectEdge();
    return edge && edge.up ? edge.janus : null;
  }

  // The session the video is watched through failed.
  function watchLost(why) {
    if (edgeUrls.length) edgeLost(why); else sessionLost(why);
  }

  // Resolves to whether the Janus at `url` answers `info` within PROBE_MS.
  function answers(url) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), PROBE_MS);
    const done = (ok) => { clearTimeout(timer); return ok; };
    return fetch(url.replace(/\/+$/, '') + '/info', { signal: abort.signal, cache: 'no-store' })
      .then((res) => res.json())
      .then((body) => done(!!body && body.janus === 'server_info'), () => done(false));
  }

  // Resolves to the first edge that answers in a random order (`?edge=`
  // first, `failedEdge` last), or null.
  async function pickEdge() {
    const order = edgeUrls.filter((u) => u !== failedEdge && u !== firstEdge);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    if (firstEdge && firstEdge !== failedEdge) order.unshift(firstEdge);
    if (edgeUrls.includes(failedEdge)) order.push(failedEdge);
    const probes = order.map(answers);
    for (let i = 0; i < order.length; i++) if (await probes[i]) return order[i];
    return null;
  }

  // Chooses an edge and opens a session on it; once up, the video resumes there.
  function connectEdge() {
    clearTimeout(edgeTimer);
    const e = { url: null, janus: null, up: false, checkedAt: 0 };
    edge = e;
    const current = () => edge === e;
    showEdge(null);
    pickEdge().then((url) => {
      if (!current()) return;
      if (!url) {
        console.warn('[viewer] no edge answers: asking again in ' + RETRY_MS + ' ms');
        edge = null;
        edgeTimer = setTimeout(connectEdge, RETRY_MS);
        return;
      }
      e.url = url;
      e.janus = new Janus({
        server: url,
        iceServers: config.iceServers,
        apisecret: config.apiSecret,
        token: config.token,
        success: () => {
          if (!current()) return;
          e.up = true;
          console.log('[viewer] watching from edge ' + url);
          showEdge(url);
          resumeVideo();
        },
        error: (err) => { if (current()) edgeLost('edge ' + url + ' unreachable (' + err + ')'); },
        destroyed: () => {},
      });
    });
  }

  // The video starts again (on a new edge): a media attempt, or the closed
  // broadcast's poll; not while the page waits for a PIN or cannot start.
  function resumeVideo() {
    if (window.viewerState === 'pin' || window.viewerState === 'error') return;
    if (window.viewerState === 'closed') pollReopen(); else startMedia();
  }

  // The current edge is gone: the video moves to the next one that answers.
  function edgeLost(why) {
    const e = edge;
    console.warn('[viewer] edge lost: ' + why);
    edge = null;
    if (e && e.url) failedEdge = e.url;
    stopMedia();
    stopReopenPoll();
    clearTimeout(mediaTimer);
    if (e && e.janus) {
      try { e.janus.destroy({ cleanupHandles: true, notifyDestroyed: false }); } catch (err) { /* ignore */ }
    }
    if (window.viewerState === 'live') setState('connecting', 'video: moving to another server…');
    connectEdge();
  }

  // The video stopped: is the edge still there? If not, it is lost; if it
  // is, `otherwise()` (e.g. a new media attempt on it) runs.
  function checkEdge(otherwise) {
    const e = edge;
    if (!e || !e.up) return otherwise();
    e.checkedAt = Date.now();
    answers(e.url).then((ok) => {
      if (edge !== e) return;
      if (ok) otherwise(); else edgeLost('edge ' + e.url + ' does not answer');
    });
  }

  // Shows which server the video comes from (for support), edges only.
  function showEdge(url) {
    window.viewerEdge = url;
    if (!edgeUrls.length) return;
    edgeEl.hidden = false;
    edgeEl.textContent = url ? 'video from ' + new URL(url).host : 'video: choosing a server…';
    edgeEl.title = url || '';
  }

  // ---- media attempt -----------------------------------------------------
  // A media attempt = one Streaming handle watching the mountpoint (the Pi's
  // video and audio). Any end of it (closed broadcast, failed ICE, not live
  // after CONNECT_TIMEOUT_MS) drops it and, after RETRY_MS, starts a new one
  // (with edges, after asking the edge whether it is still there).

  let media = null;      // the current attempt: { streaming, stream, ... }
  let mediaTimer = null; // pending retry

  function startMedia() {
    clearTimeout(mediaTimer);
    stopMedia();
    stopReopenPoll();
    const session = watchSession();
    if (!session) return;
    const m = {
      streaming: null,
      stream: new MediaStream(),     // the mountpoint's tracks, shown by #video
      gotOffer: false,
      watchdog: null,
      playoutTimer: null,
    };
    media = m;
    const current = () => media === m; // false once this attempt is over
    if (window.viewerState !== 'closed' && window.viewerState !== 'pin') {
      setState('connecting', 'joining broadcast ' + roomId + '…');
    }
    m.watchdog = setTimeout(() => {
      if (current() && window.viewerState !== 'live') retryMedia(null, 'no video yet, trying again…');
    }, CONNECT_TIMEOUT_MS);
    const failed = (why) => { if (current()) checkEdge(() => { if (current()) retryMedia(null, why); }); };

    session.attach({
      plugin: 'janus.plugin.streaming',
      success: (handle) => {
        if (!current()) { handle.detach(); return; }
        m.streaming = handle;
        const watch = { request: 'watch', id: roomId };
        if (pin) watch.pin = pin;
        handle.send({ message: watch, error: (e) => requestFailed(current, e, watchLost) });
      },
      error: (err) => { if (current()) watchLost('cannot attach to the Streaming plugin: ' + err); },
      onmessage: (msg, jsep) => { if (current()) onStreamingMessage(m, msg, jsep); },
      onremotetrack: (track, mid, on) => {
        if (!current()) return;
        updateTrack(m.stream, track, on);
        if (video.srcObject !== m.stream) video.srcObject = m.stream;
      },
      iceState: (state) => {
        if (state === 'failed') failed('video connection failed, trying again…');
        if (state === 'disconnected' && current()) checkEdge(() => {}); // may come back by itself
      },
      webrtcState: (up) => { if (!up) failed('video connection ended, checking the broadcast…'); },
      oncleanup: () => {
        // Janus hung up the PeerConnection (e.g. the mountpoint went away).
        if (m.gotOffer) failed('video ended, checking the broadcast…');
      },
    });
  }

  // Ends the current media attempt (if any): hangs up and detaches its handle.
  function stopMedia() {
    const m = media;
    media = null;
    if (!m) return;
    clearTimeout(m.watchdog);
    clearInterval(m.playoutTimer);
    if (m.streaming) {
      try { m.streaming.hangup(); } catch (e) { /* ignore */ }
      try { m.streaming.detach(); } catch (e) { /* ignore */ }
    }
    video.srcObject = null;
    lastFrameAt = 0;
  }

  // Ends the current attempt and starts another after RETRY_MS (closed: as
  // soon as the broadcast is back), showing `state` (or keeping the current
  // one when null) with `detail`.
  function retryMedia(state, detail) {
    stopMedia();
    if (state) setState(state, detail);
    else if (window.viewerState === 'live') setState('connecting', detail);
    else setState(window.viewerState, window.viewerState === 'closed' ? null : detail);
    clearTimeout(mediaTimer);
    if (window.viewerState === 'closed') pollReopen();
    else mediaTimer = setTimeout(() => { if (janus || edgeUrls.length) startMedia(); }, RETRY_MS);
  }

  // ---- waiting for a closed broadcast --------------------------------------
  // One Streaming handle asks `info` every CLOSED_POLL_MS: a single small
  // request, where joining would take several. The moment the mountpoint
  // exists, the page joins the room and starts a media attempt.

  let reopenPoll = null; // { handle, timer } while closed

  function pollReopen() {
    stopReopenPoll();
    const session = watchSession();
    if (!session) return;
    const p = { handle: null, timer: null };
    reopenPoll = p;
    const ask = () => {
      if (reopenPoll !== p) return;
      p.handle.send({
        message: { request: 'info', id: roomId },
        success: (data) => {
          if (reopenPoll !== p) return;
          if (data && data.info) startBroadcast();
          else p.timer = setTimeout(ask, CLOSED_POLL_MS);
        },
        error: (e) => { if (reopenPoll === p) watchLost('request failed (' + e + ')'); },
      });
    };
    session.attach({
      plugin: 'janus.plugin.streaming',
      success: (handle) => {
        if (reopenPoll !== p) { handle.detach(); return; }
        p.handle = handle;
        ask();
      },
      error: (err) => { if (reopenPoll === p) watchLost('cannot attach to the Streaming plugin: ' + err); },
    });
  }

  function stopReopenPoll() {
    const p = reopenPoll;
    reopenPoll = null;
    if (!p) return;
    clearTimeout(p.timer);
    if (p.handle) { try { p.handle.detach(); } catch (e) { /* ignore */ } }
  }

  // A request of the handle that `current()` is about could not even be
  // sent: usually the session is gone (Janus restarted); `lost` (default:
  // the origin's session) is told.
  function requestFailed(current, err, lost = sessionLost) {
    if (current()) lost('request failed (' + err + ')');
  }

  // The broadcast (mountpoint or room) does not exist.
  function broadcastClosed(why) {
    console.log('[viewer] closed: ' + why);
    leaveRoom();
    retryMedia('closed');
  }

  function needPin(wrong) {
    leaveRoom();
    stopMedia();
    stopReopenPoll();
    clearTimeout(mediaTimer);
    setState('pin', wrong ? 'wrong PIN: try again' : 'this broadcast needs a PIN');
    pinError.textContent = wrong ? 'wrong PIN' : '';
    pinInput.focus();
  }

  function updateTrack(stream, track, on) {
    const known = stream.getTrackById(track.id);
    if (on && !known) stream.addTrack(track);
    if (!on && known) stream.removeTrack(known);
  }

  // ---- Streaming plugin (video + Pi audio) ----------------------------------

  function onStreamingMessage(m, msg, jsep) {
    if (msg.error_code) {
      if (msg.error_code === STREAMING_NO_SUCH_MOUNTPOINT) return broadcastClosed(msg.error);
      if (msg.error_code === STREAMING_UNAUTHORIZED) return needPin(!!pin);
      if (msg.error_code === STREAMING_MISSING_ELEMENT && /pin/i.test(msg.error || '')) return needPin(false);
      return retryMedia(null, 'streaming error ' + msg.error_code + ': ' + msg.error);
    }
    const status = msg.result && msg.result.status;
    if (status === 'stopped') return broadcastClosed('mountpoint stopped');
    if (msg.streaming === 'destroyed') return broadcastClosed('mountpoint destroyed');
    if (jsep && jsep.type === 'offer') {
      // The mountpoint exists: answer receive-only and start the stream.
      m.gotOffer = true;
      if (window.viewerState !== 'live') setState('connecting', 'starting video…');
      m.streaming.createAnswer({
        jsep: jsep,
        tracks: [], // nothing to send; the offered audio/video are received
        success: (answer) => {
          if (media !== m) return;
          m.streaming.send({
            message: { request: 'start' }, jsep: answer, error: (e) => requestFailed(() => media === m, e, watchLost),
          });
          startPlayout(m);
        },
        error: (err) => { if (media === m) retryMedia(null, 'WebRTC error: ' + err); },
      });
    }
  }

  // ---- playout delay (lip sync against latency) -----------------------------
  //
  // Janus relays the Pi's audio and video as they arrive, and the browser
  // plays each after its own jitter buffer: video within a few ms, audio
  // after NetEq's buffer (55-115 ms measured in Chromium on a lossless
  // network). Shown at once, the picture runs ahead of the sound by about that
  // much. How long video may be held back is set with the mountpoint's
  // playout-delay RTP extension (Janus `configure` min_delay / max_delay, in
  // 10 ms units):
  //   sync   (default) holds video by what the audio needs beyond
  //          SYNC_LEAD_MS (the sound may come that much after the picture;
  //          sound late is the forgiving side), at most SYNC_MAX_HOLD_MS
  //          (a Pi's frames reach the screen 5-20 ms after capture at the
  //          median; 60 ms more keeps glass to glass p95 under 80 ms, and
  //          where the audio needs more, the sound trails instead),
  //          re-read from getStats every second (the audio jitter buffer's
  //          and output's mean delay over the last SYNC_WINDOW s); a new hold
  //          is approached SYNC_RAMP_MS a second (a jump of 30 ms was seen
  //          to delay frames shown right after it);
  //          nothing while the audio buffer is short: the lowest latency
  //          that keeps lip sync (README "Glass to glass": the figures)
  //   0      never: each frame is shown when decoded (the lowest latency)
  //   MS     at most MS ms (min 0, max MS: Chromium lines video up with
  //          audio within that bound, and smooths jitter)
  //   auto   no extension: the browser's own choice (it lines video up with
  //          audio fully)
  const SYNC_LEAD_MS = 60;
  const SYNC_MAX_HOLD_MS = 60;
  const SYNC_WINDOW = 5;      // s (checks) the audio buffer's delay is averaged over
  const SYNC_FIRST = 3;       // s (checks) before the first decision
  const SYNC_STEP_MS = 20;    // a smaller change of the wanted hold is ignored
  const SYNC_RAMP_MS = 10;    // the hold moves towards the wanted one this much a second
  window.viewerPlayout = { mode: delayParam, holdMs: null, wantMs: null, audioBufferMs: null, audioOutputMs: null };

  function configurePlayout(m, minMs, maxMs) {
    m.streaming.send({
      message: { request: 'configure', mid: 'v', min_delay: Math.round(minMs / 10), max_delay: Math.round(maxMs / 10) },
    });
  }

  function startPlayout(m) {
    if (/^\d+$/.test(delayParam)) configurePlayout(m, 0, parseInt(delayParam, 10));
    if (delayParam !== 'sync') return;
    const playout = window.viewerPlayout;
    playout.holdMs = 0;
    playout.wantMs = 0;
    configurePlayout(m, 0, 0);
    // Per check: the audio receiver's [jitterBufferDelay s, emitted count] and
    // the audio output's [totalPlayoutDelay s, samples] (0 where the browser
    // does not report it): the sound is heard after both.
    const samples = [];
    let decided = false;
    const mean = (a, b, i) => (b[i + 1] > a[i + 1] ? (1000 * (b[i] - a[i])) / (b[i + 1] - a[i + 1]) : 0);
    clearInterval(m.playoutTimer); // a new offer in the same attempt: one timer
    m.playoutTimer = setInterval(async () => {
      const pc = m.streaming && m.streaming.webrtcStuff && m.streaming.webrtcStuff.pc;
      if (media !== m || !pc) return;
      let audio = null, output = {};
      try {
        (await pc.getStats()).forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'audio') audio = r;
          if (r.type === 'media-playout') output = r;
        });
      } catch (e) { return; }
      if (media !== m || !audio || !audio.jitterBufferEmittedCount) return;
      samples.push([audio.jitterBufferDelay, audio.jitterBufferEmittedCount,
        output.totalPlayoutDelay || 0, output.totalSamplesCount || 0]);
      if (samples.length > SYNC_WINDOW + 1) samples.shift();
      if (samples.length <= SYNC_FIRST) return;
      const first = samples[0], last = samples[samples.length - 1];
      playout.audioBufferMs = mean(first, last, 0);
      playout.audioOutputMs = mean(first, last, 2);
      const late = playout.audioBufferMs + playout.audioOutputMs - SYNC_LEAD_MS;
      const want = Math.min(SYNC_MAX_HOLD_MS, Math.max(0, Math.round(late / 10) * 10));
      // Small changes are ignored, but not the way to no hold or the most.
      const bound = want === 0 || want === SYNC_MAX_HOLD_MS;
      if (Math.abs(want - playout.wantMs) >= SYNC_STEP_MS || bound) playout.wantMs = want;
      const ramp = decided ? SYNC_RAMP_MS : SYNC_MAX_HOLD_MS; // the first decision at once
      decided = true;
      const step = Math.max(-ramp, Math.min(ramp, playout.wantMs - playout.holdMs));
      if (step === 0) return;
      playout.holdMs += step;
      configurePlayout(m, playout.holdMs, playout.holdMs);
    }, 1000);
  }

  // ---- AudioBridge plugin (talk-back) --------------------------------------

  function onBridgeMessage(t, msg, jsep) {
    if (jsep) t.bridge.handleRemoteJsep({ jsep: jsep });
    if (msg.error_code) {
      if (msg.error_code === AUDIOBRIDGE_NO_SUCH_ROOM) return broadcastClosed(msg.error);
      if (msg.error_code === AUDIOBRIDGE_UNAUTHORIZED) return needPin(!!pin);
      if (msg.error_code === AUDIOBRIDGE_MISSING_ELEMENT && /pin/i.test(msg.error || '')) return needPin(false);
      setTalkState('talk-back error ' + msg.error_code + ': ' + msg.error);
      return;
    }
    if (msg.audiobridge === 'destroyed') return broadcastClosed('room destroyed');
    if (msg.audiobridge === 'joined' && msg.id && !t.joined) {
      // We are in the room (again): the list starts over from `participants`; send the microphone.
      t.joined = true;
      t.myId = msg.id;
      people.clear();
      people.self(msg.id, displayName());
      people.muted(msg.id, micMuted);
      sendMicrophone(t, true);
    }
    if (msg.participants) updateParticipants(t, msg.participants);
    if (msg.audiobridge === 'event' && (msg.leaving || msg.kicked)) removeParticipant(t, msg.leaving || msg.kicked);
    if (msg.audiobridge === 'talking' || msg.audiobridge === 'stopped-talking') {
      people.talking(msg.id, msg.audiobridge === 'talking');
    }
  }

  // What we ask of the viewer's microphone: the browser removes the room's
  // sound coming out of the viewer's own speakers, background noise, and
  // evens out the level (asked explicitly: defaults differ between browsers).
  const MIC_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

  // Offers our audio to the room; without a usable microphone, joins listen-only.
  function sendMicrophone(t, withMic) {
    const current = () => talk === t;
    t.bridge.createOffer({
      tracks: [{ type: 'audio', capture: withMic ? MIC_CONSTRAINTS : false, recv: true }],
      success: (offer) => {
        if (!current()) return;
        t.bridge.send({
          message: { request: 'configure', muted: micMuted, display: displayName() },
          jsep: offer,
          error: (e) => requestFailed(current, e),
        });
        t.hasMic = withMic;
        micBtn.disabled = !withMic;
        pttBtn.disabled = !withMic;
        setTalkState(null);
      },
      error: (err) => {
        if (!current()) return;
        if (withMic) {
          console.warn('[viewer] microphone unavailable: ' + err);
          sendMicrophone(t, false);
        } else {
          setTalkState('talk-back unavailable: ' + err);
        }
      },
    });
  }

  function updateParticipants(t, list) {
    t.participants = t.participants || {};
    for (const p of list) if (p.id !== t.myId) t.participants[p.id] = p;
    people.update(list);
    setTalkState(null);
  }

  function removeParticipant(t, id) {
    if (t.participants) delete t.participants[id];
    people.remove(id);
    setTalkState(null);
  }

  // Shows `text`, or (null) the current talk-back status.
  function setTalkState(text) {
    if (text === null) {
      const t = talk;
      if (!t || !t.bridge) return setTalkState('talk-back: not connected');
      const others = t.participants ? Object.keys(t.participants).length : 0;
      text = !t.hasMic ? 'talk-back: listen only (no microphone)'
        : micMuted ? 'talk-back: mic off' : 'talk-back: mic on';
      text += ' · ' + others + ' other' + (others === 1 ? '' : 's') + ' in the room';
    }
    talkStateEl.textContent = text;
  }

  // ---- microphone controls ---------------------------------------------------

  // Mutes/unmutes our participant on the server, so nobody hears a muted mic.
  function setMicMuted(muted) {
    micMuted = muted;
    micBtn.setAttribute('aria-pressed', String(!muted));
    micBtn.textContent = muted ? 'Mic off' : 'Mic on';
    const t = talk;
    if (t && t.bridge && t.joined) {
      t.bridge.send({ message: { request: 'configure', muted: muted } });
      people.muted(t.myId, muted);
    }
    setTalkState(null);
  }

  micBtn.addEventListener('click', () => setMicMuted(!micMuted));

  // Push-to-talk: while held, the mic is on; released, back to off.
  let pttActive = false;
  function pttDown(ev) {
    ev.preventDefault();
    if (pttActive || !micMuted) return;
    pttActive = true;
    pttBtn.setAttribute('aria-pressed', 'true');
    setMicMuted(false);
  }
  function pttUp() {
    if (!pttActive) return;
    pttActive = false;
    pttBtn.setAttribute('aria-pressed', 'false');
    setMicMuted(true);
  }
  pttBtn.addEventListener('pointerdown', pttDown);
  for (const ev of ['pointerup', 'pointerleave', 'pointercancel']) pttBtn.addEventListener(ev, pttUp);
  pttBtn.addEventListener('keydown', (ev) => { if (ev.key === ' ' || ev.key === 'Enter') pttDown(ev); });
  pttBtn.addEventListener('keyup', (ev) => { if (ev.key === ' ' || ev.key === 'Enter') pttUp(); });

  // Name and avatar (people.js): remembered in localStorage, sent to the
  // room and the chat as one display string on change.
  // Without people.js: `?name=` (or "viewer") as it is, and no name field.
  const identity = People ? People.identityControls(nameInput, $('avatars'), params.get('name'), () => {
    const t = talk;
    if (t && t.bridge && t.joined) {
      t.bridge.send({ message: { request: 'configure', display: displayName() } });
      people.self(t.myId, displayName());
    }
    chat.rename(displayName());
  }) : null;
  if (!People) nameInput.parentElement.hidden = true;
  function displayName() {
    return People ? People.encodeDisplay(identity) : (params.get('name') || 'viewer');
  }

  // Sound: the video (and room mix) start muted so autoplay is allowed;
  // the button toggles both.
  soundBtn.addEventListener('click', () => {
    const on = video.muted;
    video.muted = !on;
    roomAudio.muted = !on;
    soundBtn.setAttribute('aria-pressed', String(on));
    soundBtn.textContent = on ? 'Mute' : 'Unmute';
    if (on) { video.play().catch(() => {}); roomAudio.play().catch(() => {}); }
  });

  pinForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    pin = pinInput.value.trim() || null;
    setState('connecting', 'joining with PIN…');
    leaveRoom();
    if (janus) startBroadcast(); else connectSession();
  });

  // ---- live detection -----------------------------------------------------------
  // "live" means video frames are being decoded: counted with
  // requestVideoFrameCallback where available, else by polling
  // getVideoPlaybackQuality().totalVideoFrames.

  let lastFrameAt = 0;
  let lastFrameCount = 0;

  function frameArrived() {
    lastFrameAt = Date.now();
    if (media && video.videoWidth > 0 && window.viewerState !== 'live') {
      clearTimeout(media.watchdog);
      setState('live');
    }
  }

  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
    const onFrame = () => { frameArrived(); video.requestVideoFrameCallback(onFrame); };
    video.requestVideoFrameCallback(onFrame);
  }

  setInterval(() => {
    if (video.getVideoPlaybackQuality) {
      const n = video.getVideoPlaybackQuality().totalVideoFrames;
      if (n !== lastFrameCount) { lastFrameCount = n; if (n > 0) frameArrived(); }
    }
    // No frame for EDGE_CHECK_MS from an edge: is it still there? (asked once per EDGE_CHECK_MS)
    const now = Date.now();
    if (edge && edge.up && media && lastFrameAt && now - lastFrameAt > EDGE_CHECK_MS &&
        now - edge.checkedAt > EDGE_CHECK_MS) checkEdge(() => {});
    // Live but no frame for a while: the broadcaster stalled (the mountpoint still exists).
    if (window.viewerState === 'live' && Date.now() - lastFrameAt > STALL_MS) {
      setState('connecting', 'video stalled: waiting for the broadcaster…');
    }
  }, 500);

  // ---- start -------------------------------------------------------------

  if (roomId === null) {
    setState('error', 'no broadcast given: open this page with ?r=<room number>');
    return;
  }
  if (edgeError || firstEdgeError) {
    setState('error', edgeError || firstEdgeError);
    return;
  }
  if (!serverAllowed) {
    setState('error', 'server ' + serverUrl + ' is not one of this page\'s servers (config.js `servers`): not contacted');
    return;
  }
  $('room-label').textContent = String(roomId);
  document.title = 'Broadcast ' + roomId;
  if (pin) pinInput.value = pin;
  setMicMuted(micMuted);
  setState('connecting', 'reaching the server…');

  if (typeof Janus === 'undefined') {
    setState('error', 'janus.js did not load (see deploy/web/README.md)');
    return;
  }
  const debug = params.get('debug') === '1' ? 'all' : ['error'];
  Janus.init({
    debug: debug,
    callback: () => {
      if (!Janus.isWebrtcSupported()) {
        setState('error', 'this browser does not support WebRTC');
        return;
      }
      connectSession();
    },
  });
})();
