"""The optimizer uses exactly the F and g it is given.

On a 2-element float64 tensor, F_k and g_k are set by hand, unrelated to the parameters, so a class that
recomputed or rescaled either would drift from the transcription of docs/algorithm.md ("One step")
(``test_reference_equations.transcription``). Checked for 3 steps, through the reference's explicit
x, y, z, m, v and through the fast class's z, m, v, y and x, and α against equation 4 written out.
"""

from __future__ import annotations

import math

import pytest
import torch
from cases import CLASSES
from test_reference_equations import FEATURES, transcription

W0 = [torch.tensor([0.5, -1.25], dtype=torch.float64)]
GRADS = [
    torch.tensor([0.3, -0.7], dtype=torch.float64),
    torch.tensor([-0.2, 0.4], dtype=torch.float64),
    torch.tensor([0.05, 0.9], dtype=torch.float64),
]
LOSSES = [2.0, 1.5, 1.75]
SETTINGS = dict(FEATURES, warmup_steps=2, sf_beta1_anneal_steps=3, c_warmup=1)


def _hand_set():
    calls = iter(range(len(LOSSES)))

    def grad_and_loss(_params):
        i = next(calls)
        return [GRADS[i]], LOSSES[i]

    return grad_and_loss


def test_alpha_of_step_one_by_hand():
    """Step 1 with every feature on: I = 0, ê = √(π/2)·‖g‖₁, γ = lr·1/2 (warmup 2), so α = F / (2ê)."""
    (p,) = (torch.nn.Parameter(w.clone()) for w in W0)
    opt = CLASSES[0]([p], **SETTINGS)
    p.grad = GRADS[0].clone()
    opt.step(loss=LOSSES[0])
    e_hat = math.sqrt(math.pi / 2) * 1.0  # ‖(0.3, -0.7)‖₁ = 1
    assert opt.stats["alpha"] == pytest.approx(0.5 * 2.0 / e_hat, rel=1e-14)
    assert opt.stats["inner"] == 0.0 and opt.stats["c"] == 1.0


@pytest.mark.parametrize("cls", CLASSES)
def test_three_hand_set_steps_match_the_equations(cls):
    expected_ys, expected_x = transcription(W0, _hand_set(), len(LOSSES), **SETTINGS)
    p = torch.nn.Parameter(W0[0].clone())
    opt = cls([p], **SETTINGS)
    for k in range(len(LOSSES)):
        p.grad = GRADS[k].clone()
        opt.step(loss=torch.tensor(LOSSES[k], dtype=torch.float64))
        torch.testing.assert_close(p.detach(), expected_ys[k][0], rtol=1e-12, atol=1e-14, msg=f"y at step {k + 1}")
        state = opt.state[p]
        if "y" in state:  # the reference keeps y explicitly, and it is the parameter
            assert torch.equal(state["y"], p.detach())
    with opt.eval_params():
        torch.testing.assert_close(p.detach(), expected_x[0], rtol=1e-12, atol=1e-14)
    # m and v are the plain EMAs of the hand-set gradients.
    m = sum((1 - 0.9) * 0.9 ** (2 - i) * g for i, g in enumerate(GRADS))
    v = sum((1 - 0.95) * 0.95 ** (2 - i) * g * g for i, g in enumerate(GRADS))
    torch.testing.assert_close(opt.state[p]["m"], m, rtol=1e-14, atol=1e-16)
    torch.testing.assert_close(opt.state[p]["v"], v, rtol=1e-14, atol=1e-16)
