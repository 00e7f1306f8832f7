#!/usr/bin/env bash
# The test command: set up .venv (if needed), then run the default CPU-only, offline test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q -m "not slow and not gpu" "$@"
