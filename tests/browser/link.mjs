// A weak link between the Pi and Janus, as a viewer sees it (issue 27): the
// `dropone` and `cap` modes of glass.mjs, with Janus and the agent in network
// namespaces of their own (LOSS_BY=nft: janus.sh drop-one and cap rule the
// agent's UDP on Janus's input hook). Each runs once per variant of
// GLASS_TRANSPORTS (`transport@label`, see glass.mjs; GLASS_DROPONE_VARIANTS
// and GLASS_CAP_VARIANTS for one mode alone), GLASS_LINK_ROUNDS times
// (default 1), interleaved, the agent restarted on it and one fresh viewer.
//
//   dropone  the agent's next video packet (UDP over 1000 bytes) is dropped,
//            and no other; over the GLASS_DROP_WATCH_S (3) s after: the
//            longest time the viewer shows no new frame (the picture is whole
//            again when a frame comes: Chromium shows none it cannot decode),
//            the keyframes the agent was asked for and sent, Chromium's NACKs
//            and PLIs. Goal (GLASS_STRICT=1): <= GLASS_DROP_GOAL_MS (300).
//   cap      the agent's UDP policed to GLASS_CAP_KBIT kbit/s (default 60 % of
//            VIDEO_BITRATE_KBPS) for GLASS_CAP_S (30) s, 5 s into a viewer's
//            watch: the share of the frames sent in that time that Chromium
//            decoded, its freezes, and the agent's video bitrate (status
//            --json) at the end of the cap; then the cap lifted: the time until
//            the agent's bitrate is back at the configured one (polled every
//            500 ms, for up to GLASS_CAP_RECOVER_S, 30 s). Goal (GLASS_STRICT=1)
//            where the agent adapts: >= GLASS_CAP_GOAL_DECODED (0.80) decoded
//            and back within 20 s.

const env = process.env;
const ROUNDS = Number(env.GLASS_LINK_ROUNDS || 1);
const DROP_WATCH_S = Number(env.GLASS_DROP_WATCH_S || 3);
const DROP_GOAL_MS = Number(env.GLASS_DROP_GOAL_MS || 300);
const CONFIGURED_KBPS = Number(env.VIDEO_BITRATE_KBPS || 800);
const CAP_KBIT = Number(env.GLASS_CAP_KBIT || Math.round(CONFIGURED_KBPS * 0.6));
const CAP_S = Number(env.GLASS_CAP_S || 30);
const CAP_RECOVER_S = Number(env.GLASS_CAP_RECOVER_S || 30);
const CAP_GOAL_DECODED = Number(env.GLASS_CAP_GOAL_DECODED || 0.8);
const CAP_GOAL_BACK_S = 20;

const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)} %` : 'n/a');

// Runs `measure(variant)` for every variant and round, each a check of its
// own whose line is `line(result)`; `misses(result)` fails it with
// GLASS_STRICT=1.
async function sideBySide(ctx, name, measure, line, misses) {
  const rows = [];
  const own = env[`GLASS_${name.toUpperCase()}_VARIANTS`];
  const variants = own ? own.split(',') : ctx.variants;
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of variants) {
      await ctx.check(`glass: ${name} (${variant})`, async () => {
        const r = { variant, round, ...(await measure(variant)) };
        rows.push(r);
        console.log(`${name.toUpperCase()} ${JSON.stringify(r)}`);
        const missed = misses(r);
        if (ctx.strict && missed.length) throw new Error(`${line(r)} (goal missed: ${missed.join(', ')})`);
        return line(r);
      });
    }
  }
  return rows;
}

// A fresh viewer, live and past its start-up, with frames being timed.
async function liveViewer(ctx, settleMs) {
  const page = await ctx.openViewer();
  await ctx.waitFor('the page live', async () => (await page.evaluate(() => window.viewerState)) === 'live', 30000);
  await ctx.sleep(settleMs);
  await page.evaluate(() => { window.__glass.presents = []; });
  return page;
}

// The agent's video pipeline: keyframes and its bitrate (status --json).
function videoNow(ctx) {
  const c = ctx.agentCounters();
  return { keyframes: c.keyframes || {}, bitrate: c.bitrate || null, uplink: c.uplink };
}

const delta = (a, b, key) => ((b && b[key]) || 0) - ((a && a[key]) || 0);

async function dropOneRun(ctx, variant) {
  const setup_ms = await ctx.useTransport(variant);
  const page = await liveViewer(ctx, 3000);
  const before = { agent: videoNow(ctx), viewer: await ctx.inbound(page) };
  const t0 = await page.evaluate(() => performance.now());
  ctx.janusCtl('drop-one');
  await ctx.sleep(DROP_WATCH_S * 1000);
  const after = { agent: videoNow(ctx), viewer: await ctx.inbound(page) };
  const { presents, t1 } = await page.evaluate(() => ({ presents: window.__glass.presents, t1: performance.now() }));
  await page.close();
  const dropped = JSON.parse(ctx.janusCtl('drop-count')).dropped;
  // From the last frame shown before the drop to the first after the
  // longest pause, up to the end of the watch (a picture that never came back).
  const shown = [...presents.filter((t) => t <= t0).slice(-1), ...presents.filter((t) => t > t0), t1];
  const gaps = shown.slice(1).map((t, i) => t - shown[i]);
  return {
    setup_ms,
    dropped,
    no_new_frame_ms: gaps.length ? Math.round(Math.max(...gaps)) : null,
    frames_shown: presents.filter((t) => t > t0).length,
    keyframe_requests: delta(before.agent.keyframes, after.agent.keyframes, 'requests'),
    keyframes_sent: delta(before.agent.keyframes, after.agent.keyframes, 'sent'),
    uplink_retransmitted: delta(before.agent.uplink, after.agent.uplink, 'retransmitted'),
    nacks: delta(before.viewer.video, after.viewer.video, 'nackCount'),
    plis: delta(before.viewer.video, after.viewer.video, 'pliCount'),
  };
}

const dropLine = (r) => `${r.variant}: one video packet dropped (${r.dropped} by the rule): ` +
  `${r.no_new_frame_ms} ms at most without a new frame over ${DROP_WATCH_S} s (${r.frames_shown} shown); ` +
  `agent: ${r.keyframe_requests} keyframe requests, ${r.keyframes_sent} keyframes sent, ` +
  `${r.uplink_retransmitted} retransmitted; viewer: ${r.nacks} NACKs, ${r.plis} PLIs`;

function dropMisses(r) {
  const misses = [];
  if (r.dropped !== 1) misses.push(`the rule dropped ${r.dropped} packets, not 1`);
  if (!(r.no_new_frame_ms <= DROP_GOAL_MS)) misses.push(`${r.no_new_frame_ms} ms > ${DROP_GOAL_MS} ms`);
  return misses;
}

// Polls the agent's bitrate until it is back at the configured one.
async function backAtConfigured(ctx) {
  const t0 = Date.now();
  let kbps = null;
  while (Date.now() - t0 < CAP_RECOVER_S * 1000) {
    kbps = videoNow(ctx).bitrate?.kbps ?? null;
    if (kbps !== null && kbps >= CONFIGURED_KBPS) return { back_s: (Date.now() - t0) / 1000, kbps };
    await ctx.sleep(500);
  }
  return { back_s: null, kbps };
}

async function capRun(ctx, variant) {
  const setup_ms = await ctx.useTransport(variant);
  const page = await liveViewer(ctx, 5000);
  const a = await ctx.inbound(page);
  const t0 = await page.evaluate(() => performance.now());
  ctx.janusCtl('cap', String(CAP_KBIT));
  let b, capped, counts;
  const trace = []; // the agent's bitrate each second of the cap
  try {
    for (let s = 0; s < CAP_S; s++) {
      await ctx.sleep(1000);
      trace.push(videoNow(ctx).bitrate?.kbps ?? null);
    }
    b = await ctx.inbound(page);
    capped = videoNow(ctx).bitrate;
    counts = JSON.parse(ctx.janusCtl('cap-count'));
  } finally {
    ctx.janusCtl('cap', '0');
  }
  const { presents, t1 } = await page.evaluate(() => ({ presents: window.__glass.presents, t1: performance.now() }));
  const back = await backAtConfigured(ctx);
  await page.close();
  const seconds = ((b.video?.timestamp || 0) - (a.video?.timestamp || 0)) / 1000 || CAP_S;
  const seen = ctx.pageFreezes(presents.filter((t) => t >= t0), t1, ctx.fps);
  return {
    setup_ms,
    cap_kbit: CAP_KBIT,
    seconds,
    dropped_share: counts.udp ? counts.dropped / counts.udp : null,
    frames_decoded_share: delta(a.video, b.video, 'framesDecoded') / (ctx.fps * seconds),
    page_frozen_s: seen.seconds,
    page_freezes: seen.count,
    freezes: seen.freezes, // [s into the cap, ms]
    kbps_each_second: trace,
    keyframes_decoded: delta(a.video, b.video, 'keyFramesDecoded'),
    plis: delta(a.video, b.video, 'pliCount'),
    adaptive: capped ? capped.fixed === null : null,
    kbps_capped: capped ? capped.kbps : null,
    ...back,
  };
}

const capLine = (r) => `${r.variant}${r.adaptive ? ' (adapting)' : ' (fixed bitrate)'}, capped at ` +
  `${r.cap_kbit} kbit/s for ${r.seconds.toFixed(0)} s (${pct(r.dropped_share)} of its UDP dropped): ` +
  `${pct(r.frames_decoded_share)} of the frames decoded, ${r.page_freezes} freezes, ${r.page_frozen_s.toFixed(1)} s ` +
  `frozen; the agent at ${r.kbps_capped ?? 'n/a'} kbit/s at the cap's end, back at ${CONFIGURED_KBPS} ` +
  `${r.back_s === null ? `not within ${CAP_RECOVER_S} s (${r.kbps ?? 'n/a'})` : `${r.back_s.toFixed(1)} s after the cap went`}`;

function capMisses(r) {
  if (!r.adaptive) return [];
  const misses = [];
  if (!(r.frames_decoded_share >= CAP_GOAL_DECODED)) misses.push(`decoded ${pct(r.frames_decoded_share)} < ${pct(CAP_GOAL_DECODED)}`);
  if (!(r.back_s !== null && r.back_s <= CAP_GOAL_BACK_S)) misses.push(`not back at ${CONFIGURED_KBPS} kbit/s within ${CAP_GOAL_BACK_S} s`);
  return misses;
}

/** The dropone mode; `ctx` holds glass.mjs's tools (see there). */
export async function dropOne(ctx) {
  const rows = await sideBySide(ctx, 'dropone', (v) => dropOneRun(ctx, v), dropLine, dropMisses);
  return `${rows.length} runs`;
}

/** The cap mode; `ctx` holds glass.mjs's tools (see there). */
export async function cap(ctx) {
  const rows = await sideBySide(ctx, 'cap', (v) => capRun(ctx, v), capLine, capMisses);
  return `${rows.length} runs`;
}
