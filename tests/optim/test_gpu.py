"""CUDA checks; skipped, with the reason, where CUDA is not available.

- mixed fp32/bf16/fp16 params in one optimizer: foreach equals the for-loop;
- the compiled (fused) step equals the eager for-loop;
- a state dict saved on CPU loads into a CUDA optimizer without mutating the argument, and 5 steps
  match the CPU run;
- the foreach step's peak memory stays within the documented intermediates.
"""

from __future__ import annotations

import copy

import cases
import pytest
import torch
from cases import ALL_FEATURES, MLPProblem

import sfplus

pytestmark = pytest.mark.gpu


def _on(problem: MLPProblem, device: str, dtype: torch.dtype | None = None) -> MLPProblem:
    def move(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=device, dtype=dtype or t.dtype)

    return MLPProblem(
        params={n: torch.nn.Parameter(move(p)) for n, p in problem.params.items()},
        inputs=move(problem.inputs),
        targets=move(problem.targets),
    )


def _mixed_params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(64, 32, generator=gen).to("cuda", dtype))
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float32)
    ]


def _mixed_loss(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return sum(((p.float() - 0.5) ** 2).mean() for p in params)


def test_mixed_dtypes_foreach_matches_forloop():
    runs = []
    for foreach in (False, True):
        params = _mixed_params(60)
        opt = cases.ScheduleFreePlus(params, foreach=foreach, polyak_beta=0.9)
        for _ in range(5):
            opt.zero_grad()
            loss = _mixed_loss(params)
            loss.backward()
            opt.step(loss=loss)
        assert [p.dtype for p in params] == [torch.float32, torch.bfloat16, torch.float16, torch.float32]
        runs.append([p.detach().clone() for p in params])
    for a, b in zip(*runs):
        eps = torch.finfo(a.dtype).eps
        torch.testing.assert_close(a, b, rtol=5 * eps, atol=5 * eps)


def test_compiled_step_matches_eager():
    runs = []
    for flags in (dict(foreach=False), dict(fused=True)):
        problem = _on(MLPProblem.make(torch.Generator().manual_seed(61)), "cuda", torch.float32)
        opt = cases.ScheduleFreePlus(problem.groups(), **flags, **ALL_FEATURES)
        for _ in range(6):
            opt.step(problem.closure_for(opt))
        runs.append([p.detach().clone() for p in problem.params.values()])
    assert sfplus.functional.resolve_path(None, True, [torch.zeros(1, device="cuda")]) == "fused", "did not compile"
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cpu_state_dict_loads_into_cuda_and_steps_alike():
    cpu = MLPProblem.make(torch.Generator().manual_seed(62))
    opt = cases.ScheduleFreePlus(cpu.groups(), **ALL_FEATURES)
    for _ in range(4):
        opt.step(cpu.closure_for(opt))
    saved = opt.state_dict()
    kept = copy.deepcopy(saved)
    cuda = _on(cpu, "cuda")
    twin = cases.ScheduleFreePlus(cuda.groups(), **ALL_FEATURES)
    twin.load_state_dict(saved)
    for pid, state in saved["state"].items():  # the argument is neither moved nor changed
        for key, t in state.items():
            assert t.device.type == "cpu" and torch.equal(t, kept["state"][pid][key])
    assert all(t.is_cuda for state in twin.state.values() for t in state.values())
    for _ in range(5):
        opt.step(cpu.closure_for(opt))
        twin.step(cuda.closure_for(twin))
    for name, p in cpu.params.items():
        torch.testing.assert_close(cuda.params[name].detach().cpu(), p.detach(), rtol=1e-9, atol=1e-12)


def test_foreach_step_peak_memory_is_bounded():
    """Beyond the params, grads and z, m, v, a foreach step allocates one param-sized list (the Adam
    denominator) plus small per-tensor temporaries: the peak rise stays below 2× the param bytes."""
    params = [torch.nn.Parameter(torch.zeros(1 << 20, device="cuda")) for _ in range(4)]
    opt = cases.ScheduleFreePlus(params, foreach=True)
    for p in params:
        p.grad = torch.full_like(p, 0.01)
    opt.step(loss=1.0)  # allocates the state
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    opt.step(loss=1.0)
    torch.cuda.synchronize()
    rise = torch.cuda.max_memory_allocated() - before
    assert rise < 2 * param_bytes, f"peak rose by {rise} bytes for {param_bytes} bytes of params"
