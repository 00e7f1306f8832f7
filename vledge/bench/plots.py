"""The two pictures: accuracy against latency (marker area = size), and how latency grows with batch
size and image resolution. matplotlib is imported here only (the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path

MAX_AREA = 1800.0  # points^2 of the largest marker
MIN_AREA = 40.0
# Where a point's number may go (points from the point), tried in order until it collides with none.
OFFSETS = ((7, 7), (7, -14), (-14, 7), (-14, -14), (-4, 12), (-4, -20), (12, -4), (-20, -4))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _area(size_mb: float, largest: float) -> float:
    return max(MIN_AREA, MAX_AREA * size_mb / largest) if largest > 0 else MIN_AREA


def plot_accuracy_latency(rows: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Zero-shot top-1 against batch-1 latency of each tower (log scale); marker area is file size.

    Each row has its own colour and number (the legend below names them), so points that sit on
    top of each other stay apart. Rows without top-1 or latency are left out; returns None when
    nothing is left to draw.
    """
    rows = [r for r in rows if r.get("status") == "ok" and r.get("top1") is not None]
    panels = [k for k in ("image", "text") if any(r.get(f"{k}_b1_p50_ms") for r in rows)]
    if not rows or not panels:
        return None
    plt = _pyplot()
    colors = plt.get_cmap("tab10").colors
    largest = max((r.get("size_mb") or 0) for r in rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6.2), sharey=True, squeeze=False)
    ys = [r["top1"] * 100 for r in rows]
    pad = max(0.5, 0.15 * (max(ys) - min(ys)))
    axes[0][0].set_ylim(min(ys) - pad, max(ys) + pad)
    axes[0][0].set_ylabel("zero-shot top-1 (%)")
    for ax, kind in zip(axes[0], panels):
        key = f"{kind}_b1_p50_ms"
        points = [(i, r) for i, r in enumerate(rows) if r.get(key)]
        xs = [r[key] for _, r in points]
        _log_axis(ax, min(xs) / 1.8, max(xs) * 1.8)
        ax.set_xlabel(f"{kind} tower, batch 1: median latency (ms, log scale)")
        ax.grid(True, which="both", alpha=0.3)
        placed: list[tuple[float, float]] = []
        for i, r in points:
            x, y = r[key], r["top1"] * 100
            ax.scatter(x, y, s=_area(r.get("size_mb") or 0, largest), color=colors[i % len(colors)], alpha=0.5,
                       edgecolors="black", linewidths=0.8, zorder=3)
            ax.annotate(str(i + 1), (x, y), xytext=_free_offset(ax, x, y, placed), textcoords="offset points",
                        fontsize=10, fontweight="bold", color=colors[i % len(colors)], zorder=4)
    names = [plt.scatter([], [], s=60, color=colors[i % len(colors)], alpha=0.7, edgecolors="black",
                         label=f"{i + 1}  {r['name']} ({(r.get('size_mb') or 0):.1f} MB)") for i, r in enumerate(rows)]
    sizes = [plt.scatter([], [], s=_area(mb, largest), color="lightgray", edgecolors="black", label=f"{mb:g} MB")
             for mb in _size_marks(largest)]
    axes[0][0].legend(handles=sizes, loc="upper left", fontsize=9, title="marker area = file size", title_fontsize=9,
                      labelspacing=2.2, borderpad=1.4, handletextpad=1.6, framealpha=0.9)
    fig.legend(handles=names, loc="lower center", ncol=min(4, len(names)), fontsize=9, frameon=False)
    fig.suptitle(title or "Accuracy against latency: up and to the left is better")
    fig.tight_layout(rect=(0, 0.06 * ((len(names) + 3) // 4) + 0.02, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _log_axis(ax, low: float, high: float) -> None:
    """A log x axis labelled with plain numbers (0.1, 0.2, 0.5, 1, 2, 5, ...), no crowded minor labels."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ticks = [m * 10.0**e for e in range(-3, 5) for m in (1, 2, 5) if low <= m * 10.0**e <= high]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _free_offset(ax, x: float, y: float, placed: list[tuple[float, float]]) -> tuple[int, int]:
    """The first of ``OFFSETS`` whose label lands at least 14 px from every label placed so far."""
    px, py = ax.transData.transform((x, y))
    for dx, dy in OFFSETS:
        spot = (px + dx * 120 / 72, py + dy * 120 / 72)  # points -> pixels at the saved 120 dpi
        if all((spot[0] - a) ** 2 + (spot[1] - b) ** 2 >= 14**2 for a, b in placed):
            placed.append(spot)
            return dx, dy
    placed.append((px + OFFSETS[0][0], py + OFFSETS[0][1]))
    return OFFSETS[0]


def _size_marks(largest: float) -> list[float]:
    marks = [m for m in (1, 10, 50, 100, 500) if m <= largest * 1.05]
    return marks[-3:] or [round(largest, 1)]


def plot_scaling(scaling: dict, path: str | Path, names: list[str] | None = None) -> Path | None:
    """Latency against batch size (image and text towers) and against image resolution (batch 1).

    ``names``: the table's row names, so that each curve has its row's colour in the accuracy plot.
    """
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
    colors = plt.get_cmap("tab10").colors
    order = list(names or []) + sorted({label for series, _, _ in panels for label in series} - set(names or []))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    styles = ["o-", "s-", "^-", "D-", "v-", "P-", "X-"]
    for ax, (series, title, xlabel) in zip(axes[0], panels):
        for label in sorted(series, key=order.index):
            i, cells = order.index(label), series[label]
            xs = sorted(int(x) for x in cells)
            ax.plot(xs, [cells[str(x)] for x in xs], styles[i % len(styles)], color=colors[i % len(colors)],
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
