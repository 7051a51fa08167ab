"""The fast update moves y and d = z - y directly (``sfplus.functional``); here it is checked against the
explicit form.

The method as written (docs/algorithm.md, "One step") keeps x and z; the fast class keeps only d, m, v and
the parameter y, with z = y + d and x = (y - (1-β̃_{k-1}) z) / β̃_{k-1} = y + (1 - 1/β̃_{k-1}) d. For random
tensors and step scalars, one call of ``schedulefree_plus_update`` must equal equations 5-10 written out
with an explicit x and z, and the eval/train conversions must be the exact inverse pair that formula says.
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

    return {"y": r(), "d": r(), "m": r() * 0.1, "v": r().abs() * 0.01, "g": r()}


@pytest.mark.parametrize("path", ["single", "foreach"])
@pytest.mark.parametrize("k, alpha, beta_prev, beta, c, weight_decay", SCALARS)
def test_update_equals_explicit_equations(path, k, alpha, beta_prev, beta, c, weight_decay, gen):
    beta1, beta2, eps = 0.9, 0.95, 1e-8
    t = _tensors(gen)
    y, d, m, v, g = (t[key].clone() for key in ("y", "d", "m", "v", "g"))
    F.schedulefree_plus_update(
        [y], [g], [y], [d], [m], [v], idle_ys=[], idle_ds=[], idle_params=[], k=k, alpha=alpha, beta=beta,
        beta_prev=beta_prev, c=c, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, path=path,
    )  # fmt: skip
    # Equations 5-10 with an explicit x and z (z = y + d).
    z_prev = t["y"] + t["d"]
    x_prev = (t["y"] - (1 - beta_prev) * z_prev) / beta_prev
    z_dec = z_prev - alpha**2 * weight_decay * t["y"]  # 5
    m_k = beta1 * t["m"] + (1 - beta1) * t["g"]  # 6
    v_k = beta2 * t["v"] + (1 - beta2) * t["g"] ** 2
    z_k = z_dec - alpha * (m_k / (1 - beta1**k)) / ((v_k / (1 - beta2**k)).sqrt() + eps)  # 7
    x_k = (1 - c) * x_prev + c * z_k  # 9
    y_k = beta * x_k + (1 - beta) * z_k  # 10
    tol = dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(m, m_k, **tol)
    torch.testing.assert_close(v, v_k, **tol)
    torch.testing.assert_close(y, y_k, **tol)
    torch.testing.assert_close(d, z_k - y_k, **tol)
    torch.testing.assert_close(y + d, z_k, **tol)


@pytest.mark.parametrize("path", ["single", "foreach"])
def test_skipped_step_keeps_every_bit(path, gen):
    """The identity coefficients (a skipped step, ``ok`` False) leave y, d, m and v exactly as they were."""
    t = _tensors(gen)
    y, d, m, v = (t[key].clone() for key in ("y", "d", "m", "v"))
    g = t["g"].clone()
    g[3] = float("inf")
    F.schedulefree_plus_update(
        [y], [g], [y], [d], [m], [v], idle_ys=[], idle_ds=[], idle_params=[], k=4, alpha=0.2, beta=0.9,
        beta_prev=0.85, c=0.3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=5.0, path=path,
        ok=torch.tensor(False),
    )  # fmt: skip
    for key, value in (("y", y), ("d", d), ("m", m), ("v", v)):
        assert torch.equal(value, t[key]), key


def test_idle_tensor_keeps_x_and_z_under_annealing(gen):
    t = _tensors(gen)
    y, d = t["y"].clone(), t["d"].clone()
    beta_prev, beta = 0.8, 0.9
    z = t["y"] + t["d"]
    x = (y - (1 - beta_prev) * z) / beta_prev
    F.schedulefree_plus_update(
        [], [], [], [], [], [], idle_ys=[y], idle_ds=[d], idle_params=[y], k=3, alpha=0.1, beta=beta,
        beta_prev=beta_prev, c=0.3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0, path="single",
    )  # fmt: skip
    torch.testing.assert_close(y + d, z, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(y, beta * x + (1 - beta) * z, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.965])
def test_eval_and_train_conversions_are_inverse(beta, gen):
    t = _tensors(gen)
    z = t["y"] + t["d"]
    master, d = t["y"].clone(), t["d"].clone()
    p = master.clone()
    F.eval_from_train(p, master, d, beta)
    torch.testing.assert_close(p, (t["y"] - (1 - beta) * z) / beta, rtol=1e-12, atol=1e-13)  # x
    F.train_from_eval(p, master, d, beta)
    assert torch.equal(p, t["y"]) and torch.equal(d, t["d"])  # nothing changed in eval mode: exact
    # An element changed in eval mode is the new x: z stays, y = βx + (1-β)z, d = z - y.
    F.eval_from_train(p, master, d, beta)
    p[0] = 0.25
    F.train_from_eval(p, master, d, beta)
    torch.testing.assert_close(p[0], beta * 0.25 + (1 - beta) * z[0], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(p[0] + d[0], z[0], rtol=1e-12, atol=1e-13)
    assert torch.equal(p[1:], t["y"][1:]) and torch.equal(d[1:], t["d"][1:])
    # Format 1 in eval mode without a kept y (version 0.1.0): y rebuilt from x and z, d = z - y.
    x = (t["y"] - (1 - beta) * z) / beta
    p = x.clone()
    d = F.train_from_eval_z(p, z.clone(), beta)
    torch.testing.assert_close(p, t["y"], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(d, t["d"], rtol=1e-12, atol=1e-13)
    # Eval mode with d but no kept y (a checkpoint loaded without it): y = x - (1 - 1/β) d, d unchanged.
    p = x.clone()
    F.train_from_eval_d(p, t["d"], beta)
    torch.testing.assert_close(p, t["y"], rtol=1e-12, atol=1e-13)
    # With an fp32 master y, train() is an exact copy and eval() leaves the master alone.
    master = t["y"].float()
    param = master.to(torch.bfloat16)
    F.eval_from_train(param, master, t["d"].float(), beta)
    F.train_from_eval(param, master, t["d"].float(), beta)
    assert torch.equal(param, master.to(torch.bfloat16)) and torch.equal(master, t["y"].float())
