"""The two pictures: accuracy against latency (marker area = size), and how latency grows with batch
size and image resolution. matplotlib is imported here only (the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path

ROLE_COLORS = {"teacher": "#d62728", "student": "#1f77b4", "bundle": "#2ca02c"}
MAX_AREA = 1800.0  # points^2 of the largest marker
MIN_AREA = 40.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _area(size_mb: float, largest: float) -> float:
    return max(MIN_AREA, MAX_AREA * size_mb / largest) if largest > 0 else MIN_AREA


def plot_accuracy_latency(rows: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Zero-shot top-1 against batch-1 latency of each tower (log scale); marker area is file size.

    Rows without top-1 or latency are left out; returns None when nothing is left to draw.
    """
    rows = [r for r in rows if r.get("status") == "ok" and r.get("top1") is not None]
    panels = [(k, f"{k} tower, batch 1: median latency (ms, log scale)") for k in ("image", "text")
              if any(r.get(f"{k}_b1_p50_ms") for r in rows)]
    if not rows or not panels:
        return None
    plt = _pyplot()
    largest = max((r.get("size_mb") or 0) for r in rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.6), sharey=True, squeeze=False)
    for ax, (kind, label) in zip(axes[0], panels):
        points = [r for r in rows if r.get(f"{kind}_b1_p50_ms")]
        for i, r in enumerate(sorted(points, key=lambda r: r[f"{kind}_b1_p50_ms"])):
            x, y = r[f"{kind}_b1_p50_ms"], r["top1"] * 100
            ax.scatter(x, y, s=_area(r.get("size_mb") or 0, largest), color=ROLE_COLORS.get(r.get("role"), "gray"),
                       alpha=0.55, edgecolors="black", linewidths=0.8, zorder=3)
            ax.annotate(r["name"], (x, y), xytext=(8, 12 if i % 2 == 0 else -16), textcoords="offset points",
                        fontsize=8.5, zorder=4)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
        xs = [r[f"{kind}_b1_p50_ms"] for r in points]
        ax.set_xlim(min(xs) / 1.8, max(xs) * 2.5)
    axes[0][0].set_ylabel("zero-shot top-1 (%)")
    ys = [r["top1"] * 100 for r in rows]
    axes[0][0].set_ylim(min(ys) - max(1.0, 0.15 * (max(ys) - min(ys))), max(ys) + max(1.0, 0.15 * (max(ys) - min(ys))))
    handles = [plt.scatter([], [], s=_area(mb, largest), color="gray", alpha=0.4, edgecolors="black", label=f"{mb:g} MB")
               for mb in _size_marks(largest)]
    handles += [plt.scatter([], [], s=60, color=c, alpha=0.6, label=role) for role, c in ROLE_COLORS.items()
                if any(r.get("role") == role for r in rows)]
    axes[0][-1].legend(handles=handles, loc="lower right", fontsize=8.5, labelspacing=1.3, borderpad=1.0,
                       title="size (marker area) / role", title_fontsize=8.5)
    fig.suptitle(title or "Accuracy against latency: up and left is better; marker area is file size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _size_marks(largest: float) -> list[float]:
    marks = [m for m in (1, 10, 50, 100, 500) if m <= largest * 1.05]
    return marks[-3:] or [round(largest, 1)]


def plot_scaling(scaling: dict, path: str | Path) -> Path | None:
    """Latency against batch size (image and text towers) and against image resolution (batch 1)."""
    panels = []
    for kind in ("image", "text"):
        series = {label: cells.get(kind, {}) for label, cells in scaling.get("batch", {}).items() if cells.get(kind)}
        if series:
            panels.append((series, f"{kind} tower: latency against batch size", "batch size"))
    resolution = {label: cells for label, cells in scaling.get("resolution", {}).items() if cells}
    if resolution:
        panels.append((resolution, "image tower: latency against resolution (batch 1)", "image side (pixels)"))
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    styles = ["o-", "s-", "^-", "D-", "v-", "P-"]
    for ax, (series, title, xlabel) in zip(axes[0], panels):
        for i, (label, cells) in enumerate(sorted(series.items())):
            xs = sorted(int(x) for x in cells)
            ax.plot(xs, [cells[str(x)] for x in xs], styles[i % len(styles)],
                    label=label, markersize=5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({int(x) for cells in series.values() for x in cells})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_title(title, fontsize=10.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("median latency per call (ms, log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
