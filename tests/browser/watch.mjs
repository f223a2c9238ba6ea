// Watches a broadcast with the viewer page in Debian's Chromium for a while:
// `node watch.mjs <janus url> <room> <seconds>`. Used by tests/bitrate.rs to
// see what a real viewer makes Janus send the agent (the REMB its
// Streaming plugin relays, the frames a capped uplink lets it decode). Prints
// `frames <decoded so far>` once a second.
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const [janusUrl, room, seconds] = process.argv.slice(2);
const here = fileURLToPath(new URL('.', import.meta.url));
const roots = [join(here, '../../deploy/web'), '/usr/share/javascript/janus-gateway',
  '/usr/share/javascript/webrtc-adapter'];
const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
const server = createServer((req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
  if (path === '/config.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' });
    res.end(`window.BROADCAST_CONFIG = ${JSON.stringify({ janus: janusUrl, iceServers: [] })};`);
    return;
  }
  for (const root of roots) {
    try {
      const body = readFileSync(join(root, path));
      res.writeHead(200, { 'Content-Type': types[extname(path)] || 'application/octet-stream' });
      res.end(body);
      return;
    } catch { /* the next root */ }
  }
  res.writeHead(404); res.end('not found');
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'chromium-')), {
  executablePath: '/usr/bin/chromium', headless: true, timeout: 30000,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
});
const page = context.pages()[0] || await context.newPage();
await page.goto(`http://127.0.0.1:${server.address().port}/index.html?r=${room}&janus=${encodeURIComponent(janusUrl)}`);
const decoded = () => page.evaluate(() => {
  const v = document.querySelector('video');
  return v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : -1;
});
// The frames decoded so far, once a second.
for (let s = 1; s <= Number(seconds); s++) {
  await new Promise((r) => setTimeout(r, 1000));
  console.log(`frames ${await decoded()}`);
}
await context.close();
server.close();
