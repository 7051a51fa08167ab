"""Fit val_loss(t) = a / sqrt(t + b) + c to a validation curve, and the fit's jackknife standard error.

Pure functions of lists of numbers (the standard library only): ``sfplus predict`` (``predict.py``) reads
the runs and calls these. For a fixed b the model is linear in (a, c), so each b gets a closed-form
weighted least-squares solution; a Huber reweighting (a few iterations) keeps one noisy evaluation from
dragging the curve; b is found by a log-spaced scan, then a golden-section refinement. Why this fit and
not scipy's, and how good its predictions were on finished runs: docs/averaging.md ("How good is it").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MIN_POINTS", "Fit", "fit_inverse_sqrt", "jackknife_stderr"]

#: At least this many evaluations must fall in the fitted part: 3 parameters plus one to check them.
MIN_POINTS = 4


@dataclass(frozen=True, slots=True)
class Fit:
    """val_loss(t) = a / sqrt(t + b) + c, and how well it matched the fitted points."""

    a: float
    b: float
    c: float
    rmse: float
    num_points: int

    def __call__(self, t: float) -> float:
        return self.a / math.sqrt(t + self.b) + self.c


def _solve_linear(
    ts: Sequence[float], ys: Sequence[float], ws: Sequence[float], b: float, c_range: tuple[float, float]
) -> tuple[float, float]:
    """Weighted least squares for (a, c) with u = 1/sqrt(t + b), subject to a >= 0 and c in ``c_range``.

    The problem is a convex quadratic: its optimum is the unconstrained one when that is feasible, else it
    lies on an edge (a = 0, or c at a bound), where the other variable has a closed form too.
    """
    lo, hi = c_range
    us = [1.0 / math.sqrt(t + b) for t in ts]
    sw = sum(ws)
    mu = sum(w * u for w, u in zip(ws, us)) / sw
    my = sum(w * y for w, y in zip(ws, ys)) / sw
    var = sum(w * (u - mu) ** 2 for w, u in zip(ws, us))
    cov = sum(w * (u - mu) * (y - my) for w, u, y in zip(ws, us, ys))
    if var > 0:
        a = cov / var
        c = my - a * mu
        if a >= 0 and lo <= c <= hi:
            return a, c
    suu = sum(w * u * u for w, u in zip(ws, us))
    candidates = [(0.0, min(max(my, lo), hi))]
    for c in (lo, hi):
        a = max(sum(w * u * (y - c) for w, u, y in zip(ws, us, ys)) / suu, 0.0)
        candidates.append((a, c))

    def sse(ac: tuple[float, float]) -> float:
        return sum(w * (y - ac[0] * u - ac[1]) ** 2 for w, u, y in zip(ws, us, ys))

    return min(candidates, key=sse)


def _huber_weights(residuals: Sequence[float], scale: float, k: float = 1.345) -> list[float]:
    """Huber IRLS weights: 1 inside k*scale, k*scale/|r| outside (the usual 95%-efficiency constant)."""
    if scale <= 0:
        return [1.0] * len(residuals)
    return [1.0 if abs(r) <= k * scale else k * scale / abs(r) for r in residuals]


def _robust_fit_at(
    ts: Sequence[float], ys: Sequence[float], b: float, c_range: tuple[float, float], iterations: int = 5
) -> tuple[float, float, float]:
    """(a, c, robust loss) for a fixed b."""
    ws = [1.0] * len(ts)
    a = c = 0.0
    for _ in range(iterations):
        a, c = _solve_linear(ts, ys, ws, b, c_range)
        res = [y - (a / math.sqrt(t + b) + c) for t, y in zip(ts, ys)]
        med = sorted(abs(r) for r in res)[len(res) // 2]
        ws = _huber_weights(res, 1.4826 * med)
    res = [y - (a / math.sqrt(t + b) + c) for t, y in zip(ts, ys)]
    return a, c, sum(w * r * r for w, r in zip(ws, res))


def fit_inverse_sqrt(ts: Sequence[float], ys: Sequence[float], *, floor: float = 0.0) -> Fit:
    """Fit val_loss(t) = a/sqrt(t+b) + c robustly to points (t, y); t >= 0 is the step.

    Constraints: a >= 0, b >= 0, and ``floor`` <= c <= the lowest loss seen (a loss is never below its
    floor, 0 for cross-entropy, and a falling curve tends to a value below every point it has passed).
    Without the bounds on c, a curve still falling in a straight line is "fitted" by a huge a and b and a
    negative c, i.e. a straight-line extrapolation.
    """
    if len(ts) != len(ys):
        raise ValueError(f"got {len(ts)} steps but {len(ys)} losses")
    points = [(float(t), float(y)) for t, y in zip(ts, ys) if math.isfinite(y)]
    if len(points) < MIN_POINTS:
        raise ValueError(f"need at least {MIN_POINTS} finite evaluations to fit 3 parameters, got {len(points)}")
    if any(t < 0 for t, _ in points):
        raise ValueError("steps must be >= 0")
    a, b, c = _fit_points([t for t, _ in points], [y for _, y in points], floor)
    rmse = math.sqrt(sum((y - (a / math.sqrt(t + b) + c)) ** 2 for t, y in points) / len(points))
    return Fit(a=a, b=b, c=c, rmse=rmse, num_points=len(points))


def _fit_points(tt: Sequence[float], yy: Sequence[float], floor: float) -> tuple[float, float, float]:
    """(a, b, c) of the robust bounded fit to points with t >= 0 (any number >= 3)."""
    span = max(tt) + 1.0
    c_range = (floor, max(floor, min(yy)))
    # Scan log b from 1e-3 * span to 1e3 * span (plus b = 0), then refine around the best scanned value.
    grid = [span * 10 ** (e / 8) for e in range(-24, 25)]
    if min(tt) > 0:
        grid.insert(0, 0.0)  # b = 0 is allowed only when no point sits at t = 0
    losses = [_robust_fit_at(tt, yy, b, c_range)[2] for b in grid]
    best = min(range(len(grid)), key=losses.__getitem__)
    lo = grid[max(best - 1, 0)]
    hi = grid[min(best + 1, len(grid) - 1)]
    b = _golden_section(lambda v: _robust_fit_at(tt, yy, v, c_range)[2], lo, hi)
    if _robust_fit_at(tt, yy, b, c_range)[2] > losses[best]:
        b = grid[best]
    a, c, _ = _robust_fit_at(tt, yy, b, c_range)
    return a, b, c


def _golden_section(f, lo: float, hi: float, iterations: int = 60) -> float:
    """Minimise a unimodal f on [lo, hi]."""
    ratio = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = f(x1), f(x2)
    for _ in range(iterations):
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - ratio * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + ratio * (hi - lo)
            f2 = f(x2)
    return (lo + hi) / 2


def jackknife_stderr(ts: Sequence[float], ys: Sequence[float], at: float, *, floor: float = 0.0) -> float | None:
    """Jackknife standard error of the fitted curve's value at step ``at`` (None with fewer than MIN_POINTS).

    Each fitted point is left out in turn and the curve refitted; the spread of the n predictions, scaled by
    (n - 1) / n, estimates how much the prediction depends on the particular points fitted.
    """
    t, y = [float(v) for v in ts], [float(v) for v in ys]
    n = len(t)
    if n < MIN_POINTS:
        return None
    predictions = []
    for i in range(n):
        a, b, c = _fit_points(t[:i] + t[i + 1:], y[:i] + y[i + 1:], floor)
        predictions.append(a / math.sqrt(at + b) + c)
    mean = sum(predictions) / n
    return math.sqrt((n - 1) / n * sum((p - mean) ** 2 for p in predictions))
