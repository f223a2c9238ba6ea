// Glass-to-glass measurements of the real viewer page (deploy/web) in
// Chromium, against the real agent and Janus; run by benches/glass_to_glass.sh
// through run.sh (BROWSER_SCRIPT=glass.mjs), with the stand-in camera program
// drawing each frame's capture time into its pixels (STANDIN_PATTERN=stamp,
// see tests/standins/camera.py StampedPicture).
//
// GLASS_MODES (comma-separated, default latency,join,reopen):
//   latency  decodes the stamp of each presented frame (requestVideoFrameCallback)
//            and compares it with the wall clock: median and p95 over
//            GLASS_FRAMES frames (default 300), and where the time goes
//   join     GLASS_JOINS fresh viewers (default 20): from the `watch` request
//            to the first presented frame
//   reopen   GLASS_REOPENS times (default 5): the broadcast is closed, then
//            re-opened (`broadcast-agent open`): from the command to the page's
//            first new frame
//   lipsync  for GLASS_LIPSYNC_S seconds (default 30): the stand-in flashes and
//            beeps (into the agent's microphone, STANDIN_BEEP_SINK) at each
//            whole second; the page hears the beep and sees the flash (the
//            frame's display time): audio minus video, per flash. The beep is
//            timed where the audio track delivers it (MediaStreamTrackProcessor,
//            paced by the output that pulls the receiver) and, for comparison,
//            in Web Audio, whose AudioContext clock in headless Chromium runs
//            off the wall clock (2-4 % slow measured) and drifts
//   compare  the page's playout-delay choices side by side, in one session:
//            for each of GLASS_DELAYS (comma-separated `delay=` values, `default`
//            for none; default `default,0,auto`), GLASS_ROUNDS times (default
//            2, interleaved), a fresh viewer watches for GLASS_COMPARE_S s
//            (default 60; the lipsync set-up: flashes and beeps) and reports
//            glass to glass, audio minus video (at the track, and as heard:
//            plus the audio output's own delay), and from getStats over that
//            window: audio concealed samples per minute, the audio and video
//            jitter buffers' mean delay (jitterBufferDelay / EmittedCount);
//            for delay=sync the holds the page chose, and per hold the p95 of
//            the frames in the 2 s after a change to it against the others
//   loss     for GLASS_LOSS_S seconds (default 60), with the relay of the loss
//            bench in front of Janus: what Chromium's getStats says of the
//            video (frames decoded, freezes, NACKs, PLIs) and the audio
//            (concealed samples), per minute. With LOSS_BY=nft (Janus and the
//            agent in network namespaces of their own, janus.sh loss): for
//            each of GLASS_LOSSES (percent, default 5,10,20) and each of
//            GLASS_TRANSPORTS (default webrtc,rtp), GLASS_LOSS_ROUNDS times
//            (default 1), the agent restarted with that stream.transport and
//            that share of its UDP dropped at random on Janus's input hook
//            (from before it starts: ICE and DTLS too), one fresh viewer: the
//            above, the freezes as the page sees them (requestVideoFrameCallback
//            gaps, Chromium's rule, an unfinished freeze at the end included),
//            the share the rule really dropped, and the agent's `status --json`
//            (the uplink's NACKs received, retransmissions, keyframe requests,
//            round trip sampled every 5 s). Goal (GLASS_STRICT=1 fails on it),
//            for webrtc at GLASS_GOAL_AT % (5) or less: frames decoded >=
//            GLASS_GOAL_DECODED (0.90) of those sent, frozen <= GLASS_GOAL_FROZEN_S
//            (1) s per minute, audio concealed <= GLASS_GOAL_CONCEALED (0.02);
//            GLASS_LOSS_REPAIRED=1 also wants NACKs answered by the uplink;
//            GLASS_LOSS_SPEECH=FILE.wav (with MIC_DEVICE=pulse) speech into the
//            agent's microphone instead of the test tone
//   dropone, cap  a weak link (one lost packet; a rate cap): see link.mjs
// GLASS_TRANSPORTS with other modes: each mode runs once per transport
// (GLASS_TRANSPORT_ROUNDS times, default 1, interleaved), the agent restarted
// with that stream.transport before each (webrtc: until its uplink is up).
// Each result is a PASS line with the figures (FAIL when a goal is missed
// with GLASS_STRICT=1), and one `RESULT {json}` line for scripts.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { check, env, launchChromium, servePage, sleep, waitFor } from './harness.mjs';
import { cap, dropOne } from './link.mjs';

const WORK = env('WORK');
const JANUS_URL = env('JANUS_URL');
const ROOM = Number(env('ROOM'));
const BROADCASTER = env('BROADCASTER');
const MODES = (process.env.GLASS_MODES || 'latency,join,reopen').split(',');
const FRAMES = Number(process.env.GLASS_FRAMES || 300);
const JOINS = Number(process.env.GLASS_JOINS || 20);
const REOPENS = Number(process.env.GLASS_REOPENS || 5);
const STRICT = process.env.GLASS_STRICT === '1';
const STAMP_LOG = process.env.STANDIN_STAMP_LOG;
const LIPSYNC_S = Number(process.env.GLASS_LIPSYNC_S || 30);
const LOSS_S = Number(process.env.GLASS_LOSS_S || 60);
const DELAYS = (process.env.GLASS_DELAYS || 'default,0,auto').split(',');
const ROUNDS = Number(process.env.GLASS_ROUNDS || 2);
const COMPARE_S = Number(process.env.GLASS_COMPARE_S || 60);
const JANUS_CTL = process.env.JANUS_CTL;
const LOSS_BY = process.env.LOSS_BY || 'relay';
const LOSSES = (process.env.GLASS_LOSSES || '5,10,20').split(',').map(Number);
const TRANSPORTS = process.env.GLASS_TRANSPORTS ? process.env.GLASS_TRANSPORTS.split(',') : null;
const LOSS_ROUNDS = Number(process.env.GLASS_LOSS_ROUNDS || 1);
const TRANSPORT_ROUNDS = Number(process.env.GLASS_TRANSPORT_ROUNDS || 1);
// Issue 24's goal for the WebRTC uplink at 5 % loss; GLASS_GOAL_* change what
// GLASS_STRICT=1 fails on (the results still say where the goal is missed).
const ISSUE_GOAL = { at: 5, decoded: 0.9, frozen: 1, concealed: 0.02, repaired: false };
const GOAL = {
  at: Number(process.env.GLASS_GOAL_AT || 5),
  decoded: Number(process.env.GLASS_GOAL_DECODED || 0.9),
  frozen: Number(process.env.GLASS_GOAL_FROZEN_S || 1),
  concealed: Number(process.env.GLASS_GOAL_CONCEALED || 0.02),
  repaired: process.env.GLASS_LOSS_REPAIRED === '1',
};
// The frame rate the agent runs at (broadcaster.sh's default is 15).
const FPS = Number(process.env.VIDEO_FRAMERATE || 15);

// Runs in the page before its scripts: notes when `watch` is sent and
// measures every presented frame (stamp, clock, and the frame's metadata).
function measurer() {
  const g = { watchAt: null, frames: [], firstFrameAt: null, keep: false, pcs: [], presents: null };
  window.__glass = g;
  const RealPC = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new RealPC(...args);
    g.pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = RealPC.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, RealPC); // its static methods
  const realFetch = window.fetch.bind(window);
  window.fetch = (url, options) => {
    if (g.watchAt === null && options && /"request":"watch"/.test(options.body || '')) {
      g.watchAt = performance.now();
    }
    return realFetch(url, options);
  };
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  // The stamp: 32 blocks in rows 0-15, inverted in rows 16-31; both must agree.
  function stamp(video) {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w) return { ms: null, flash: false };
    canvas.width = w; canvas.height = 33;
    ctx.drawImage(video, 0, 0, w, 32, 0, 0, w, 32);
    ctx.drawImage(video, 0, h - 8, w, 1, 0, 32, w, 1);
    const d = ctx.getImageData(0, 0, w, 33).data;
    const block = Math.floor(w / 32);
    let ms = 0;
    for (let bit = 0; bit < 32; bit++) {
      const x = bit * block + (block >> 1);
      const one = d[(8 * w + x) * 4] > 128;
      const inverted = d[(24 * w + x) * 4] > 128;
      if (one === inverted) return { ms: null, flash: false };
      ms = ms * 2 + (one ? 1 : 0);
    }
    return { ms, flash: d[(32 * w + (w >> 1)) * 4] > 200 };
  }
  const wall = (t) => t + performance.timeOrigin + (Date.now() - (performance.timeOrigin + performance.now()));
  function onFrame(now, md) {
    const video = document.getElementById('video');
    if (g.firstFrameAt === null) g.firstFrameAt = now;
    if (g.presents) g.presents.push(now); // the loss mode: when each frame was shown
    if (g.keep) {
      const s = stamp(video);
      g.frames.push({
        stamp: s.ms, flash: s.flash, display: wall(md.expectedDisplayTime),
        presented: wall(md.presentationTime), received: md.receiveTime ? wall(md.receiveTime) : null,
        decode: md.processingDuration ? md.processingDuration * 1000 : null,
        hold: window.viewerPlayout ? window.viewerPlayout.holdMs : null, // delay=sync: the page's hold
      });
    }
    video.requestVideoFrameCallback(onFrame);
  }
  document.addEventListener('DOMContentLoaded', () => {
    document.getElementById('video').requestVideoFrameCallback(onFrame);
  });
  // Beep onsets: the wall-clock time the first loud sample is played,
  // from blocks of samples that came in `now` and end with the latest.
  function onsetFinder(rate) {
    let quietSince = 0;
    const out = [];
    return {
      out,
      feed(data, now, latency) {
        const loud = data.findIndex((x) => Math.abs(x) > 0.1);
        if (loud < 0) { quietSince += data.length; return; }
        if (quietSince > rate * 0.5) out.push(wall(now - ((data.length - loud) * 1000) / rate + latency));
        quietSince = 0;
      },
    };
  }
  // The audio track's own samples as Chromium's receiver puts them out
  // (MediaStreamTrackProcessor): paced by the audio output that pulls the
  // receiver, not by an AudioContext's clock.
  g.listenTrack = () => {
    if (!window.MediaStreamTrackProcessor) return 'no MediaStreamTrackProcessor';
    const track = document.getElementById('video').srcObject.getAudioTracks()[0];
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    let finder = null;
    g.trackOnsets = [];
    (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        // When the track delivered the block (performance.now()'s clock): a
        // busy page reads some blocks late (up to 100-230 ms measured, p95
        // 25-40 ms), so the time of reading would add that to some beeps.
        const now = value.timestamp / 1000;
        finder = finder || onsetFinder(value.sampleRate);
        g.trackOnsets = finder.out;
        const data = new Float32Array(value.numberOfFrames);
        value.copyTo(data, { planeIndex: 0, format: 'f32-planar' });
        value.close();
        finder.feed(data, now, 0);
      }
    })();
    return 'reading';
  };
  g.listen = () => {
    const ctx = new AudioContext({ sampleRate: 48000 });
    const stream = new MediaStream(document.getElementById('video').srcObject.getAudioTracks());
    const source = ctx.createMediaStreamSource(stream);
    const node = ctx.createScriptProcessor(256, 1, 1);
    const finder = onsetFinder(ctx.sampleRate);
    g.onsets = finder.out;
    node.onaudioprocess = (e) => {
      // The block holds the latest samples, heard after the context's
      // output latency. (Mapping e.playbackTime through getOutputTimestamp()
      // was tried: with headless Chromium's fake audio output it drifted by
      // seconds a minute.)
      const latency = ((ctx.baseLatency || 0) + (ctx.outputLatency || 0)) * 1000;
      g.outputLatency = latency;
      finder.feed(e.inputBuffer.getChannelData(0), performance.now(), latency);
    };
    source.connect(node);
    node.connect(ctx.destination);
    g.audioContext = ctx;
    g.clocks = () => ({ context: ctx.currentTime * 1000, now: performance.now() });
    return ctx.state;
  };
}

// Milliseconds from a 32-bit millisecond stamp to wall-clock time `t`.
const since = (stampMs, t) => {
  let d = (Math.round(t) % 2 ** 32) - stampMs;
  if (d < -(2 ** 31)) d += 2 ** 32;
  return d;
};

function stats(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const at = (q) => v[Math.min(v.length - 1, Math.floor(q * v.length))];
  return { n: v.length, median: at(0.5), p95: at(0.95), min: v[0], max: v[v.length - 1] };
}

const fmt = (s) => (s ? `median ${s.median.toFixed(0)} ms, p95 ${s.p95.toFixed(0)} ms` : 'n/a');

function broadcaster(cmd) {
  execFileSync('bash', [BROADCASTER, cmd], { stdio: 'inherit', timeout: 30000 });
}

// The video pipeline's counters in `broadcast-agent status --json`.
function videoCounters() {
  const status = JSON.parse(execFileSync('bash', [BROADCASTER, 'status'], { timeout: 30000 }));
  const video = (status.pipelines || []).find((p) => p.name === 'video') || {};
  return { rtp: video.rtp, keyframes: video.keyframes };
}

// The video pipeline's and the WebRTC uplink's counters, and the room's uplink.
function agentCounters() {
  const status = JSON.parse(execFileSync('bash', [BROADCASTER, 'status'], { timeout: 30000 }));
  const pipeline = (name) => (status.pipelines || []).find((p) => p.name === name) || {};
  const video = pipeline('video');
  return {
    rtp: video.rtp, keyframes: video.keyframes, bitrate: video.bitrate ?? null,
    uplink: pipeline('uplink').uplink || null, room_uplink: status.room?.uplink ?? null,
  };
}

// The agent restarted with stream.transport = `transport`; for webrtc, until
// its PeerConnection is up and sending. Milliseconds from the restart to that.
// `transport@label` (GLASS_TRANSPORTS) runs the agent binary GLASS_AGENT_<label>
// (default: the usual one) with the environment GLASS_ENV_<label> ("K=V K2=V2")
// added: one build against another, side by side.
const AGENT_DEFAULT = process.env.AGENT;
const ENV_ADDED = new Set();
async function useTransport(variant) {
  const [transport, label] = variant.split('@');
  for (const key of ENV_ADDED) delete process.env[key];
  ENV_ADDED.clear();
  const agent = label && process.env[`GLASS_AGENT_${label}`];
  if (agent) process.env.AGENT = agent;
  else if (AGENT_DEFAULT) process.env.AGENT = AGENT_DEFAULT;
  else delete process.env.AGENT;
  for (const kv of ((label && process.env[`GLASS_ENV_${label}`]) || '').split(/\s+/).filter(Boolean)) {
    const at = kv.indexOf('=');
    process.env[kv.slice(0, at)] = kv.slice(at + 1);
    ENV_ADDED.add(kv.slice(0, at));
  }
  process.env.TRANSPORT = transport; // broadcaster.sh reads it
  execFileSync('bash', [BROADCASTER, 'stop'], { stdio: 'inherit', timeout: 30000 });
  const t0 = Date.now();
  broadcaster('start');
  if (transport === 'webrtc') {
    await waitFor('the WebRTC uplink up and sending', () => {
      const u = agentCounters().uplink;
      return u && u.connected && u.packets_sent > 0;
    }, 45000, 250);
  }
  return Date.now() - t0;
}

// janus.sh's loss rule (LOSS_BY=nft).
function janusCtl(...args) {
  return execFileSync('bash', [JANUS_CTL, ...args], { timeout: 30000 }).toString();
}

const { server, base } = await servePage(env('WEB_ROOT'), JANUS_URL);
const browser = await launchChromium(WORK, ['--autoplay-policy=no-user-gesture-required']);
const DELAY = process.env.GLASS_DELAY; // the page's delay= (ms), if set
const query = (delay) => `r=${ROOM}&janus=${encodeURIComponent(JANUS_URL)}&name=glass&muted=1` +
  (delay !== undefined && delay !== 'default' ? `&delay=${delay}` : '');
const results = {};

async function openViewer(delay = DELAY) {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.addInitScript(measurer);
  await page.goto(`${base}?${query(delay)}`, { timeout: 15000 });
  return page;
}

// The camera program's share: from the stamp to writing the frame to stdout.
function cameraProgram() {
  if (!STAMP_LOG) return null;
  try {
    const lines = readFileSync(STAMP_LOG, 'utf8').trim().split('\n').slice(-FRAMES);
    return stats(lines.map((l) => { const [s, w] = l.split(' ').map(Number); return since(s, w); }));
  } catch { return null; }
}

async function latency() {
  const page = await openViewer();
  await waitFor('the page live', async () => (await page.evaluate(() => window.viewerState)) === 'live', 30000);
  await sleep(3000); // past the start-up: the jitter buffer settles
  await page.evaluate(() => { window.__glass.keep = true; });
  await waitFor(`${FRAMES} stamped frames`, () => page.evaluate(
    (n) => window.__glass.frames.filter((f) => f.stamp !== null).length >= n, FRAMES), FRAMES * 100 + 20000, 500);
  const frames = (await page.evaluate(() => window.__glass.frames)).filter((f) => f.stamp !== null).slice(0, FRAMES);
  const unreadable = await page.evaluate(() => window.__glass.frames.filter((f) => f.stamp === null).length);
  await page.close();
  const r = {
    frames: frames.length,
    unreadable,
    glass_to_glass: stats(frames.map((f) => since(f.stamp, f.display))),
    to_receive: stats(frames.map((f) => (f.received ? since(f.stamp, f.received) : NaN))),
    receive_to_presented: stats(frames.map((f) => (f.received ? f.presented - f.received : NaN))),
    decode: stats(frames.map((f) => f.decode ?? NaN)),
    presented_to_display: stats(frames.map((f) => f.display - f.presented)),
    camera_program: cameraProgram(),
  };
  results.latency = r;
  const ok = r.glass_to_glass && (!STRICT || r.glass_to_glass.p95 <= 80);
  if (!ok) throw new Error(`glass to glass ${fmt(r.glass_to_glass)} (goal p95 <= 80 ms)`);
  return `glass to glass ${fmt(r.glass_to_glass)} over ${r.frames} frames (${unreadable} unreadable); ` +
    `camera program ${fmt(r.camera_program)}; stamp to last packet received ${fmt(r.to_receive)}; ` +
    `received to presented ${fmt(r.receive_to_presented)} (decode ${fmt(r.decode)}); ` +
    `presented to display ${fmt(r.presented_to_display)}`;
}

async function join() {
  const times = [];
  for (let i = 0; i < JOINS; i++) {
    const page = await openViewer();
    const ms = await waitFor('a first frame', () => page.evaluate(() => {
      const g = window.__glass;
      return g.firstFrameAt !== null && g.watchAt !== null ? g.firstFrameAt - g.watchAt : null;
    }), 20000, 20);
    times.push(ms);
    await page.close();
    // Janus passes on at most one keyframe request a second: joins a second
    // apart are what independent viewers see.
    await sleep(1000);
  }
  const s = stats(times);
  const { room_uplink: _, ...agent } = agentCounters(); // the uplink's keyframe requests too
  results.join = { ...s, all: times.map(Math.round), agent };
  if (STRICT && s.median > 500) throw new Error(`watch to first frame ${fmt(s)} (goal median <= 500 ms)`);
  return `watch to first frame over ${s.n} joins: ${fmt(s)}, max ${s.max.toFixed(0)} ms; ` +
    `agent: ${JSON.stringify(results.join.agent)}`;
}

async function reopen() {
  const page = await openViewer();
  await waitFor('the page live', async () => (await page.evaluate(() => window.viewerState)) === 'live', 30000);
  const times = [];
  for (let i = 0; i < REOPENS; i++) {
    broadcaster('close');
    await waitFor('"closed"', async () => (await page.evaluate(() => window.viewerState)) === 'closed', 10000, 50);
    await sleep(1000);
    await page.evaluate(() => { window.__glass.firstFrameAt = null; });
    const t0 = await page.evaluate(() => performance.now());
    broadcaster('start');
    const first = await waitFor('a new frame', () => page.evaluate(() => window.__glass.firstFrameAt), 30000, 20);
    times.push(first - t0);
  }
  await page.close();
  const s = stats(times);
  results.reopen = { ...s, all: times.map(Math.round) };
  if (STRICT && s.median > 1000) throw new Error(`re-open to video ${fmt(s)} (goal <= 1000 ms)`);
  return `re-open (broadcast-agent open) to the first new frame over ${s.n} re-opens: ${fmt(s)}, max ${s.max.toFixed(0)} ms`;
}

// The full wall-clock ms of a 32-bit stamp, taken near wall-clock time `t`.
const unwrap = (stampMs, t) => stampMs + Math.round((t - stampMs) / 2 ** 32) * 2 ** 32;

// Beep heard minus flash seen, per flash: each flash's first frame and the
// beep onset heard in the second it shows.
function pairFlashes(frames, onsets) {
  const offsets = [];
  frames.forEach((f, i) => {
    if (!f.flash || f.stamp === null || (i > 0 && frames[i - 1].flash)) return;
    const event = Math.floor(unwrap(f.stamp, f.display) / 1000) * 1000;
    const heard = onsets.find((a) => a >= event && a < event + 1000);
    if (heard !== undefined) offsets.push(heard - f.display);
  });
  return { ...stats(offsets), all: offsets.map(Math.round) };
}

// The browser's own clocks between two snapshots: the AudioContext's (which
// paces the Web Audio callbacks) and what the audio receiver (NetEq) put out.
function browserClocks(before, after) {
  const a = after.audio || {}, b = before.audio || {};
  const d = (key) => (a[key] || 0) - (b[key] || 0);
  const wallMs = after.clocks.now - before.clocks.now;
  return {
    context_ms_per_s: (1000 * (after.clocks.context - before.clocks.context)) / wallMs,
    neteq_samples_per_s: (1000 * d('totalSamplesReceived')) / wallMs,
    packets_per_s: (1000 * d('packetsReceived')) / wallMs,
    neteq_ms: a.jitterBufferEmittedCount ? (1000 * a.jitterBufferDelay) / a.jitterBufferEmittedCount : null,
    concealed_samples: d('concealedSamples'),
    inserted_for_deceleration: d('insertedSamplesForDeceleration'),
    removed_for_acceleration: d('removedSamplesForAcceleration'),
  };
}

async function lipsync() {
  const page = await openViewer();
  await waitFor('the page live', async () => (await page.evaluate(() => window.viewerState)) === 'live', 30000);
  const state = await page.evaluate(() => window.__glass.listen());
  const track = await page.evaluate(() => window.__glass.listenTrack());
  await page.evaluate(() => { window.__glass.keep = true; });
  const snapshot = async () => ({ clocks: await page.evaluate(() => window.__glass.clocks()), audio: (await inbound(page)).audio });
  const before = await snapshot();
  await sleep(LIPSYNC_S * 1000);
  const after = await snapshot();
  const { frames, onsets, trackOnsets } = await page.evaluate(() => ({
    frames: window.__glass.frames, onsets: window.__glass.onsets, trackOnsets: window.__glass.trackOnsets || [],
  }));
  await page.close();
  const clocks = browserClocks(before, after);
  const r = {
    audio_context: state, track_reader: track, browser_clocks: clocks,
    flashes: frames.filter((f, i) => f.flash && !(i > 0 && frames[i - 1].flash)).length,
    web_audio: { beeps: onsets.length, intervals: stats(onsets.slice(1).map((a, i) => a - onsets[i])), ...pairFlashes(frames, onsets) },
    track: { beeps: trackOnsets.length, ...pairFlashes(frames, trackOnsets) },
  };
  results.lipsync = r;
  const main = r.track.n ? r.track : r.web_audio;
  if (!main.n) throw new Error(`no flash paired with a beep (${onsets.length} beeps heard, AudioContext ${state})`);
  if (STRICT && Math.abs(main.median) > 80) throw new Error(`audio minus video ${fmt(main)} (goal within 80 ms)`);
  const line = (x) => (x.n ? `${fmt(x)}, min ${x.min.toFixed(0)} ms, max ${x.max.toFixed(0)} ms over ${x.n} flashes` : 'n/a');
  return `audio minus video (positive: sound after picture), beeps from the audio track: ${line(r.track)}; ` +
    `from Web Audio: ${line(r.web_audio)}; audio jitter buffer ` +
    `${clocks.neteq_ms === null ? 'n/a' : clocks.neteq_ms.toFixed(0) + ' ms'} on average; browser clocks per wall ` +
    `second: AudioContext ${clocks.context_ms_per_s.toFixed(1)} ms, NetEq out ${clocks.neteq_samples_per_s.toFixed(0)} ` +
    `samples, ${clocks.packets_per_s.toFixed(1)} packets in`;
}

// The inbound-rtp stats of the page's streaming PeerConnection, by kind: the
// one that receives video (the page's AudioBridge PeerConnection receives
// the room's audio too, which is not the Pi's).
function inbound(page) {
  return page.evaluate(async () => {
    for (const pc of window.__glass.pcs) {
      const out = {};
      for (const r of (await pc.getStats()).values()) {
        if (r.type === 'inbound-rtp' && !out[r.kind] && r.packetsReceived > 0) out[r.kind] = r;
        if (r.type === 'media-playout' && !out.playout) out.playout = r; // the audio output's own delay
      }
      if (out.video) return out;
    }
    return {};
  });
}

// Freezes as the page sees them: a gap between two frames shown (or from
// the last one to the window's end) longer than 3 times the mean of the 30
// frame intervals before it, and 150 ms longer than that mean (Chromium's
// rule for freezeCount). `times` in ms; returns count and seconds frozen.
function pageFreezes(times, end, fps) {
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  if (times.length) gaps.push(end - times[times.length - 1]);
  const recent = [];
  const freezes = []; // [s into the window where it began, ms]
  let count = 0, frozen = 0;
  gaps.forEach((gap, i) => {
    const mean = recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : 1000 / fps;
    if (gap > Math.max(3 * mean, mean + 150)) {
      count++; frozen += gap;
      freezes.push([Number(((times[i] - times[0]) / 1000).toFixed(1)), Math.round(gap)]);
    } else { recent.push(gap); if (recent.length > 30) recent.shift(); }
  });
  return { count, seconds: frozen / 1000, freezes };
}

// One viewer watching for GLASS_LOSS_S s with `percent` % of the agent's UDP
// dropped (LOSS_BY=nft), the agent on `transport` (restarted; null: as it runs).
async function lossRun(transport, percent) {
  if (LOSS_BY === 'nft') janusCtl('loss', String(percent));
  const setup_ms = transport ? await useTransport(transport) : null;
  // GLASS_LOSS_SPEECH (a WAV, with MIC_DEVICE=pulse): speech, looped into the
  // sound server's sink, whose monitor the agent's microphone records; Opus
  // in-band FEC covers speech, not a steady tone.
  const speech = process.env.GLASS_LOSS_SPEECH ? spawn('bash', ['-c', 'while paplay -d speaker "$0"; do :; done',
    process.env.GLASS_LOSS_SPEECH], { env: { ...process.env, PULSE_SERVER: `unix:${WORK}/pulse/native` }, detached: true, stdio: 'ignore' }) : null;
  try {
    return await lossWatch(transport, percent, setup_ms);
  } finally {
    if (speech) { try { process.kill(-speech.pid, 'SIGTERM'); } catch { /* gone */ } }
  }
}

async function lossWatch(transport, percent, setup_ms) {
  const page = await openViewer();
  await waitFor('the page live', async () => (await page.evaluate(() => window.viewerState)) === 'live', 30000);
  await sleep(3000);
  await page.evaluate(() => { window.__glass.presents = []; });
  const t0 = await page.evaluate(() => performance.now());
  const a = await inbound(page);
  const agentBefore = agentCounters();
  const nftBefore = LOSS_BY === 'nft' ? JSON.parse(janusCtl('loss-count')) : null;
  const rtts = [];
  for (let left = LOSS_S * 1000; left > 0; left -= 5000) {
    await sleep(Math.min(5000, left));
    const rtt = agentCounters().uplink?.rtt_ms;
    if (Number.isFinite(rtt)) rtts.push(rtt);
  }
  const b = await inbound(page);
  const agentAfter = agentCounters();
  const nftAfter = LOSS_BY === 'nft' ? JSON.parse(janusCtl('loss-count')) : null;
  const { presents, t1 } = await page.evaluate(() => ({ presents: window.__glass.presents, t1: performance.now() }));
  await page.close();
  const d = (kind, key) => ((b[kind] && b[kind][key]) || 0) - ((a[kind] && a[kind][key]) || 0);
  const seconds = ((b.video?.timestamp || 0) - (a.video?.timestamp || 0)) / 1000 || LOSS_S;
  const perMinute = (x) => (x * 60) / seconds;
  const up = (key) => (agentAfter.uplink?.[key] ?? 0) - (agentBefore.uplink?.[key] ?? 0);
  const seen = pageFreezes(presents.filter((t) => t >= t0), t1, FPS);
  return {
    transport: (transport || process.env.TRANSPORT || 'rtp').split('@')[0],
    variant: transport || null,
    loss_percent: LOSS_BY === 'nft' ? percent : Number(process.env.RELAY_LOSS),
    dropped_share: nftAfter && nftAfter.udp > nftBefore.udp
      ? (nftAfter.dropped - nftBefore.dropped) / (nftAfter.udp - nftBefore.udp) : null,
    setup_ms,
    seconds,
    frames_sent: Math.round(FPS * seconds),
    frames_decoded_share: d('video', 'framesDecoded') / (FPS * seconds),
    frames_received: d('video', 'framesReceived'),
    keyframes_decoded: d('video', 'keyFramesDecoded'),
    freezes_per_minute: perMinute(d('video', 'freezeCount')),
    frozen_s_per_minute: perMinute(d('video', 'totalFreezesDuration')),
    page_freezes_per_minute: perMinute(seen.count),
    page_frozen_s_per_minute: perMinute(seen.seconds),
    page_freezes: seen.freezes,
    frames_shown: presents.filter((t) => t >= t0).length,
    video_packets_lost: d('video', 'packetsLost'),
    video_packets_received: d('video', 'packetsReceived'),
    video_buffer_ms: bufferMs(a.video, b.video),
    nacks: d('video', 'nackCount'),
    plis: d('video', 'pliCount'),
    audio_concealed_share: d('audio', 'concealedSamples') / Math.max(1, d('audio', 'totalSamplesReceived')),
    audio_concealment_events: d('audio', 'concealmentEvents'),
    audio_packets_lost: d('audio', 'packetsLost'),
    audio_packets_received: d('audio', 'packetsReceived'),
    audio_buffer_ms: bufferMs(a.audio, b.audio),
    audio_source: process.env.GLASS_LOSS_SPEECH ? 'speech' : (process.env.MIC_DEVICE || 'test'),
    agent_keyframes: {
      sent: (agentAfter.keyframes?.sent ?? 0) - (agentBefore.keyframes?.sent ?? 0),
      requests: (agentAfter.keyframes?.requests ?? 0) - (agentBefore.keyframes?.requests ?? 0),
    },
    agent_uplink: agentAfter.uplink ? {
      packets_sent: up('packets_sent'), nacks_received: up('nacks_received'),
      retransmitted: up('retransmitted'), keyframe_requests: up('keyframe_requests'),
      rtt_ms: stats(rtts), connected: agentAfter.uplink.connected,
    } : null,
    room_uplink: agentAfter.room_uplink,
  };
}

const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)} %` : 'n/a');

function lossLine(r) {
  const u = r.agent_uplink;
  return `${r.variant || r.transport} at ${r.loss_percent} % (dropped ${pct(r.dropped_share)}) over ${r.seconds.toFixed(0)} s: ` +
    `${pct(r.frames_decoded_share)} of ${r.frames_sent} frames decoded, ` +
    `${r.freezes_per_minute.toFixed(1)} freezes and ${r.frozen_s_per_minute.toFixed(1)} s frozen per minute ` +
    `(as the page sees them, an unfinished one included: ${r.page_freezes_per_minute.toFixed(1)}, ` +
    `${r.page_frozen_s_per_minute.toFixed(1)} s); video packets lost ${r.video_packets_lost} of ` +
    `${r.video_packets_lost + r.video_packets_received}, ${r.nacks} NACKs, ${r.plis} PLIs, video buffer ` +
    `${Number.isFinite(r.video_buffer_ms) ? r.video_buffer_ms.toFixed(0) : 'n/a'} ms; audio concealed ` +
    `${pct(r.audio_concealed_share)} (${r.audio_concealment_events} events, ${r.audio_packets_lost} packets lost); ` +
    `agent: ${r.agent_keyframes.requests} keyframe requests, ${r.agent_keyframes.sent} keyframes sent` +
    (u ? `; uplink: ${u.nacks_received} NACKs received, ${u.retransmitted} retransmitted, ${u.keyframe_requests} ` +
      `keyframe requests, round trip ${u.rtt_ms ? `${u.rtt_ms.median} ms (${u.rtt_ms.min}-${u.rtt_ms.max})` : 'n/a'}` : '') +
    (r.setup_ms !== null ? `; restart to ${r.transport === 'webrtc' ? 'uplink up' : 'live'} ${r.setup_ms} ms` : '');
}

// The goal, for the WebRTC uplink at GOAL.at % or less: what misses it.
function lossMisses(r, goal = GOAL) {
  const GOAL = goal;
  if (r.transport !== 'webrtc' || r.loss_percent > GOAL.at) return [];
  const misses = [];
  if (!(r.frames_decoded_share >= GOAL.decoded)) misses.push(`decoded ${pct(r.frames_decoded_share)} < ${pct(GOAL.decoded)}`);
  const frozen = Math.max(r.frozen_s_per_minute, r.page_frozen_s_per_minute);
  if (!(frozen <= GOAL.frozen)) misses.push(`frozen ${frozen.toFixed(2)} s/min > ${GOAL.frozen}`);
  if (!(r.audio_concealed_share <= GOAL.concealed)) misses.push(`audio concealed ${pct(r.audio_concealed_share)} > ${pct(GOAL.concealed)}`);
  // GLASS_LOSS_REPAIRED=1: the uplink must have answered NACKs with retransmissions.
  const u = r.agent_uplink;
  if (GOAL.repaired && r.loss_percent > 0 && !(u && u.nacks_received > 0 && u.retransmitted > 0)) {
    misses.push(`no repair: ${u ? `${u.nacks_received} NACKs received, ${u.retransmitted} retransmitted` : 'no uplink counters'}`);
  }
  return misses;
}

// LOSS_BY=nft: every loss and transport side by side, one check each.
async function lossSideBySide() {
  results.loss = [];
  for (let round = 0; round < LOSS_ROUNDS; round++) {
    for (const percent of LOSSES) {
      for (const transport of TRANSPORTS || ['webrtc', 'rtp']) {
        await check(`glass: loss ${percent} % (${transport})`, async () => { // transport: a variant, maybe
          const r = await lossRun(transport, percent);
          r.round = round;
          results.loss.push(r);
          console.log('LOSS ' + JSON.stringify(r));
          const misses = lossMisses(r);
          const issue = lossMisses(r, ISSUE_GOAL);
          r.goal_missed = issue;
          if (STRICT && misses.length) throw new Error(`${lossLine(r)} (goal missed: ${misses.join(', ')})`);
          return lossLine(r) + (issue.length ? ` (issue 24's goal missed: ${issue.join(', ')})` : '');
        });
      }
    }
  }
  if (LOSS_BY === 'nft') janusCtl('loss', '0');
  return `${results.loss.length} runs`;
}

async function loss() {
  if (LOSS_BY === 'nft') return lossSideBySide();
  const page = await openViewer();
  await waitFor('the page live', async () => (await page.evaluate(() => window.viewerState)) === 'live', 30000);
  await sleep(2000);
  const a = await inbound(page);
  const agentBefore = videoCounters();
  await sleep(LOSS_S * 1000);
  const b = await inbound(page);
  const agentAfter = videoCounters();
  await page.close();
  const d = (kind, key) => ((b[kind] && b[kind][key]) || 0) - ((a[kind] && a[kind][key]) || 0);
  const perMinute = (x) => (x * 60) / LOSS_S;
  const fps = Number(process.env.VIDEO_FRAMERATE || 30);
  const r = {
    seconds: LOSS_S,
    frames_decoded_share: d('video', 'framesDecoded') / (fps * LOSS_S),
    freezes_per_minute: perMinute(d('video', 'freezeCount')),
    frozen_s_per_minute: perMinute(d('video', 'totalFreezesDuration')),
    video_packets_lost: d('video', 'packetsLost'),
    video_packets_received: d('video', 'packetsReceived'),
    nacks: d('video', 'nackCount'),
    plis: d('video', 'pliCount'),
    audio_concealed_share: d('audio', 'concealedSamples') / Math.max(1, d('audio', 'totalSamplesReceived')),
    agent_keyframes: {
      sent: (agentAfter.keyframes?.sent ?? 0) - (agentBefore.keyframes?.sent ?? 0),
      requests: (agentAfter.keyframes?.requests ?? 0) - (agentBefore.keyframes?.requests ?? 0),
    },
  };
  results.loss = r;
  const pct = (x) => `${(100 * x).toFixed(1)} %`;
  const line = `over ${LOSS_S} s: ${pct(r.frames_decoded_share)} of ${fps * LOSS_S} frames decoded, ` +
    `${r.freezes_per_minute.toFixed(1)} freezes and ${r.frozen_s_per_minute.toFixed(1)} s frozen per minute; ` +
    `video packets lost ${r.video_packets_lost} of ${r.video_packets_lost + r.video_packets_received}, ` +
    `${r.nacks} NACKs, ${r.plis} PLIs; agent: ${r.agent_keyframes.requests} keyframe requests, ` +
    `${r.agent_keyframes.sent} keyframes sent; audio concealed ${pct(r.audio_concealed_share)}`;
  if (STRICT && (r.frames_decoded_share < 0.9 || r.frozen_s_per_minute > 1)) {
    throw new Error(`${line} (goal: >= 90 % decoded, <= 1 s frozen per minute)`);
  }
  return line;
}

// Mean delay (ms) of a jitter buffer between two inbound-rtp snapshots.
function bufferMs(a = {}, b = {}, key = 'jitterBufferDelay') {
  const n = (b.jitterBufferEmittedCount || 0) - (a.jitterBufferEmittedCount || 0);
  return n > 0 ? (1000 * ((b[key] || 0) - (a[key] || 0))) / n : null;
}

// delay=sync: the holds the page chose while measured (share of frames per
// hold), and whether a change of the hold shows in glass to glass: per hold,
// the p95 of the frames within 2 s after a change to it against the p95 of
// the other frames at that hold; and the longest gap between two frames shown.
function holdChanges(frames) {
  const share = {};
  const after = new Set();
  const changes = [];
  frames.forEach((f, i) => {
    share[f.hold] = (share[f.hold] || 0) + 1 / frames.length;
    if (i === 0 || f.hold === frames[i - 1].hold) return;
    changes.push(`${frames[i - 1].hold}->${f.hold}`);
    for (let j = i; j < frames.length && frames[j].display - f.display < 2000; j++) after.add(j);
  });
  const p95 = (keep) => {
    const s = stats(frames.filter((f, i) => keep(f, i)).map((f) => since(f.stamp, f.display)));
    return s && s.n >= 10 ? Math.round(s.p95) : null;
  };
  const byHold = {};
  for (const hold of Object.keys(share)) {
    const at = (f) => String(f.hold) === hold;
    byHold[hold] = { after_change: p95((f, i) => at(f) && after.has(i)), steady: p95((f, i) => at(f) && !after.has(i)) };
  }
  const gaps = frames.slice(1).map((f, i) => f.display - frames[i].display);
  return {
    share: Object.fromEntries(Object.entries(share).map(([k, v]) => [k, Math.round(100 * v)])),
    changes,
    p95_by_hold: byHold,
    max_gap_ms: gaps.length ? Math.round(Math.max(...gaps)) : null,
  };
}

// One viewer with the page's `delay=` set to `delay`, watched for COMPARE_S s.
async function watchWith(delay) {
  const page = await openViewer(delay);
  await waitFor('the page live', async () => (await page.evaluate(() => window.viewerState)) === 'live', 30000);
  await page.evaluate(() => window.__glass.listenTrack());
  await sleep(5000); // past the start-up: the jitter buffers settle
  await page.evaluate(() => { window.__glass.keep = true; });
  const a = await inbound(page);
  await sleep(COMPARE_S * 1000);
  const b = await inbound(page);
  const { frames, trackOnsets, playout } = await page.evaluate(() => ({
    frames: window.__glass.frames, trackOnsets: window.__glass.trackOnsets || [], playout: window.viewerPlayout,
  }));
  await page.close();
  const stamped = frames.filter((f) => f.stamp !== null);
  const d = (kind, key) => ((b[kind] && b[kind][key]) || 0) - ((a[kind] && a[kind][key]) || 0);
  const perMinute = (x) => (x * 60000) / ((b.audio?.timestamp || 0) - (a.audio?.timestamp || 0) || COMPARE_S * 1000);
  const av = pairFlashes(frames, trackOnsets);
  const outputMs = d('playout', 'totalSamplesCount') > 0
    ? (1000 * d('playout', 'totalPlayoutDelay')) / d('playout', 'totalSamplesCount') : null;
  return {
    delay,
    playout, // the page's own view at the end (delay=sync: the video hold it chose)
    glass_to_glass: stats(stamped.map((f) => since(f.stamp, f.display))),
    audio_minus_video: { n: av.n, median: av.median, p95: av.p95, min: av.min, max: av.max },
    // as heard: after the audio output's own delay too
    audio_minus_video_heard: outputMs === null || !av.n ? null : { median: av.median + outputMs, p95: av.p95 + outputMs },
    holds: holdChanges(stamped),
    audio_concealed_per_min: perMinute(d('audio', 'concealedSamples')),
    audio_concealment_events_per_min: perMinute(d('audio', 'concealmentEvents')),
    audio_buffer_ms: bufferMs(a.audio, b.audio),
    audio_buffer_target_ms: bufferMs(a.audio, b.audio, 'jitterBufferTargetDelay'),
    audio_buffer_minimum_ms: bufferMs(a.audio, b.audio, 'jitterBufferMinimumDelay'),
    audio_output_ms: outputMs,
    video_buffer_ms: bufferMs(a.video, b.video),
    video_buffer_target_ms: bufferMs(a.video, b.video, 'jitterBufferTargetDelay'),
    video_freezes: d('video', 'freezeCount'),
  };
}

async function compare() {
  const rows = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const delay of DELAYS) {
      const r = await watchWith(delay);
      rows.push(r);
      console.log('COMPARE ' + JSON.stringify(r));
    }
  }
  results.compare = rows;
  const num = (x, digits = 0) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
  return rows.map((r) => `delay=${r.delay}${r.playout && r.playout.holdMs !== null ? ` (hold ${r.playout.holdMs} ms)` : ''}: glass to glass ${fmt(r.glass_to_glass)}; audio minus video ` +
    `${fmt(r.audio_minus_video.n ? r.audio_minus_video : null)} over ${r.audio_minus_video.n || 0} flashes; ` +
    `audio buffer ${num(r.audio_buffer_ms)} ms (target ${num(r.audio_buffer_target_ms)}), video buffer ` +
    `${num(r.video_buffer_ms)} ms (target ${num(r.video_buffer_target_ms)}); concealed ` +
    `${num(r.audio_concealed_per_min)} samples/min; as heard ${num(r.audio_minus_video_heard?.median)} ms ` +
    `(p95 ${num(r.audio_minus_video_heard?.p95)}); holds ${JSON.stringify(r.holds.share)} % of frames, ` +
    `changes ${r.holds.changes.join(' ') || 'none'}, p95 by hold (within 2 s after a change to it / other) ` +
    `${JSON.stringify(r.holds.p95_by_hold)}, longest gap ${r.holds.max_gap_ms} ms`).join(' | ');
}

// What link.mjs's modes use of this driver.
const linkTools = {
  variants: TRANSPORTS || [process.env.TRANSPORT || 'rtp'], strict: STRICT, fps: FPS,
  check, sleep, waitFor, openViewer, inbound, agentCounters, useTransport, janusCtl, pageFreezes,
};
// Modes that run each variant themselves (GLASS_TRANSPORTS), each a check.
const SIDE_BY_SIDE = new Set(['loss', 'dropone', 'cap']);
const MEASURES = {
  latency, join, reopen, lipsync, loss, compare,
  dropone: () => dropOne(linkTools), cap: () => cap(linkTools),
};
try {
  for (const mode of MODES) {
    if (!MEASURES[mode]) throw new Error(`GLASS_MODES: unknown mode ${mode}`);
  }
  if (TRANSPORTS && MODES.some((m) => !SIDE_BY_SIDE.has(m))) {
    // Each mode once per transport, the agent restarted on it before each.
    results.by_transport = [];
    for (let round = 0; round < TRANSPORT_ROUNDS; round++) {
      for (const mode of MODES.filter((m) => !SIDE_BY_SIDE.has(m))) {
        for (const transport of TRANSPORTS) {
          let setup_ms = null;
          await check(`glass: ${mode} (${transport})`, async () => {
            setup_ms = await useTransport(transport);
            return MEASURES[mode]();
          });
          results.by_transport.push({ round, mode, transport, setup_ms, ...results[mode] });
          delete results[mode];
        }
      }
    }
  }
  for (const mode of MODES) {
    if (TRANSPORTS && !SIDE_BY_SIDE.has(mode)) continue;
    if (mode === 'loss' && LOSS_BY === 'nft') { await lossSideBySide(); continue; }
    if (mode === 'dropone' || mode === 'cap') { await MEASURES[mode](); continue; }
    await check(`glass: ${mode}`, MEASURES[mode]);
  }
} finally {
  console.log('RESULT ' + JSON.stringify(results));
  await browser.close().catch(() => {});
  server.close();
}
