#!/usr/bin/env bash
# Create .venv and install vledge with the given extras (default: test). Safe to run again: it
# reinstalls only when pyproject.toml changed. Also installs Fashion-MNIST (and, for the tests,
# Chromium) from Debian's packages where it can.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.vledge-${extras}-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  # torch and torchvision are pinned in the extras (2.14.1 / 0.29.1): see STACK.md in the docs.
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  touch "$stamp"
fi

# The test extra's browser test drives Debian's Chromium; without it that one test skips.
if [ "$extras" = test ] && ! command -v chromium >/dev/null 2>&1 && [ -z "${VLEDGE_SKIP_BROWSER:-}" ] \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null || \
    echo "setup: could not install chromium; the page test will skip" >&2
fi

fmnist=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
if [ ! -f "$fmnist" ] && [ -z "${VLEDGE_SKIP_DATA:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null
  else
    echo "setup: Fashion-MNIST is not installed and this user cannot install it." >&2
    echo "setup: run 'sudo apt-get install dataset-fashion-mnist', or put the four IDX files in a folder and pass --data-dir." >&2
  fi
fi
