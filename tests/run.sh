#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian 12 machine
# (as root), then runs every check and test:
#   1. cargo fmt --check, cargo clippy -D warnings
#   2. cargo test: unit tests and the integration tests with real parts (a real
#      Janus on loopback, real GStreamer pipelines, a real ALSA device)
#   3. the browser end-to-end test (Chromium, the viewer page, the real agent),
#      then tests/bitrate.rs's test that needs Chromium (ignored in step 2)
#   4. the alert rules (promtool) and the Grafana dashboard's queries against a
#      real Prometheus, over the series of the real agent
#   5. cross builds for both Raspberry Pi targets, unit tests under qemu
#   6. the .deb packages; then each installed into a Bookworm root filesystem of
#      its Depends, streaming to a real Janus under qemu-user (arm64 and armhf);
#      the signed apt repository, installed and upgraded with apt-get in a Bookworm
#      arm64 root filesystem under qemu-user; the deploy script against a stand-in
#      Pi; the metrics textfile in Debian's node exporter folder, as the service's
#      user, read by node exporter
# Stops at the first failing step; prints a summary line per step.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

step() { echo; echo "== $*"; }
step "cargo fmt --check"
cargo fmt --check
step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
step "cargo test"
cargo test --locked
step "browser end-to-end (tests/browser/run.sh)"
bash tests/browser/run.sh
step "a Chromium viewer's REMB reaches a plain-RTP agent (tests/bitrate.rs; needs what the browser step installed)"
cargo test --locked --test bitrate -- --ignored
step "alert rules and dashboard (tests/monitoring/run.sh)"
bash tests/monitoring/run.sh
step "cross builds + unit tests under qemu (deploy/cross-build.sh all --test)"
CARGO_BUILD_ARGS=--locked bash deploy/cross-build.sh all --test
step ".deb packages (tests/ship/deb-test.sh)"
bash tests/ship/deb-test.sh
step "arm64 and armhf packages end to end under qemu (tests/ship/arm-e2e.sh)"
bash tests/ship/arm-e2e.sh all
step "apt repository: signed, installed and upgraded with apt-get in a Bookworm arm64 rootfs (tests/ship/apt-repo-test.sh)"
bash tests/ship/apt-repo-test.sh
step "deploy script against a stand-in Pi (tests/ship/deploy-test.sh)"
bash tests/ship/deploy-test.sh
step "metrics textfile in Debian's node exporter folder (tests/ship/metrics-folder-test.sh)"
bash tests/ship/metrics-folder-test.sh
