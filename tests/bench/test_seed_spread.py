"""benchmarks/seed_spread.py: a run's loss between evaluations is interpolated in log(tokens), and each group of
seeds gets its mean, range, range without the lowest seed and standard deviation at each point asked for."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import seed_spread  # noqa: E402


def _record(seed: int, losses: dict[float, float], *, method: str = "sfplus", lr: float | None = None,
            size: str = "20k", run_id: str | None = None, diverged: bool = False, horizon: float = 100.0) -> dict:
    return {"job": {"id": run_id or f"{size}_{method}_{lr}_s{seed}_h{horizon}", "size": size, "method": method,
                    "lr": lr, "seed": seed, "horizon_tpp": horizon},
            "diverged": diverged,
            "curve": [{"tpp": t, "pooled": v} for t, v in losses.items()]}


def _write(folder: Path, records: list[dict], tag: str = "") -> None:
    runs = folder / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for rec in records:
        (runs / f"{rec['job']['id']}{'_' + tag if tag else ''}.json").write_text(json.dumps(rec))


def test_interpolation_is_linear_in_log_tokens() -> None:
    curve = [{"tpp": 10.0, "pooled": 3.0}, {"tpp": 1000.0, "pooled": 1.0}]
    assert seed_spread.loss_at(curve, 100.0) == pytest.approx(2.0)  # halfway in log(tokens)
    assert seed_spread.loss_at(curve, 10.0) == 3.0 and seed_spread.loss_at(curve, 1000.0) == 1.0
    assert math.isnan(seed_spread.loss_at(curve, 5.0)) and math.isnan(seed_spread.loss_at(curve, 2000.0))
    assert seed_spread.loss_at(curve, 1000.5) == 1.0  # the budget's last evaluation, a fraction of a step short


def test_spread_statistics() -> None:
    s = seed_spread.spread([1.0, 1.5, 1.6, 1.7])
    assert s["n"] == 4 and s["mean"] == pytest.approx(1.45)
    assert s["range"] == pytest.approx(0.7) and s["range_without_lowest"] == pytest.approx(0.2)
    assert s["sd"] == pytest.approx(math.sqrt(sum((v - 1.45) ** 2 for v in [1.0, 1.5, 1.6, 1.7]) / 3))
    assert seed_spread.spread([1.0, math.nan]) == {"n": 1}


def test_groups_by_size_method_and_lr_and_reads_each_run_once(tmp_path: Path) -> None:
    base = [_record(s, {10.0: 3.0 + 0.1 * s, 100.0: 2.0 + 0.01 * s}) for s in range(3)]
    tuned = [_record(s, {10.0: 3.2, 100.0: 2.1}, method="sf-adamw", lr=0.016) for s in range(3)]
    _write(tmp_path / "a", base + tuned)
    _write(tmp_path / "b", base[:1] + [_record(0, {10.0: 3.0, 100.0: 2.0}, size="50k")])  # a duplicate, another size
    _write(tmp_path / "b", [_record(s, {10.0: 9.0}, horizon=10.0) for s in range(2)])  # shorter runs: their own group
    seed_spread.main([str(tmp_path / "a"), str(tmp_path / "b"), "--size", "20k", "--at", "100", "10",
                      "--out", str(tmp_path / "out")])
    doc = json.loads((tmp_path / "out" / "seed_spread.json").read_text())
    assert [g["group"] for g in doc["groups"]] == ["20k sf-adamw lr0.016 h100", "20k sfplus default h100"]
    default = doc["groups"][1]
    assert default["seeds"] == [0, 1, 2] and [p["tpp"] for p in default["points"]] == [10.0, 100.0]
    assert default["points"][0]["range"] == pytest.approx(0.2) and default["points"][1]["range"] == pytest.approx(0.02)
    assert default["points"][1]["range_without_lowest"] == pytest.approx(0.01)
    assert "**20k sfplus default h100**, seeds 0, 1, 2" in (tmp_path / "out" / "seed_spread.md").read_text()


def test_diverged_runs_and_small_groups_are_left_out(tmp_path: Path) -> None:
    records = [_record(s, {10.0: 3.0, 100.0: 2.0}) for s in range(2)]
    records.append(_record(2, {10.0: 3.0, 100.0: 9.0}, diverged=True))
    _write(tmp_path / "a", records)
    with pytest.raises(SystemExit, match="no group has 3 or more seeds"):
        seed_spread.main([str(tmp_path / "a"), "--at", "100", "--out", str(tmp_path / "out")])


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="has no run files"):
        seed_spread.main([str(tmp_path), "--at", "100", "--out", str(tmp_path / "out")])
    _write(tmp_path / "a", [_record(s, {10.0: 3.0}) for s in range(3)])
    with pytest.raises(SystemExit, match="positive tokens-per-parameter"):
        seed_spread.main([str(tmp_path / "a"), "--at", "0", "--out", str(tmp_path / "out")])


def test_offsets_are_from_the_median_of_each_point(tmp_path: Path) -> None:
    _write(tmp_path / "a", [_record(s, {10.0: 3.0 + 0.1 * s, 100.0: 2.0 - 0.01 * s}) for s in range(3)])
    seed_spread.main([str(tmp_path / "a"), "--at", "10", "100", "--out", str(tmp_path / "out")])
    (group,) = json.loads((tmp_path / "out" / "seed_spread.json").read_text())["groups"]
    assert group["offsets"]["0"] == pytest.approx([-0.1, 0.01]) and group["offsets"]["1"] == pytest.approx([0.0, 0.0])
    assert "| 2 | +0.100 | -0.010 |" in (tmp_path / "out" / "seed_spread.md").read_text()


def test_the_sd_ratio_interval_is_the_f_distributions() -> None:
    # F(7, 7) quantiles 0.05 / 0.95: 0.2641 / 3.787 (tables); F(3, 3): 0.1078 / 9.277.
    lo, hi = seed_spread.sd_ratio_interval(8, 8, 2.0)
    assert lo == pytest.approx(2.0 / math.sqrt(3.787), rel=0.01)
    assert hi == pytest.approx(2.0 / math.sqrt(0.2641), rel=0.01)
    lo, hi = seed_spread.sd_ratio_interval(4, 4, 1.0)
    assert lo == pytest.approx(1 / math.sqrt(9.277), rel=0.02) and hi == pytest.approx(1 / math.sqrt(0.1078), rel=0.02)
    assert seed_spread.sd_ratio_interval(8, 8, 2.0) == seed_spread.sd_ratio_interval(8, 8, 2.0)  # reproducible


def test_a_prescribed_path_is_its_own_group_and_groups_are_compared_with_a_reference(tmp_path: Path) -> None:
    _write(tmp_path / "a", [_record(s, {100.0: 2.0 + 0.01 * s}) for s in range(3)])
    _write(tmp_path / "a", [_record(s, {100.0: 2.0 + 0.02 * s}) for s in range(3)], tag="const0.016")
    seed_spread.main([str(tmp_path / "a"), "--at", "100", "--reference", "h100 const", "--out", str(tmp_path / "o")])
    doc = json.loads((tmp_path / "o" / "seed_spread.json").read_text())
    assert [g["group"] for g in doc["groups"]] == ["20k sfplus default h100", "20k sfplus default h100 const0.016"]
    assert doc["reference"] == "20k sfplus default h100 const0.016"
    (row,) = doc["ratios"]
    (point,) = row["points"]
    assert row["group"] == "20k sfplus default h100" and point["sd_ratio"] == pytest.approx(0.5)
    assert point["range_ratio"] == pytest.approx(0.5) and point["interval"][0] < 0.5 < point["interval"][1]
    assert "| 20k sfplus default h100 | 100 | 3 (3) | 0.50 |" in (tmp_path / "o" / "seed_spread.md").read_text()
    with pytest.raises(SystemExit, match="must name exactly one group"):
        seed_spread.main([str(tmp_path / "a"), "--at", "100", "--reference", "h100", "--out", str(tmp_path / "o")])
