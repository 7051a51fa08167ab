"""The one training step and evaluation (``sfplus_lab.loop``): what a step does, what a skip leaves alone, the
pooled loss; and ``sfplus train`` and ``sfplus bench`` computing the same numbers for the same run."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from sfplus_lab import loop
from sfplus_lab.bench.config import quick_config
from sfplus_lab.bench.runner import Job, run_job
from sfplus_lab.model import GPT, model_preset
from sfplus_lab.optim_factory import METHODS, build_optimizer
from sfplus_lab.optim_factory import step as optimizer_step


def _setup(method: str):
    torch.manual_seed(0)
    model = GPT(model_preset("3k", vocab_size=256, seq_len=16))
    opt, sched = build_optimizer(METHODS[method].optim_config(), model, total_steps=20)
    return model, opt, sched


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 256, (4, 17), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


@pytest.mark.parametrize("method", ["sfplus", "adamw-cosine"])
def test_train_step_is_the_hand_written_step(method: str) -> None:
    """Forward, backward, the adapter's step (ScheduleFree+ gets the loss), zeroed grads, the schedule: bit for bit."""
    model, opt, sched = _setup(method)
    ref_model, ref_opt, ref_sched = _setup(method)
    for i in range(5):
        x, y = _batch(i)
        loss, stepped = loop.train_step(model, model, opt, sched, x, y)
        assert stepped
        _, ref_loss = ref_model(x, y)
        ref_loss.backward()
        optimizer_step(ref_opt, ref_loss)
        ref_opt.zero_grad(set_to_none=True)
        if ref_sched is not None:
            ref_sched.step()
        assert float(loss.detach()) == float(ref_loss.detach())
    assert all(p.grad is None for p in model.parameters())
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)
    if sched is not None:
        assert sched.last_epoch == ref_sched.last_epoch == 5


def test_a_skipped_step_changes_nothing() -> None:
    model, opt, sched = _setup("adamw-cosine")
    before = [p.detach().clone() for p in model.parameters()]
    seen = []
    loss, stepped = loop.train_step(model, model, opt, sched, *_batch(0), skip=lambda loss: seen.append(loss) or True)
    assert not stepped and seen == [loss]
    assert all(torch.equal(p, b) and p.grad is None for p, b in zip(model.parameters(), before))
    assert sched.last_epoch == 0 and not opt.state


def test_grad_clip_bounds_the_gradient_norm() -> None:
    model, opt, _ = _setup("adamw-cosine")
    norms = []
    real = opt.step

    def spy(*args, **kwargs):
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))))
        return real(*args, **kwargs)

    opt.step = spy
    loop.train_step(model, model, opt, None, *_batch(0), grad_clip=1e-3)
    assert norms and norms[0] <= 1e-3 * (1 + 1e-5)


def test_evaluate_pools_over_tokens_and_reduces_once() -> None:
    """Per source the mean; pooled weighted by tokens (not a mean of sources); reduce sees the flat sums."""

    def forward(x, y):
        return None, x.float().mean()

    windows = {"a": [(torch.full((1, 2), 1.0), torch.zeros(1, 2))],  # 2 tokens at loss 1
               "b": [(torch.full((3, 2), 4.0), torch.zeros(3, 2))]}  # 6 tokens at loss 4
    calls = []
    result = loop.evaluate(forward, windows, torch.device("cpu"), reduce=lambda s: calls.append(list(s)) or s)
    assert result == {"pooled": (2 * 1.0 + 6 * 4.0) / 8, "per_source": {"a": 1.0, "b": 4.0}}
    assert calls == [[2.0, 2, 24.0, 6]]
    doubled = loop.evaluate(forward, windows, torch.device("cpu"), reduce=lambda s: [2 * v for v in s])
    assert doubled == result  # a sum over two identical ranks gives the same means
    assert loop.evaluate(forward, windows, torch.device("cpu"), stop=lambda: True) is None


@pytest.mark.parametrize(("method", "lr"), [("sfplus", None), ("adamw-cosine", 8e-3)])
def test_train_and_bench_compute_the_same_numbers(tmp_path, method: str, lr: float | None) -> None:
    """The same model, data, seed and optimizer through ``sfplus train``'s Trainer and ``sfplus bench``'s runner:
    the same validation losses at x, bit for bit (one loop, one evaluator)."""
    from sfplus_lab.config import CheckpointConfig
    from sfplus_lab.data import load_corpus
    from sfplus_lab.recipes import get_recipe
    from sfplus_lab.trainer import Trainer

    bench_cfg = quick_config(batch_size=4, seq_len=16, eval_tokens=256)  # 4 eval batches per source
    kind = METHODS[method].kind
    job = Job(size="3k", method=method, lr=lr, k=None, seed=3, kind=kind, budgets=[2.0], horizon_tpp=2.0,
              phase="short")
    record = run_job(job, bench_cfg)
    steps = record["steps"]["2"]
    assert steps > 50 and not record["diverged"]

    cfg = get_recipe("tiny")
    cfg = replace(
        cfg,
        data=replace(cfg.data, batch_size=4, seq_len=16),
        optim=METHODS[method].optim_config(lr=lr),
        train=replace(cfg.train, model_size="3k", seed=3, tokens=steps * 64, eval_every=steps, eval_batches=4),
        checkpoint=CheckpointConfig(every=0, keep=2),
    )
    trainer = Trainer(cfg, load_corpus(None, cache_dir=str(tmp_path / "cache")), tmp_path / "run")
    assert trainer.total_steps == steps and trainer.model.num_params() == record["num_params"]
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if r["kind"] == "eval"][-1]
    assert final["step"] == steps
    assert final["val_loss"] == record["finals"]["2"]["pooled"]
    assert {k[len("val_loss/"):]: v for k, v in final.items() if k.startswith("val_loss/")} == \
        record["finals"]["2"]["per_source"]
