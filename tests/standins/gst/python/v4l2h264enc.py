"""Stand-in for GStreamer's `v4l2h264enc` on a Raspberry Pi <= 4 (the VideoCore's bcm2835-codec).

Loaded by gst-python with GST_PLUGIN_PATH=<repo>/tests/standins/gst; only tests
that pretend to be a Pi <= 4 use it (a Pi 5 has no H.264 encoder: x264enc there).
It follows Bookworm's GStreamer 1.22.0 (Debian's gst-plugins-good 1.22.0-5)
and the bcm2835-codec driver (raspberrypi/linux drivers/staging/vc04_services/
bcm2835-codec/bcm2835-v4l2-codec.c), read from their sources, not copied:

- Sink caps (probed from the driver's encoder input formats): I420, YV12, NV12,
  NV21, RGB16, YUY2, YVYU, UYVY, VYUY, RGB, BGR, BGRx, RGBx; 32x32 up to
  1920x1920 (MIN_W/H, MAX_W/H_CODEC). Anything else is refused (accept-caps).
  Lines are copied into the driver's own buffers (bytes per line aligned to 64
  for I420, 32 for NV12), so any upstream stride is taken.
- Src caps: video/x-h264, byte-stream, au, the driver's profile menu (baseline,
  constrained-baseline, main, high) and level menu 1 .. 5.1 (5.0 and 5.1 since
  raspberrypi/linux#6283). gstv4l2videoenc.c negotiate_profile_and_level()
  takes the FIRST profile and level of the downstream caps the driver accepts:
  without a level downstream that is level 1 (and profile baseline). A
  downstream asking none of them: the caps are refused (set_format() fails;
  libcamerasrc then stops with not-negotiated). The VideoCore then refuses to
  start a stream its level cannot carry (H.264 table A-1: macroblocks per frame
  and per second; raspberrypi/linux#3974, #4906): "bcm2835_codec_start_
  streaming: Failed enabling i/p port", which GStreamer reports as
  RESOURCE/FAILED "Failed to process frame." at the first frame.
- `extra-controls` (gstv4l2object.c PROP_EXTRA_CONTROLS): a GstStructure
  "controls,name=value,..."; applied when the device opens and, when set later
  (also in PLAYING), at once; only the controls named change. video_bitrate
  25000 .. 25000000 in steps of 25000, default 10000000 (out of range values are
  clamped by V4L2); h264_i_frame_period default 60; repeat_sequence_header 0/1,
  default 0: the SPS and PPS come once, before the first frame only (a viewer
  joining later cannot decode without 1); force_key_frame: the next frame is an
  IDR. Other names are ignored. `device` is /dev/video11.
- A GstForceKeyUnit event is IGNORED: the handling
  (GST_VIDEO_CODEC_FRAME_IS_FORCE_KEYFRAME -> V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME)
  came in 1.22.4/1.23.1 and Debian's 1.22.0 build lacks it (its
  libgstvideo4linux2.so has no "Failed to force keyframe." message). Set
  extra-controls force_key_frame=1 instead, which works on both.

The encoding is x264enc's (zerolatency, ultrafast; after videoconvert, a
passthrough for I420 and NV12) at the controls' bitrate and key-frame period,
its SPS carrying the negotiated level. Python runs per buffer only in a check of
the delta flag, and per key frame to drop repeated SPS/PPS when
repeat_sequence_header is 0.

Environment:
  STANDIN_GST_VERSION  the GStreamer release to be, e.g. 1.22.4 (default 1.22.0): from 1.22.4
                       a GstForceKeyUnit event makes a key frame
"""
import os
import re

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, GObject, Gst, GstVideo  # noqa: E402

Gst.init(None)

SINK_CAPS = ("video/x-raw, format=(string){ I420, YV12, NV12, NV21, RGB16, YUY2, YVYU, UYVY, VYUY, "
             "RGB, BGR, BGRx, RGBx }, width=(int)[ 32, 1920 ], height=(int)[ 32, 1920 ], "
             "framerate=(fraction)[ 0/1, 2147483647/1 ]")
PROFILES = ["baseline", "constrained-baseline", "main", "high"]
# level -> (max macroblocks per second, max macroblocks per frame), H.264 table A-1.
LEVELS = {
    "1": (1485, 99), "1b": (1485, 99), "1.1": (3000, 396), "1.2": (6000, 396),
    "1.3": (11880, 396), "2": (11880, 396), "2.1": (19800, 792), "2.2": (20250, 1620),
    "3": (40500, 1620), "3.1": (108000, 3600), "3.2": (216000, 5120), "4": (245760, 8192),
    "4.1": (245760, 8192), "4.2": (522240, 8704), "5": (589824, 22080), "5.1": (983040, 36864),
}
SRC_CAPS = ("video/x-h264, stream-format=(string)byte-stream, alignment=(string)au, "
            f"profile=(string){{ {', '.join(PROFILES)} }}, level=(string){{ {', '.join(LEVELS)} }}")
BITRATE_RANGE = (25_000, 25_000_000, 25_000)
DEFAULT_CONTROLS = {"video_bitrate": 10_000_000, "h264_i_frame_period": 60, "repeat_sequence_header": 0}
START_CODE = re.compile(b"\x00\x00\x01")


def gst_version():
    text = os.environ.get("STANDIN_GST_VERSION", "1.22.0")
    return tuple(int(p) for p in text.split("."))


def clamped_bitrate(value):
    """V4L2's integer control rule: clamp to the range, round to the step."""
    low, high, step = BITRATE_RANGE
    value = min(max(value, low), high)
    return low + (value - low + step // 2) // step * step


def without_parameter_sets(data):
    """An access unit without its SPS and PPS NAL units."""
    marks = [m.start() for m in START_CODE.finditer(data)]
    starts = [s - 1 if s > 0 and data[s - 1] == 0 else s for s in marks]
    kept = [data[:starts[0]]] if starts else [data]
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        if data[marks[i] + 3] & 31 not in (7, 8):
            kept.append(data[start:end])
    return b"".join(kept)


def first_accepted(value, accepted):
    """negotiate_profile_and_level(): the first of the caps' strings the driver takes."""
    if isinstance(value, str):
        value = [value]
    return next((v for v in value if v in accepted), None) if value is not None else accepted[0]


class V4l2H264Enc(Gst.Bin):
    """v4l2h264enc as a Bin: videoconvert ! x264enc ! capsfilter ! capssetter, driven by V4L2's controls."""

    __gtype_name__ = "v4l2h264enc"
    __gstmetadata__ = ("V4L2 H.264 Encoder", "Codec/Encoder/Video/Hardware",
                       "Encode H.264 video streams via V4L2 API", "stand-in of Nicolas Dufresne's element")
    __gsttemplates__ = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, Gst.Caps.from_string(SINK_CAPS)),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, Gst.Caps.from_string(SRC_CAPS)),
    )
    __gproperties__ = {
        "extra-controls": (Gst.Structure, "Extra Controls", "Extra v4l2 controls (CIDs) for the device",
                           GObject.ParamFlags.READWRITE),
        "device": (str, "Device", "Device location", "/dev/video11", GObject.ParamFlags.READWRITE),
    }

    def __init__(self):
        super().__init__()
        self.extra_controls = None
        self.device = "/dev/video11"
        self.controls = dict(DEFAULT_CONTROLS)
        self.opened = False
        self.headers_sent = False
        self.strip_probe = None
        self.convert = Gst.ElementFactory.make("videoconvert", "convert")
        self.encoder = Gst.ElementFactory.make("x264enc", "encoder")
        self.encoder.set_property("tune", "zerolatency")
        self.encoder.set_property("speed-preset", "ultrafast")
        self.encoder.set_property("byte-stream", True)
        self.profile_level = Gst.ElementFactory.make("capsfilter", "profile-level")
        self.named = Gst.ElementFactory.make("capssetter", "named")
        for element in (self.convert, self.encoder, self.profile_level, self.named):
            self.add(element)
        self.convert.link(self.encoder)
        self.encoder.link(self.profile_level)
        self.profile_level.link(self.named)
        self.sinkpad = Gst.GhostPad.new_from_template(
            "sink", self.convert.get_static_pad("sink"), self.get_pad_template("sink"))
        self.srcpad = Gst.GhostPad.new_from_template(
            "src", self.named.get_static_pad("src"), self.get_pad_template("src"))
        self.add_pad(self.sinkpad)
        self.add_pad(self.srcpad)
        self.sinkpad.set_query_function_full(self.sink_query)
        self.sinkpad.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, self.sink_event)
        # Inside the element, as its event handler would: probes on its pads
        # (an application's) see the event first.
        self.named.get_static_pad("src").add_probe(Gst.PadProbeType.EVENT_UPSTREAM, self.src_event)
        self.apply_controls(DEFAULT_CONTROLS)

    def do_get_property(self, prop):
        return self.extra_controls if prop.name == "extra-controls" else self.device

    def do_set_property(self, prop, value):
        if prop.name == "device":
            self.device = value
            return
        self.extra_controls = value
        if self.opened and value is not None:
            self.apply_controls(self.structure_controls(value))

    @staticmethod
    def structure_controls(structure):
        return {structure.nth_field_name(i): structure.get_value(structure.nth_field_name(i))
                for i in range(structure.n_fields())}

    def apply_controls(self, controls):
        """VIDIOC_S_CTRL for each control named; the others keep their values."""
        for name, value in controls.items():
            if name == "video_bitrate":
                self.controls[name] = clamped_bitrate(int(value))
                self.encoder.set_property("bitrate", self.controls[name] // 1000)
            elif name == "h264_i_frame_period":
                self.controls[name] = int(value)
                self.encoder.set_property("key-int-max", int(value) or GLib.MAXINT32)
            elif name == "repeat_sequence_header":
                self.controls[name] = int(bool(value))
                self.strip_repeated_headers(not value)
            elif name == "force_key_frame":
                self.encoder.get_static_pad("src").send_event(
                    GstVideo.video_event_new_upstream_force_key_unit(Gst.CLOCK_TIME_NONE, True, 0))

    def strip_repeated_headers(self, strip):
        pad = self.encoder.get_static_pad("src")
        if strip and self.strip_probe is None:
            self.strip_probe = pad.add_probe(Gst.PadProbeType.BUFFER, self.drop_parameter_sets)
        elif not strip and self.strip_probe is not None:
            pad.remove_probe(self.strip_probe)
            self.strip_probe = None

    def drop_parameter_sets(self, pad, info):
        buffer = info.get_buffer()
        if buffer.has_flags(Gst.BufferFlags.DELTA_UNIT) or not self.headers_sent:
            self.headers_sent = True
            return Gst.PadProbeReturn.OK
        ok, mapped = buffer.map(Gst.MapFlags.READ)
        data = bytes(mapped.data)
        buffer.unmap(mapped)
        kept = without_parameter_sets(data)
        if kept == data:
            return Gst.PadProbeReturn.OK
        access_unit = Gst.Buffer.new_wrapped(kept)
        access_unit.pts, access_unit.dts, access_unit.duration = buffer.pts, buffer.dts, buffer.duration
        pad.push(access_unit)
        return Gst.PadProbeReturn.DROP

    def chosen_profile_level(self):
        """The profile and level v4l2videoenc negotiates, or None when the peer takes none."""
        allowed = self.srcpad.peer_query_caps(self.get_pad_template("src").get_caps())
        for i in range(allowed.get_size()):
            s = allowed.get_structure(i)
            profile = first_accepted(s.get_value("profile"), PROFILES)
            level = first_accepted(s.get_value("level"), list(LEVELS))
            if profile and level:
                return profile, level
        return None

    def sink_query(self, pad, parent, query):
        if query.type == Gst.QueryType.ACCEPT_CAPS:
            caps = query.parse_accept_caps()
            accepted = caps.is_subset(self.get_pad_template("sink").get_caps()) \
                and self.chosen_profile_level() is not None
            query.set_accept_caps_result(accepted)
            return True
        answered = Gst.ProxyPad.query_default(pad, parent, query)
        if answered and query.type == Gst.QueryType.CAPS:
            query.set_caps_result(query.parse_caps_result().intersect(self.get_pad_template("sink").get_caps()))
        return answered

    def sink_event(self, pad, info):
        event = info.get_event()
        if GstVideo.video_event_is_force_key_unit(event) and gst_version() < (1, 22, 4):
            return Gst.PadProbeReturn.DROP
        if event.type == Gst.EventType.CAPS:
            self.configure(event.parse_caps().get_structure(0))
        return Gst.PadProbeReturn.OK

    def src_event(self, pad, info):
        if GstVideo.video_event_is_force_key_unit(info.get_event()) and gst_version() < (1, 22, 4):
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    def configure(self, raw):
        """set_format(): profile and level into the caps; the VideoCore's level check."""
        profile, level = self.chosen_profile_level()
        x264_profile = "constrained-baseline" if "baseline" in profile else profile
        self.profile_level.set_property("caps", Gst.Caps.from_string(
            "video/x-h264,stream-format=byte-stream,alignment=au,"
            f"profile={x264_profile},level=(string){level}"))
        self.named.set_property("caps", Gst.Caps.from_string(
            f"video/x-h264,profile={profile},level=(string){level}"))
        macroblocks = ((raw.get_value("width") + 15) // 16) * ((raw.get_value("height") + 15) // 16)
        ok, num, den = raw.get_fraction("framerate")
        per_second = macroblocks * num / den if ok and den else 0
        max_per_second, max_per_frame = LEVELS[level]
        if macroblocks > max_per_frame or per_second > max_per_second:
            error = GLib.Error.new_literal(Gst.ResourceError.quark(), "Failed to process frame.",
                                           Gst.ResourceError.FAILED)
            self.post_message(Gst.Message.new_error(
                self, error, f"gst_v4l2_video_enc_handle_frame (): {self.get_path_string()}:\n"
                "Maybe be due to not enough memory or failing driver"))
            self.encoder.set_locked_state(True)
            self.encoder.set_state(Gst.State.NULL)

    def do_change_state(self, transition):
        if transition == Gst.StateChange.NULL_TO_READY:
            self.opened = True
            if self.extra_controls is not None:
                self.apply_controls(self.structure_controls(self.extra_controls))
        if transition == Gst.StateChange.READY_TO_NULL:
            self.opened = False
        if transition == Gst.StateChange.READY_TO_PAUSED:
            self.headers_sent = False
            self.encoder.set_locked_state(False)
        return Gst.Bin.do_change_state(self, transition)


GObject.type_register(V4l2H264Enc)
__gstelementfactory__ = ("v4l2h264enc", Gst.Rank.NONE, V4l2H264Enc)
