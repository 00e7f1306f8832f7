#!/usr/bin/env bash
# INT8 weight formats on this CPU and under QEMU's AVX2-only EPYC-Rome model (no AVX-512, no VNNI), one
# run each, merged into benchmarks/results/int8_across_cpus.json. Needs scripts/demo.sh's teacher and
# bundle (VLEDGE_RUNS, default runs/demo) and QEMU's user-mode emulator (apt-get install -y qemu-user).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
command -v qemu-x86_64 >/dev/null || { echo "needs qemu-user: apt-get install -y qemu-user" >&2; exit 1; }
work=${WORK:-/tmp/vledge-int8-across-cpus}
export WORK=$work
mkdir -p "$work"
$py benchmarks/int8_across_cpus.py build            # writes $work/build.json
$py benchmarks/int8_across_cpus.py eval             # $work/native.json
# QEMU warns on stderr about host features TCG does not model.
QEMU_CPU=EPYC-Rome qemu-x86_64 $py benchmarks/int8_across_cpus.py eval 2>/dev/null   # $work/emulated.json
# Others may share the cores: the latencies are ratios within the native run, not absolute times.
$py - "$work" <<'PY'
import json, subprocess, sys, datetime
work = sys.argv[1]
read = lambda name: json.load(open(f"{work}/{name}.json"))
flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split(":")[1].split()
out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "host_flags": [f for f in flags if f.startswith(("avx", "amx", "fma"))],
       "qemu": subprocess.run(["qemu-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
       "build": read("build"), "native": read("native"), "qemu_epyc_rome_avx2_only": read("emulated")}
json.dump(out, open("benchmarks/results/int8_across_cpus.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PY
