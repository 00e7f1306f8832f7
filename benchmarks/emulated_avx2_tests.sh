#!/usr/bin/env bash
# The tests whose results depend on a CPU's integer kernels, run under QEMU's AVX2-only EPYC-Rome model
# (no AVX-512, no VNNI; apt-get install -y qemu-user), where ONNX Runtime and OpenVINO dispatch to
# their AVX2 kernels as on such hardware. NNCF's calibration crashes under QEMU's emulation (a
# segmentation fault inside OpenVINO's JIT code, also on main before 7-bit weights), so the tests that
# calibrate with NNCF are deselected here; OpenVINO INT8 inference of NNCF-made towers is covered by
# benchmarks/int8_across_cpus.sh. Slow (about 10x native): a check, not part of the default run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-x86_64 >/dev/null || { echo "needs qemu-user: apt-get install -y qemu-user" >&2; exit 1; }
export QEMU_CPU=EPYC-Rome
files=(tests/test_quantize.py tests/test_cpu_isa.py tests/test_openvino_export.py tests/test_runtime.py
       tests/test_gate.py tests/test_teacher_student.py)
deselect="not nncf and not weights_only_fallback"
qemu-x86_64 .venv/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not gpu" -k "$deselect" \
  "${files[@]}" "$@" 2> >(grep -v "TCG doesn't support" >&2)
