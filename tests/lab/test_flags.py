"""``sfplus train``'s flags are generated from the config dataclasses: every field has one (every ScheduleFree+
argument of OptimConfig included), its help is the field's docstring and its type the annotation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from sfplus_lab.cli import build_parser
from sfplus_lab.config import CheckpointConfig, DataConfig, OptimConfig, TrainConfig
from sfplus_lab.errors import UserError
from sfplus_lab.flags import field_docs, flags_for, parse_value
from sfplus_lab.recipes import get_recipe
from sfplus_lab.train import FLAGS, apply_flags

#: The flags ``sfplus train`` had before they were generated (README, docs and scripts use them).
OLD_FLAGS = ("--tokens", "--tokens-per-param", "--model", "--optimizer", "--lr", "--warmup-steps", "--weight-decay",
             "--preset", "--polyak-beta", "--c-warmup", "--sf-beta1-anneal-steps", "--max-inner", "--max-step-growth",
             "--max-step-ratio", "--max-step", "--r", "--seed", "--batch-size", "--seq-len", "--tokenizer",
             "--vocab-size", "--checkpoint-every", "--keep-checkpoints", "--eval-every", "--evals-per-decade",
             "--eval-batches", "--device", "--cache-dir")


def _train_args(argv: list[str]):
    parser, _ = build_parser()
    return parser.parse_args(["train", *argv])


def test_every_field_has_a_flag_and_the_old_names_still_work() -> None:
    by_field = {(f.section, f.field) for f in FLAGS.values()}
    set_otherwise = {("data", "paths"), ("train", "compile"), ("train", "progress")}  # --data, --compile, ...
    for section, cls in (("data", DataConfig), ("optim", OptimConfig), ("train", TrainConfig),
                         ("checkpoint", CheckpointConfig)):
        for f in dataclasses.fields(cls):
            assert (section, f.name) in by_field | set_otherwise, f"{section}.{f.name} has no flag"
    assert set(OLD_FLAGS) <= set(FLAGS)


def test_every_sfplus_argument_can_be_set_from_the_command_line() -> None:
    argv = ["--preset", "paper", "--lr", "0.5", "--warmup-steps", "7", "--weight-decay", "3", "--betas", "0.8,0.99",
            "--eps", "1e-6", "--sf-beta1", "0.85", "--sf-beta1-max", "0.97", "--sf-beta1-anneal-steps", "11",
            "--polyak-beta", "0.5", "--c-warmup", "13", "--max-inner", "off", "--max-step-growth", "0.2",
            "--max-step-ratio", "4", "--bounded-decay", "false", "--r", "0.5", "--weight-lr-power", "1.5",
            "--max-step", "0.01"]
    optim = apply_flags(get_recipe("default"), _train_args(argv)).optim
    assert optim == OptimConfig(
        preset="paper", lr=0.5, warmup_steps=7, weight_decay=3.0, betas=(0.8, 0.99), eps=1e-6, sf_beta1=0.85,
        sf_beta1_max=0.97, sf_beta1_anneal_steps=11, polyak_beta=0.5, c_warmup=13, max_inner="off",
        max_step_growth=0.2, max_step_ratio=4.0, bounded_decay=False, r=0.5, weight_lr_power=1.5, max_step=0.01,
    )


def test_help_is_the_field_docstring_with_the_default_run_value() -> None:
    docs = field_docs(OptimConfig)
    assert FLAGS["--polyak-beta"].help.startswith(docs["polyak_beta"])
    from sfplus import PRESETS

    assert f"(default: {PRESETS['robust']['warmup_steps']}, for sfplus" in FLAGS["--warmup-steps"].help

    # a None field shows the value the library's preset gives it, not a number typed into the help by hand
    assert f"(default: {PRESETS['robust']['polyak_beta']:g}, for sfplus" in FLAGS["--polyak-beta"].help
    assert "``" not in "".join(f.help for f in FLAGS.values())


@dataclass
class _Example:
    count: int = 3
    """How many."""
    ratio: float | None = None
    """A ratio."""
    guard: float | str | None = None
    """A safeguard."""
    pair: tuple[float, float] = (1.0, 2.0)
    """Two numbers."""
    undocumented: bool = False


def test_kinds_come_from_the_annotations_and_a_field_needs_a_docstring() -> None:
    with pytest.raises(TypeError, match="undocumented has no docstring"):
        flags_for(_Example, "x")
    flags = {f.field: f for f in flags_for(_Example, "x", skip=("undocumented",), defaults=_Example())}
    assert {name: f.kind for name, f in flags.items()} == {"count": "int", "ratio": "float", "guard": "float|off",
                                                           "pair": "floats"}
    assert flags["count"].help == "How many. (default: 3)" and flags["ratio"].help == "A ratio."
    assert flags["pair"].flag == "--pair" and flags["pair"].help.endswith("(default: 1,2)")


@pytest.mark.parametrize(("kind", "text", "value"), [
    ("count", "300k", 300_000), ("count", "2M", 2_000_000), ("int", "7", 7), ("float|off", "OFF", "off"),
    ("float|off", "0.5", 0.5), ("bool", "false", False), ("bool", "on", True), ("floats", "0.9, 0.95", (0.9, 0.95)),
])
def test_values_parse(kind: str, text: str, value) -> None:
    assert parse_value("--x", kind, text) == value


@pytest.mark.parametrize(("kind", "text", "message"), [
    ("count", "1.5k5", "--x needs an integer"), ("bool", "maybe", "--x needs true or false"),
    ("float|off", "none", "--x needs a number or off"), ("floats", "a,b", "--x needs numbers separated by commas"),
])
def test_a_bad_value_is_one_line_naming_the_flag(kind: str, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_value("--x", kind, text)


def test_field_arguments_take_type_and_list_shape_from_the_annotation() -> None:
    import argparse

    from sfplus_lab.flags import add_field_arguments

    @dataclass
    class Bench:
        sizes: tuple[str, ...] = ("a",)
        """Sizes."""
        budgets: tuple[float, ...] = (1.0, 2.5)
        """Budgets."""
        seeds: int = 2
        """Seeds."""

    parser = argparse.ArgumentParser()
    add_field_arguments(parser, Bench, ("sizes", "budgets", "seeds"), defaults=Bench(),
                        default_notes={"seeds": "1 when quick"})
    args = parser.parse_args(["--budgets", "3", "0.5", "--sizes", "x", "y"])
    assert (args.sizes, args.budgets, args.seeds) == (["x", "y"], [3.0, 0.5], None)
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["budgets"] == "Budgets. (default: 1 2.5)" and helps["seeds"] == "Seeds. (default: 2, 1 when quick)"


def test_bench_flags_set_their_config_fields() -> None:
    from sfplus_lab.bench.command import _config_from_args

    parser, _ = build_parser()
    args = parser.parse_args(["bench", "--out", "o", "--device", "cpu", "--batch-size", "5", "--budgets", "1", "4",
                              "--sfplus-extra", "--lr-grid", "1", "2", "--long-sweep", "one-sided"])
    cfg = _config_from_args(args)
    assert (cfg.batch_size, cfg.budgets, cfg.sfplus_extra, cfg.lr_grid, cfg.long_sweep) == (
        5, (1.0, 4.0), (), (1, 2), "one-sided")
