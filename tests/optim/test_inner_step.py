"""The seam between the Polyak/averaging machinery and the base step (``sfplus._inner_step``).

Adam is the one base step the library ships; here a second one (sign descent, z ← z − α·sign(g), whose
Polyak denominator is ‖g‖₁ unscaled) is plugged into the reference class as one small class, and the
machinery must use its state, its Polyak statistic and scale, and its move, and nothing of Adam's.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import sfplus
from sfplus._adam import ADAM


class SignStep:
    state_keys: tuple[str, ...] = ()
    polyak_scale = 1.0

    def validate(self, group: dict[str, Any]) -> None:
        if group["eps"] > 1.0:  # a check of its own, to see that it is the one called
            raise ValueError(f"Invalid eps value for sign descent: {group['eps']}")

    def init_state(self, state: dict[str, Any], like: torch.Tensor) -> None:
        pass

    def polyak_statistic(self, g: torch.Tensor) -> torch.Tensor:
        return torch.sum(g.abs(), dtype=torch.float64)

    def move(self, z, g, state, *, alpha, k, group) -> None:
        z.sub_(alpha * torch.sign(g))


class SignReference(sfplus.ScheduleFreePlusReference):
    inner_step = SignStep()


def _quadratic(gen: torch.Generator):
    w = torch.nn.Parameter(torch.randn(5, 3, generator=gen, dtype=torch.float64))
    target = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    return w, lambda: 0.5 * ((w - target) ** 2).sum()


def test_the_library_steps_through_adam():
    assert sfplus.ScheduleFreePlus.inner_step is ADAM and sfplus.ScheduleFreePlusReference.inner_step is ADAM


def test_a_second_base_step_plugs_into_the_reference_class(gen):
    w, loss_fn = _quadratic(gen)
    opt = SignReference([w], **sfplus.PAPER, c_warmup=0)
    w0 = w.detach().clone()
    loss = loss_fn()
    loss.backward()
    g = w.grad.clone()
    opt.step(loss=loss)
    state = opt.state[w]
    assert sorted(state) == ["x", "y", "z"], "the base step's state only (no Adam moments)"
    alpha = float(loss.detach()) / (1.0 * float(g.abs().sum()))  # k = 1, I = 0: α = F / (scale · ‖g‖₁), scale 1
    assert opt.stats["alpha"] == pytest.approx(alpha, rel=1e-12)
    torch.testing.assert_close(state["z"], w0 - opt.stats["alpha"] * torch.sign(g), rtol=0, atol=1e-15)
    first = float(loss.detach())
    for _ in range(30):  # and it trains, through the machinery's averaging
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step(loss=loss)
    with opt.eval_params(), torch.no_grad():
        assert float(loss_fn()) < 0.5 * first
    twin = SignReference([torch.nn.Parameter(w.detach().clone())], **sfplus.PAPER, c_warmup=0)
    twin.load_state_dict(opt.state_dict())  # its state keys are what load checks against
    with pytest.raises(ValueError, match="sign descent"):
        SignReference([w], eps=2.0)
