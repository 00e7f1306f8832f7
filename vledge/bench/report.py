"""The benchmark's outputs: flat rows, a markdown table, CSV and JSON, written after every row so an
interrupted run keeps what it finished."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from vledge.bench.budgets import DERIVED, best_peers

STATUS_WIDTH = 90  # characters of an error status shown in the table (CSV and JSON keep it whole)
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"

# (flat row key, markdown header, format); CSV writes every key of CSV_COLUMNS at full precision.
TABLE = (
    ("name", "variant", "{}"),
    ("model", "model", "{}"),
    ("placement", "runs on", "{}"),
    ("top1", "top-1", "{:.4f}"),
    ("top5", "top-5", "{:.4f}"),
    ("cos_image", "cos img", "{:.4f}"),
    ("cos_text", "cos txt", "{:.4f}"),
    ("image_b1_p50_ms", "img b1 p50 ms", "{:.2f}"),
    ("image_b1_p95_ms", "img b1 p95", "{:.2f}"),
    ("image_b8_p50_ms", "img b8 p50", "{:.2f}"),
    ("text_b1_p50_ms", "txt b1 p50 ms", "{:.2f}"),
    ("text_b1_p95_ms", "txt b1 p95", "{:.2f}"),
    ("text_b8_p50_ms", "txt b8 p50", "{:.2f}"),
    ("images_per_s", "img/s b8", "{:.0f}"),
    ("texts_per_s", "txt/s b8", "{:.0f}"),
    ("peak_rss_mb", "peak MB", "{:.0f}"),
    ("size_mb", "size MB", "{:.2f}"),
    ("params_m", "params M", "{:.2f}"),
    ("image_mmacs", "img MMACs", "{:.1f}"),
    ("text_mmacs", "txt MMACs", "{:.1f}"),
    ("frame_b1_p50_ms", "1080p frame ms", "{:.2f}"),
    ("python_us", "python us", "{:.0f}"),
    ("top1_kept", "top-1 kept", "{:.3f}"),
    ("size_ratio", "smaller", "{:.1f}x"),
    ("vs_peer_image_b1", "vs peer img b1", "{:.2f}x"),
    ("vs_peer_image_b8", "vs peer img b8", "{:.2f}x"),
    ("vs_peer_text_b1", "vs peer txt b1", "{:.2f}x"),
    ("vs_peer_top1_pt", "vs peer top-1 pt", "{:+.2f}"),
    ("status", "status", "{}"),
)
CSV_COLUMNS = (
    "name", "role", "model", "precision", "placement", "status", "top1", "top5", "recall", "cos_image", "cos_text",
    "image_b1_p50_ms", "image_b1_p95_ms", "image_b8_p50_ms", "image_b8_p95_ms",
    "text_b1_p50_ms", "text_b1_p95_ms", "text_b8_p50_ms", "text_b8_p95_ms", "images_per_s", "texts_per_s",
    "peak_rss_mb", "eval_peak_rss_mb", "size_mb", "params_m", "image_mmacs", "text_mmacs", "text_seq_len",
    "classify_overhead_pct", "encode_text_overhead_pct", "python_us", "frame_b1_p50_ms", "load_s", "eval_n",
    "background_cores", *DERIVED, "path",
)
TEXT_COLUMNS = ("name", "role", "model", "precision", "placement", "status", "recall", "path")
# What a budget (--require) may name: every numeric column.
BUDGET_KEYS = tuple(k for k in CSV_COLUMNS if k not in TEXT_COLUMNS)


def flat_row(name: str, role: str, precision: str, path, static: dict, result: dict | None, status: str) -> dict:
    """One table row from a variant's static facts (size, params, MACs) and its worker's result."""
    row = {"name": name, "role": role, "precision": precision, "path": str(path or ""), "status": status, **static}
    if not result:
        return row
    latency = result.get("latency", {})
    for cell, stats in latency.items():
        row[f"{cell}_p50_ms"] = stats["p50_ms"]
        row[f"{cell}_p95_ms"] = stats["p95_ms"]
    row["images_per_s"] = latency.get("image_b8", {}).get("items_per_s")
    row["texts_per_s"] = latency.get("text_b8", {}).get("items_per_s")
    accuracy = result.get("accuracy", {})
    row["top1"], row["top5"], row["eval_n"] = accuracy.get("top1"), accuracy.get("top5"), accuracy.get("n")
    row["recall"] = " ".join(f"{k}={v:.4f}" for k, v in (accuracy.get("recall") or {}).items()) or None
    cosine = result.get("cosine", {})
    row["cos_image"], row["cos_text"] = cosine.get("image"), cosine.get("text")
    memory = result.get("memory", {})
    row["peak_rss_mb"], row["eval_peak_rss_mb"] = memory.get("runtime_peak_mb"), memory.get("total_peak_mb")
    overhead = result.get("overhead", {})
    for key, column in (("classify_share", "classify_overhead_pct"), ("encode_text_share", "encode_text_overhead_pct")):
        row[column] = overhead[key] * 100 if key in overhead else None
    row["python_us"], row["frame_b1_p50_ms"] = overhead.get("python_us"), overhead.get("frame_b1_p50_ms")
    row["placement"] = result.get("placement")
    row["background_cores"] = result.get("background_cores")
    row["load_s"] = result.get("load_s")
    row["text_seq_len"] = result.get("text_seq_len")
    if not row.get("precision") and result.get("precision"):
        row["precision"] = result["precision"]
    return row


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a GitHub markdown table; missing values show as '-'."""
    lines = ["| " + " | ".join(h for _, h, _ in TABLE) + " |", "|" + "---|" * len(TABLE)]
    for row in rows:
        cells = [_cell(row.get(key), fmt).replace("|", "/") for key, _, fmt in TABLE]
        cells[-1] = cells[-1] if len(cells[-1]) <= STATUS_WIDTH else cells[-1][: STATUS_WIDTH - 3] + "..."
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return buffer.getvalue()


def markdown_report(results: dict) -> str:
    """The whole report: settings and machine, the table, the best peers, the budgets, notes per row."""
    machine, settings = results.get("machine", {}), results.get("settings", {})
    lines = [
        "# vledge bench",
        "",
        f"{results.get('started', '')}; {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{settings.get('threads')} threads per runtime; data {settings.get('data')}/{settings.get('split')} "
        f"({settings.get('max_samples') or 'all'} images); latency: median / p95 of repeated calls after warm-up, "
        f"each tower and batch in its own block ({settings.get('reps', {})}); throughput from the batch-8 mean.",
        "",
        markdown_table(results.get("rows", [])),
        "",
    ]
    if results.get("student"):
        lines += [f"Student: {results['student']}", ""]
    if results.get("baselines"):
        base = ", ".join(f"{k} {v:.0f} MB" for k, v in results["baselines"].items())
        lines += [f"Backend memory baselines (import + empty session, own process): {base}", ""]
    lines += [f"Skipped: {reason}" for reason in results.get("skipped", [])] + [""] * bool(results.get("skipped"))
    peers = best_peers(results.get("rows", []))
    if peers:
        cells = ", ".join(f"{cell} {name} ({value:.4g}{'' if cell == 'top1' else ' ms'})" for cell, (name, value) in peers.items())
        lines += [f"Best peer (the vs_peer columns compare with it): {cells}", ""]
    if results.get("budgets"):
        lines += ["## Budgets (--require)", "", "```"] + [b["line"] for b in results["budgets"]] + ["```", ""]
    notes = [(r["name"], n) for r in results.get("details", []) for n in r.get("notes", [])]
    if notes:
        lines += ["## Notes", ""] + [f"- {name}: {note}" for name, note in notes] + [""]
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    lines += [f"Versions: {versions}", ""]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_reports(out: str | os.PathLike, results: dict) -> dict[str, Path]:
    """Write results.json, results.csv and report.md into ``out`` (each replaced atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / RESULTS_JSON, "csv": out / RESULTS_CSV, "markdown": out / REPORT_MD}
    _atomic_write(paths["json"], json.dumps(results, indent=2, default=str) + "\n")
    _atomic_write(paths["csv"], csv_text(results.get("rows", [])))
    _atomic_write(paths["markdown"], markdown_report(results))
    return paths
