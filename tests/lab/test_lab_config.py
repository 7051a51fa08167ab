"""Config validation, the model's shapes and sizes, and the optimizer factory's groups and schedules."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sfplus
from sfplus_lab.config import CheckpointConfig, DataConfig, RunConfig, TrainConfig
from sfplus_lab.errors import UserError
from sfplus_lab.model import GPT, PRESETS, ModelConfig, model_preset
from sfplus_lab.optim_factory import OPTIMIZERS, OptimConfig, build_optimizer, param_groups, step
from sfplus_lab.recipes import RECIPES, get_recipe

BAD_CONFIGS = [
    (lambda: DataConfig(batch_size=0), "batch_size"),
    (lambda: DataConfig(seq_len=-3), "seq_len"),
    (lambda: DataConfig(tokenizer="words"), "tokenizer"),
    (lambda: DataConfig(paths=[]), "paths"),
    (lambda: TrainConfig(tokens=None), "budget"),
    (lambda: TrainConfig(tokens=10, tokens_per_param=1.0), "either tokens or tokens_per_param"),
    (lambda: TrainConfig(tokens=0), "tokens"),
    (lambda: TrainConfig(tokens_per_param=float("nan")), "tokens_per_param"),
    (lambda: TrainConfig(tokens=10, model_size="7b"), "model size"),
    (lambda: TrainConfig(tokens=10, seed=-1), "seed"),
    (lambda: TrainConfig(tokens=10, eval_every=0), "eval_every"),
    (lambda: TrainConfig(tokens=10, device="tpu"), "device"),
    (lambda: CheckpointConfig(keep=1), "keep"),
    (lambda: CheckpointConfig(every=-1), "every"),
    (lambda: OptimConfig(name="sgd"), "unknown optimizer"),
    (lambda: OptimConfig(lr=0.0), "lr"),
    (lambda: OptimConfig(lr=float("nan")), "lr"),
    (lambda: OptimConfig(betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda: OptimConfig(sf_beta1=1.0), "sf_beta1"),
    (lambda: OptimConfig(sf_beta1=0.95, sf_beta1_max=0.9), "sf_beta1_max"),
    (lambda: OptimConfig(polyak_beta=1.0), "polyak_beta"),
    (lambda: OptimConfig(warmup_steps=2.5), "warmup_steps"),
    (lambda: OptimConfig(weight_decay=-1.0), "weight_decay"),
    (lambda: OptimConfig(grad_clip=1.0), "grad_clip is not supported with sfplus"),
    (lambda: ModelConfig(d_model=100, n_head=3), "not divisible"),
    (lambda: ModelConfig(d_model=12, n_head=4), "even"),
    (lambda: ModelConfig(n_layer=0), "n_layer"),
]


@pytest.mark.parametrize("make, message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_config_values_raise_user_error_naming_the_field(make, message):
    with pytest.raises(UserError, match=message):
        make()


def test_resolved_config_round_trips_through_json():
    cfg = get_recipe("default").resolve_model(256)
    text = cfg.to_json()
    again = RunConfig.from_dict(json.loads(text))
    assert again.to_json() == text
    assert json.loads(text)["optim"]["polyak_beta"] == 0.9  # every value is written as used
    robust = RunConfig.from_dict({**json.loads(text), "optim": {"preset": "robust"}}).to_dict()
    assert robust["optim"]["max_step_growth"] == sfplus.PRESETS["robust"]["max_step_growth"]  # None -> library


def test_unknown_field_in_saved_config_is_a_user_error():
    d = get_recipe("tiny").to_dict()
    d["train"]["learning_rate"] = 1.0
    with pytest.raises(UserError, match="learning_rate"):
        RunConfig.from_dict(d)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_a_valid_config(name):
    assert isinstance(get_recipe(name), RunConfig)


EXPECTED_PARAMS = {
    "3k": 3_096, "6k": 6_588, "10k": 10_832, "20k": 20_088,
    "50k": 48_352, "100k": 95_568, "250k": 267_968, "1m": 1_037_696, "10m": 9_558_272}


@pytest.mark.parametrize("size", sorted(EXPECTED_PARAMS))
def test_presets_have_their_documented_sizes(size):
    model = GPT(model_preset(size, 256, 64))
    assert model.num_params() == EXPECTED_PARAMS[size]
    low, high = {"k": 1e3, "m": 1e6}[size[-1]] * 0.8, {"k": 1e3, "m": 1e6}[size[-1]] * 1.2
    assert low * float(size[:-1]) <= model.num_params() <= high * float(size[:-1])


def test_100m_preset_is_over_90m_params():
    with torch.device("meta"):
        model = GPT(model_preset("100m", 256, 64))
    assert 90e6 < model.num_params() < 120e6
    assert set(PRESETS) == {"3k", "6k", "10k", "20k", "50k", "100k", "250k", "1m", "10m", "100m"}


def test_train_and_bench_read_one_size_list():
    from sfplus_lab.bench.config import BENCH_SIZES

    assert BENCH_SIZES is PRESETS
    assert TrainConfig(model_size="6k", tokens=1000).model_size == "6k"


def test_forward_shapes_initial_loss_and_tied_embedding():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, seq_len=16, n_layer=2, n_head=2, d_model=32)
    model = GPT(cfg)
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 97, (3, 16), generator=gen)
    targets = torch.randint(0, 97, (3, 16), generator=gen)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 97)
    assert abs(loss.item() - math.log(97)) < 0.2  # small init: near-uniform predictions
    assert model(idx)[1] is None
    assert sum(p is model.embed.weight for p in model.parameters()) == 1  # the output head is the embedding


def test_model_is_causal():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, seq_len=12, n_layer=2, n_head=2, d_model=16))
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 50, (1, 12), generator=gen)
    changed = idx.clone()
    changed[0, 8] = (idx[0, 8] + 1) % 50
    a, b = model(idx)[0], model(changed)[0]
    assert torch.equal(a[:, :8], b[:, :8])
    assert not torch.equal(a[:, 8:], b[:, 8:])


def test_sequence_longer_than_config_is_rejected():
    model = GPT(ModelConfig(vocab_size=10, seq_len=8, n_layer=1, n_head=2, d_model=8))
    with pytest.raises(ValueError, match="seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_param_groups_hold_every_parameter_exactly_once():
    model = GPT(model_preset("50k", 256, 32))
    groups = param_groups(model, 10.0)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert len(ids) == len(set(ids))
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 10.0
    assert all(p.ndim == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0


def _train_a_few_steps(name: str, steps: int = 6) -> list[float]:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=32, seq_len=8, n_layer=1, n_head=2, d_model=16))
    opt, sched = build_optimizer(OptimConfig(name=name, warmup_steps=2), model, total_steps=steps)
    gen = torch.Generator().manual_seed(3)
    lrs = []
    for _ in range(steps):
        idx = torch.randint(0, 32, (4, 8), generator=gen)
        _, loss = model(idx, idx)
        loss.backward()
        step(opt, loss)
        opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return lrs


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_and_steps(name):
    if name == "adamw-wsd":
        pytest.importorskip("transformers")
    if name == "sf-adamw":
        pytest.importorskip("schedulefree")
    lrs = _train_a_few_steps(name)
    if name in ("adamw-wsd", "adamw-cosine", "adamw-linear"):
        assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # decayed to min_lr_ratio * lr = 0 at total_steps
        assert max(lrs) == pytest.approx(3e-3)


def test_missing_transformers_names_the_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    model = GPT(ModelConfig(vocab_size=8, seq_len=4, n_layer=1, n_head=2, d_model=8))
    with pytest.raises(UserError, match="transformers"):
        build_optimizer(OptimConfig(name="adamw-wsd"), model, total_steps=10)
