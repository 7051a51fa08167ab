"""PNG figures of a benchmark, drawn only from its ``results.json`` (so every figure traces to a file)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..optim_factory import METHODS, is_tuned

__all__ = ["anytime_ylim", "draw_all"]

def _color(method: str) -> str | None:
    """The method's colour from the registry (None: matplotlib picks one, e.g. for a name it no longer holds)."""
    entry = METHODS.get(method)
    return None if entry is None else entry.color


def _label(method: str) -> str:
    entry = METHODS.get(method)
    return method if entry is None or entry.label is None else entry.label


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def anytime_ylim(block: dict[str, Any]) -> tuple[float, float] | None:
    """The anytime figure's y range: from just below the lowest point of any drawn curve or marker (ScheduleFree+
    runs past the longest budget, to ``sfplus_horizon``, and its best curve ends below every final value: it
    was cut off when the range started at the lowest final) to 0.6 above the highest final value."""
    finals = [c["final_pooled_mean"] for c in block["cells"] if math.isfinite(c["final_pooled_mean"])]
    if not finals:
        return None
    lowest = min([y for run in block["anytime"].values() for _, y in run["curve"] if math.isfinite(y)] + finals)
    return lowest - 0.05, max(finals) + 0.6


def _anytime(block: dict[str, Any], budgets: list[float], title: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, run in block["anytime"].items():
        xs, ys = zip(*[(x, y) for x, y in run["curve"] if math.isfinite(y)]) if run["curve"] else ((), ())
        style = "-" if run["seed"] == 0 else ":"
        fixed = not is_tuned(run["method"])
        label = name if fixed else f"{run['method']} lr={run['lr']:.3g} (seed {run['seed']})"
        ax.plot(xs, ys, style, color=_color(run["method"]), label=label, lw=1.4)
    for c in block["cells"]:  # each method's best final value at every budget, as a marker
        if math.isfinite(c["final_pooled_mean"]):
            ax.plot([c["budget"]], [c["final_pooled_mean"]], "o", color=_color(c["method"]), ms=5)
    for b in budgets:
        ax.axvline(b, color="grey", lw=0.6, ls="--")
    ax.set_xscale("log")
    limits = anytime_ylim(block)
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_xlabel("tokens per parameter")
    ax.set_ylabel("validation loss (pooled; at x for schedule-free)")
    ax.set_title(title + "\nlines: best-LR runs at the longest budget; dots: best final value at each budget")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _schedules(block: dict[str, Any], title: str, path: Path) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, run in block["anytime"].items():
        trace = run["trace"]
        if not trace.get("step"):
            continue
        tpp = [s * run["tokens_per_step"] / run["num_params"] for s in trace["step"]]
        if not is_tuned(run["method"]):  # a ScheduleFree+ configuration: its emergent alpha
            color = _color(run["method"]) if run["seed"] == 0 else "grey"
            ax1.plot(tpp, trace["alpha"], lw=0.8, color=color, label=name)
        elif run["seed"] == 0:
            peak = run["lr"] or max(trace["lr"]) or 1.0  # the swept peak LR (the trace is decimated)
            ax2.plot(tpp, [v / peak for v in trace["lr"]], color=_color(run["method"]),
                     label=f"{run['method']} (peak lr {peak:.3g})")
    ax1.set_ylabel("ScheduleFree+ alpha_k")
    ax1.set_yscale("log")
    ax1.legend(fontsize=7)
    ax2.set_ylabel("tuned lr / peak lr")
    ax2.set_xlabel("tokens per parameter")
    ax2.set_xscale("log")
    ax2.legend(fontsize=7)
    ax1.set_title(title + "\nthe emergent step size of ScheduleFree+ beside the tuned schedules")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sweeps(block: dict[str, Any], budgets: list[float], title: str, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(budgets), figsize=(4 * len(budgets), 4), squeeze=False)
    for ax, b in zip(axes[0], budgets):
        for c in block["cells"]:
            if c["budget"] != b:
                continue
            if not is_tuned(c["method"]):
                for v in c["final_pooled"]:
                    ax.axhline(v, color=_color(c["method"]), lw=1, label=f"{c['method']} (fixed, per seed)")
                continue
            pts = sorted((float(lr), v) for lr, v in c["sweep"].items() if math.isfinite(v))
            if pts:
                ax.plot(*zip(*pts), "o-", color=_color(c["method"]), label=c["method"], ms=3)
        ax.set_xscale("log")
        ax.set_title(f"{b:g} tokens/param")
        ax.set_xlabel("learning rate")
    axes[0][0].set_ylabel("final validation loss (seed 0)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0][-1].legend(unique.values(), unique.keys(), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _time_to_target(block: dict[str, Any], title: str, path: Path) -> None:
    plt = _plt()
    rows = block["time_to_target"]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels, means, errs = [], [], []
    for t in rows:
        got = [f for f in t["sfplus_fraction_per_seed"] if f is not None]
        labels.append(f"{_label(t['baseline'])}\n@{t['budget']:g}")
        if len(got) == len(t["sfplus_fraction_per_seed"]) and got:
            means.append(sum(got) / len(got))
            errs.append((max(got) - min(got)) / 2)
        else:
            means.append(t["sfplus_horizon_fraction"])  # not reached within the run: a lower bound
            errs.append(0.0)
    colors = [_color(t["baseline"]) for t in rows]
    bars = ax.bar(range(len(rows)), means, yerr=errs, color=colors, capsize=3)
    for bar, t in zip(bars, rows):
        if not all(t["reached_per_seed"]):
            bar.set_hatch("//")
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"> {bar.get_height():.2f}", ha="center",
                    va="bottom", fontsize=7)
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("SF+ tokens to reach baseline's final loss\n(fraction of the budget; hatched = not reached)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_all(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Draw every figure of ``doc`` (a results.json document) into ``out_dir``; return their paths."""
    paths = []
    budgets = [float(b) for b in doc["config"]["budgets"]]
    for size, block in doc["sizes"].items():
        title = f"{size} ({block['num_params']:,} params), corpus {doc['corpus']['name']}"
        for name, fn in (("anytime", _anytime), ("schedules", _schedules), ("sweeps", _sweeps),
                         ("time_to_target", _time_to_target)):
            path = out_dir / f"{name}_{size}.png"
            if fn in (_anytime, _sweeps):
                fn(block, budgets, title, path)
            else:
                fn(block, title, path)
            paths.append(path)
    return paths
