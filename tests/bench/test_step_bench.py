"""The step benchmark measures what it claims: every method steps, state sizes are as documented, ratios add up."""

from __future__ import annotations

import json
import math

import pytest

from sfplus_lab.bench.step import METHODS, StepBenchConfig, run_step_benchmark
from sfplus_lab.bench.step_math import SHAPES, add_ratios, check_targets, format_table, gpt_param_shapes, quantile


def test_gpt_shapes_have_the_advertised_sizes() -> None:
    counts = {name: sum(math.prod(s) for s in gpt_param_shapes(shape)) for name, shape in SHAPES.items()}
    assert 0.9e6 < counts["1m"] < 1.2e6
    assert 14e6 < counts["15m"] < 17e6  # the size the step-time TARGETS are stated at
    assert 90e6 < counts["100m"] < 110e6


def test_tiny_run_times_every_method_and_counts_state() -> None:
    # every method but the compiled one (compiling takes longer than the whole test; the optimizer's tests cover it)
    methods = tuple(m for m in METHODS if m != "sfplus-fused")
    doc = run_step_benchmark(StepBenchConfig(sizes=("tiny",), methods=methods, repeats=3, warmup=1, seed=1))
    rows = {r["method"]: r for r in doc["results"]}
    assert set(rows) == set(methods)
    # ScheduleFreePlus keeps z, m, v; the reference keeps x, y, z, m, v; the AdamWs two moments.
    expected = {"sfplus-default": 3, "sfplus-foreach": 3, "sfplus-forloop": 3, "sfplus-reference": 5,
                "adamw-fused": 2, "adamw-foreach": 2, "sf-adamw": 2}
    for name, buffers in expected.items():
        assert rows[name]["state_per_param"] == pytest.approx(buffers), name
        assert rows[name]["median_ms"] > 0 and rows[name]["p25_ms"] <= rows[name]["p75_ms"]
        assert rows[name]["transient_peak_bytes"] >= 0
    assert rows["adamw-fused"]["ratio_to_adamw-fused"] == 1.0
    ratio = rows["sfplus-foreach"]["median_ms"] / rows["sf-adamw"]["median_ms"]
    assert rows["sfplus-foreach"]["ratio_to_sf-adamw"] == pytest.approx(ratio)
    assert rows["sfplus-foreach"]["skipped_steps"] == 0 and rows["sfplus-default"]["skipped_steps"] == 0
    assert {(t["vs"], t["limit"]) for t in doc["targets"]} == {("adamw-fused", 2.0), ("sf-adamw", 1.0)}
    json.dumps(doc)  # the results file is plain JSON
    assert "sfplus-reference" in format_table(doc)
    assert doc["meta"]["torch"] and "commit" in doc["meta"]


def test_memory_plan_drops_methods_that_do_not_fit() -> None:
    # 10k params: 4 params-worth is ~0.16 MB; a 0.0003 GiB budget fits AdamW and not the 5-buffer reference.
    methods = tuple(m for m in METHODS if m != "sfplus-fused")
    doc = run_step_benchmark(StepBenchConfig(sizes=("tiny",), methods=methods, repeats=1, warmup=0, max_gb=0.0003,
                                             measure_memory=False))
    measured = {r["method"] for r in doc["results"]}
    skipped = {s["method"] for s in doc["skipped"]}
    assert "adamw-fused" in measured and "sfplus-reference" in skipped
    assert measured.isdisjoint(skipped) and measured | skipped == set(methods)


def test_bad_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown size"):
        StepBenchConfig(sizes=("7m",))
    with pytest.raises(ValueError, match="unknown method"):
        StepBenchConfig(methods=("sgd",))


@pytest.mark.slow  # compiles three kernels (about 30 s cold); the optimizer's own tests cover the compiled path
def test_step_floor_script_counts_reads(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "step_floor.py"
    spec = importlib.util.spec_from_file_location("step_floor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--size", "tiny", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    for line in ("AdamW fused step                     4", "ScheduleFree+ statistics pass        2",
                 "ScheduleFree+ update pass            5", "ScheduleFree+ passes / AdamW fused step"):
        assert line in out


def test_quantiles_ratios_and_targets_are_plain_arithmetic() -> None:
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5 and quantile([1.0, 2.0, 3.0], 0.25) == 1.5
    rows = [{"size": "15m", "method": "adamw-fused", "median_ms": 10.0},
            {"size": "15m", "method": "sf-adamw", "median_ms": 16.0},
            {"size": "15m", "method": "sfplus-default", "median_ms": 18.0}]  # fmt: skip
    add_ratios(rows)
    assert rows[2]["ratio_to_adamw-fused"] == 1.8 and rows[2]["ratio_to_sf-adamw"] == 1.125
    met = {t["vs"]: t["met"] for t in check_targets(rows)}
    assert met == {"adamw-fused": True, "sf-adamw": False}  # at most 2x fused AdamW; no slower than SF-AdamW
