#!/usr/bin/python3
"""How many viewers one Janus carries at a given bitrate (issue 25).

Run by benches/edge_viewers.sh (which starts Janus, the mountpoint and its
feed inside a private network namespace); this part is the load: N WebRTC
subscribers of one Streaming mountpoint, each a GStreamer webrtcbin in this
one process (Debian python3-gi, gir1.2-gst-plugins-bad-1.0,
gstreamer1.0-nice), all on one Janus session (one handle each: a
PeerConnection each, as a browser's). A subscriber depayloads the H.264 and
counts the frames (rtph264depay ! fakesink, its `rendered` count); nothing
is decoded, so that the subscribers cost as little CPU as a receiver can.

Subscribers are added stepwise (--steps, e.g. 1,2,4,...). After each step
settles (--settle s) it records over --window s: the frames each subscriber
received against the frames the feed sent (--fps x window), the RTP packets
lost (webrtcbin's inbound-rtp stats), the bitrate each viewer is sent (the
bytes on `lo`, where the feed and every viewer's copy pass, over viewers + 1),
and the CPU time of Janus (--janus-pid,
from /proc/PID/stat), of this process (the subscribers) and of the feed
(--feed-pid). One JSON line per step on stdout; progress on stderr. It stops
after the first step where the median subscriber received fewer than
--stop-below of the frames.
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

import gi

gi.require_version('Gst', '1.0')
gi.require_version('GstSdp', '1.0')
gi.require_version('GstWebRTC', '1.0')
from gi.repository import Gst, GstSdp, GstWebRTC  # noqa: E402

TICK = os.sysconf('SC_CLK_TCK')
# What a subscriber receives: the mountpoint's H.264 and Opus (edge_viewers.sh).
RECV_CAPS = ('application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000',
             'application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000')


def log(*args):
    print('[edge_viewers]', *args, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` (all its threads) so far."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Janus:
    """A Janus REST session with one long-poll thread dispatching events by handle."""

    def __init__(self, url):
        self.url = url.rstrip('/')
        self.events = {}  # handle id -> list of events
        self.cond = threading.Condition()
        reply = self.post('', {'janus': 'create'})
        self.session = reply['data']['id']
        threading.Thread(target=self._poll, daemon=True).start()

    def post(self, path, body):
        body = dict(body, transaction=str(time.monotonic_ns()))
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=10) as res:
            reply = json.load(res)
        if reply.get('janus') == 'error':
            raise RuntimeError(f'Janus {path or "/"}: {reply.get("error")}')
        return reply

    def _poll(self):
        while True:
            try:
                with urllib.request.urlopen(f'{self.url}/{self.session}?maxev=20', timeout=40) as res:
                    events = json.load(res)
            except OSError as e:
                log('long-poll failed:', e)
                time.sleep(0.5)
                continue
            for ev in events if isinstance(events, list) else [events]:
                sender = ev.get('sender')
                if sender is None:
                    continue
                with self.cond:
                    self.events.setdefault(sender, []).append(ev)
                    self.cond.notify_all()

    def wait_event(self, handle, pred, timeout):
        """The first event of `handle` for which pred(event) holds (others are dropped)."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                queue = self.events.setdefault(handle, [])
                while queue:
                    ev = queue.pop(0)
                    if pred(ev):
                        return ev
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f'handle {handle}: no such event in {timeout} s')
                self.cond.wait(left)


def wait_promise(promise, what, keep):
    """The promise's reply. The reply belongs to the promise, and the Python
    wrappers of both must outlive every use of it (a reply read after its
    promise was collected crashed the process): both go into `keep`."""
    if promise.wait() != Gst.PromiseResult.REPLIED:
        raise RuntimeError(what + ': promise not replied')
    reply = promise.get_reply()
    keep.append((promise, reply))
    return reply


class Subscriber:
    """One viewer: a Streaming handle and a webrtcbin receiving its offer."""

    def __init__(self, janus, mountpoint, pin):
        self.janus = janus
        self.handle = janus.post(f'/{janus.session}', {
            'janus': 'attach', 'plugin': 'janus.plugin.streaming'})['data']['id']
        self.pipe = Gst.Pipeline()
        self.webrtc = Gst.ElementFactory.make('webrtcbin')
        self.webrtc.set_property('bundle-policy', GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipe.add(self.webrtc)
        # Receive-only transceivers for what the mountpoint offers (without
        # them webrtcbin 1.22 answered but never gathered a candidate).
        for caps in RECV_CAPS:
            self.webrtc.emit('add-transceiver', GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                             Gst.Caps.from_string(caps))
        self.frames = None  # the video's fakesink
        self.candidates = []  # (mline, candidate) gathered, sent once the answer is
        self.answered = False
        self.keep = []  # promises and replies of the negotiation (see wait_promise)
        self.lock = threading.Lock()
        self.webrtc.connect('pad-added', self._pad_added)
        self.webrtc.connect('on-ice-candidate', self._candidate)
        self.pipe.set_state(Gst.State.PLAYING)
        watch = {'request': 'watch', 'id': mountpoint}
        if pin:
            watch['pin'] = pin
        self.janus.post(f'/{janus.session}/{self.handle}', {'janus': 'message', 'body': watch})
        ev = janus.wait_event(self.handle, lambda e: 'jsep' in e or 'error_code' in e.get(
            'plugindata', {}).get('data', {}), 15)
        if 'jsep' not in ev:
            raise RuntimeError(f'watch: {ev["plugindata"]["data"]}')
        answer = self._answer(ev['jsep']['sdp'])
        self.janus.post(f'/{janus.session}/{self.handle}', {
            'janus': 'message', 'body': {'request': 'start'}, 'jsep': {'type': 'answer', 'sdp': answer}})
        with self.lock:
            self.answered = True
            early, self.candidates = self.candidates, []
        for mline, candidate in early:
            self._trickle(mline, candidate)

    def _candidate(self, _webrtc, mline, candidate):
        """Trickles each local candidate to Janus (after the answer: kept till then)."""
        with self.lock:
            if not self.answered:
                self.candidates.append((mline, candidate))
                return
        self._trickle(mline, candidate)

    def _trickle(self, mline, candidate):
        self.janus.post(f'/{self.janus.session}/{self.handle}', {
            'janus': 'trickle', 'candidate': {'candidate': candidate, 'sdpMLineIndex': mline}})

    def _answer(self, offer_sdp):
        _, sdp = GstSdp.SDPMessage.new_from_text(offer_sdp)
        offer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, sdp)
        wait_promise(self._emit('set-remote-description', offer), 'set-remote-description', self.keep)
        reply = wait_promise(self._emit('create-answer', None), 'create-answer', self.keep)
        answer = reply.get_value('answer')
        wait_promise(self._emit('set-local-description', answer), 'set-local-description', self.keep)
        return answer.sdp.as_text()

    def _emit(self, signal, arg):
        promise = Gst.Promise.new()
        self.webrtc.emit(signal, arg, promise)
        return promise

    def _pad_added(self, _webrtc, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        video = caps.get_structure(0).get_string('media') == 'video'
        sink = Gst.ElementFactory.make('fakesink')
        sink.set_property('sync', False)
        sink.set_property('async', False)
        chain = [sink]
        if video:
            chain.insert(0, Gst.ElementFactory.make('rtph264depay'))
            self.frames = sink
        for element in chain:
            self.pipe.add(element)
            element.sync_state_with_parent()
        if video:
            chain[0].link(sink)
        pad.link(chain[0].get_static_pad('sink'))

    def counts(self):
        """(time, frames received so far, RTP packets received, lost) of the video."""
        at = time.monotonic()
        frames = self.frames.get_property('stats').get_value('rendered') if self.frames else 0
        keep = []
        stats = wait_promise(self._emit('get-stats', None), 'get-stats', keep)
        got = lost = 0

        def each(_field, value):
            nonlocal got, lost
            if isinstance(value, Gst.Structure) and value.get_name() == 'inbound-rtp' and \
                    value.get_string('kind') == 'video':
                got += value.get_value('packets-received') or 0
                lost += max(0, value.get_value('packets-lost') or 0)
            return True
        stats.foreach(each)
        del keep[:]  # the stats read: the reply may go (the promise after it)
        return at, frames, got, lost


def loopback_bytes():
    """Bytes sent on `lo` so far: the feed's RTP to Janus and Janus's to every subscriber."""
    with open('/proc/net/dev') as f:
        for line in f:
            name, _, data = line.partition(':')
            if name.strip() == 'lo':
                return int(data.split()[8])
    raise RuntimeError('no lo in /proc/net/dev')


def measure(subs, args, n, janus_idle):
    """One step's figures over args.window seconds (janus_idle: Janus's cores with no viewer)."""
    pids = {'janus': args.janus_pid, 'subscribers': os.getpid(), 'feed': args.feed_pid}
    before = {k: cpu_seconds(p) for k, p in pids.items() if p}
    c0 = [s.counts() for s in subs]
    lo0 = loopback_bytes()
    t0 = time.monotonic()
    time.sleep(args.window)
    lo1 = loopback_bytes()
    c1 = [s.counts() for s in subs]
    elapsed = time.monotonic() - t0
    cpu = {k: round((cpu_seconds(p) - before[k]) / elapsed, 3) for k, p in pids.items() if p}
    sent = args.fps * elapsed
    # Each subscriber's frames over its own window (read one after the other).
    shares = [(b[1] - a[1]) / (args.fps * (b[0] - a[0])) for a, b in zip(c0, c1)]
    lost = sum(b[3] - a[3] for a, b in zip(c0, c1))
    got = sum(b[2] - a[2] for a, b in zip(c0, c1))
    return {
        'viewers': n, 'window_s': round(elapsed, 2), 'frames_sent': round(sent),
        'frames_median_pct': round(100 * statistics.median(shares), 2),
        'frames_min_pct': round(100 * min(shares), 2),
        'packets_received': got, 'packets_lost': lost,
        # Every viewer gets what the feed sends Janus: lo carries it n + 1 times.
        'kbps_per_viewer': round(8 * (lo1 - lo0) / elapsed / (n + 1) / 1000),
        'cpu_cores': cpu,
        'janus_per_viewer': round((cpu['janus'] - janus_idle) / n, 4),
        'loadavg': os.getloadavg()[0],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--janus', required=True, help='Janus REST URL')
    ap.add_argument('--mountpoint', type=int, required=True)
    ap.add_argument('--pin')
    ap.add_argument('--janus-pid', type=int, required=True)
    ap.add_argument('--feed-pid', type=int)
    ap.add_argument('--fps', type=float, required=True, help="the feed's frame rate")
    ap.add_argument('--steps', default='1,2,4,8,16,32,64')
    ap.add_argument('--settle', type=float, default=4)
    ap.add_argument('--window', type=float, default=10)
    ap.add_argument('--stop-below', type=float, default=0.99)
    args = ap.parse_args()
    steps = [int(x) for x in args.steps.split(',')]
    Gst.init(None)
    janus = Janus(args.janus)
    subs = []
    # Before any viewer: Janus with the mountpoint fed, nobody watching.
    idle = {'viewers': 0, 'cpu_cores': {}}
    t0, j0 = time.monotonic(), cpu_seconds(args.janus_pid)
    time.sleep(args.window / 2)
    idle['cpu_cores']['janus'] = round((cpu_seconds(args.janus_pid) - j0) / (time.monotonic() - t0), 3)
    print(json.dumps(idle), flush=True)
    for n in steps:
        while len(subs) < n:
            subs.append(Subscriber(janus, args.mountpoint, args.pin))
        log(f'{n} viewers: settling {args.settle} s')
        time.sleep(args.settle)
        states = [s.webrtc.get_property('ice-connection-state').value_nick for s in subs]
        log('ICE states:', ', '.join(f'{k} x{states.count(k)}' for k in sorted(set(states))))
        row = measure(subs, args, n, idle['cpu_cores']['janus'])
        print(json.dumps(row), flush=True)
        log(json.dumps(row))
        if row['frames_median_pct'] < 100 * args.stop_below:
            break
    for s in subs:
        s.pipe.set_state(Gst.State.NULL)


if __name__ == '__main__':
    main()
