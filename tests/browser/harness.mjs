// What the browser drivers share (viewer.test.mjs, glass.mjs): the
// environment run.sh sets, results lines, polling, a static server for the
// page and Debian's Chromium through playwright-core.
import { chromium } from 'playwright-core';
import { appendFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';

/** The environment variable `name`, which run.sh sets. */
export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run tests/browser/run.sh)`);
  return v;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function assert(cond, msg) { if (!cond) throw new Error(msg); }

/** Appends "PASS name" or "FAIL name: why" to $RESULTS (run.sh counts them). */
export function record(ok, name, why) {
  const line = ok ? `PASS ${name}` : `FAIL ${name}: ${why}`;
  console.log(line);
  appendFileSync(env('RESULTS'), line + '\n');
  return ok;
}

/** Runs one named check; an exception (or assertion) fails it. */
export async function check(name, fn) {
  try {
    const note = await fn();
    return record(true, name + (note ? ` (${note})` : ''));
  } catch (e) {
    return record(false, name, e && e.message ? e.message : String(e));
  }
}

/** Polls fn() until it returns a truthy value, or throws after timeoutMs. */
export async function waitFor(what, fn, timeoutMs, stepMs = 100) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < timeoutMs) {
    try { last = await fn(); } catch (e) { last = e; }
    if (last && !(last instanceof Error)) return last;
    await sleep(stepMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` +
    (last instanceof Error ? ` (last error: ${last.message})` : ''));
}

/** POSTs `body` (with a transaction) to the Janus REST API at `janusUrl` + `path`; resolves to the reply. */
export async function janusPost(janusUrl, path, body) {
  const res = await fetch(janusUrl + path, {
    method: 'POST', body: JSON.stringify({ transaction: 't', ...body }),
    signal: AbortSignal.timeout(5000),
  });
  return res.json();
}

/** Sends `request` to `plugin` of the Janus at `janusUrl` through a throwaway session; resolves to its plugindata.data. */
export async function pluginRequest(janusUrl, plugin, request) {
  const s = await janusPost(janusUrl, '', { janus: 'create' });
  assert(s.janus === 'success', 'janus create: ' + JSON.stringify(s));
  const sid = s.data.id;
  try {
    const h = await janusPost(janusUrl, `/${sid}`, { janus: 'attach', plugin });
    const reply = await janusPost(janusUrl, `/${sid}/${h.data.id}`, { janus: 'message', body: request });
    return reply.plugindata && reply.plugindata.data;
  } finally {
    await janusPost(janusUrl, `/${sid}`, { janus: 'destroy' }).catch(() => {});
  }
}

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.png': 'image/png', '.svg': 'image/svg+xml',
};

/**
 * Serves $WEB_ROOT (the page), with config.js as a deployment edits it:
 * `janusUrl` is the page's server, `more` other settings (e.g. `edges`).
 * Resolves to { server, base } where base is the page's URL.
 */
export async function servePage(webRoot, janusUrl, more = {}) {
  const configJs = `window.BROADCAST_CONFIG = ${JSON.stringify({ janus: janusUrl, iceServers: [], ...more })};`;
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    if (path === '/config.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      res.end(configJs);
      return;
    }
    const file = join(webRoot, path === '/' ? 'index.html' : path);
    try {
      const body = readFileSync(file);
      res.writeHead(200, { 'Content-Type': TYPES[extname(file)] || 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404); res.end('not found');
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, base: `http://127.0.0.1:${server.address().port}/index.html` };
}

/** Debian's Chromium, headless, with a fake camera and microphone; `extra` flags. */
export function launchChromium(work, extra = []) {
  return chromium.launchPersistentContext(mkdtempSync(join(work, 'chromium-')), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    viewport: { width: 1000, height: 760 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      ...extra,
    ],
  });
}
