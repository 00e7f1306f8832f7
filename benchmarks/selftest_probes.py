"""What the self-test on load sees: each bundle's probes through every placement and CPU fallback this
machine offers, and what the check costs at load. This chose ``runtimes/selftest.py``'s tolerances.

The demo teacher (scripts/demo.sh) compressed for every target, from one distilled student (one work
folder), plus 8-bit-weight variants (``weight_bits=8``: VNNI towers with a 7-bit fallback) and the
teacher itself quantized (``student="teacher"``). ``eval`` loads each on every reachable placement of
its chain (OpenVINO at its default precision, bf16 on CPUs that have it, and with ``exact=True``), and
again with an AVX2-only CPU simulated for the file choice (the 7-bit fallback, the QDQ graph in float).
Under QEMU's AVX2-only CPU model, /proc/cpuinfo is the host's: vledge picks the 8-bit files and the
kernels saturate, as on such hardware without the recorded requirement. Knobs at the top. From the
repository root:
    .venv/bin/python benchmarks/selftest_probes.py build      # compress (the distillation dominates)
    .venv/bin/python benchmarks/selftest_probes.py eval       # WORK/native.json
    qemu-x86_64 -cpu EPYC-Rome .venv/bin/python benchmarks/selftest_probes.py eval   # WORK/emulated.json
    .venv/bin/python benchmarks/selftest_probes.py cost       # median load time with and without the check
    .venv/bin/python benchmarks/selftest_probes.py merge      # -> benchmarks/results/selftest_probes.json
"""
import datetime, json, logging, os, statistics, sys, time
from pathlib import Path

RUNS = Path(os.environ.get("VLEDGE_RUNS", "runs/demo"))
WORK = Path(os.environ.get("WORK", "/tmp/vledge-selftest-probes"))
TEACHER = RUNS / "teacher"
THREADS, LOADS = 1, int(os.environ.get("LOADS", 20))
# bundle name -> (target, CompressConfig overrides)
BUNDLES = {
    "cpu": ("cpu", {}),
    "cpu-8bit": ("cpu", {"quantize": {"weight_bits": 8}}),
    "intel-cpu": ("intel-cpu", {}),
    "intel-cpu-8bit": ("intel-cpu", {"quantize": {"weight_bits": 8}}),
    "intel-npu": ("intel-npu", {}),
    "cuda": ("cuda", {}),
    "jetson": ("jetson", {}),
    "teacher-cpu": ("cpu", {"student": "teacher"}),
}


def build():
    from vledge.compress import compress, resolve_config

    for i, (name, (target, overrides)) in enumerate(BUNDLES.items()):
        out = WORK / "bundles" / name
        if (out / "vledge.json").is_file():
            continue
        start = time.perf_counter()
        config = resolve_config(target, overrides=overrides)
        report = compress(TEACHER, out=out, config=config, work_dir=WORK / "work", resume=True, keep_work=True,
                          overwrite=True)
        print(f"{name}: {time.perf_counter() - start:.0f} s; {report.headline()}", flush=True)


def cpu_seen():
    """The CPU as its instructions see it (cpuid, through numpy): under QEMU, /proc/cpuinfo is the host's."""
    from numpy._core._multiarray_umath import __cpu_features__ as f
    return {"avx2": f["AVX2"], "avx512f": f["AVX512F"], "avx512_vnni": f["AVX512VNNI"]}


def _placements(manifest):
    from vledge.runtimes.base import RUNTIMES
    from vledge.runtimes.selection import available_placements, readable_chain
    from vledge.targets import TARGETS, Placement

    formats = {t.format for t in manifest.towers.values()}
    chain, _ = readable_chain(TARGETS.get(manifest.target).chain, formats)
    extra = [Placement("openvino", "CPU")] if formats <= RUNTIMES.get("openvino").reads else []
    reachable = available_placements(["onnxruntime", "openvino"])
    return [p for p in dict.fromkeys([*chain, *extra]) if p in reachable]


def _measure(bundle, placement, **options):
    import vledge
    from vledge.errors import VledgeError

    try:
        model = vledge.load(bundle, device=str(placement), threads=THREADS, strict=False, **options)
    except VledgeError as exc:  # SelfTestError, or a graph this backend cannot compile
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    info = model.info()
    return {"placement": info["placement"], "runs": {k: t.get("runs") for k, t in info["towers"].items()},
            "towers": {k: {"min_cosine": t["min_cosine"], "spread_ratio": t["spread_ratio"], "passed": t["passed"]}
                       for k, t in info["self_test"]["towers"].items()},
            "failures": info["self_test"]["failures"]}


def evaluate():
    from vledge.bundle_files import read_manifest
    from vledge.cpu import CpuInfo

    logging.basicConfig(level=logging.ERROR)
    emulated = not cpu_seen()["avx512_vnni"] and "avx512_vnni" in open("/proc/cpuinfo").read()
    avx2 = CpuInfo("simulated AVX2-only", "x86_64", frozenset({"avx2", "fma", "sse4_2"}))
    import vledge.runtimes.isa as isa

    real_cpu = isa.host_cpu
    result = {"cpu": {"cpuid": cpu_seen(), "emulated_by_qemu": emulated}, "bundles": {}}
    for name in BUNDLES:
        bundle = WORK / "bundles" / name
        manifest = read_manifest(bundle)
        rows = {"at_compress": {k: e.get("at_compress") for k, e in manifest.probes.items()}}
        needs = any(t.requires_isa for t in manifest.towers.values())
        for placement in _placements(manifest):
            for variant, options in (("", {}), (" exact", {"exact": True})):
                if variant and placement.backend != "openvino":
                    continue
                isa.host_cpu = real_cpu
                rows[f"{placement}{variant}"] = _measure(bundle, placement, **options)
                if needs and placement.device.lower() == "cpu" and not emulated:
                    isa.host_cpu = lambda: avx2
                    rows[f"{placement}{variant} (AVX2-only CPU simulated: fallback files)"] = \
                        _measure(bundle, placement, **options)
        isa.host_cpu = real_cpu
        result["bundles"][name] = rows
        print(name, json.dumps(rows), flush=True)
    (WORK / ("emulated.json" if emulated else "native.json")).write_text(json.dumps(result, indent=1))


def cost():
    """Median wall time of ``vledge.load`` with and without the self-test, interleaved in one process."""
    import vledge

    logging.basicConfig(level=logging.ERROR)
    sys.path.insert(0, "tests")
    from bundles import build_bundle

    bundles = {"demo cpu (narrow-resnet18-bert2, INT8)": WORK / "bundles" / "cpu",
               "tests' tiny ViT + BERT (FP32)": build_bundle(WORK / "tiny", overwrite=True)}
    out = {"cpu": next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
           "loads": LOADS, "threads": THREADS, "bundles": {}}
    for name, bundle in bundles.items():
        for _ in range(3):  # warm the file cache and the frameworks' first-use costs
            vledge.load(bundle, threads=THREADS)
        times = {True: [], False: []}
        checks = []
        for _ in range(LOADS):
            for flag in (True, False):
                start = time.perf_counter()
                model = vledge.load(bundle, threads=THREADS, self_test=flag)
                times[flag].append(time.perf_counter() - start)
                if flag:
                    checks.append(model.info()["self_test"]["seconds"])
        on, off = statistics.median(times[True]) * 1000, statistics.median(times[False]) * 1000
        out["bundles"][name] = {"load_ms_median_with": round(on, 2), "load_ms_median_without": round(off, 2),
                                "difference_ms": round(on - off, 2),
                                "self_test_ms_median (its own timer)": round(statistics.median(checks) * 1000, 2)}
        print(name, out["bundles"][name], flush=True)
    (WORK / "cost.json").write_text(json.dumps(out, indent=1))


def merge():
    read = lambda name: json.loads((WORK / name).read_text()) if (WORK / name).is_file() else None
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "native": read("native.json"), "qemu_epyc_rome_avx2_only": read("emulated.json"), "cost": read("cost.json")}
    Path("benchmarks/results/selftest_probes.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    {"build": build, "eval": evaluate, "cost": cost, "merge": merge}[sys.argv[1]]()
