"""The run's PNGs: loss.png gives the late part room (log tokens, and a zoomed second half), step_size.png
shares its x axis (tokens); the benchmark's anytime figure shows every curve whole."""

from __future__ import annotations

import math

import pytest

from sfplus_lab import plots
from sfplus_lab.bench.plots import anytime_ylim


@pytest.fixture
def plt():
    """pyplot, for the figure tests only (the range arithmetic below needs no matplotlib)."""
    pytest.importorskip("matplotlib")
    return plots._pyplot()


def _rows(steps: int = 300, per_step: int = 2048) -> list[dict]:
    rows = [{"kind": "eval", "step": 0, "tokens": 0, "val_loss": 5.5}]
    for step in range(1, steps + 1):
        loss = 1.8 + 3.7 / math.sqrt(step)
        rows.append({"kind": "train", "step": step, "tokens": step * per_step, "loss": loss, "alpha": 1e-3})
        if step % 50 == 0:
            rows.append({"kind": "eval", "step": step, "tokens": step * per_step, "val_loss": loss + 0.02})
    return rows


def test_loss_figure_has_a_log_panel_and_a_zoom_on_the_second_half(plt):
    fig = plots._loss_figure(plt, _rows(), "t")
    try:
        whole, zoom = fig.axes
        assert whole.get_xscale() == "log" and whole.get_xlabel() == "tokens"
        lo, hi = zoom.get_ylim()
        # the second half spans 1.8 + 3.7/sqrt(150..300) = 2.01..2.12 (+0.02 for val): the zoom shows just that
        assert 1.95 < lo < 2.02 and 2.12 < hi < 2.2
        assert zoom.get_xlim()[0] == pytest.approx(300 * 2048 / 2)
    finally:
        plt.close(fig)


def test_step_size_is_against_tokens_like_the_loss(plt):
    fig = plots._step_figure(plt, _rows(), "t")
    try:
        (ax,) = fig.axes
        assert ax.get_xlabel() == "tokens" and ax.get_xscale() == "log"
        xs = ax.lines[0].get_xdata()
        assert xs[0] == 2048 and xs[-1] == 300 * 2048
    finally:
        plt.close(fig)


def test_anytime_range_keeps_the_lowest_curve_whole():
    """The quick bench's best ScheduleFree+ curve went below the lowest final value and was cut off."""
    block = {
        "cells": [{"final_pooled_mean": 3.05}, {"final_pooled_mean": 3.4}, {"final_pooled_mean": math.nan}],
        "anytime": {"sfplus (seed 0)": {"curve": [[1, 5.0], [10, 3.1], [12.5, 2.9]]},
                    "wsd": {"curve": [[1, 5.2], [10, 3.05], [11, math.inf]]}},
    }
    lo, hi = anytime_ylim(block)
    assert lo == pytest.approx(2.85) and hi == pytest.approx(4.0)
    assert anytime_ylim({"cells": [], "anytime": {}}) is None
