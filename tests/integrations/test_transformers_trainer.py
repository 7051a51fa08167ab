"""ScheduleFreePlusTrainer: a tiny Llama (no downloads) trained by the stock Trainer loop.

The acceptance check: 30 steps on a toy dataset, the evaluation loss at x is below the first
training loss, and the model ``save_model`` wrote equals the optimizer's x to 1e-6. Also: the loss of
every step reaches the optimizer (with gradient accumulation, the mean over the micro-batches), the
Trainer's own checkpoint/resume reproduces an uninterrupted run, and the LR schedule stays constant.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
safetensors_torch = pytest.importorskip("safetensors.torch")

import sfplus  # noqa: E402
from sfplus import ScheduleFreePlus  # noqa: E402
from sfplus.integrations.transformers import ScheduleFreePlusTrainer  # noqa: E402

VOCAB = 32
SEQ = 16


class CountingDataset(torch.utils.data.Dataset):
    """Sequences t, t+1, t+2, ... (mod VOCAB) from a seeded start: learnable in a few dozen steps."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, VOCAB, (n, 1), generator=g)
        self.ids = (starts + torch.arange(SEQ)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


def training_args(out: Path, **overrides) -> transformers.TrainingArguments:
    options = dict(
        output_dir=str(out),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        max_steps=30,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    options.update(overrides)
    return transformers.TrainingArguments(**options)


def make_trainer(out: Path, *, sfplus_kwargs=None, **overrides) -> ScheduleFreePlusTrainer:
    return ScheduleFreePlusTrainer(
        model=tiny_llama(),
        args=training_args(out, **overrides),
        train_dataset=CountingDataset(512, seed=1),
        eval_dataset=CountingDataset(64, seed=2),
        sfplus_kwargs=sfplus_kwargs,
    )


def test_eval_at_x_learns_and_save_model_writes_x(tmp_path: Path) -> None:
    # A short warmup and warm start: the library's (50 and 100 steps) would keep x = y for all 30 steps.
    trainer = make_trainer(tmp_path / "run", sfplus_kwargs={"warmup_steps": 5, "c_warmup": 10})
    trainer.train()
    opt = trainer.sfplus_optimizer
    assert isinstance(opt, ScheduleFreePlus)
    assert opt.param_groups[0]["k"] == 30, "every one of the 30 steps must reach the optimizer with a loss"
    train_losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(train_losses) == 30 and all(math.isfinite(v) for v in train_losses)
    assert all("sfplus_alpha" in row for row in trainer.state.log_history if "loss" in row)

    y_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    metrics = trainer.evaluate()
    assert opt.train_mode, "evaluate() must return the parameters to y"
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(after[n], y_before[n]) for n in y_before), "evaluate() must give y back bit for bit"
    assert metrics["eval_loss"] < train_losses[0], (metrics["eval_loss"], train_losses[0])
    assert metrics["eval_loss"] < 0.8 * math.log(VOCAB)

    trainer.save_model(str(tmp_path / "final"))
    assert opt.train_mode
    saved = safetensors_torch.load_file(str(tmp_path / "final" / "model.safetensors"))
    model = trainer.model
    y = {n: p.detach().clone() for n, p in model.named_parameters()}
    with opt.eval_params():
        x = {n: p.detach().clone() for n, p in model.named_parameters()}
    max_x_gap = max((saved[n] - x[n]).abs().max().item() for n in x if n in saved)
    max_y_gap = max((saved[n] - y[n]).abs().max().item() for n in y if n in saved)
    assert max_x_gap <= 1e-6, max_x_gap
    assert max_y_gap > 1e-3, "x and y should differ after 30 steps, or this test cannot tell them apart"
    assert set(saved) <= set(x) | {"lm_head.weight"}

    # predict() runs at x too, and leaves the parameters at y.
    eval_ids = CountingDataset(64, seed=2).ids
    predicted = torch.as_tensor(trainer.predict(CountingDataset(64, seed=2)).predictions)
    assert opt.train_mode
    with torch.no_grad(), opt.eval_params():
        logits_x = model(input_ids=eval_ids).logits
    with torch.no_grad():
        logits_y = model(input_ids=eval_ids).logits
    assert (predicted - logits_x).abs().max().item() < 1e-4 < (predicted - logits_y).abs().max().item()

    # The saved folder is an ordinary Hugging Face model that evaluates to the same loss at x.
    reloaded = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "final"))
    batch = CountingDataset(64, seed=2).ids
    with torch.no_grad():
        loss = reloaded(input_ids=batch, labels=batch).loss.item()
    assert loss == pytest.approx(metrics["eval_loss"], rel=1e-4)


def test_gradient_accumulation_hands_the_mean_loss(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "run", per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=3)
    seen: list[float] = []
    trainer.create_optimizer()
    trainer.optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(opt.stats["loss"]))
    micro: list[float] = []
    original = trainer.compute_loss

    def spy(model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        with torch.no_grad():
            micro.append(model(**inputs).loss.item())  # this micro-batch's own mean loss
        return loss

    trainer.compute_loss = spy
    trainer.train()
    assert len(seen) == 3 and len(micro) == 6
    for step, F in enumerate(seen):
        expected = (micro[2 * step] + micro[2 * step + 1]) / 2  # equal-sized micro-batches: mean of means
        assert F == pytest.approx(expected, rel=1e-5), (step, F, micro)


def test_schedule_is_constant_and_warmup_goes_to_the_optimizer(tmp_path: Path) -> None:
    trainer = make_trainer(
        tmp_path / "run", max_steps=4, warmup_steps=3, learning_rate=5e-5, lr_scheduler_type="linear"
    )
    trainer.train()
    opt = trainer.sfplus_optimizer
    assert all(g["lr"] == 1.0 for g in opt.param_groups), "γ must stay the multiplier 1.0, not the Trainer's LR"
    assert all(g["warmup_steps"] == 3 for g in opt.param_groups)
    decay, no_decay = opt.param_groups
    c_warmup = sfplus.PRESETS["robust"]["c_warmup"]
    assert all(g["c_warmup"] == c_warmup for g in opt.param_groups), "the warm start stays the library's"
    # The Trainer's default weight_decay=0.0 is AdamW's; it must not switch AdamC decay off unasked.
    assert trainer.args.weight_decay == 0.0
    assert decay["weight_decay"] == sfplus.PRESETS["robust"]["weight_decay"] and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all("norm" in names[id(p)] for p in no_decay["params"])


def test_resume_from_trainer_checkpoint_matches_uninterrupted(tmp_path: Path) -> None:
    full = make_trainer(tmp_path / "full", max_steps=8)
    full.train()
    with full.sfplus_optimizer.eval_params():
        want = {n: p.detach().clone() for n, p in full.model.named_parameters()}
    want_losses = [row["loss"] for row in full.state.log_history if "loss" in row]

    first = make_trainer(tmp_path / "part", max_steps=8, save_strategy="steps", save_steps=4)
    first.train()
    ckpt = tmp_path / "part" / "checkpoint-4"
    saved = safetensors_torch.load_file(str(ckpt / "model.safetensors"))
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert all(g["train_mode"] is False for g in state["param_groups"]), "checkpoint must hold x and eval mode"
    assert all(g["k"] == 4 for g in state["param_groups"])
    assert saved  # the weights there are x (checked against the optimizer in the test above)

    resumed = make_trainer(tmp_path / "part", max_steps=8, save_strategy="steps", save_steps=4)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.sfplus_optimizer.param_groups[0]["k"] == 8
    with resumed.sfplus_optimizer.eval_params():
        got = {n: p.detach().clone() for n, p in resumed.model.named_parameters()}
    gap = max((got[n] - want[n]).abs().max().item() for n in want)
    assert gap < 1e-5, gap
    got_losses = [row["loss"] for row in resumed.state.log_history if "loss" in row and row["step"] > 4]
    assert got_losses == pytest.approx(want_losses[4:], rel=1e-4)
    trainer_state = json.loads((tmp_path / "part" / "checkpoint-8" / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 8


def test_user_optimizer_still_gets_the_loss(tmp_path: Path) -> None:
    model = tiny_llama()
    opt = ScheduleFreePlus(model.parameters(), warmup_steps=2)
    trainer = ScheduleFreePlusTrainer(
        model=model,
        args=training_args(tmp_path / "run", max_steps=3),
        train_dataset=CountingDataset(64, seed=1),
        optimizers=(opt, None),
    )
    trainer.train()
    assert opt.param_groups[0]["k"] == 3
    assert trainer.lr_scheduler.get_last_lr() == [1.0]


def test_rejects_params_in_sfplus_kwargs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="params"):
        make_trainer(tmp_path / "run", sfplus_kwargs={"params": []})


@pytest.mark.parametrize(
    "sfplus_kwargs, args_decay, expected",
    [({"weight_decay": 0.0}, 0.0, 0.0), ({"weight_decay": 0.0}, 20.0, 0.0), ({}, 20.0, 20.0), ({}, 0.0, 10.0)],
    ids=["kwargs_off", "kwargs_win", "args_nonzero", "trainer_default"],
)
def test_weight_decay_of_the_decay_group(tmp_path: Path, sfplus_kwargs, args_decay, expected) -> None:
    """sfplus_kwargs, else a non-zero TrainingArguments.weight_decay, else the library's λ (10)."""
    trainer = make_trainer(tmp_path / "run", sfplus_kwargs=sfplus_kwargs, weight_decay=args_decay, max_steps=1)
    trainer.create_optimizer()
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] == expected and no_decay["weight_decay"] == 0.0


def test_evaluation_during_training_does_not_disturb_it(tmp_path: Path) -> None:
    plain = make_trainer(tmp_path / "plain", max_steps=12)
    plain.train()
    evaluated = make_trainer(tmp_path / "eval", max_steps=12, eval_strategy="steps", eval_steps=4)
    evaluated.train()
    assert sum("eval_loss" in row for row in evaluated.state.log_history) == 3
    assert evaluated.sfplus_optimizer.train_mode
    gap = max((a - b).abs().max().item() for a, b in zip(plain.model.parameters(), evaluated.model.parameters()))
    assert gap < 1e-5, gap  # x <-> y round trips cost only rounding


def test_load_best_model_at_end_keeps_the_best_x(tmp_path: Path) -> None:
    trainer = make_trainer(
        tmp_path / "run", max_steps=12, eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4,
        load_best_model_at_end=True, metric_for_best_model="eval_loss",
    )  # fmt: skip
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    assert not trainer.sfplus_optimizer.train_mode, "the loaded best weights are an x"
    trainer.save_model(str(tmp_path / "final"))
    want = safetensors_torch.load_file(str(best / "model.safetensors"))
    got = safetensors_torch.load_file(str(tmp_path / "final" / "model.safetensors"))
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
