#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian 12 machine,
# then runs formatting and lint checks and every test (unit and integration,
# against a real Janus, real GStreamer pipelines and a real ALSA device).
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked
