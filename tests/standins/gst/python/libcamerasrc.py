"""Stand-in for libcamera's GStreamer source `libcamerasrc`, for machines without a Pi camera.

Loaded by gst-python (Debian: gstreamer1.0-python3-plugin-loader) with
GST_PLUGIN_PATH=<repo>/tests/standins/gst. It negotiates as the element of
Raspberry Pi's libcamera build on Bookworm, v0.5.1+rpt20250722 (e53bdf1f, the
"v0.5.1+100-e53bdf1f" that `rpicam-hello --version` prints), following the
rules read from upstream's sources, not their code:

- src/gstreamer/gstlibcamerasrc.cpp: one always pad `src` ("video/x-raw;
  image/jpeg; video/x-bayer"; the request pads `src_%u` are not modelled) with
  the VideoRecording role (gstlibcamerapad.cpp's default). Properties:
  `camera-name` (mutable in READY) and, since 0.4, one property per libcamera
  control (`ae-enable`, `af-mode`, ...; not modelled). There is NO orientation,
  rotation or flip property in any version up to 0.7 (`auto-focus-mode` was
  dropped in 0.4): CameraConfiguration::orientation stays Rotate0, so a turned
  picture needs `videoflip` (or the sensor overlay's `rotation=` in config.txt).
  gst_libcamera_src_open(): no camera -> RESOURCE/NOT_FOUND "Could not find any
  supported camera on this system."; an unknown camera-name -> RESOURCE/NOT_FOUND
  "Could not find a camera named '%s'."; the state change to READY fails.
- Negotiation, gst_libcamera_src_negotiate() (in the streaming task; this
  stand-in too, on PAUSED->PLAYING): the peer is queried with the stream's
  formats as filter (gst_libcamera_stream_formats_to_caps(): per format, width
  and height ranges [min, sensor size] with the driver's step); an empty answer
  is not-negotiated. gst_libcamera_configure_stream_from_caps(): the structure
  whose size is nearest 1920x1080 (delta = |dw| * |dh|, fixed sizes preferred to
  ranges), format fixated to I420 if allowed, colorimetry (fixated, 0.5.1)
  mapped to a ColorSpace. gst_libcamera_get_framerate_from_caps(): the framerate
  of the FIRST structure of the peer's answer if fixed, else 30/1. Then
  CameraConfiguration::validate() (pipeline/rpi/common/pipeline_base.cpp):
  YUV streams get the first of sYCC, SMPTE170M, Rec709 whose primaries and
  transfer match what was asked, else sYCC; RGB ones its RGB version (no
  matrix, full range). Defaults for VideoRecording (generateConfiguration()):
  YUV420 (I420) 1920x1080 Rec709. The frame duration is clamped to the sensor
  mode's limits (gst_libcamera_clamp_and_set_frameduration(): then the caps say
  the clamped rate as an integer, e.g. 56/1 for 60 at 1080p). The final caps
  event is pushed even when adjusted; if downstream refuses it the element
  posts GST_ELEMENT_FLOW_ERROR: STREAM/FAILED "Internal data stream error.",
  "streaming stopped, reason not-negotiated (-4)". The stand-in asks the peer's
  accept-caps for that (its v4l2h264enc refuses there what the real one refuses
  when the caps event arrives).
- The ISP's formats and sizes: Pi <= 4, vc4 (bcm2835-isp, drivers/staging/
  vc04_services/bcm2835-isp/bcm2835-isp-fmts.h and bcm2835-v4l2-isp.c): I420,
  YV12, NV12, NV21, YUY2, UYVY, YVYU, VYUY (step 2), RGB, RGB16, BGR, BGRx,
  RGBx (step 1), 64x64 up to the sensor; bytes per line aligned to 32 (YUV
  4:2:0, 24/16-bit RGB) or 64 (4:2:2 packed, 32-bit RGB). Pi 5, pisp
  (pisp_be_formats.h, pisp.cpp computeOptimalStride()): the same plus Y42B and
  Y444; I420 lines aligned to 128 (so each chroma line to 64), NV12 to 32 by the
  driver (libpisp asks 64). Since 0.5.1 a stride other than GStreamer's default
  comes with a GstVideoMeta when downstream takes it, else the frame is copied:
  widths that are multiples of 128 match on both and cost no copy. This
  stand-in's buffers always have GStreamer's default stride.
- The sensor: a Camera Module 3 (imx708) at the Pi's default camera id, modes
  1536x864 (120.13 fps), 2304x1296 (56.03), 4608x2592 (14.35); the smallest mode
  covering the output is used (RPi::CameraData::findBestFormat()'s outcome for
  16:9 sizes).

The picture is videotestsrc (is-live, pattern ball or STANDIN_PATTERN) at the negotiated caps: no
Python runs per buffer.

Environment:
  BROADCAST_AGENT_DEVICE_TREE  the device-tree compatible file (default /proc/device-tree/compatible);
                               `brcm,bcm2712` in it makes a Pi 5 (pisp), anything else a Pi <= 4 (vc4)
  STANDIN_NO_CAMERA            1: no camera is connected
  STANDIN_PATTERN              videotestsrc's pattern (default ball, a still scene that needs few bits; snow
                               fills any bitrate, as a real sensor's noise does; camera.py's
                               `stamp` is not drawn here: ball)
"""
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, GObject, Gst, GstVideo  # noqa: E402

# tests/standins, for what the stand-ins share.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", ".."))
from machine import is_pi5  # noqa: E402

Gst.init(None)

SENSOR_SIZE = (4608, 2592)
# (width, height, fastest frames per second) of the imx708's modes, smallest first.
SENSOR_MODES = [(1536, 864, 120.13), (2304, 1296, 56.03), (4608, 2592, 14.35)]
LONGEST_FRAME_US = 120_000_000
CAMERA_IDS = {
    False: "/base/soc/i2c0mux/i2c@1/imx708@1a",
    True: "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a",
}
# GStreamer format -> (size step, YUV?) of the ISP's output node.
VC4_FORMATS = {
    "I420": (2, True), "YV12": (2, True), "NV12": (2, True), "NV21": (2, True),
    "YUY2": (2, True), "UYVY": (2, True), "YVYU": (2, True), "VYUY": (2, True),
    "RGB": (1, False), "RGB16": (1, False), "BGR": (1, False), "BGRx": (1, False),
    "RGBx": (1, False),
}
PISP_FORMATS = dict(VC4_FORMATS, Y42B=(2, True), Y444=(2, True))
VC4_MIN_SIZE = 64
PISP_MIN_SIZE = 16
DEFAULT_SIZE = (1920, 1080)
DEFAULT_FORMAT = "I420"

# ColorSpace as (primaries, transfer, ycbcr encoding, range), in GstVideo's enum
# numbers: primaries 1 BT709, 4 SMPTE170M, 7 BT2020; transfer 1 linear, 5 BT709,
# 7 sRGB; matrix 1 RGB (no encoding), 3 BT709, 4 BT601, 6 BT2020; range 1 full, 2 limited.
SYCC = (1, 7, 4, 1)
SMPTE170M = (4, 5, 4, 2)
REC709 = (1, 5, 3, 2)
VALID_COLOR_SPACES = [SYCC, SMPTE170M, REC709]
# colorspace_from_colorimetry()'s mappings; what is missing is "not mapped".
PRIMARIES = {1: 1, 4: 4, 7: 7}
TRANSFERS = {1: 1, 2: 1, 3: 1, 4: 1, 8: 1, 7: 7, 5: 5, 11: 5, 13: 5, 16: 5}
MATRICES = {1: 1, 2: 4, 4: 4, 3: 3, 6: 6}
RANGES = {1: 1, 2: 2}


def isp_formats(pi5):
    return PISP_FORMATS if pi5 else VC4_FORMATS


def offered_caps(pi5):
    """gst_libcamera_stream_formats_to_caps() for the ISP output of this model."""
    low = PISP_MIN_SIZE if pi5 else VC4_MIN_SIZE
    caps = Gst.Caps.new_empty()
    for name, (step, _) in isp_formats(pi5).items():
        caps.append(Gst.Caps.from_string(
            f"video/x-raw,format={name},width=(int)[{low},{SENSOR_SIZE[0]},{step}],"
            f"height=(int)[{low},{SENSOR_SIZE[1]},{step}]"))
    return caps


def colorspace_from_colorimetry(text):
    """(color space or None when not mapped, transfer to echo back or None)."""
    c = GstVideo.VideoColorimetry()
    if not c.from_string(text):
        return None, None
    primaries = int(c.primaries)
    if primaries == 0:
        return "raw", None
    mapped = (PRIMARIES.get(primaries), TRANSFERS.get(int(c.transfer)),
              MATRICES.get(int(c.matrix)), RANGES.get(int(c.range)))
    if None in mapped:
        return None, None
    echoed = int(c.transfer) if mapped[1] == 5 else None
    return mapped, echoed


def colorimetry_string(space, echoed_transfer):
    primaries, transfer, matrix, value_range = space
    if transfer == 5 and echoed_transfer is not None:
        transfer = echoed_transfer
    c = GstVideo.VideoColorimetry()
    c.from_string(f"{value_range}:{matrix}:{transfer}:{primaries}")
    return c.to_string()


def nearest_structure(caps):
    """gst_libcamera_configure_stream_from_caps()'s choice of structure, fixated in size."""
    best_fixed = best_range = None
    for i in range(caps.get_size()):
        s = caps.get_structure(i).copy()
        fixed = isinstance(s.get_value("width"), int) and isinstance(s.get_value("height"), int)
        if not fixed:
            s.fixate_field_nearest_int("width", DEFAULT_SIZE[0])
            s.fixate_field_nearest_int("height", DEFAULT_SIZE[1])
        delta = abs(s.get_value("width") - DEFAULT_SIZE[0]) * abs(s.get_value("height") - DEFAULT_SIZE[1])
        if fixed and (best_fixed is None or delta < best_fixed[0]):
            best_fixed = (delta, s)
        if not fixed and (best_range is None or delta < best_range[0]):
            best_range = (delta, s)
    return (best_fixed or best_range)[1]


def framerate_asked(caps):
    """gst_libcamera_get_framerate_from_caps(): the first structure's, if fixed."""
    value = caps.get_structure(0).get_value("framerate")
    if isinstance(value, Gst.Fraction):
        return int(value.num), int(value.denom)
    return 30, 1


def clamped_framerate(size, rate):
    """gst_libcamera_clamp_and_set_frameduration() with the chosen mode's limits."""
    fastest = next((fps for w, h, fps in SENSOR_MODES if w >= size[0] and h >= size[1]), SENSOR_MODES[-1][2])
    num, den = rate
    target = int(den * 1000000.0 / num)
    duration = min(max(target, int(1000000 / fastest)), LONGEST_FRAME_US)
    if duration != target:
        return 1000000 // duration, 1
    return rate


def validated_colorspace(asked, yuv):
    """RPiCameraConfiguration::validateColorSpaces() for one stream."""
    space = SYCC
    if asked not in (None, "raw"):
        space = next((cs for cs in VALID_COLOR_SPACES if cs[:2] == asked[:2]), SYCC)
    if yuv:
        return space
    return (space[0], space[1], 1, 1)


class Refused(Exception):
    """Negotiation ends in not-negotiated."""


def negotiated_caps(pad, pi5):
    """What libcamerasrc pushes downstream, or Refused."""
    formats = isp_formats(pi5)
    peer = pad.peer_query_caps(offered_caps(pi5))
    if peer.is_empty():
        raise Refused("the peer takes none of the camera's formats and sizes")
    chosen = nearest_structure(peer)
    chosen.fixate_field_string("format", DEFAULT_FORMAT)
    fmt = chosen.get_string("format")
    size = (chosen.get_value("width"), chosen.get_value("height"))
    asked, echoed = REC709, None
    if chosen.has_field("colorimetry"):
        chosen.fixate_field("colorimetry")
        asked, echoed = colorspace_from_colorimetry(chosen.get_string("colorimetry"))
    space = validated_colorspace(asked, formats[fmt][1])
    num, den = clamped_framerate(size, framerate_asked(peer))
    return Gst.Caps.from_string(
        f"video/x-raw,format={fmt},width={size[0]},height={size[1]},"
        f"colorimetry={colorimetry_string(space, echoed)},framerate={num}/{den}")


class LibcameraSrc(Gst.Bin):
    """libcamerasrc as a Bin: videotestsrc ! capsfilter, caps chosen as upstream chooses."""

    __gtype_name__ = "GstLibcameraSrc"
    __gstmetadata__ = ("libcamera Source", "Source/Video", "Linux Camera source using libcamera",
                       "stand-in of Nicolas Dufresne's element")
    __gsttemplates__ = Gst.PadTemplate.new(
        "src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS,
        Gst.Caps.from_string("video/x-raw; image/jpeg; video/x-bayer"))
    __gproperties__ = {
        "camera-name": (str, "Camera Name", "Select by name which camera to use.", None,
                        GObject.ParamFlags.READWRITE | GObject.ParamFlags.CONSTRUCT),
    }

    def __init__(self):
        super().__init__()
        self.camera_name = None
        self.picture = Gst.ElementFactory.make("videotestsrc", "picture")
        self.picture.set_property("is-live", True)
        pattern = os.environ.get("STANDIN_PATTERN", "ball")
        self.picture.set_property("pattern", "ball" if pattern == "stamp" else pattern)
        self.filter = Gst.ElementFactory.make("capsfilter", "negotiated")
        self.add(self.picture)
        self.add(self.filter)
        self.picture.link(self.filter)
        self.srcpad = Gst.GhostPad.new_from_template(
            "src", self.filter.get_static_pad("src"), self.get_pad_template("src"))
        self.add_pad(self.srcpad)
        self.srcpad.set_query_function_full(self.src_query)

    def src_query(self, pad, parent, query):
        """The real pad answers caps queries with its template, whatever the camera offers."""
        if query.type == Gst.QueryType.CAPS:
            template = self.get_pad_template("src").get_caps()
            wanted = query.parse_caps()
            query.set_caps_result(wanted.intersect(template) if wanted else template)
            return True
        return Gst.ProxyPad.query_default(pad, parent, query)

    def do_get_property(self, prop):
        return self.camera_name

    def do_set_property(self, prop, value):
        self.camera_name = value

    def post_error(self, domain, code, message, debug):
        error = GLib.Error.new_literal(domain.quark(), message, code)
        self.post_message(Gst.Message.new_error(self, error, debug))

    def open_camera(self):
        """gst_libcamera_src_open()."""
        if os.environ.get("STANDIN_NO_CAMERA") == "1":
            self.post_error(Gst.ResourceError, Gst.ResourceError.NOT_FOUND,
                            "Could not find any supported camera on this system.",
                            "libcamera::CameraMananger::cameras() is empty")
            return False
        if self.camera_name and self.camera_name != CAMERA_IDS[is_pi5()]:
            self.post_error(Gst.ResourceError, Gst.ResourceError.NOT_FOUND,
                            f"Could not find a camera named '{self.camera_name}'.",
                            "libcamera::CameraMananger::get() returned nullptr")
            return False
        return True

    def negotiate(self):
        """gst_libcamera_src_negotiate(): set the caps, or post not-negotiated."""
        try:
            caps = negotiated_caps(self.srcpad, is_pi5())
            if not self.srcpad.peer_query_accept_caps(caps):
                raise Refused(f"the peer refuses {caps.to_string()}")
        except Refused as refusal:
            Gst.warning(str(refusal))
            self.post_error(Gst.StreamError, Gst.StreamError.FAILED, "Internal data stream error.",
                            f"gst_libcamera_src_task_enter (): {self.get_path_string()}:\n"
                            "streaming stopped, reason not-negotiated (-4)")
            return False
        self.filter.set_property("caps", caps)
        return True

    def do_change_state(self, transition):
        if transition == Gst.StateChange.NULL_TO_READY:
            if not self.open_camera():
                return Gst.StateChangeReturn.FAILURE
            self.hold_picture(True)
        if transition == Gst.StateChange.PAUSED_TO_PLAYING and self.picture.is_locked_state() \
                and self.negotiate():
            self.hold_picture(False)
            for child in (self.filter, self.picture):
                child.set_state(Gst.State.PAUSED)
        result = Gst.Bin.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY:
            self.hold_picture(True)
        if transition in (Gst.StateChange.READY_TO_PAUSED, Gst.StateChange.PLAYING_TO_PAUSED) \
                and result != Gst.StateChangeReturn.FAILURE:
            return Gst.StateChangeReturn.NO_PREROLL
        return result

    def hold_picture(self, held):
        """Keep the inner elements out of the bin's state changes until the caps are known."""
        for child in (self.picture, self.filter):
            child.set_locked_state(held)
            if held:
                child.set_state(Gst.State.NULL)

GObject.type_register(LibcameraSrc)
__gstelementfactory__ = ("libcamerasrc", Gst.Rank.NONE, LibcameraSrc)
