"""benchmarks/sfplus_rerun.py names a results file's own "sfplus" rows by the configuration they were trained with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from sfplus_rerun import file_sfplus_label  # noqa: E402

from sfplus_lab.optim_factory import METHODS  # noqa: E402


def _recorded(name: str) -> dict:
    resolved = METHODS[name].optim_config().resolved().to_dict()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}


def test_a_file_made_with_a_registry_configuration_is_labelled_with_its_name() -> None:
    for name in ("sfplus", "sfplus-lab-v1", "sfplus-cw100-b0.8", "sfplus-beta1-0.9"):
        assert file_sfplus_label({"sfplus_config": _recorded(name)}) == name


def test_a_010_file_without_the_later_fields_is_the_lab_setting_of_then() -> None:
    old = {k: v for k, v in _recorded("sfplus-lab-v1").items() if k not in ("preset", "max_inner", "max_step_growth",
                                                                            "max_step_ratio", "bounded_decay")}
    assert file_sfplus_label({"sfplus_config": old}) == "sfplus-lab-v1"


def test_an_unknown_configuration_is_not_given_a_registry_name() -> None:
    assert file_sfplus_label({"sfplus_config": dict(_recorded("sfplus"), lr=0.123)}) == "sfplus-of-the-file"


RESULTS = Path(__file__).resolve().parents[2] / "benchmarks/results/quality_cpu_debian_20k_1000/results.json"


def test_a_size_the_file_lacks_is_named_by_every_script_that_reruns_it(tmp_path: Path, capsys) -> None:
    import fixed_alpha
    import seed_swap
    import sfplus_rerun

    calls = {
        "sfplus_rerun": lambda: sfplus_rerun.main([str(RESULTS), "--sizes", "7k", "--out", str(tmp_path / "a")]),
        "seed_swap": lambda: seed_swap.main([str(RESULTS), "--sizes", "7k", "--pairs", "0:1",
                                             "--out", str(tmp_path / "b")]),
        "fixed_alpha": lambda: fixed_alpha.main([str(RESULTS), "--size", "7k", "--constant", "0.01", "--seeds", "0",
                                                 "--out", str(tmp_path / "c")]),
    }  # fmt: skip
    for name, call in calls.items():
        with pytest.raises(SystemExit):
            call()
        assert "size '7k' is not in" in capsys.readouterr().err, name
    assert not list(tmp_path.rglob("*.json"))  # nothing trained
