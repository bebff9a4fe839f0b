#!/usr/bin/env bash
# Install fedsim and everything its tests need (idempotent). Torch is pinned to the CPU
# wheel: a looser requirement would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# Headless Chromium for the report's browser test (Debian package).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium; the browser test will be skipped" >&2
fi
