"""The fast update moves y directly (``sfplus.functional``); here it is checked against the explicit form.

The method as written (docs/algorithm.md, "One step") keeps x; the fast class keeps only z, m, v and the
parameter y, and rebuilds x from x = (y - (1-β̃_{k-1}) z) / β̃_{k-1}. For random tensors and step scalars, one call of
``schedulefree_plus_update`` must equal equations 5-10 written out with an explicit x, and the
eval/train conversions must be the exact inverse pair that formula says.
"""

from __future__ import annotations

import pytest
import torch

from sfplus import functional as F

SCALARS = [
    # k, alpha, beta_prev, beta, c, weight_decay
    (1, 0.3, 0.9, 0.9, 1.0, 0.0),
    (2, 0.05, 0.9, 0.9, 0.5, 10.0),
    (7, 0.2, 0.8, 0.85, 0.125, 2.0),  # annealing: β̃ changes
    (40, 1e-3, 0.95, 0.965, 0.01, 50.0),
    (3, 0.0, 0.5, 0.6, 0.25, 5.0),  # α = 0
]


def _tensors(gen: torch.Generator, n: int = 37) -> dict[str, torch.Tensor]:
    def r() -> torch.Tensor:
        return torch.randn(n, generator=gen, dtype=torch.float64)

    return {"y": r(), "z": r(), "m": r() * 0.1, "v": r().abs() * 0.01, "g": r()}


@pytest.mark.parametrize("path", ["single", "foreach"])
@pytest.mark.parametrize("k, alpha, beta_prev, beta, c, weight_decay", SCALARS)
def test_update_equals_explicit_equations(path, k, alpha, beta_prev, beta, c, weight_decay, gen):
    beta1, beta2, eps = 0.9, 0.95, 1e-8
    t = _tensors(gen)
    y, z, m, v, g = (t[key].clone() for key in ("y", "z", "m", "v", "g"))
    F.schedulefree_plus_update(
        [y], [g], [y], [z], [m], [v], idle_ys=[], idle_zs=[], idle_params=[], k=k, alpha=alpha, beta=beta,
        beta_prev=beta_prev, c=c, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, path=path,
    )  # fmt: skip
    # Equations 5-10 with an explicit x.
    x_prev = (t["y"] - (1 - beta_prev) * t["z"]) / beta_prev
    z_dec = t["z"] - alpha**2 * weight_decay * t["y"]  # 5
    m_k = beta1 * t["m"] + (1 - beta1) * t["g"]  # 6
    v_k = beta2 * t["v"] + (1 - beta2) * t["g"] ** 2
    z_k = z_dec - alpha * (m_k / (1 - beta1**k)) / ((v_k / (1 - beta2**k)).sqrt() + eps)  # 7
    x_k = (1 - c) * x_prev + c * z_k  # 9
    y_k = beta * x_k + (1 - beta) * z_k  # 10
    tol = dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(m, m_k, **tol)
    torch.testing.assert_close(v, v_k, **tol)
    torch.testing.assert_close(z, z_k, **tol)
    torch.testing.assert_close(y, y_k, **tol)


def test_idle_tensor_keeps_x_and_z_under_annealing(gen):
    t = _tensors(gen)
    y, z = t["y"].clone(), t["z"].clone()
    beta_prev, beta = 0.8, 0.9
    x = (y - (1 - beta_prev) * z) / beta_prev
    F.schedulefree_plus_update(
        [], [], [], [], [], [], idle_ys=[y], idle_zs=[z], idle_params=[y], k=3, alpha=0.1, beta=beta,
        beta_prev=beta_prev, c=0.3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0, path="single",
    )  # fmt: skip
    assert torch.equal(z, t["z"])
    torch.testing.assert_close(y, beta * x + (1 - beta) * z, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.965])
def test_eval_and_train_conversions_are_inverse(beta, gen):
    t = _tensors(gen)
    p, z = t["y"].clone(), t["z"]
    F.eval_from_train(p, p, z, beta)
    torch.testing.assert_close(p, (t["y"] - (1 - beta) * z) / beta, rtol=1e-12, atol=1e-13)  # x
    F.train_from_eval(p, p, z, beta)
    torch.testing.assert_close(p, t["y"], rtol=1e-12, atol=1e-13)
    # With an fp32 master y, train() is an exact copy and eval() leaves the master alone.
    master = t["y"].float()
    param = master.to(torch.bfloat16)
    F.eval_from_train(param, master, z.float(), beta)
    F.train_from_eval(param, master, z.float(), beta)
    assert torch.equal(param, master.to(torch.bfloat16)) and torch.equal(master, t["y"].float())
