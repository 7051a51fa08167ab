"""ScheduleFreePlusCallback with the real ``lightning`` package, on a realizable regression (minimum 0).

Checks: F is the mean over the micro-batches with ``accumulate_grad_batches`` (Lightning's closure alone
returns the last micro-batch's loss divided by N); validation and testing run at x and training at y;
checkpoints hold x and the optimizer state in eval mode; resuming from one matches an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

L = pytest.importorskip("lightning.pytorch")

from sfplus import ScheduleFreePlus  # noqa: E402
from sfplus.integrations.lightning import ScheduleFreePlusCallback  # noqa: E402

DIM = 8


def regression_data(n: int, seed: int) -> torch.utils.data.TensorDataset:
    """y = W* x exactly: the minimum loss is 0, so the Polyak step stays bounded (see the project notes)."""
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(123))
    x = torch.randn(n, DIM, generator=g)
    return torch.utils.data.TensorDataset(x, x @ w_true.T)


class Regressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(DIM, 16), torch.nn.Tanh(), torch.nn.Linear(16, DIM))
        self.micro_losses: list[float] = []
        self.modes: dict[str, set[bool]] = {"train": set(), "val": set(), "test": set()}

    def _sfplus(self) -> ScheduleFreePlus:
        return self.optimizers().optimizer

    def training_step(self, batch, batch_idx):
        self.modes["train"].add(self._sfplus().train_mode)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.micro_losses.append(loss.item())
        return loss

    def validation_step(self, batch, batch_idx):
        self.modes["val"].add(self.trainer.optimizers[0].train_mode)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("val_loss", loss)
        return loss

    def test_step(self, batch, batch_idx):
        self.modes["test"].add(self.trainer.optimizers[0].train_mode)
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return ScheduleFreePlus(self.parameters(), warmup_steps=2, c_warmup=4)


def loaders():
    # No shuffling: a resumed run must see the same batches as an uninterrupted one, and Lightning does not
    # restore a DataLoader generator's state.
    train = torch.utils.data.DataLoader(regression_data(256, seed=1), batch_size=16)
    val = torch.utils.data.DataLoader(regression_data(64, seed=2), batch_size=64)
    return train, val


def trainer(root: Path, **options) -> L.Trainer:
    settings = dict(
        default_root_dir=str(root),
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ScheduleFreePlusCallback()],
        num_sanity_val_steps=0,
        deterministic=True,
    )
    settings.update(options)
    return L.Trainer(**settings)


def record_optimizer_losses(model: L.LightningModule) -> list[float]:
    """The loss F the optimizer used at each step (filled in as the model's optimizer steps)."""
    seen_F: list[float] = []
    original = model.configure_optimizers

    def configure():
        opt = original()
        opt.register_step_post_hook(lambda o, a, k: seen_F.append(o.stats["loss"]))
        return opt

    model.configure_optimizers = configure
    return seen_F


def test_accumulated_loss_modes_and_final_x(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    model = Regressor()
    seen_F = record_optimizer_losses(model)
    train, val = loaders()
    run = trainer(tmp_path, accumulate_grad_batches=2, enable_checkpointing=False)
    run.fit(model, train, val)
    opt = run.optimizers[0]
    assert len(model.micro_losses) == 32 and len(seen_F) == 16 == opt.param_groups[0]["k"]
    for step, F in enumerate(seen_F):
        mean = (model.micro_losses[2 * step] + model.micro_losses[2 * step + 1]) / 2
        assert F == pytest.approx(mean, rel=1e-5), (step, F, mean)
    assert model.modes["train"] == {True} and model.modes["val"] == {False}
    assert not opt.train_mode, "after fit the model holds x"
    run.test(model, val, verbose=False)
    assert model.modes["test"] == {False} and not opt.train_mode
    first = model.micro_losses[0]
    assert run.callback_metrics["test_loss"].item() < 0.5 * first


def test_checkpoint_holds_x_and_resume_matches(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    full_model = Regressor()
    train, val = loaders()
    full = trainer(tmp_path / "full", max_epochs=4, enable_checkpointing=False)
    full.fit(full_model, train, val)
    want = {k: v.clone() for k, v in full_model.state_dict().items()}  # x: fit ended in eval mode

    L.seed_everything(0, verbose=False)
    part_model = Regressor()
    train, val = loaders()
    part = trainer(tmp_path / "part", max_epochs=2, enable_checkpointing=False)
    part.fit(part_model, train, val)
    opt = part.optimizers[0]
    opt.train()  # save while training, the case where Lightning alone would write y
    y = {k: v.clone() for k, v in part_model.state_dict().items()}
    ckpt = tmp_path / "mid.ckpt"
    part.save_checkpoint(ckpt)
    assert opt.train_mode, "saving must leave training mode as it was"
    after = part_model.state_dict()
    assert all(torch.equal(after[k], y[k]) for k in y), "saving must leave y as it was, bit for bit"
    with opt.eval_params():
        x = {k: v.clone() for k, v in part_model.state_dict().items()}
    saved = torch.load(ckpt, weights_only=False)
    gap_x = max((saved["state_dict"][k] - x[k]).abs().max().item() for k in x)
    gap_y = max((saved["state_dict"][k] - y[k]).abs().max().item() for k in y)
    assert gap_x < 1e-6 and gap_y > 1e-3, (gap_x, gap_y)  # x is rebuilt from y and z: exact to rounding
    assert all(g["train_mode"] is False for g in saved["optimizer_states"][0]["param_groups"])

    L.seed_everything(0, verbose=False)
    resumed_model = Regressor()
    train, val = loaders()
    resumed = trainer(tmp_path / "resumed", max_epochs=4, enable_checkpointing=False)
    resumed.fit(resumed_model, train, val, ckpt_path=str(ckpt))
    assert resumed.optimizers[0].param_groups[0]["k"] == full.optimizers[0].param_groups[0]["k"] == 64
    gap = max((resumed_model.state_dict()[k] - want[k]).abs().max().item() for k in want)
    assert gap < 1e-5, gap


class ManualRegressor(Regressor):
    """Manual optimization: the user calls opt.step() with no loss; the callback supplies it."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.seen_F: list[float] = []

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.micro_losses.append(loss.item())
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.seen_F.append(opt.optimizer.stats["loss"])


def test_manual_optimization_step_without_loss(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    model = ManualRegressor()
    train, val = loaders()
    trainer(tmp_path, max_epochs=1, enable_checkpointing=False).fit(model, train, val)
    assert len(model.seen_F) == 16
    assert model.seen_F == pytest.approx(model.micro_losses, rel=1e-6)


def test_grad_scaler_step_gets_the_unscaled_mean_loss(tmp_path: Path) -> None:
    """precision="16-mixed" steps through GradScaler.step(optimizer), which passes no closure and no loss."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    L.seed_everything(0, verbose=False)
    model = Regressor()
    seen_F = record_optimizer_losses(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    plugin = MixedPrecision(precision="16-mixed", device="cpu", scaler=scaler)
    train, val = loaders()
    run = trainer(tmp_path, max_epochs=1, enable_checkpointing=False, plugins=[plugin], accumulate_grad_batches=2)
    run.fit(model, train, val)
    assert len(seen_F) == 8 and len(model.micro_losses) == 16
    means = [(model.micro_losses[2 * i] + model.micro_losses[2 * i + 1]) / 2 for i in range(8)]
    assert seen_F == pytest.approx(means, rel=1e-3)  # not 1024x: the scaler's factor is divided out
