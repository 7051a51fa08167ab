"""benchmarks/fixed_alpha.py: the prescribed path is the median of the cached traces, and inside the block every
ScheduleFree+ step takes exactly the path's α (other optimizers are left alone)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import fixed_alpha  # noqa: E402

import sfplus  # noqa: E402


def _trace_run(folder: Path, seed: int, steps: list[int], alphas: list[float], size: str = "20k",
               method: str = "sfplus") -> None:
    runs = folder / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    rec = {"job": {"id": f"{size}_{method}_s{seed}", "size": size, "method": method, "seed": seed},
           "trace": {"step": steps, "alpha": alphas}}
    (runs / f"{size}_{method}_s{seed}.json").write_text(json.dumps(rec))


def test_the_median_path_interpolates_each_trace_and_stops_at_the_shortest(tmp_path: Path) -> None:
    _trace_run(tmp_path, 0, [1, 5], [1.0, 5.0])
    _trace_run(tmp_path, 1, [1, 5], [3.0, 3.0])
    _trace_run(tmp_path, 2, [1, 4], [2.0, 2.0])
    _trace_run(tmp_path, 3, [1, 5], [9.0, 9.0], method="other")  # another configuration: not read
    path = fixed_alpha.median_path([tmp_path], "20k", "sfplus")
    assert path.tolist() == pytest.approx([2.0, 2.0, 3.0, 3.0])  # medians of (1,3,2), (2,3,2), (3,3,2), (4,3,2)


def test_a_path_needs_two_traces(tmp_path: Path) -> None:
    _trace_run(tmp_path, 0, [1, 5], [1.0, 5.0])
    with pytest.raises(SystemExit, match="at least 2 runs"):
        fixed_alpha.median_path([tmp_path], "20k", "sfplus")


def test_constant_path_ramps_linearly() -> None:
    assert fixed_alpha.constant_path(0.1, 4, 6).tolist() == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert fixed_alpha.constant_path(0.1, 0, 2).tolist() == [0.1, 0.1]


def test_every_step_takes_the_prescribed_alpha_and_other_optimizers_are_untouched() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = sfplus.ScheduleFreePlus(model.parameters())
    other = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    path = np.array([0.01, 0.02, 0.03])
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    seen = []
    with fixed_alpha.prescribed_alpha(path):
        for _ in range(5):  # past the path's end its last value holds
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step(loss=loss)
            seen.append(float(opt.stats["alpha"]))
            other.step()
    assert seen == pytest.approx([0.01, 0.02, 0.03, 0.03, 0.03], rel=1e-12)
    assert other.param_groups[0]["lr"] == 0.1 and "max_step" not in other.param_groups[0]
    fresh = sfplus.ScheduleFreePlus(torch.nn.Linear(4, 1).parameters())  # the hook is gone after the block
    assert fresh.param_groups[0]["max_step"] is None and fresh.param_groups[0]["lr"] == 1.0


def test_floor_and_cap_shape_only_a_median_path(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        fixed_alpha.main([str(tmp_path / "results.json"), "--size", "20k", "--constant", "0.01", "--cap", "0.02",
                          "--seeds", "0", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        fixed_alpha.main([str(tmp_path / "results.json"), "--size", "20k", "--median-of", str(tmp_path),
                          "--floor", "-1", "--seeds", "0", "--out", str(tmp_path / "out")])


def test_an_unknown_configuration_or_a_bad_variant_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = [str(tmp_path / "results.json"), "--size", "20k", "--constant", "0.01", "--seeds", "0",
            "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        fixed_alpha.main([*base, "--config", "no-such-config"])
    assert "unknown configuration 'no-such-config'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fixed_alpha.main([*base, "--variant", "broken"])
    assert "expected NAME=JSON" in capsys.readouterr().err
