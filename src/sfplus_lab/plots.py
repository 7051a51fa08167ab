"""PNG plots of a run, redrawn from its metrics rows: the loss curves and the step size.

``loss.png``: training loss (raw and smoothed) and validation loss at x (pooled and per source) against
tokens. ``step_size.png``: ScheduleFree+'s emergent step alpha (it rises to an early peak, then decays,
much like a tuned schedule) or a baseline's learning rate, against steps. Drawn with matplotlib's Agg
backend (no display needed) and written aside then renamed, so a viewer never sees half a PNG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def _loss_figure(plt: Any, rows: list[dict[str, Any]], title: str) -> Any:
    train = [r for r in rows if r.get("kind") == "train" and r.get("loss") is not None]
    evals = [r for r in rows if r.get("kind") == "eval" and r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if train:
        tokens = [r["tokens"] for r in train]
        losses = [r["loss"] for r in train]
        ax.plot(tokens, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(tokens, _smooth(losses), color="tab:blue", label="train loss at y (smoothed)")
    if evals:
        tokens = [r["tokens"] for r in evals]
        ax.plot(tokens, [r["val_loss"] for r in evals], "o-", color="tab:red", label="val loss at x (pooled)")
        sources = sorted({k for r in evals for k in r if k.startswith("val_loss/")})
        if len(sources) > 1:
            for key in sources:
                pts = [(r["tokens"], r[key]) for r in evals if r.get(key) is not None]
                ax.plot(*zip(*pts), "--", linewidth=1, label=key.replace("val_loss/", "val: "))
    ax.set_xlabel("tokens")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend(fontsize=8)
    return fig


def _step_figure(plt: Any, rows: list[dict[str, Any]], title: str) -> Any:
    train = [r for r in rows if r.get("kind") == "train"]
    key = "alpha" if any(r.get("alpha") is not None for r in train) else "lr"
    pts = [(r["step"], r[key]) for r in train if r.get(key) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if pts:
        ax.plot(*zip(*pts), color="tab:green")
    ax.set_xlabel("step")
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
