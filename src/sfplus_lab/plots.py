"""PNG plots of a run, redrawn from its metrics rows: the loss curves and the step size.

``loss.png``: training loss (raw and smoothed) and validation loss at x (pooled and per source) against
tokens, on a log axis for the whole run and zoomed on its second half. ``step_size.png``: ScheduleFree+'s
emergent step alpha (it rises to an early peak, then decays, much like a tuned schedule) or a baseline's
learning rate, against tokens on the same log axis. Drawn with matplotlib's Agg
backend (no display needed) and written aside then renamed, so a viewer never sees half a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .atomic import atomic_path

__all__ = ["write_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: list[float]) -> list[float]:
    """Centred moving average over ~3% of the points: readable, and unlike an EMA it does not lag the drop."""
    half = len(values) // 60
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        out.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return out


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix[1:])


def _zoom_limits(points: list[tuple[float, float]], start: float) -> tuple[float, float] | None:
    """y limits that fit the points at x >= start (the late part), with a 5% margin; None without points."""
    ys = [y for x, y in points if x >= start and y is not None and y == y]
    if not ys:
        return None
    lo, hi = min(ys), max(ys)
    pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.05
    return lo - pad, hi + pad


def _loss_figure(plt: Any, rows: list[dict[str, Any]], title: str) -> Any:
    """Two panels against tokens: the whole run on a log x axis (the early drop and the late part both get
    room), and the second half zoomed in, where the differences people look at are a few hundredths."""
    train = [r for r in rows if r.get("kind") == "train" and r.get("loss") is not None and r.get("tokens")]
    evals = [r for r in rows if r.get("kind") == "eval" and r.get("val_loss") is not None]
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4.2))
    late: list[tuple[float, float]] = []
    for axis in (ax, zoom):
        if train:
            tokens = [r["tokens"] for r in train]
            losses = [r["loss"] for r in train]
            smooth = _smooth(losses)
            axis.plot(tokens, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
            axis.plot(tokens, smooth, color="tab:blue", label="train loss at y (smoothed)")
            late += list(zip(tokens, smooth))
        if evals:
            pts = [(r["tokens"], r["val_loss"]) for r in evals if axis is zoom or r["tokens"] > 0]
            if pts:
                axis.plot(*zip(*pts), "o-", color="tab:red", ms=3, label="val loss at x (pooled)")
                late += pts
            sources = sorted({k for r in evals for k in r if k.startswith("val_loss/")})
            if len(sources) > 1:
                for key in sources:
                    src = [(r["tokens"], r[key]) for r in evals
                           if r.get(key) is not None and (axis is zoom or r["tokens"])]
                    if src:
                        axis.plot(*zip(*src), "--", linewidth=1, label=key.replace("val_loss/", "val: "))
                        late += src
        axis.set_xlabel("tokens")
        axis.grid(alpha=0.3)
    ax.set_xscale("log")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("whole run (log tokens)", fontsize=9)
    end = max((x for x, _ in late), default=0)
    if end > 0:
        zoom.set_xlim(end / 2, end * 1.02)
        limits = _zoom_limits(late, end / 2)
        if limits is not None:
            zoom.set_ylim(*limits)
    zoom.set_title("second half, zoomed", fontsize=9)
    fig.suptitle(title)
    if ax.get_legend_handles_labels()[0]:  # nothing labelled yet (e.g. before the first evaluation): no legend
        ax.legend(fontsize=8)
    return fig


def _step_figure(plt: Any, rows: list[dict[str, Any]], title: str) -> Any:
    """The step size against tokens on a log axis, as loss.png's first panel (so the two line up)."""
    train = [r for r in rows if r.get("kind") == "train" and r.get("tokens")]
    key = "alpha" if any(r.get("alpha") is not None for r in train) else "lr"
    pts = [(r["tokens"], r[key]) for r in train if r.get(key) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if pts:
        ax.plot(*zip(*pts), color="tab:green")
        ax.set_xscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("emergent step size alpha" if key == "alpha" else "learning rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def write_plots(run_dir: Path, rows: list[dict[str, Any]], title: str = "") -> list[Path]:
    """Redraw ``loss.png`` and ``step_size.png`` in ``run_dir`` from metrics rows; returns their paths."""
    plt = _pyplot()
    paths = []
    for name, draw in (("loss.png", _loss_figure), ("step_size.png", _step_figure)):
        fig = draw(plt, rows, title)
        try:
            _save(fig, run_dir / name)
        finally:
            plt.close(fig)
        paths.append(run_dir / name)
    return paths
