"""`vledge bench`: build every variant, measure each in its own process, and write the report after
every row, so a run interrupted half way keeps the rows it finished (``resume`` skips them)."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vledge.bench import processes
from vledge.bench import report as reports
from vledge.bench.budgets import add_derived, check_budgets
from vledge.bench.config import BenchConfig
from vledge.bench.measure import count_macs, folder_bytes
from vledge.bench.rows import TEACHER_TORCH, Variant, Workshop
from vledge.bench.variants import variants

log = logging.getLogger(__name__)

ACCURACY_PLOT = "accuracy_latency.png"
SCALING_PLOT = "scaling.png"


def machine_info(threads: int) -> dict:
    """The machine and library versions the numbers were taken on."""
    from vledge.compress import toolchain_versions
    from vledge.cpu import host_cpu

    cpu = platform.processor() or "?"
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    versions = toolchain_versions()
    for dist in ("numpy", "tokenizers", "torchvision", "matplotlib", "psutil"):
        try:
            import importlib.metadata

            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_isa": host_cpu().to_dict(), "cores": os.cpu_count(), "threads": threads,
            "load_average": os.getloadavg(), "versions": versions}


def write_probe(data, n: int, work: Path) -> tuple[Path, list[str], list[str]]:
    """The first ``n`` images of the evaluation split as uint8 arrays (every row preprocesses them its
    own way), the prompts of every class and template, and the class names."""
    from vledge.images import open_image

    images = {f"image_{i}": np.asarray(open_image(data.image(i))) for i in range(min(n, len(data)))}
    path = work / "probe.npz"
    np.savez(path, **images)
    classes = list(data.classes or [])
    texts = [t.format(c) for c in classes for t in data.templates] or [data.caption(i) for i in range(min(64, len(data)))]
    return path, texts, classes


def _static_facts(variant: Variant, path: Path, texts: list[str], notes: list[str]) -> dict:
    """Size, architecture, parameters and MACs (batch 1; text at the first prompt's length), each guarded."""
    facts = {"size_mb": folder_bytes(path / variant.size_of) / 1e6}
    try:
        facts["model"] = variant.model() if variant.model else None
    except Exception as exc:
        notes.append(f"architecture not read: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        params = variant.params() if variant.params else None
        facts["params_m"] = None if params is None else params / 1e6
    except Exception as exc:
        notes.append(f"parameters not counted: {type(exc).__name__}: {exc}")
    try:
        facts.update(_macs(variant.macs_from() if variant.macs_from else path, texts))
    except Exception as exc:
        notes.append(f"MACs not counted: {type(exc).__name__}: {str(exc)[:200]}")
    return facts


def _macs(bundle: Path, texts: list[str]) -> dict:
    from vledge.bundle import safe_join
    from vledge.bundle_files import read_manifest
    from vledge.text import TextTokenizer

    manifest = read_manifest(bundle, verify=False)
    out = {}
    for kind, tower in manifest.towers.items():
        if tower.format != "onnx":
            continue
        if kind == "image":
            size = manifest.preprocess.image_size
            arrays = [np.zeros((1, 3, size, size), np.float32)]
        else:
            tokenizer = TextTokenizer.from_file(safe_join(bundle, manifest.tokenizer.file), manifest.tokenizer)
            arrays = list(tokenizer(texts[:1], pad_to_max=isinstance(tower.inputs[0].shape[-1], int)))
        feeds = {t.name: a.astype(t.dtype) for t, a in zip(tower.inputs, arrays)}
        out[f"{kind}_mmacs"] = count_macs(safe_join(bundle, tower.file), feeds) / 1e6
    return out


class _Run:
    """One benchmark run's state: its results dict, written out after every change."""

    def __init__(self, config: BenchConfig):
        self.config = config
        self.out = Path(config.out)
        self.work = Path(config.work_dir or self.out / "work")
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        previous = self.out / reports.RESULTS_JSON
        self.budgets = config.budgets()
        self.results = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(config.threads),
                        "settings": config.to_dict(), "teacher_size_mb": folder_bytes(config.teacher) / 1e6,
                        "student": None, "baselines": {}, "rows": [], "details": [], "skipped": [], "budgets": [],
                        "scaling": None, "files": {}}
        if config.resume and previous.is_file():
            old = json.loads(previous.read_text())
            kept = [r for r in old.get("rows", []) if r.get("status") == "ok"]
            names = {r["name"] for r in kept}
            self.results.update(rows=kept, details=[d for d in old.get("details", []) if d["name"] in names],
                                baselines=old.get("baselines", {}), student=old.get("student"))

    def row(self, name: str) -> dict | None:
        return next((r for r in self.results["rows"] if r["name"] == name), None)

    def put(self, row: dict, detail: dict) -> None:
        """Add a row, or replace the one of the same name where it stands."""
        for key, item in (("rows", row), ("details", detail)):
            entries = self.results[key]
            at = next((i for i, r in enumerate(entries) if r["name"] == item["name"]), len(entries))
            entries[at : at + 1] = [item]
        self.save()

    def save(self) -> None:
        rows = self.results["rows"]
        add_derived(rows, self.results["teacher_size_mb"])
        self.results["budgets"] = [b.to_dict() for b in check_budgets(rows, self.budgets)]
        self.results["files"].update({k: str(v) for k, v in reports.write_reports(self.out, self.results).items()})


def bench(config: BenchConfig) -> dict:
    """Measure every variant (see ``vledge.bench.rows``) and write the report into ``config.out``.

    Returns the results dict that ``results.json`` holds: machine, settings, rows (with the derived
    columns of ``vledge.bench.budgets``), the budgets checked, rows skipped and why, the batch curves.
    A variant that fails to build or run becomes a row with its error as status; nothing is raised
    for it. Invalid settings or an unreadable data set raise before any row is measured.
    """
    run = _Run(config)
    shop = Workshop(config.teacher, data=config.data, data_dir=config.data_dir, split=config.split, work=run.work,
                    student=config.student, seed=config.seed,
                    distill={k: v for k, v in (("epochs", config.distill_epochs),
                                               ("max_samples", config.distill_samples)) if v is not None})
    rows = variants(shop, config.bundles, config.rows, skipped=run.results["skipped"])
    for reason in run.results["skipped"]:
        log.info("bench: skipped %s", reason)
    probe, texts, classes = write_probe(shop.eval_data(), config.probe_images, run.work)
    timing: list[_Timing] = []
    for i, variant in enumerate(rows, 1):
        if run.row(variant.name) is not None:
            log.info("bench [%d/%d] %s: kept from the earlier run", i, len(rows), variant.name)
            continue
        measured = _measure(run, shop, variant, f"[{i}/{len(rows)}]", probe, texts, classes)
        if measured is not None:
            timing.append(measured)
    _time_in_rounds(run, timing)
    if config.scaling:
        _scaling(run)
    _plot(run, "accuracy_plot", "plot_accuracy_latency", run.results["rows"], run.out / ACCURACY_PLOT)
    return run.results


def _plot(run: _Run, key: str, function: str, data, path: Path, *extra) -> None:
    """Draw one picture and record its path; a drawing failure is logged, never raised."""
    try:
        from vledge.bench import plots

        drawn = getattr(plots, function)(data, path, *extra)
    except Exception as exc:  # a missing matplotlib or a drawing error must not lose the measurements
        log.warning("bench: %s not drawn: %s: %s", path.name, type(exc).__name__, exc)
        return
    if drawn:
        run.results["files"][key] = str(drawn)
    run.save()


@dataclass
class _Timing:
    """A measured row and the processes it has been timed in so far: what rebuilds its row."""

    variant: Variant
    path: Path
    facts: dict
    job_path: Path
    notes: list[str]
    results: list[dict]
    seconds: float
    failed: bool = False


def _job(run: _Run, variant: Variant, path: Path, probe: Path, texts: list[str], classes: list[str]) -> dict:
    """What the worker process needs to measure one row."""
    config = run.config
    return {"name": variant.name, "path": str(path), "opener": variant.opener, "backend": variant.backend,
            "options": variant.options, "threads": config.threads, "data": config.data, "data_dir": config.data_dir,
            "split": config.split, "max_samples": config.max_samples, "probe": str(probe), "texts": texts,
            "classes": classes, "reference": str(run.work / "teacher_embeddings.npz"),
            "save_reference": variant.name == TEACHER_TORCH, "reps": config.reps.to_dict(),
            "curve_batches": list(config.scaling_batches) if config.scaling else [],
            "curve_reps": config.scaling_reps.to_dict()}


def _measure(run: _Run, shop: Workshop, variant: Variant, step: str, probe: Path, texts: list[str],
             classes: list[str]) -> _Timing | None:
    """Build the variant and measure it in one process; its row is saved at once. Returns what the timing
    rounds need, or None when the row failed."""
    config, notes, started = run.config, [], time.perf_counter()
    log.info("bench %s %s: %s", step, variant.name, "building" if variant.build else "measuring")
    status, result, facts, path, job = "ok", None, {}, variant.path, None
    try:
        path = variant.build() if variant.build else path
    except Exception as exc:
        status = f"error (build): {type(exc).__name__}: {str(exc)[:300]}"
    if status == "ok":
        facts = _static_facts(variant, Path(path), texts, notes)
        job = _job(run, variant, Path(path), probe, texts, classes)
        slug = processes.slug(variant.name)
        job_path, result_path = run.work / f"job-{slug}.json", run.work / f"result-{slug}.json"
        job_path.write_text(json.dumps(job, indent=2))
        result, error = processes.timed_quietly(variant.name, [str(job_path), str(result_path)],
                                                run.work / "logs" / f"{slug}.log", result_path, notes,
                                                retries=config.retries, timeout=config.row_timeout)
        if error:
            status = f"error (run): {error}"
    if variant.role == "student" and shop.student_description:
        run.results["student"] = shop.student_description
    row = reports.flat_row(variant.name, variant.role, variant.precision, path, facts, result, status)
    notes += (result or {}).get("notes", [])
    backend = str((result or {}).get("placement") or "").split(":")[0]
    if backend in processes.BACKENDS and backend not in run.results["baselines"]:
        baseline = processes.memory_baseline(backend, run.work, probe)
        if baseline is not None:
            run.results["baselines"][backend] = baseline
    run.put(row, {"name": variant.name, "notes": notes, "result": result, "seconds": time.perf_counter() - started})
    summary = status if status != "ok" else (
        f"top-1 {row.get('top1') or float('nan'):.4f}, image b1 {row.get('image_b1_p50_ms') or float('nan'):.2f} ms, "
        f"text b1 {row.get('text_b1_p50_ms') or float('nan'):.2f} ms, peak {row.get('peak_rss_mb') or float('nan'):.0f} MB")
    log.info("bench %s %s: %s (%.0f s)", step, variant.name, summary, time.perf_counter() - started)
    if status != "ok" or config.repeats < 2:
        return None
    return _Timing(variant, Path(path), facts, processes.timing_job(variant.name, job, run.work), notes, [result],
                   time.perf_counter() - started)


def _time_in_rounds(run: _Run, timing: list[_Timing]) -> None:
    """Time every measured row again, one fresh process per row per round, until each has been timed in
    ``repeats`` processes; each row then keeps the median across its processes. Rounds rather than one row's
    repeats back to back, so that every row samples the same stretch of a machine whose speed drifts, and
    drifts unevenly: in two runs 35 minutes apart, the INT8 student's sub-millisecond towers read 1.5-1.8x
    slower in the second and the teacher's PyTorch towers 1.06-1.09x slower."""
    config = run.config
    for repeat in range(2, config.repeats + 1):
        for row in timing:
            if row.failed:
                continue
            name, started = row.variant.name, time.perf_counter()
            log.info("bench: %s: timing again in a fresh process (%d of %d)", name, repeat, config.repeats)
            result = processes.time_again(name, row.job_path, run.work, row.notes, retries=config.retries,
                                          timeout=config.row_timeout)
            row.seconds += time.perf_counter() - started
            if result is None:  # time_again noted why; the row keeps the processes it has
                row.failed = True
            else:
                row.results.append(result)
            merged, note = processes.combined(row.results)
            flat = reports.flat_row(name, row.variant.role, row.variant.precision, row.path, row.facts, merged, "ok")
            run.put(flat, {"name": name, "notes": row.notes + [note], "result": merged, "seconds": row.seconds})


def _scaling(run: _Run) -> None:
    """The batch-size curves each row's first process measured, gathered for the plot."""
    merged = {"batch": {}, "resolution": {}, "errors": []}
    for detail in run.results["details"]:
        curves = (detail.get("result") or {}).get("curves")
        if curves:
            merged["batch"][detail["name"]] = curves
        merged["errors"] += [f"{detail['name']}: {n}" for n in detail.get("notes", []) if n.startswith("curve ")]
    run.results["scaling"] = merged
    run.save()
    _plot(run, "scaling_plot", "plot_scaling", merged, run.out / SCALING_PLOT, [r["name"] for r in run.results["rows"]])
