#!/usr/bin/env bash
# The main job on the built-in default: train the Fashion-MNIST demo teacher (if absent), compress it
# for the CPU target, check the bundle against the teacher and print the result. Progress shows in a log
# file too (`bash scripts/demo.sh > log 2>&1`): a line at least every 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
vledge=.venv/bin/vledge
runs=${VLEDGE_RUNS:-runs/demo}
mkdir -p "$runs"

if [ ! -f "$runs/teacher/model.safetensors" ]; then
  $vledge train --data fashion-mnist --out "$runs/teacher" --overwrite
fi
$vledge eval "$runs/teacher" --data fashion-mnist --split test --json "$runs/teacher_eval.json"
$vledge compress --teacher "$runs/teacher" --target cpu --data fashion-mnist --out "$runs/bundle-cpu" \
  --overwrite --json "$runs/compress_report.json"
$vledge check "$runs/bundle-cpu" --teacher "$runs/teacher" --data fashion-mnist --split test --json "$runs/check.json"
$vledge run "$runs/bundle-cpu" benchmarks/samples/*.png
