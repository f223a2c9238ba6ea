#!/usr/bin/env bash
# Installs the Debian 12 packages broadcast-agent needs to build, run its demo
# and run its tests: Janus, GStreamer (1.22) with the plugins the pipelines use,
# ALSA, PulseAudio as a sound card for machines without one, and Python's
# GStreamer bindings for the stand-in camera programs (tests/standins/) with
# GStreamer's python plugin loader for the stand-in elements libcamerasrc and
# v4l2h264enc (tests/standins/gst/, tests/libcamerasrc.rs), and the
# Prometheus client library whose parser reads the metrics file in tests, and
# groff (groff-base), which formats the manual pages in tests/cli.rs.
# WebRTC: libgstreamer-plugins-bad1.0-dev (gstreamer-webrtc-1.0.pc, for the
# gstreamer-webrtc crate), gstreamer1.0-nice (libnice's ICE elements for webrtcbin),
# and nftables for the tests.
# Uses the machine's own apt configuration; needs root.
set -euo pipefail

packages=(
  build-essential pkg-config curl openssl
  janus
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev libasound2-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-base-apps gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-alsa gstreamer1.0-nice
  nftables
  alsa-utils pulseaudio pulseaudio-utils libasound2-plugins
  systemd
  python3-gi gir1.2-gstreamer-1.0 gstreamer1.0-python3-plugin-loader
  python3-prometheus-client
  groff-base
)

bash "$(dirname "$0")/ensure-packages.sh" "${packages[@]}"

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
