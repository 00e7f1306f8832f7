#!/usr/bin/env bash
# `bash scripts/demo.sh > log 2>&1` on a quiet machine and on one whose two cores two busy loops saturate, with
# OpenMP's default wait (OMP_WAIT_POLICY="", as before vledge set one) and with PASSIVE (vledge's default):
# the first training epoch's seconds (the demo's own epoch line) and the longest silence in its log over that
# epoch. Each demo trains a fresh teacher and is stopped after its first epoch. Run on an otherwise idle
# machine; writes benchmarks/results/spin_wait_demo.json.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test > /dev/null
out=benchmarks/results/spin_wait_demo.json
work=$(mktemp -d /tmp/spin-demo.XXXX)

one() {  # $1 label, $2 OMP_WAIT_POLICY value ("" = the OpenMP default), $3 load (0/1)
  local log="$work/$1.log" burners=()
  if [ "$3" = 1 ]; then
    for _ in 1 2; do sh -c 'while :; do :; done' & burners+=($!); done
  fi
  OMP_WAIT_POLICY="$2" VLEDGE_RUNS="$work/$1" setsid bash scripts/demo.sh > "$log" 2>&1 &
  local demo=$!
  until grep -q "train epoch 1/" "$log" 2>/dev/null || ! kill -0 "$demo" 2>/dev/null; do sleep 2; done
  kill -- -"$demo" 2>/dev/null
  [ ${#burners[@]} -gt 0 ] && kill "${burners[@]}"
  wait 2>/dev/null
  echo "$1: $(grep 'train epoch 1/' "$log")"
  sleep 10
}

one quiet-default "" 0
one quiet-passive PASSIVE 0
one loaded-default "" 1
one loaded-passive PASSIVE 1

.venv/bin/python - "$work" "$out" <<'EOF'
import json, os, re, subprocess, sys, time
from datetime import datetime
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
def clock(line):
    return datetime.strptime(line[:8], "%H:%M:%S")
runs = {}
for label in ("quiet-default", "quiet-passive", "loaded-default", "loaded-passive"):
    lines = (work / f"{label}.log").read_text().splitlines()
    timed = [l for l in lines if re.match(r"\d\d:\d\d:\d\d train", l)]
    epoch = next(l for l in timed if "train epoch 1/" in l)
    start = next(l for l in timed if "train: started" in l)
    stamps = [clock(l) for l in timed[: timed.index(epoch) + 1]]
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
    runs[label] = {"first_epoch_s": int(re.search(r", (\d+) s$", epoch).group(1)),
                   "first_line_after_start_s": (stamps[timed.index(start) + 1] - clock(start)).total_seconds(),
                   "longest_silence_s": max(gaps), "lines_in_first_epoch": len(stamps)}
slow = {p: round(runs[f"loaded-{p}"]["first_epoch_s"] / runs[f"quiet-{p}"]["first_epoch_s"], 2) for p in ("default", "passive")}
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f} " in cpu.split("Flags:")[-1] + " "]
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
result = {"command": "bash benchmarks/spin_wait_demo.sh",
          "what": "bash scripts/demo.sh > log 2>&1, stopped after its first training epoch; one run each",
          "load": "quiet: nothing else running; loaded: two busy-loop processes on the two cores",
          "cpu": f"{model}, {len(os.sched_getaffinity(0))} cores; {', '.join(flags)}",
          "date": time.strftime("%Y-%m-%d"), "runs": runs,
          "first_epoch_slowdown_loaded_vs_quiet": {"openmp_default": slow["default"], "passive": slow["passive"]}}
out.write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
EOF
rm -rf "$work"
