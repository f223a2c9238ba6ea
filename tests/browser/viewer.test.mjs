// Drives Debian's Chromium (through playwright-core) against the viewer page.
// Started by run.sh inside the test's network namespace, with Janus running and
// the broadcaster started. Each check appends "PASS name" or "FAIL name: why"
// to $RESULTS; run.sh counts them.
//
// Environment (set by run.sh): WORK, WEB_ROOT, JANUS_URL, ROOM, BROADCASTER,
// JANUS_CTL, RESULTS, SCREENSHOT, ADMIN_URL, ADMIN_SECRET, ROOM_SECRET.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import {
  assert, check as runCheck, env, janusPost as postToJanus, launchChromium, pluginRequest as requestPlugin,
  record as recordLine, servePage, sleep, waitFor,
} from './harness.mjs';

const WORK = env('WORK');
const WEB_ROOT = env('WEB_ROOT');
const JANUS_URL = env('JANUS_URL');
const ROOM = Number(env('ROOM'));
const ROOM_SECRET = env('ROOM_SECRET');
const BROADCASTER = env('BROADCASTER');
const JANUS_CTL = env('JANUS_CTL');
const RESULTS = env('RESULTS');
const SCREENSHOT = env('SCREENSHOT');
const ADMIN_URL = env('ADMIN_URL');
const ADMIN_SECRET = env('ADMIN_SECRET');
// The plugins' admin key deploy/janus-conf.sh wrote for the test Janus (janus.sh):
// only its holders create rooms, as the operator of this test does.
const adminKey = () => readFileSync(`${WORK}/janus/broadcast-agent.admin_key`, 'utf8').trim();
const VIEWER_NAME = 'e2e-viewer';
// The second viewer's name: markup in it must show as text.
const SECOND_NAME = 'Bea <i>B</i>';
// The name the page gives the Pi (deploy/web/people.js), only to the Pi.
const PI_NAME = 'The Pi (broadcaster)';
const isPiName = (name) => String(name).replace(/\s+/g, ' ').trim().toLowerCase() === PI_NAME.toLowerCase();

// The name in an AudioBridge display "[avatar] name" (deploy/web/people.js).
const nameOf = (display) => (/^\[[a-z]+\] ([\s\S]*)$/.exec(display || '') || [null, display])[1];

let passed = 0;
let failed = 0;

async function check(name, fn) {
  const ok = await runCheck(name, fn);
  if (ok) passed++; else failed++;
  return ok;
}

function record(ok, name, why) {
  if (recordLine(ok, name, why)) passed++; else failed++;
}

function broadcaster(cmd) {
  execFileSync('bash', [BROADCASTER, cmd], { stdio: 'inherit', timeout: 30000 });
}

// ---- a throwaway-session Janus client for probing (listparticipants, create) ----

const janusPost = (path, body) => postToJanus(JANUS_URL, path, body);
const pluginRequest = (plugin, request) => requestPlugin(JANUS_URL, plugin, request);

async function participants(room) {
  const data = await pluginRequest('janus.plugin.audiobridge', { request: 'listparticipants', room });
  return (data && data.participants) || [];
}

const admin = async (path, body) => (await fetch(ADMIN_URL + path, {
  method: 'POST', signal: AbortSignal.timeout(5000),
  body: JSON.stringify({ transaction: 't', admin_secret: ADMIN_SECRET, ...body }),
})).json();

// The handles ({ path, info }, through the Admin API) of the viewer page
// whose AudioBridge participant is named `display`: its Janus session's.
async function handlesOf(display) {
  const sessions = (await admin('', { janus: 'list_sessions' })).sessions || [];
  for (const sid of sessions) {
    const handles = [];
    for (const hid of (await admin(`/${sid}`, { janus: 'list_handles' })).handles || []) {
      handles.push({ path: `/${sid}/${hid}`, info: (await admin(`/${sid}/${hid}`, { janus: 'handle_info' })).info || {} });
    }
    const isViewer = (h) => h.info.plugin === 'janus.plugin.audiobridge' && nameOf((h.info.plugin_specific || {}).display) === display;
    if (handles.some(isViewer)) return handles;
  }
  return [];
}

// Bytes Janus has received so far from the AudioBridge participant named
// `display` (its WebRTC inbound stats), or null.
async function bridgeBytesIn(display) {
  const bridge = (await handlesOf(display)).find((h) => h.info.plugin === 'janus.plugin.audiobridge');
  if (!bridge) return null;
  const media = Object.values((bridge.info.webrtc && bridge.info.webrtc.media) || {});
  return media.reduce((n, m) => n + ((m.stats && m.stats.in && m.stats.in.bytes) || 0), 0);
}

// Janus hangs up the PeerConnection of `plugin`'s handle of viewer `display`
// (Admin API hangup_webrtc), as when that connection fails.
async function hangUpHandle(display, plugin) {
  const h = (await handlesOf(display)).find((x) => x.info.plugin === plugin);
  assert(h, `no ${plugin} handle of "${display}" in the Admin API`);
  const reply = await admin(h.path, { janus: 'hangup_webrtc' });
  assert(reply.janus === 'success', `hangup_webrtc: ${JSON.stringify(reply)}`);
}

// ---- the page and the browser ----

const { server, base: PAGE_BASE } = await servePage(WEB_ROOT, JANUS_URL);
const browser = await launchChromium(WORK);
const pageErrors = [];
const consoleLog = [];

// A new tab on the page with `query`; `setup(page)` runs before it loads.
async function openViewer(query, setup) {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => consoleLog.push(`[${m.type()}] ${m.text()}`));
  if (setup) await setup(page);
  await page.goto(`${PAGE_BASE}?${query}`, { timeout: 15000 });
  return page;
}

const state = (page) => page.evaluate(() => window.viewerState);
const domState = (page) => page.getAttribute('#state', 'data-state');
const frames = (page) => page.evaluate(() => {
  const v = document.getElementById('video');
  return { width: v.videoWidth, time: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames };
});

async function waitState(page, want, timeoutMs) {
  const t0 = Date.now();
  await waitFor(`state "${want}" (now "${await state(page).catch(() => '?')}")`,
    async () => (await state(page)) === want && (await domState(page)) === want, timeoutMs, 50);
  return Date.now() - t0;
}

// Video plays: a width, and frames and currentTime advancing over ~2 s.
async function assertVideoAdvancing(page) {
  const a = await frames(page);
  await sleep(2000);
  const b = await frames(page);
  assert(b.width > 0, `videoWidth is ${b.width}`);
  assert(b.frames > a.frames, `totalVideoFrames did not advance (${a.frames} -> ${b.frames})`);
  assert(b.time > a.time, `currentTime did not advance (${a.time} -> ${b.time})`);
  return `${b.width}px wide, ${b.frames - a.frames} frames in 2 s`;
}

async function waitParticipant(room, wantMuted, timeoutMs) {
  return waitFor(`participant "${VIEWER_NAME}" muted=${wantMuted} in room ${room}`, async () => {
    const list = await participants(room);
    return list.find((p) => nameOf(p.display) === VIEWER_NAME && p.muted === wantMuted && p.setup !== false);
  }, timeoutMs, 250);
}

// ---- chat, names, avatars, talking (two viewers) ----

const chatState = (p) => p.evaluate(() => window.chatState);

async function waitChat(p, want, timeoutMs) {
  await waitFor(`chat state "${want}" (now "${await chatState(p).catch(() => '?')}")`,
    async () => (await chatState(p)) === want && (await p.getAttribute('#chat', 'data-state')) === want,
    timeoutMs, 50);
}

// Sends `text` from page `from`; returns the ms until page `to` shows it
// (both clocks are this machine's). A MutationObserver on `to` notes the
// time each message is added.
async function chatDelay(from, to, text) {
  await to.evaluate(() => {
    if (window.__chatSeen) return;
    window.__chatSeen = {};
    new MutationObserver(() => {
      for (const e of document.querySelectorAll('#chat-log .text')) {
        if (!(e.textContent in window.__chatSeen)) window.__chatSeen[e.textContent] = Date.now();
      }
    }).observe(document.getElementById('chat-log'), { childList: true });
  });
  const sentAt = await from.evaluate((t) => {
    document.getElementById('chat-input').value = t;
    const at = Date.now();
    document.getElementById('chat-form').requestSubmit();
    return at;
  }, text);
  const seenAt = await waitFor(`"${text}" at the other viewer`,
    () => to.evaluate((t) => window.__chatSeen[t], text), 5000, 20);
  return seenAt - sentAt;
}

// A chat participant that is not the viewer page, so it can send what the
// page never does (any display, whispers): janus.js in a blank tab of the
// page's server, joined to the chat room as `username` with `display`.
// Returns { participants (the join reply's), send(body) -> reply, close() }.
async function chatClient(username, display) {
  const tab = await browser.newPage();
  tab.on('pageerror', (e) => pageErrors.push('chat client: ' + e.message));
  await tab.goto(new URL('blank', PAGE_BASE).href, { timeout: 15000 });
  for (const src of ['adapter.js', 'janus.js']) await tab.addScriptTag({ url: new URL(src, PAGE_BASE).href });
  const participants = await tab.evaluate((a) => new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error('no TextRoom join within 15 s')), 15000);
    let handle = null;
    let seq = 0;
    const waiting = {};
    window.__chatSend = (body) => new Promise((done) => {
      const transaction = 'c' + (++seq);
      waiting[transaction] = done;
      handle.data({ text: JSON.stringify({ transaction, room: a.room, ...body }), error: (e) => reject(new Error(e)) });
    });
    const joined = (r) => (r.textroom === 'success' ? resolve(r.participants || []) : reject(new Error(JSON.stringify(r))));
    Janus.init({ callback: () => {
      const janus = new Janus({ server: a.server, error: (e) => reject(new Error(e)), success: () => janus.attach({
        plugin: 'janus.plugin.textroom',
        error: (e) => reject(new Error(e)),
        success: (h) => { handle = h; h.send({ message: { request: 'setup' } }); },
        onmessage: (msg, jsep) => {
          if (msg.error) reject(new Error(msg.error));
          if (jsep) handle.createAnswer({ jsep, tracks: [{ type: 'data' }], error: (e) => reject(new Error(e)),
            success: (ours) => handle.send({ message: { request: 'ack' }, jsep: ours }) });
        },
        ondataopen: () => window.__chatSend({ textroom: 'join', username: a.username, display: a.display }).then(joined),
        ondata: (data) => {
          const m = JSON.parse(data);
          if (waiting[m.transaction]) { waiting[m.transaction](m); delete waiting[m.transaction]; }
        },
      }) });
    } });
  }), { server: JANUS_URL, room: ROOM, username, display });
  return { participants, send: (body) => tab.evaluate((b) => window.__chatSend(b), body), close: () => tab.close() };
}

// A participant of the AudioBridge room without media (joined through
// Janus's HTTP API), with participant id `id` and `display`. Returns close().
async function bridgeGuest(id, display) {
  const s = await janusPost('', { janus: 'create' });
  assert(s.janus === 'success', 'janus create: ' + JSON.stringify(s));
  const close = () => janusPost(`/${s.data.id}`, { janus: 'destroy' }).catch(() => {});
  const h = await janusPost(`/${s.data.id}`, { janus: 'attach', plugin: 'janus.plugin.audiobridge' });
  const r = await janusPost(`/${s.data.id}/${h.data.id}`, { janus: 'message', body: { request: 'join', room: ROOM, id, display } });
  if (r.janus !== 'ack') { await close(); throw new Error('audiobridge join: ' + JSON.stringify(r)); }
  return close;
}

// How page `p` draws the chat message whose text is `text` (the last such):
// { name, avatar (the img's src), private (data-private), label (.private's text) }.
const chatEntry = (p, text) => p.evaluate((t) => {
  const li = [...document.querySelectorAll('#chat-log li')].filter((e) => e.querySelector('.text').textContent === t).pop();
  const label = li && li.querySelector('.private');
  return li && { name: li.querySelector('.name').textContent, avatar: li.querySelector('img').getAttribute('src'),
    private: li.dataset.private, label: label ? label.textContent : '' };
}, text);

// 1 s of a steady 440 Hz tone at -12 dBFS (48 kHz, 16-bit mono WAV), which
// Chromium loops as its fake microphone: speech-like loudness, all the time.
function writeTone(path) {
  const rate = 48000;
  const samples = new Int16Array(rate);
  for (let i = 0; i < rate; i++) samples[i] = Math.round(0.25 * 32767 * Math.sin(2 * Math.PI * 440 * i / rate));
  const header = Buffer.alloc(44);
  header.write('RIFF', 0); header.writeUInt32LE(36 + samples.byteLength, 4); header.write('WAVE', 8);
  header.write('fmt ', 12); header.writeUInt32LE(16, 16); header.writeUInt16LE(1, 20); header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24); header.writeUInt32LE(rate * 2, 28); header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34); header.write('data', 36); header.writeUInt32LE(samples.byteLength, 40);
  writeFileSync(path, Buffer.concat([header, Buffer.from(samples.buffer)]));
}

// The entry for `name` in page `p`'s participant list: { avatar, talking, self }.
const listed = (p, name) => p.evaluate((n) => {
  const li = [...document.querySelectorAll('#people li')].find((e) => e.dataset.name === n);
  return li && { avatar: li.dataset.avatar, talking: li.dataset.talking === 'true', self: li.dataset.self === 'true' };
}, name);

async function chatChecks(first) {
  const tone = join(WORK, 'tone.wav');
  writeTone(tone);
  const browserB = await launchChromium(WORK, [`--use-file-for-fake-audio-capture=${tone}`]);
  const pageB = await browserB.newPage();
  pageB.setDefaultTimeout(15000);
  pageB.on('pageerror', (e) => pageErrors.push('second viewer: ' + e.message));
  pageB.on('console', (m) => consoleLog.push(`[B ${m.type()}] ${m.text()}`));
  await pageB.goto(`${PAGE_BASE}?r=${ROOM}&janus=${encodeURIComponent(JANUS_URL)}`, { timeout: 15000 });
  await check("a first visit's random name and avatar are remembered (the same after a reload)", async () => {
    const who = () => pageB.evaluate(() => ({
      name: document.getElementById('name').value,
      avatar: document.querySelector('.avatar-choice[aria-checked="true"]').dataset.avatar,
    }));
    const a = await who();
    await pageB.reload({ timeout: 15000 });
    const b = await who();
    assert(/^viewer-\d+$/.test(a.name) && JSON.stringify(a) === JSON.stringify(b), `${JSON.stringify(a)} then ${JSON.stringify(b)}`);
    return JSON.stringify(b);
  });
  // Names and avatars picked in the page, as a viewer does.
  await first.click('.avatar-choice[data-avatar="fox"]');
  await pageB.fill('#name', SECOND_NAME);
  await pageB.dispatchEvent('#name', 'change');
  await pageB.click('.avatar-choice[data-avatar="owl"]');

  await check('chat: both viewers join the chat room', async () => {
    for (const p of [first, pageB]) await waitChat(p, 'open', 15000);
  });
  await check('chat: a message from one viewer is shown at the other within 1 s', async () => {
    const delays = [];
    for (let i = 0; i < 5; i++) delays.push(await chatDelay(i % 2 ? pageB : first, i % 2 ? first : pageB, `hello ${i} ${Date.now()}`));
    assert(Math.max(...delays) <= 1000, `delays ${delays.join(', ')} ms`);
    return `delays ${delays.join(', ')} ms`;
  });
  await check("chat: messages show the sender's name, avatar and time", async () => {
    const entry = await pageB.evaluate(() => {
      const li = [...document.querySelectorAll('#chat-log li')].pop();
      return { name: li.querySelector('.name').textContent, img: li.querySelector('img').getAttribute('src'),
        time: li.querySelector('time').textContent };
    });
    assert(entry.name === VIEWER_NAME && entry.img === 'avatars/fox.svg' && /\d\d:\d\d/.test(entry.time),
      JSON.stringify(entry));
    return JSON.stringify(entry);
  });
  await check('chat: HTML in a message is shown as text and creates no element', async () => {
    const evil = `<img src=x onerror="window.__pwned=1"><b>bold</b> ${Date.now()}`;
    await chatDelay(first, pageB, evil);
    for (const p of [first, pageB]) {
      const r = await p.evaluate((t) => ({
        text: [...document.querySelectorAll('#chat-log .text')].some((e) => e.textContent === t),
        elements: document.querySelectorAll('#chat-log .text *, #chat-log b, #chat-log img:not(.avatar)').length,
        pwned: window.__pwned,
      }), evil);
      assert(r.text && r.elements === 0 && r.pwned === undefined, JSON.stringify(r));
    }
  });
  await check('chat: a whisper to the viewer is shown marked private, to the viewer', async () => {
    const whisperer = await chatClient('e2e-whisperer', '[cat] Cleo');
    try {
      const viewer = whisperer.participants.find((p) => p.display === `[fox] ${VIEWER_NAME}`);
      assert(viewer, `the viewer is not in the chat room: ${JSON.stringify(whisperer.participants)}`);
      const text = `psst ${Date.now()}`;
      const reply = await whisperer.send({ textroom: 'message', to: viewer.username, text });
      assert(reply.textroom === 'success' && reply.sent && reply.sent[viewer.username] === true, JSON.stringify(reply));
      const entry = await waitFor('the whisper at the viewer', () => chatEntry(first, text), 5000, 20);
      assert(entry.private === 'true' && /to you/.test(entry.label) && entry.name === 'Cleo', JSON.stringify(entry));
      return JSON.stringify(entry);
    } finally {
      await whisperer.close();
    }
  });
  await check("chat and list: only the Pi is drawn with the Pi's name and avatar; the page refuses the name", async () => {
    const seen = [];
    // In the chat, with the page's display form and with a raw one.
    const imitator = await chatClient('e2e-imitator', `[fox] ${PI_NAME}`);
    try {
      for (const display of [null, ' the  PI (Broadcaster)']) {
        if (display) {
          await imitator.send({ textroom: 'leave' });
          const r = await imitator.send({ textroom: 'join', username: 'e2e-imitator', display });
          assert(r.textroom === 'success', `join again: ${JSON.stringify(r)}`);
        }
        const text = `I am the Pi ${Date.now()}`;
        assert((await imitator.send({ textroom: 'message', text })).textroom === 'success', 'message not sent');
        const e = await waitFor('the message at the viewer', () => chatEntry(first, text), 5000, 20);
        assert(!isPiName(e.name) && e.avatar !== 'avatars/pi.svg' && e.private !== 'true', `drawn as ${JSON.stringify(e)}`);
        seen.push(`chat "${e.name}" ${e.avatar}`);
      }
      // An announcement needs the room's secret, which the agent holds.
      const refused = await imitator.send({ textroom: 'announcement', text: 'no secret' });
      assert(refused.textroom === 'error', `announcement without the secret: ${JSON.stringify(refused)}`);
    } finally {
      await imitator.close();
    }
    const text = `from the Pi ${Date.now()}`;
    const sent = await pluginRequest('janus.plugin.textroom', { request: 'announcement', room: ROOM, secret: ROOM_SECRET, text });
    assert(sent && sent.textroom === 'success', `announcement with the secret: ${JSON.stringify(sent)}`);
    const pi = await waitFor('the announcement at the viewer', () => chatEntry(first, text), 5000, 20);
    assert(isPiName(pi.name) && pi.avatar === 'avatars/pi.svg', `the Pi's announcement drawn as ${JSON.stringify(pi)}`);
    // In the participant list.
    const guestId = 990001;
    const closeGuest = await bridgeGuest(guestId, `[robot] THE PI  (broadcaster)`);
    try {
      const li = await waitFor('the guest listed', () => first.evaluate((id) => {
        const e = document.querySelector(`#people li[data-id="${id}"]`);
        return e && { name: e.querySelector('.name').textContent, avatar: e.dataset.avatar };
      }, guestId), 5000, 20);
      assert(!isPiName(li.name) && li.avatar !== 'pi', `listed as ${JSON.stringify(li)}`);
      const pis = await first.evaluate(() => [...document.querySelectorAll('#people li')]
        .filter((e) => e.dataset.avatar === 'pi').map((e) => e.dataset.id));
      assert(pis.join() === 'pi', `entries with the Pi's avatar: ${pis.join(', ')}`);
      seen.push(`list "${li.name}" ${li.avatar}`);
    } finally {
      await closeGuest();
    }
    // The viewer's own name: refused, the one in use stays.
    await first.fill('#name', 'the pi (BROADCASTER) ');
    await first.dispatchEvent('#name', 'change');
    const kept = await first.inputValue('#name');
    await first.fill('#name', VIEWER_NAME);
    if (kept !== VIEWER_NAME) await first.dispatchEvent('#name', 'change');
    assert(kept === VIEWER_NAME, `the page took the name "${kept}"`);
    return seen.join('; ');
  });
  await check('both viewers see each other in the room with their names and avatars', async () => {
    const want = [[first, SECOND_NAME, 'owl'], [pageB, VIEWER_NAME, 'fox'], [first, VIEWER_NAME, 'fox'],
      [pageB, SECOND_NAME, 'owl']];
    for (const [p, name, avatar] of want) {
      await waitFor(`"${name}" with avatar ${avatar} listed`, async () => (await listed(p, name) || {}).avatar === avatar, 5000);
    }
    assert((await listed(first, VIEWER_NAME)).self && (await listed(pageB, SECOND_NAME)).self, 'own entry not marked');
    assert(await first.evaluate(() => !document.querySelector('#people i')), 'markup in a name became an element');
    assert(await first.isVisible('#people li[data-id="pi"]'), 'no entry for the Pi');
  });
  await check('talking: the viewer whose microphone plays a tone is shown talking, at both viewers', async () => {
    const talking = (want) => async () => {
      for (const p of [first, pageB]) if ((await listed(p, SECOND_NAME) || {}).talking !== want) return false;
      return true;
    };
    await waitFor('talking indicator on', talking(true), 8000, 50);
    const before = (await participants(ROOM)).find((p) => nameOf(p.display) === SECOND_NAME);
    assert(before && before.talking === true, `Janus listparticipants: ${JSON.stringify(before)}`);
    // Muted, it is shown silent (Janus drops muted audio before measuring
    // it, so its talking state stands), and talking again with the mic on.
    let t = Date.now();
    await pageB.click('#mic');
    await waitFor('talking indicator off with the mic off', talking(false), 8000, 50);
    const off = Date.now() - t;
    t = Date.now();
    await pageB.click('#mic');
    await waitFor('talking indicator on with the mic on', talking(true), 8000, 50);
    const on = Date.now() - t;
    const janus = (await participants(ROOM)).find((p) => nameOf(p.display) === SECOND_NAME);
    assert(janus && janus.talking === true, `Janus listparticipants: ${JSON.stringify(janus)}`);
    // Chromium's own fake microphone (a short beep twice a second) stays
    // below the room's threshold.
    const beep = await listed(pageB, VIEWER_NAME);
    return `off ${off} ms after mic off, on ${on} ms after mic on; the beeping viewer ${beep.talking ? 'IS' : 'is not'} shown talking`;
  });
  await check('name and avatar survive a reload; the chat replays its history', async () => {
    await pageB.reload({ timeout: 15000 });
    await waitChat(pageB, 'open', 15000);
    const r = await pageB.evaluate(() => ({
      name: document.getElementById('name').value,
      avatar: document.querySelector('.avatar-choice[aria-checked="true"]').dataset.avatar,
      history: [...document.querySelectorAll('#chat-log .text')].filter((e) => e.textContent.startsWith('hello ')).length,
    }));
    assert(r.name === SECOND_NAME && r.avatar === 'owl', JSON.stringify(r));
    assert(r.history === 5, `history replayed ${r.history} of the 5 messages`);
    await waitFor('the reloaded viewer listed again', async () => (await listed(first, SECOND_NAME) || {}).avatar === 'owl', 10000);
    return JSON.stringify(r);
  });
  return { browser: browserB, page: pageB };
}

// A viewer page that keeps its PeerConnections in window.__pcs.
const keepPcs = (p) => p.addInitScript(() => {
  const RealPC = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) { const pc = new RealPC(...args); window.__pcs.push(pc); return pc; };
  window.RTCPeerConnection.prototype = RealPC.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, RealPC);
});

// Page `p`: sets its audio receivers' jitterBufferTarget (the least audio
// jitter buffer delay the page asks Chromium for) to `ms`.
const setAudioTarget = (p, ms) => p.evaluate((target) => {
  window.__pcs.flatMap((pc) => pc.getReceivers()).filter((r) => r.track.kind === 'audio')
    .forEach((r) => { r.jitterBufferTarget = target; });
}, ms);

// Page `p`: the page's hold and audio buffer, and the mean target of the
// video jitter buffer (ms) over the next second, from getStats.
const syncState = (p) => p.evaluate(async () => {
  const video = async () => {
    let v = {};
    for (const pc of window.__pcs) (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') v = r; });
    return v;
  };
  const a = await video();
  await new Promise((r) => setTimeout(r, 1000));
  const b = await video();
  const n = b.jitterBufferEmittedCount - a.jitterBufferEmittedCount;
  return { ...window.viewerPlayout, videoTargetMs: n > 0 ? Math.round((1000 * (b.jitterBufferTargetDelay - a.jitterBufferTargetDelay)) / n) : null };
});

// A fresh viewer: with the browser's own (short) audio buffer, then with a
// long one (its audio receiver's jitterBufferTarget = 200 ms).
async function syncHoldCheck() {
  const other = await openViewer(`r=${ROOM}&janus=${encodeURIComponent(JANUS_URL)}&name=e2e-sync&muted=1`, keepPcs);
  const playout = () => other.evaluate(() => window.viewerPlayout);
  const say = (x) => `hold ${x.holdMs} ms, audio buffer ${Math.round(x.audioBufferMs)} ms, video buffer target ${x.videoTargetMs} ms`;
  try {
    await waitState(other, 'live', 20000);
    await waitFor("the page's first decision", async () => (await playout()).audioBufferMs !== null, 10000, 250);
    const short = await syncState(other);
    await setAudioTarget(other, 200);
    await waitFor('the longest hold (60 ms), settled', async () => {
      const x = await playout();
      return x.holdMs >= 60 && x.holdMs === x.wantMs;
    }, 15000, 250).catch(() => {});
    const long = await syncState(other);
    const seen = `short audio buffer: ${say(short)}; long: ${say(long)}`;
    assert(long.holdMs === 60 && long.videoTargetMs >= 35, `video not held by 60 ms while the audio buffer is long (${seen})`);
    // The short case asks for a hold of at most 30 ms only when Chromium's own
    // buffer and output come to 90 ms or less (the lead is 60 ms); on a loaded
    // machine they are often longer: then there is no short case to check.
    if (short.audioBufferMs + (short.audioOutputMs || 0) <= 90) {
      assert(short.holdMs <= 30 && short.videoTargetMs <= long.videoTargetMs - 15,
        `video held as long while the audio buffer is short (${seen})`);
    }
    return seen;
  } finally {
    await other.close();
  }
}

const viewerQuery = `r=${ROOM}&janus=${encodeURIComponent(JANUS_URL)}&name=${VIEWER_NAME}`;
let page;

try {
  // 1. First load: video comes up.
  const t0 = Date.now();
  page = await openViewer(viewerQuery);
  const live = await check('page goes live (data-state="live")', async () => {
    await waitState(page, 'live', 30000);
    return `time to video ${Date.now() - t0} ms from navigation`;
  });
  await check('video plays (videoWidth > 0, frames and currentTime advancing)', () => assertVideoAdvancing(page));
  await check("the viewer's keyframe request reached the agent (status --json keyframes)", async () => {
    // Janus passes a PLI on when a viewer starts, to the address the
    // agent's RTCP comes from (stream.video_rtcp_port).
    const status = JSON.parse(execFileSync('bash', [BROADCASTER, 'status'], { timeout: 30000 }));
    const video = (status.pipelines || []).find((p) => p.name === 'video') || {};
    assert(video.keyframes && video.keyframes.requests > 0, `video keyframes: ${JSON.stringify(video.keyframes)}`);
    return JSON.stringify(video.keyframes);
  });

  // 2. Talk-back: the fake microphone is a participant of the room, not muted.
  await check('talk-back: viewer joined the AudioBridge room, not muted', async () => {
    const p = await waitParticipant(ROOM, false, 10000);
    return `participant id ${p.id}`;
  });
  await check("talk-back: Janus receives the viewer's microphone audio", async () => {
    const a = await waitFor('the participant handle in the Admin API', () => bridgeBytesIn(VIEWER_NAME), 5000, 250);
    await sleep(1500);
    const b = await bridgeBytesIn(VIEWER_NAME);
    assert(b > a, `inbound bytes did not grow (${a} -> ${b})`);
    return `${b - a} bytes in 1.5 s`;
  });
  await check("talk-back: the viewer's voice is heard on the agent's sound card", async () => {
    // The agent plays the room's mix (the browser's fake microphone) into ALSA
    // `pulse`; broadcaster.sh records the null sink's monitor.
    await waitFor('sound on the sound card', () => {
      try { broadcaster('heard'); return true; } catch (e) { return e; }
    }, 15000, 100);
  });
  await check("the Pi's audio arrives with the video; Unmute turns the sound on", async () => {
    const kinds = await page.evaluate(() => document.getElementById('video').srcObject.getTracks()
      .filter((t) => t.readyState === 'live').map((t) => t.kind).sort().join(','));
    assert(kinds === 'audio,video', `live tracks on #video: "${kinds}"`);
    assert(await page.evaluate(() => document.getElementById('video').muted), 'video does not start muted');
    await page.click('#sound');
    assert(!(await page.evaluate(() => document.getElementById('video').muted)), 'still muted after Unmute');
    await page.click('#sound');
  });
  await check('mic button mutes and unmutes the participant on Janus', async () => {
    await page.click('#mic');
    await waitParticipant(ROOM, true, 5000);
    await page.click('#mic');
    await waitParticipant(ROOM, false, 5000);
  });

  // 2b. A second viewer (its own browser, so its own localStorage, and a
  //     fake microphone playing a steady tone): chat, names, avatars, talking.
  const second = await chatChecks(page);

  // 2c. The video connection fails while the broadcast goes on (Janus hangs
  //     it up): only the video is redone; the room stays as it was.
  await check('a video retry keeps the chat, the participant list and talk-back as they are', async () => {
    const before = (await participants(ROOM)).find((p) => nameOf(p.display) === VIEWER_NAME);
    await page.evaluate(() => {
      const w = { chat: new Set(), noSelf: 0, log: [...document.querySelectorAll('#chat-log li')] };
      w.timer = setInterval(() => {
        w.chat.add(window.chatState);
        if (!document.querySelector('#people li[data-self="true"]')) w.noSelf++;
      }, 20);
      window.__roomWatch = w;
    });
    await hangUpHandle(VIEWER_NAME, 'janus.plugin.streaming');
    await waitFor('the video retried (state not "live")', async () => (await state(page)) !== 'live', 5000, 20);
    await waitState(page, 'live', 20000);
    const seen = await page.evaluate(() => {
      const w = window.__roomWatch;
      clearInterval(w.timer);
      return { chat: [...w.chat], noSelf: w.noSelf, log: w.log.length, logKept: w.log.every((li) => li.isConnected) };
    });
    assert(seen.chat.join() === 'open', `chat states during the retry: ${seen.chat.join(', ')}`);
    assert(seen.log > 0 && seen.logKept, `chat log cleared (${seen.log} messages before)`);
    assert(seen.noSelf === 0, `the viewer's own entry was missing from the list ${seen.noSelf} times`);
    const after = (await participants(ROOM)).find((p) => nameOf(p.display) === VIEWER_NAME);
    assert(after && after.id === before.id, `talk-back re-joined: ${before.id} -> ${after && after.id}`);
    return `chat open throughout, ${seen.log} messages kept, participant ${after.id} kept`;
  });
  await check('chat: a hung-up chat connection comes back by itself', async () => {
    await hangUpHandle(VIEWER_NAME, 'janus.plugin.textroom');
    await waitFor('chat no longer open', async () => (await chatState(page)) !== 'open', 5000, 20);
    const t = Date.now();
    await waitChat(page, 'open', 10000);
    const back = Date.now() - t;
    return `open again after ${back} ms; a message then took ${await chatDelay(second.page, page, 'reconnected ' + Date.now())} ms`;
  });

  if (live) {
    await check('screenshot of the live page', async () => {
      await sleep(500);
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      return SCREENSHOT;
    });
  }

  // 3. The broadcast closes: the page says so within 5 s.
  await page.evaluate(() => { window.__noReloadMarker = 42; });
  await check('closing the broadcast shows "closed" within 5 s', async () => {
    broadcaster('close');
    const ms = await waitState(page, 'closed', 5000);
    return `${ms} ms`;
  });
  await check('chat shows "closed" on both viewers when the broadcast closes', async () => {
    for (const p of [page, second.page]) await waitChat(p, 'closed', 5000);
  });

  // 4. It comes back: video again, without a reload, within 3 s (the
  //    bench's goal is 1 s: benches/glass_to_glass.sh; the page used to take 4-5 s).
  await check('re-opened broadcast goes live again without a reload, within 3 s', async () => {
    const t = Date.now();
    broadcaster('start');
    await waitState(page, 'live', 20000);
    const ms = Date.now() - t;
    const marker = await page.evaluate(() => window.__noReloadMarker);
    assert(marker === 42, 'the page was reloaded');
    assert(ms <= 3000, `live ${ms} ms after re-creation`);
    return `${ms} ms after re-creation`;
  });
  await check('video plays again after re-open', () => assertVideoAdvancing(page));
  await check('talk-back re-joined after re-open', async () => { await waitParticipant(ROOM, false, 10000); });
  await check('chat works again after re-open (a message reaches the other viewer)', async () => {
    for (const p of [page, second.page]) await waitChat(p, 'open', 10000);
    const ms = await chatDelay(second.page, page, 'back again ' + Date.now());
    return `${ms} ms`;
  });

  // 5. Janus restarts (rooms and sessions are lost): the page re-creates its
  //    session and goes live once the broadcaster has re-created the broadcast.
  await check('after a Janus restart the page recovers by itself', async () => {
    execFileSync('bash', [JANUS_CTL, 'restart'], { stdio: 'inherit', timeout: 30000 });
    await waitFor('state other than "live" after the restart',
      async () => (await state(page)) !== 'live', 15000, 100);
    const t = Date.now();
    broadcaster('start');
    await waitState(page, 'live', 30000);
    assert(await page.evaluate(() => window.__noReloadMarker) === 42, 'the page was reloaded');
    return `live ${Date.now() - t} ms after re-creation`;
  });
  await check('video plays after the Janus restart', () => assertVideoAdvancing(page));
  await check('chat recovers after the Janus restart', async () => {
    for (const p of [page, second.page]) await waitChat(p, 'open', 15000);
    return `${await chatDelay(page, second.page, 'after restart ' + Date.now())} ms`;
  });
  await second.browser.close().catch(() => {});

  // 6. A room that does not exist shows "closed" (and keeps checking).
  await check('unknown room shows "closed"', async () => {
    const other = await openViewer(`r=987654&janus=${encodeURIComponent(JANUS_URL)}`);
    await waitState(other, 'closed', 10000);
    await other.close();
  });

  // 6a. delay=sync (the default) holds video while the audio buffer is long
  //    and not while it is short: Chromium's audio buffer is made long from
  //    inside the page (the audio receiver's jitterBufferTarget, as a jittery
  //    network would), and the outcome is read where it happens: the video
  //    jitter buffer's target in getStats, which follows the playout delay
  //    Janus puts on the video at the page's `configure`.
  await check('delay=sync holds video while the audio buffer is long, not while it is short', syncHoldCheck);

  // 6b. An install that copied only index.html and viewer.js (older docs):
  //     the page still plays and talks back, without chat and people list.
  await check('without people.js and chat.js the page still plays and talks back', async () => {
    const other = await openViewer(`r=${ROOM}&janus=${encodeURIComponent(JANUS_URL)}&name=e2e-plain`,
      (p) => p.route(/\/(people|chat)\.js$/, (r) => r.abort()));
    await waitState(other, 'live', 20000);
    await waitFor('"e2e-plain" in the room', async () => (await participants(ROOM)).some((p) => p.display === 'e2e-plain'), 10000, 250);
    assert(await other.isHidden('#room-panel'), 'the chat / people panel is shown');
    await other.close();
  });

  // 6c. ?janus= naming a server config.js does not list is an error, and
  //     the page sends it nothing.
  await check('a server not in config.js is refused, not contacted', async () => {
    const hits = [];
    const stranger = createServer((req, res) => { hits.push(req.url); res.writeHead(404); res.end(); });
    await new Promise((r) => stranger.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${stranger.address().port}/janus`;
    const other = await openViewer(`r=${ROOM}&janus=${encodeURIComponent(url)}`);
    await waitState(other, 'error', 5000);
    await new Promise((r) => setTimeout(r, 1000));
    const text = await other.evaluate(() => document.body.innerText);
    await other.close();
    stranger.close();
    assert(hits.length === 0, `the page contacted ${url}: ${hits.join(', ')}`);
    assert(text.includes('not one of this page'), `no explanation on the page: ${text}`);
  });

  // 7. A broadcast with a PIN: no PIN / wrong PIN asks for it; the right one joins.
  await check('PIN-protected broadcast: asks for the PIN, joins with it', async () => {
    const pinRoom = 7001;
    const r1 = await pluginRequest('janus.plugin.audiobridge',
      { request: 'create', room: pinRoom, pin: '2468', sampling_rate: 48000, admin_key: adminKey() });
    assert(r1.audiobridge === 'created', 'create room: ' + JSON.stringify(r1));
    const r2 = await pluginRequest('janus.plugin.streaming', {
      request: 'create', type: 'rtp', id: pinRoom, pin: '2468', admin_key: adminKey(),
      media: [{ type: 'video', mid: 'v', port: 5104, pt: 96, codec: 'h264' }],
    });
    assert(r2.streaming === 'created', 'create mountpoint: ' + JSON.stringify(r2));
    const base = `r=${pinRoom}&janus=${encodeURIComponent(JANUS_URL)}&name=${VIEWER_NAME}`;
    const p1 = await openViewer(base);
    await waitState(p1, 'pin', 10000);
    assert(await p1.isVisible('#pin-form'), 'the PIN form is not shown');
    await p1.close();
    const p2 = await openViewer(base + '&pin=0000');
    await waitState(p2, 'pin', 10000);
    await p2.fill('#pin', '2468');
    await p2.click('#pin-form button[type=submit]');
    await waitParticipant(pinRoom, false, 10000);
    assert((await state(p2)) !== 'pin', 'still asking for the PIN');
    await p2.close();
  });

  await check('no uncaught errors in the page', async () => {
    assert(pageErrors.length === 0, pageErrors.join(' | '));
  });
} catch (e) {
  record(false, 'test driver', e.stack || String(e));
} finally {
  writeFileSync(join(WORK, 'console.log'), consoleLog.join('\n') + '\n');
  if (failed > 0) {
    console.log('--- last page console lines');
    for (const line of consoleLog.slice(-40)) console.log(line);
  }
  await browser.close().catch(() => {});
  server.close();
}
console.log(`viewer.test.mjs: ${passed} checks passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
