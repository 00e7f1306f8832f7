"""The camera benchmark's ratios (the targets the issue sets), report.md and plots, from its rows."""

from __future__ import annotations

from pathlib import Path

MB_SLACK = 16  # the allowance over 3 x bundle + backend baseline


def _find(rows, teacher, **match):
    for row in rows:
        if row.get("teacher") == teacher and "error" not in row and all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _ratio(num, den, key_num, key_den=None):
    if not num or not den or num.get(key_num) is None or den.get(key_den or key_num) in (None, 0):
        return None
    return round(num[key_num] / den[key_den or key_num], 2)


def _check(name: str, value, target: float, at_least: bool = True) -> dict:
    passed = None if value is None else (value >= target if at_least else value <= target)
    return {"ratio": name, "value": value, "target": f"{'>=' if at_least else '<='} {target}", "passed": passed}


def ratios(rows: list[dict]) -> dict[str, list[dict]]:
    """Per teacher: INT8 vs FP32 of the same student (batch 8), the student vs the teacher's own FP32 export on the
    same runtime, the frame against the tower, the size against the teacher's safetensors, peak memory's budget."""
    baseline = {r["name"].split()[0]: r.get("peak_rss_mb") for r in rows if r.get("role") == "baseline"}
    out = {}
    for teacher in sorted({r["teacher"] for r in rows if r.get("role") == "teacher"}):
        t_ort = _find(rows, teacher, role="teacher", placement="onnxruntime:cpu")
        t_ov = _find(rows, teacher, role="teacher", placement="openvino:cpu")
        s_ort = _find(rows, teacher, role="student", target="cpu", placement="onnxruntime:cpu", precision="fp32")
        s_ov = _find(rows, teacher, role="student", target="intel-cpu", placement="openvino:cpu", precision="fp32")
        q_ort = next((r for r in rows if r.get("teacher") == teacher and r.get("target") == "cpu"
                      and r.get("precision") not in (None, "fp32") and "error" not in r), None)
        q_ov = next((r for r in rows if r.get("teacher") == teacher and r.get("target") == "intel-cpu"
                     and r.get("precision") not in (None, "fp32") and "error" not in r), None)
        checks = [
            _check("student INT8 / FP32, image b8, ONNX Runtime", _ratio(s_ort, q_ort, "image_b8_p50_ms"), 2),
            _check("student INT8 / FP32, image b8, OpenVINO", _ratio(s_ov, q_ov, "image_b8_p50_ms"), 2),
            _check("teacher FP32 ONNX / student INT8, image b1, ONNX Runtime", _ratio(t_ort, q_ort, "image_b1_p50_ms"), 10),
            _check("teacher FP32 ONNX / student INT8, text b1 (77 tokens), ONNX Runtime",
                   _ratio(t_ort, q_ort, "text_b1_p50_ms"), 4),
            _check("teacher FP32 / student INT8, image b1, OpenVINO", _ratio(t_ov, q_ov, "image_b1_p50_ms"), 10),
            _check("teacher FP32 / student INT8, text b1 (77 tokens), OpenVINO", _ratio(t_ov, q_ov, "text_b1_p50_ms"), 4),
            _check("full-HD frame classify / image tower b1 timed beside it, ONNX Runtime",
                   _ratio(q_ort, q_ort, "frame_b1_p50_ms", "frame_tower_b1_p50_ms"), 1.25, at_least=False),
            _check("teacher safetensors / cpu bundle size", _ratio(t_ort, q_ort, "size_mb"), 20),
        ]
        if q_ort and baseline.get("onnxruntime") and q_ort.get("peak_rss_mb"):
            budget = round(3 * q_ort["size_mb"] + baseline["onnxruntime"] + MB_SLACK, 1)
            checks.append(_check(f"peak RSS MB of the cpu bundle's process (budget {budget})", q_ort["peak_rss_mb"],
                                 budget, at_least=False))
        out[teacher] = checks
    return out


COLUMNS = ("name", "role", "precision", "placement", "image_b1_p50_ms", "image_b8_p50_ms", "text_b1_p50_ms", "top1",
           "peak_rss_mb", "size_mb", "model", "frame_b1_p50_ms", "python_us")


def _cell(value) -> str:
    return "" if value is None else f"{value}"


def write_report(result: dict, path: Path) -> None:
    cpu = result["cpu"]
    lines = [
        "# Camera benchmark", "",
        f"**{result['weights']}.** Accuracy at camera size: {result['accuracy']}; `top1` is null in every row.", "",
        f"CPU: {cpu['model']} ({cpu['machine']}); instruction sets: {', '.join(cpu['isa']) or 'unknown'}. "
        f"{cpu['int8']}. Threads: {result['threads']}. Mode: {result['mode']}; {result['seconds']} s.", "",
        "Tower times are medians of the tower alone (the same call for bundles and raw exports); `frame_b1_p50_ms` "
        "is `classify` of one 1920x1080 uint8 frame with the compiled label set, timed in alternating blocks with "
        "the tower (`frame_tower_b1_p50_ms`, the frame ratio's divisor) and a batch-1 `classify` of an image at the "
        "tower's size; `python_us` is that `classify` less the tower beside it. A bundle row's `peak_rss_mb` is read "
        "after the frames and a prompt, before its batches of 8 (`peak_rss_b8_mb` in results.json: after them). "
        "The intel-npu bundle is compiled only: no NPU here, its row runs the static IR on OpenVINO's CPU plugin.", "",
        "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS),
    ]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['name']} | {row.get('role', '')} | error: {row['error']} |" + " |" * (len(COLUMNS) - 3))
            continue
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |")
    for teacher, checks in result["ratios"].items():
        lines += ["", f"## Ratios for {teacher}", "", "| ratio | value | target | passed |", "| --- | --- | --- | --- |"]
        lines += [f"| {c['ratio']} | {_cell(c['value'])} | {c['target']} | {_cell(c['passed'])} |" for c in checks]
    path.write_text("\n".join(lines) + "\n")


def write_plots(result: dict, folder: Path) -> None:
    """latency.png: batch-1 image tower and full-HD frame per row; size_latency.png: size against batch-1 time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("image_b1_p50_ms") is not None]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    names = [r["name"] for r in rows]
    ax.barh(names, [r["image_b1_p50_ms"] for r in rows], label="image tower b1")
    ax.barh(names, [r.get("frame_b1_p50_ms") or 0 for r in rows], alpha=0.4, label="1080p frame classify")
    ax.set_xscale("log")
    ax.set_xlabel("ms (median)")
    ax.set_title("camera benchmark, random weights (timing only)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "latency.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        if r.get("size_mb"):
            ax.scatter(r["size_mb"], r["image_b1_p50_ms"])
            ax.annotate(r["name"], (r["size_mb"], r["image_b1_p50_ms"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("size (MB)")
    ax.set_ylabel("image tower b1 (ms)")
    fig.tight_layout()
    fig.savefig(folder / "size_latency.png", dpi=110)
    plt.close(fig)
