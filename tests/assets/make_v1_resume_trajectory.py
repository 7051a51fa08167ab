"""Make ``v1_resume_trajectory.pt``: what the state format 1 code (z in the state) does after loading
``state_dict_v1.pt``, step by step, so that later formats can be held to it.

Run once with the last format-1 commit (f8ca7ce, before the fast class kept d = z - y), e.g.

    git archive f8ca7ce src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src python tests/assets/make_v1_resume_trajectory.py

and commit the output. tests/optim/test_state_dict.py resumes the same file with the current code and
compares the parameters after every step (float64, a stated tolerance: d = z - y is rounded once on load).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for cases.py
sys.path.insert(0, str(HERE))  # for make_state_dict_v1

import cases  # noqa: E402
import make_state_dict_v1 as v1  # noqa: E402

import sfplus  # noqa: E402
import sfplus._base  # noqa: E402

#: Steps taken after the load.
NUM_STEPS = 10


def load_v1():
    """``state_dict_v1.pt`` loaded with the importable sfplus: (the saved dict, its problem with the saved
    weights, the optimizer with the saved state)."""
    saved = torch.load(HERE / "state_dict_v1.pt", weights_only=True)
    problem = v1.problem()
    with torch.no_grad():
        for name, p in problem.params.items():
            p.copy_(saved["params"][name])
    opt = cases.ScheduleFreePlus(problem.groups(group1_lr=0.5), **v1.SETTINGS)
    opt.load_state_dict(saved["optimizer"])
    return saved, problem, opt


def resume() -> tuple[list[dict[str, torch.Tensor]], list[float]]:
    """Load the 0.1.0 state dict with the importable sfplus and step; the params after each step, and α."""
    _, problem, opt = load_v1()
    params, alphas = [], []
    for _ in range(NUM_STEPS):
        opt.step(problem.closure_for(opt))
        params.append({name: p.detach().clone() for name, p in problem.params.items()})
        alphas.append(float(opt.stats["alpha"]))
    return params, alphas


def main(path: Path) -> None:
    params, alphas = resume()
    state_format = getattr(sfplus._base, "STATE_FORMAT", 1)  # format 1 had no number
    torch.save({"state_format": state_format, "params": params, "alphas": alphas}, path)
    print(f"wrote {path} ({NUM_STEPS} steps, state format {state_format}, sfplus from {sfplus.__file__})")


if __name__ == "__main__":
    main(HERE / "v1_resume_trajectory.pt")
