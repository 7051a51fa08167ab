"""``sfplus.merge``: checkpoint merging and the averaging accessors, against ScheduleFree+'s own iterates.

The window merge claims (W_n x_n − W_1 x_1)/(W_n − W_1) is the weighted average of the base iterates z over
the steps between two checkpoints. We record z and the averaging weight w_k = c_k W_k at every step of a
real optimizer and compare.
"""

from __future__ import annotations

import copy

import pytest
import torch
from cases import state_z

import sfplus
from sfplus import ScheduleFreePlus, ScheduleFreePlusReference
from sfplus.merge import (
    averaging_weights,
    combine,
    merge_checkpoints,
    merge_coefficients,
    saved_in_eval_mode,
    weights_at_x,
)


def tiny_run(steps: int, save_at: set[int], *, seed: int = 0, c_warmup: int = 3, lrs=(1.0, 1.0), cls=ScheduleFreePlus):
    """Train a 2-layer net on a realizable regression; return checkpoints and every step's (w_k, z_k)."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    teacher = torch.randn(2, 4, generator=g, dtype=torch.float64)
    params = list(net.parameters())
    opt = cls(
        [{"params": params[:2], "lr": lrs[0]}, {"params": params[2:], "lr": lrs[1]}],
        c_warmup=c_warmup, r=1.0, polyak_beta=0.9,
    )  # fmt: skip
    names = [n for n, _ in net.named_parameters()]
    history, checkpoints = [], {}
    for k in range(1, steps + 1):
        x = torch.randn(16, 4, generator=g, dtype=torch.float64)
        loss = torch.nn.functional.mse_loss(net(x), x @ teacher.T)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
        zs = {n: state_z(opt, p).clone() for n, p in zip(names, params)}
        ws = [g_["weight_sum"] * c for g_, c in zip(opt.param_groups, opt.stats["cs"])]  # w_k = c_k W_k
        history.append((k, ws, zs))
        if k in save_at:
            with opt.eval_params():
                x_weights = {n: t.clone() for n, t in net.state_dict().items()}
                eval_state = copy.deepcopy(opt.state_dict())  # (a state dict shares the state's tensors)
            train_state = copy.deepcopy(opt.state_dict())
            y_weights = {n: t.clone() for n, t in net.state_dict().items()}
            checkpoints[k] = (x_weights, train_state, y_weights, eval_state)
    return names, history, checkpoints


def explicit_average(names, history, after: int, until: int, group_of) -> dict[str, torch.Tensor]:
    out = {}
    for name in names:
        gi = group_of[name]
        num = sum(ws[gi] * zs[name] for k, ws, zs in history if after < k <= until)
        den = sum(ws[gi] for k, ws, zs in history if after < k <= until)
        out[name] = num / den
    return out


def test_window_merge_is_the_average_of_z_between_checkpoints() -> None:
    names, history, ckpts = tiny_run(30, {10, 30})
    group_of = {n: (0 if i < 2 else 1) for i, n in enumerate(names)}
    states = [ckpts[10][0], ckpts[30][0]]
    sums = [averaging_weights(ckpts[k][1], names) for k in (10, 30)]
    merged = combine(states, merge_coefficients("window", sums, list(states[0]), steps=[10, 30]))
    want = explicit_average(names, history, 10, 30, group_of)
    full = explicit_average(names, history, 0, 30, group_of)
    for name in names:
        torch.testing.assert_close(merged[name], want[name], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(states[1][name], full[name], rtol=1e-9, atol=1e-10)  # x_30 itself
    assert any((merged[n] - states[1][n]).abs().max() > 1e-4 for n in names), "window must differ from x_30"


def test_per_group_weight_sums_need_names_and_get_them() -> None:
    names, history, ckpts = tiny_run(12, {5, 12}, lrs=(1.0, 0.5), c_warmup=0)
    state = ckpts[12][1]
    assert state["param_groups"][0]["weight_sum"] != state["param_groups"][1]["weight_sum"]
    with pytest.raises(ValueError, match="different weight_sum"):
        averaging_weights(state)
    sums = [averaging_weights(ckpts[k][1], names) for k in (5, 12)]
    merged = combine([ckpts[5][0], ckpts[12][0]], merge_coefficients("window", sums, names, steps=[5, 12]))
    group_of = {n: (0 if i < 2 else 1) for i, n in enumerate(names)}
    want = explicit_average(names, history, 5, 12, group_of)
    for name in names:
        torch.testing.assert_close(merged[name], want[name], rtol=1e-9, atol=1e-10)


def test_window_from_the_warm_start_gives_x_and_online_weights_by_w() -> None:
    names, _, ckpts = tiny_run(15, {2, 15}, c_warmup=3)
    first, last = ckpts[2], ckpts[15]
    sums = [averaging_weights(c[1], names) for c in (first, last)]
    assert sums[0] == {"*": 0.0}  # saved during the warm start: nothing averaged yet
    window = combine([first[0], last[0]], merge_coefficients("window", sums, names, steps=[2, 15]))
    online = combine([first[0], last[0]], merge_coefficients("online", sums, names))
    for name in names:
        torch.testing.assert_close(window[name], last[0][name], rtol=0, atol=1e-12)
        torch.testing.assert_close(online[name], last[0][name], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="warm start"):
        merge_coefficients("online", [sums[0], sums[0]], names)


def test_uniform_and_online_on_two_runs() -> None:
    names, _, a = tiny_run(10, {10}, seed=1)
    _, _, b = tiny_run(20, {20}, seed=2)
    xa, sa = a[10][0], a[10][1]
    xb, sb = b[20][0], b[20][1]
    wa, wb = sa["param_groups"][0]["weight_sum"], sb["param_groups"][0]["weight_sum"]
    sums = [averaging_weights(s, names) for s in (sa, sb)]
    uniform = combine([xa, xb], merge_coefficients("uniform", sums, names))
    online = combine([xa, xb], merge_coefficients("online", sums, names))
    for name in names:
        torch.testing.assert_close(uniform[name], (xa[name] + xb[name]) / 2)
        torch.testing.assert_close(online[name], (wa * xa[name] + wb * xb[name]) / (wa + wb))


def test_x_recovered_from_weights_saved_in_train_mode() -> None:
    names, _, ckpts = tiny_run(8, {8})
    x_weights, opt_state, y_weights, _ = ckpts[8]
    assert any((x_weights[n] - y_weights[n]).abs().max() > 1e-6 for n in names)
    x = weights_at_x(y_weights, opt_state, names)
    for name in names:
        torch.testing.assert_close(x[name], x_weights[name], rtol=1e-9, atol=1e-12)


def test_combine_rejects_mismatches() -> None:
    a = {"w": torch.zeros(2, 2), "n": torch.tensor(3)}
    with pytest.raises(ValueError, match="shape"):
        combine([a, {"w": torch.zeros(3), "n": torch.tensor(3)}], [0.5, 0.5])
    with pytest.raises(ValueError, match="different tensors"):
        combine([a, {"w": torch.zeros(2, 2)}], [0.5, 0.5])
    with pytest.raises(ValueError, match="non-float"):
        combine([a, {"w": torch.zeros(2, 2), "n": torch.tensor(4)}], [0.5, 0.5])
    with pytest.raises(ValueError, match="increasing step"):
        merge_coefficients("window", [{"*": 1.0}, {"*": 2.0}], ["w"], steps=[20, 10])
    with pytest.raises(ValueError, match="does not grow"):
        merge_coefficients("window", [{"*": 2.0}, {"*": 2.0}], ["w"])
    bf16 = combine([{"w": torch.ones(2, dtype=torch.bfloat16)}] * 2, [0.5, 0.5])
    assert bf16["w"].dtype == torch.bfloat16


def test_merge_checkpoints_from_either_mode() -> None:
    """The one call: x from eval-mode weights as they are, x recovered from train-mode ones, W from the states."""
    names, history, ckpts = tiny_run(30, {10, 30})
    group_of = {n: (0 if i < 2 else 1) for i, n in enumerate(names)}
    want = explicit_average(names, history, 10, 30, group_of)
    at_x = merge_checkpoints([ckpts[k][0] for k in (10, 30)], "window", [ckpts[k][3] for k in (10, 30)], steps=[10, 30])
    at_y = merge_checkpoints(
        [ckpts[k][2] for k in (10, 30)], "window", [ckpts[k][1] for k in (10, 30)], param_names=names, steps=[10, 30]
    )
    for name in names:
        torch.testing.assert_close(at_x[name], want[name], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(at_y[name], want[name], rtol=1e-9, atol=1e-10)
    uniform = merge_checkpoints([ckpts[k][0] for k in (10, 30)])
    for name in names:
        torch.testing.assert_close(uniform[name], (ckpts[10][0][name] + ckpts[30][0][name]) / 2)
    with pytest.raises(ValueError, match="optimizer state"):
        merge_checkpoints([ckpts[k][0] for k in (10, 30)], "online")
    with pytest.raises(ValueError, match="param_names"):
        merge_checkpoints([ckpts[k][2] for k in (10, 30)], "online", [ckpts[k][1] for k in (10, 30)])
    with pytest.raises(ValueError, match="unknown merge mode"):
        merge_checkpoints([ckpts[10][0]], "median")
    assert sfplus.merge_checkpoints is merge_checkpoints and sfplus.averaging_weights is averaging_weights


def test_saved_in_eval_mode_and_weights_at_x_of_the_reference_class() -> None:
    names, _, ckpts = tiny_run(8, {8}, cls=ScheduleFreePlusReference)
    x_weights, train_state, y_weights, eval_state = ckpts[8]
    assert saved_in_eval_mode(eval_state) and not saved_in_eval_mode(train_state)
    assert any(not torch.equal(x_weights[n], y_weights[n]) for n in names)
    from_y = weights_at_x(y_weights, train_state, names)  # the reference's stored x, exactly
    assert all(torch.equal(from_y[n], x_weights[n]) for n in names)
    from_x = weights_at_x(x_weights, eval_state, names)  # eval mode: the weights are x already
    assert all(from_x[n] is x_weights[n] for n in names)


def test_weights_at_x_uses_the_fp32_master_of_a_bf16_model() -> None:
    """Weights saved in train mode hold y rounded to bf16; x comes from the fp32 master y in the state."""
    g = torch.Generator().manual_seed(3)
    w = torch.nn.Parameter(torch.randn(64, generator=g).to(torch.bfloat16))
    opt = ScheduleFreePlus([w], c_warmup=0, sf_beta1=0.5)
    for _ in range(10):
        opt.zero_grad()
        loss = (w.float() ** 2).mean()
        loss.backward()
        opt.step(loss=loss)
    state = opt.state_dict()
    x = weights_at_x({"w": w.detach().clone()}, state, ["w"])["w"]
    master = opt.state[w]["y"].double()
    want = master + (1.0 - 1.0 / float(opt.param_groups[0]["y_beta"])) * opt.state[w]["d"].double()  # d = z - y
    assert torch.equal(x, want.to(torch.bfloat16))


def test_the_lab_merges_through_the_library() -> None:
    from sfplus_lab import merge_math

    assert merge_math.weight_sums_by_name is averaging_weights and merge_math.x_from_train_state is weights_at_x
    assert merge_math.combine is combine and merge_math.merge_coefficients is merge_coefficients
