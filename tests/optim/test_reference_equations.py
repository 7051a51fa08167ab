"""Both classes against docs/algorithm.md ("One step") written out by hand, in float64, with every feature on.

The transcription below is deliberately independent of the library: plain tensors, one line per
equation, no shared helpers.
"""

import math

import cases
import pytest
import torch

FEATURES = dict(
    lr=1.0,
    warmup_steps=4,
    betas=(0.9, 0.95),
    weight_decay=10.0,
    sf_beta1=0.8,
    sf_beta1_max=0.965,
    sf_beta1_anneal_steps=20,
    polyak_beta=0.9,
    c_warmup=5,
    r=1.0,
)


def transcription(
    w0, grad_and_loss, num_steps, *, lr, warmup_steps, betas, weight_decay, sf_beta1, sf_beta1_max,
    sf_beta1_anneal_steps, polyak_beta, c_warmup, r, eps=1e-8, weight_lr_power=2.0, loss_floor=0.0,
):  # fmt: skip
    """docs/algorithm.md, eqs. 1-10, on a list of tensors. Returns the y after every step and the final x."""
    beta1, beta2 = betas
    x = [w.clone() for w in w0]
    y = [w.clone() for w in w0]
    z = [w.clone() for w in w0]
    m = [torch.zeros_like(w) for w in w0]
    v = [torch.zeros_like(w) for w in w0]
    e, W, gmax = 0.0, 0.0, eps
    ys = []
    for k in range(1, num_steps + 1):
        g, F = grad_and_loss(y)
        p = min(k / sf_beta1_anneal_steps, 1.0)
        bt = 1 - math.exp((1 - p) * math.log(1 - sf_beta1) + p * math.log(1 - sf_beta1_max))  # 1
        I = sum(bt * torch.sum(gi * (zi - xi)).item() for gi, zi, xi in zip(g, z, x))  # 2
        L = sum(gi.abs().sum().item() for gi in g)  # 3
        e = polyak_beta * e + (1 - polyak_beta) * math.sqrt(math.pi / 2) * L
        e_hat = e / (1 - polyak_beta**k)
        P = max(0.0, F - loss_floor + I) / max(e_hat, 1e-300)  # 4
        gamma = lr * min(1.0, k / warmup_steps)
        alpha = gamma * P
        for i in range(len(w0)):
            z[i] = z[i] - alpha**2 * weight_decay * y[i]  # 5
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]  # 6
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
            mh = m[i] / (1 - beta1**k)
            vh = v[i] / (1 - beta2**k)
            z[i] = z[i] - alpha * mh / (vh.sqrt() + eps)  # 7
        gmax = max(gmax, alpha)  # 8
        if k <= c_warmup:
            c = 1.0
        else:
            wk = k**r * gmax**weight_lr_power
            W += wk
            c = wk / W
        for i in range(len(w0)):
            x[i] = (1 - c) * x[i] + c * z[i]  # 9
            y[i] = bt * x[i] + (1 - bt) * z[i]  # 10
        ys.append([t.clone() for t in y])
    return ys, x


def regression_problem(seed=0, n=64, d=6):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=gen, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    w0 = [torch.randn(d, generator=gen, dtype=torch.float64) * 0.5, torch.zeros(1, dtype=torch.float64)]

    def loss_fn(w, bias):
        return 0.5 * ((A @ w + bias - b) ** 2).mean()

    def grad_and_loss(params):
        params = [t.detach().clone().requires_grad_(True) for t in params]
        loss = loss_fn(*params)
        grads = torch.autograd.grad(loss, params)
        return list(grads), loss.item()

    return w0, loss_fn, grad_and_loss


PATHS = [
    (cases.ScheduleFreePlusReference, {}),
    (cases.ScheduleFreePlus, dict(foreach=False, fused=False)),
    (cases.ScheduleFreePlus, dict(foreach=True, fused=False)),
    (cases.ScheduleFreePlus, dict(fused=True)),
]


@pytest.mark.parametrize("cls,path", PATHS, ids=["reference", "single", "foreach", "fused"])
@pytest.mark.parametrize("via", ["loss", "closure"])
def test_matches_transcription_every_step(cls, path, via):
    num_steps = 40
    w0, loss_fn, grad_and_loss = regression_problem()
    expected_ys, expected_x = transcription(w0, grad_and_loss, num_steps, **FEATURES)
    params = [torch.nn.Parameter(w.clone()) for w in w0]
    opt = cls(params, **path, **FEATURES)
    for k in range(num_steps):
        opt.zero_grad()
        if via == "loss":
            loss = loss_fn(*params)
            loss.backward()
            opt.step(loss=loss)
        else:

            def closure():
                opt.zero_grad()
                loss = loss_fn(*params)
                loss.backward()
                return loss

            opt.step(closure)
        assert opt.stats["k"] == k + 1
        for got, want in zip(params, expected_ys[k]):
            torch.testing.assert_close(got.detach(), want, rtol=1e-6, atol=1e-12, msg=f"y differs at step {k + 1}")
    opt.eval()
    for got, want in zip(params, expected_x):
        torch.testing.assert_close(got.detach(), want, rtol=1e-6, atol=1e-12)


def test_fast_keeps_three_buffers_per_param():
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    opt = cases.ScheduleFreePlus(params)
    loss = sum((p**2).sum() for p in params)
    loss.backward()
    opt.step(loss=loss)
    for p in params:
        state = opt.state[p]
        assert sorted(state) == ["d", "m", "v"]
        assert all(t.shape == p.shape for t in state.values())
