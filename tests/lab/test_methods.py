"""The method registry: every entry trains, the CLI and the bench read it, and one entry adds a baseline.

``test_one_entry_adds_a_baseline_to_bench_and_plots`` is the worked example of docs/architecture.md
("Add a baseline"): AdamW at a constant learning rate, registered and nothing else, is planned, trained,
summarised and coloured by the bench.
"""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from sfplus_lab import optim_factory
from sfplus_lab.bench import plots
from sfplus_lab.bench.analysis import summarize
from sfplus_lab.bench.config import BASELINES, SFPLUS_CONFIGS, baselines, fixed_configs, quick_config
from sfplus_lab.bench.plan import next_jobs
from sfplus_lab.bench.runner import run_job
from sfplus_lab.model import GPT, ModelConfig
from sfplus_lab.optim_factory import METHODS, Method, OptimConfig, build_optimizer, is_tuned, step
from sfplus_lab.recipes import get_recipe
from sfplus_lab.train import FLAGS, apply_flags


def _needs(method: Method) -> None:
    base = method.base or method.name
    if base == "adamw-wsd":
        pytest.importorskip("transformers")
    if base == "sf-adamw":
        pytest.importorskip("schedulefree")


@pytest.mark.parametrize("name", list(METHODS))
def test_every_entry_builds_and_steps_through_the_adapter(name: str) -> None:
    method = METHODS[name]
    _needs(method)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=32, seq_len=8, n_layer=1, n_head=2, d_model=16))
    cfg = method.optim_config()
    assert cfg.name == (method.base or name) and all(getattr(cfg, k) == v for k, v in method.config.items())
    opt, sched = build_optimizer(cfg, model, total_steps=4)
    before = [p.detach().clone() for p in model.parameters()]
    idx = torch.randint(0, 32, (4, 8), generator=torch.Generator().manual_seed(1))
    for _ in range(2):  # (WSD's warmup starts at lr 0)
        _, loss = model(idx, idx)
        loss.backward()
        step(opt, loss)  # ScheduleFree+ without the loss would raise; the others would reject a loss keyword
        opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert optim_factory.needs_loss(opt) == method.polyak


def test_the_bench_tables_are_views_of_the_registry() -> None:
    assert BASELINES == baselines() == ("adamw-wsd", "adamw-cosine", "adamw-linear", "sf-adamw")
    assert SFPLUS_CONFIGS["sfplus"] == {} and set(SFPLUS_CONFIGS) == {"sfplus", *fixed_configs()}
    assert all(not is_tuned(m) for m in SFPLUS_CONFIGS) and all(is_tuned(m) for m in BASELINES)
    assert not is_tuned("sfplus-some-old-name")  # results files keep names the registry dropped: fixed rows


def _flags(**typed: str) -> argparse.Namespace:
    values = {flag[2:].replace("-", "_"): None for flag in FLAGS}
    values.update(typed)
    return argparse.Namespace(**values, data=None, compile=None, no_progress=False)


def test_train_optimizer_flag_takes_a_variant_and_flags_win() -> None:
    cfg = apply_flags(get_recipe("default"), _flags(optimizer="sfplus-gamma1", weight_decay="3"))
    row = METHODS["sfplus-gamma1"].config
    assert cfg.optim.name == "sfplus" and cfg.optim.preset == "paper" and cfg.optim.weight_decay == 3.0
    assert cfg.optim.lr == row["lr"] and cfg.optim.c_warmup == row["c_warmup"]


def _constant(cfg: OptimConfig, opt: torch.optim.Optimizer, total_steps: int) -> None:
    return None  # no schedule: the lr stays at its peak


def test_one_entry_adds_a_baseline_to_bench_and_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = Method("adamw-constant", build=optim_factory._adamw(_constant), kind="anytime", tuned=True, lr=3e-3,
                   weight_decay=0.1, color="tab:gray", label="constant")  # fmt: skip
    monkeypatch.setitem(METHODS, entry.name, entry)
    cfg = quick_config(sizes=("3k",), budgets=(0.5, 1.0), baselines=("adamw-constant",), sfplus_extra=(), seeds=1,
                       lr_grid=(3,), eval_tokens=512)  # fmt: skip
    jobs, complete = next_jobs(cfg, {})
    mine = [j for j in jobs if j.method == "adamw-constant"]
    assert mine and not complete and all(j.kind == "anytime" and j.lr == cfg.lr(3) for j in mine)
    rec = run_job(mine[0], cfg)
    assert rec["optim"]["name"] == "adamw-constant" and rec["optim"]["lr"] == cfg.lr(3)
    assert set(rec["trace"]["lr"]) == {cfg.lr(3)}  # constant, as registered
    cells = summarize(cfg, {rec["job"]["id"]: rec})["3k"]["cells"]
    cell = next(c for c in cells if c["method"] == "adamw-constant")
    assert cell["best_lr"] == cfg.lr(3) and math.isfinite(cell["final_pooled_mean"])
    assert plots._color("adamw-constant") == "tab:gray" and plots._label("adamw-constant") == "constant"


def test_off_turns_a_safeguard_off_where_none_means_the_default() -> None:
    default = OptimConfig().resolved()
    assert default.max_inner is not None and default.max_step_growth is not None  # the default has them on
    assert default.max_step_ratio is None  # off by default from the eleventh session; OFF must give the same
    for name in ("max_inner", "max_step_growth", "max_step_ratio"):
        model = GPT(ModelConfig(vocab_size=32, seq_len=8, n_layer=1, n_head=2, d_model=16))
        opt, _ = build_optimizer(OptimConfig(**{name: optim_factory.OFF}), model, total_steps=4)
        assert opt.defaults[name] is None, f"{name} is still on"
        others = [k for k in ("max_inner", "max_step_growth", "max_step_ratio") if k != name]
        assert all(opt.defaults[k] == getattr(default, k) for k in others)
    for entry in METHODS.values():  # a registry entry that sets None would silently be the default
        assert all(v is not None for v in entry.config.values()), entry.name
    cfg = apply_flags(get_recipe("default"), _flags(max_inner="off", max_step_growth="0.1"))
    assert cfg.optim.max_inner == optim_factory.OFF and cfg.optim.max_step_growth == 0.1
    with pytest.raises(Exception, match="max_inner"):
        OptimConfig(max_inner="none")


def test_add_variant_registers_a_probe_and_checks_its_fields() -> None:
    from sfplus_lab.errors import UserError
    from sfplus_lab.optim_factory import METHODS, add_variant

    try:
        method = add_variant("probe-no-anneal", {"sf_beta1_anneal_steps": 0, "max_inner": "off"})
        assert METHODS["probe-no-anneal"] is method and method.base == "sfplus" and not method.tuned
        resolved = method.optim_config().resolved()
        assert resolved.sf_beta1_anneal_steps == 0 and resolved.max_inner == "off"
        with pytest.raises(UserError, match="already exists"):
            add_variant("probe-no-anneal", {})
    finally:
        METHODS.pop("probe-no-anneal", None)
    with pytest.raises(UserError, match="unexpected keyword argument 'nope'"):
        add_variant("probe-bad", {"nope": 1})
    with pytest.raises(UserError, match="lr must be"):
        add_variant("probe-bad", {"lr": -1.0})
    with pytest.raises(UserError, match="unknown base"):
        add_variant("probe-bad", {}, base="adamw-nope")
    assert "probe-bad" not in METHODS


def test_loss_floor_reaches_the_optimizer_and_is_checked() -> None:
    from sfplus_lab.errors import UserError

    model = GPT(ModelConfig(vocab_size=32, seq_len=8, n_layer=1, n_head=2, d_model=16))
    assert build_optimizer(OptimConfig(), model, total_steps=4)[0].defaults["loss_floor"] == 0.0
    assert build_optimizer(OptimConfig(loss_floor=0.5), model, total_steps=4)[0].defaults["loss_floor"] == 0.5
    assert apply_flags(get_recipe("default"), _flags(loss_floor="-1.5")).optim.loss_floor == -1.5
    for bad in (math.nan, math.inf, "0.5"):
        with pytest.raises(UserError, match="loss_floor"):
            OptimConfig(loss_floor=bad)


def test_former_defaults_are_pinned_and_agree_with_the_suite() -> None:
    """A configuration named after a former default trains what it trained then, whatever today's default is: the
    bench variant and the suite configuration of the same former default resolve to the same settings."""
    import sfplus
    from sfplus_lab.robust.suite import CONFIGS

    pairs = {"sfplus-no-ratio": "default-no-ratio", "sfplus-ratio0.5": "default-ratio0.5",
             "sfplus-ratio1": "default-ratio1", "sfplus-anneal1000": "default-anneal1000",
             "sfplus-beta1-0.9": "default-beta1-0.9", "sfplus-cw100-b0.8": "default-cw100-b0.8",
             "sfplus-b0.5": "default-warmup200"}  # fmt: skip
    fields = ("warmup_steps", "max_step_ratio", "betas", "c_warmup", "sf_beta1_anneal_steps")
    for bench_name, suite_name in pairs.items():
        cfg = METHODS[bench_name].optim_config().resolved()
        # every former default had a 50-step warmup but the twelfth and thirteenth sessions' (200, as today's), and
        # a larger inner momentum than today's
        assert cfg.warmup_steps == (200 if bench_name == "sfplus-b0.5" else 50), bench_name
        assert cfg.betas[0] > sfplus.PRESETS["robust"]["betas"][0], bench_name
        suite = {**sfplus.PRESETS["robust"], **CONFIGS[suite_name]}  # the suite passes them to the constructor
        for name in fields:
            ours = getattr(cfg, name)
            ours = None if ours == optim_factory.OFF else ours
            assert ours == suite[name] or (name == "betas" and tuple(ours) == tuple(suite[name])), (bench_name, name)
    assert METHODS["sfplus-ratio1"].optim_config().resolved().max_step_ratio == 1.0
    assert METHODS["sfplus-ratio0.5"].optim_config().resolved().max_step_ratio == 0.5
