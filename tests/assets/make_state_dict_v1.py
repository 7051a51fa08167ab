"""Make ``state_dict_v1.pt``: a ScheduleFreePlus state dict in the format of sfplus 0.1.0 (the first release).

Run once with that release (``python tests/assets/make_state_dict_v1.py``) and commit the output. Later
versions must load the file and keep stepping (tests/optim/test_state_dict.py); it is never regenerated.
The file holds the model parameters and the optimizer state after ``NUM_STEPS`` steps with every
feature on, so the back-fill of run state (k, e, W, γmax, β̃ of y) is exercised mid-run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for cases.py

from cases import MLPProblem  # noqa: E402

import sfplus  # noqa: E402

NUM_STEPS = 5
SETTINGS = dict(
    lr=1.0,
    warmup_steps=2,
    weight_decay=10.0,
    sf_beta1=0.8,
    sf_beta1_max=0.965,
    sf_beta1_anneal_steps=8,
    polyak_beta=0.9,
    c_warmup=2,
    r=1.0,
)


def problem() -> MLPProblem:
    return MLPProblem.make(torch.Generator().manual_seed(2026))


def main(path: Path) -> None:
    prob = problem()
    opt = sfplus.ScheduleFreePlus(prob.groups(group1_lr=0.5), **SETTINGS)
    for _ in range(NUM_STEPS):
        opt.step(prob.closure_for(opt))
    payload = {
        "sfplus_version": sfplus.__version__,
        "torch_version": str(torch.__version__),
        "params": {name: p.detach().clone() for name, p in prob.params.items()},
        "optimizer": opt.state_dict(),
    }
    torch.save(payload, path)
    print(f"wrote {path} (sfplus {sfplus.__version__}, k = {opt.param_groups[0]['k']})")


if __name__ == "__main__":
    main(Path(__file__).with_name("state_dict_v1.pt"))
