"""sfplus.jax's constructor: the PyTorch class's arguments, defaults, presets and error messages; the
loss through ``value=``; and ``import sfplus.jax`` without torch."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from cases import ERROR_CASES, ErrorCase

import sfplus

#: Arguments of the PyTorch class that have no JAX counterpart (docs/jax.md says why).
TORCH_ONLY = {"self", "params", "foreach", "fused", "capturable", "process_group"}
#: Arguments only the JAX version has.
JAX_ONLY = {"weight_decay_mask"}
SRC = str(Path(sfplus.__file__).resolve().parent.parent)


def test_same_arguments_and_defaults_as_the_pytorch_class(sj):
    torch_sig = inspect.signature(sfplus.ScheduleFreePlus.__init__).parameters
    jax_sig = inspect.signature(sj.schedule_free_plus).parameters
    torch_args = {name: p for name, p in torch_sig.items() if name not in TORCH_ONLY}
    jax_args = {name: p for name, p in jax_sig.items() if name not in JAX_ONLY}
    assert list(jax_args) == list(torch_args)
    for name, p in torch_args.items():
        assert (jax_args[name].kind, jax_args[name].default) == (p.kind, p.default), name


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.desc) for c in ERROR_CASES if not set(c.kwargs) & TORCH_ONLY],
)
def test_error_cases(sj, case: ErrorCase):
    """The table's bad arguments raise the same errors, with the same messages, as the PyTorch class."""
    with pytest.raises(case.error, match=case.match):
        sj.schedule_free_plus(**case.kwargs)


def test_torch_only_arguments_are_refused(sj):
    for name in ("foreach", "fused", "process_group"):
        with pytest.raises(TypeError, match=name):
            sj.schedule_free_plus(**{name: None})


def test_nonfinite_raise_is_refused_with_a_reason(sj):
    with pytest.raises(ValueError, match=r"Invalid nonfinite value: 'raise' for JAX"):
        sj.schedule_free_plus(nonfinite="raise")


def test_presets_resolve_as_in_pytorch(sj):
    """Unset arguments come from the preset, explicit ones win: the robust preset's warmup (W steps) makes the
    first α 1/W of the paper's, and ``**PAPER, warmup_steps=W`` equals the robust first step."""
    import jax.numpy as jnp

    params = {"w": jnp.asarray([1.0, -2.0, 3.0])}

    def first_alpha(**kwargs):
        opt = sj.schedule_free_plus(**kwargs)
        return float(opt.update(params, opt.init(params), params, value=2.0)[1].stats.alpha)

    warmup = sfplus.PRESETS["robust"]["warmup_steps"]
    assert warmup > 1
    paper, robust = first_alpha(**sfplus.PAPER), first_alpha()
    assert robust == pytest.approx(paper / warmup, rel=1e-6)
    assert first_alpha(**sfplus.PAPER, warmup_steps=warmup) == pytest.approx(robust, rel=1e-6)
    with pytest.raises(ValueError, match=r"Invalid preset value: 'fast'"):
        sj.schedule_free_plus(preset="fast")


def test_advisory_warnings_as_in_pytorch(sj):
    with pytest.warns(UserWarning, match="lr=0.001 looks like a learning rate"):
        sj.schedule_free_plus(lr=1e-3)
    with pytest.warns(UserWarning, match="weight_decay=0.1 is tiny"):
        sj.schedule_free_plus(weight_decay=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sj.schedule_free_plus()
        sj.schedule_free_plus(**sfplus.PAPER)
        sj.schedule_free_plus(lr=lambda count: 0.5)  # a schedule is not checked as a number


def test_update_needs_the_loss_and_the_params(sj):
    import jax.numpy as jnp

    opt = sj.schedule_free_plus()
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"needs this step's loss F .*value=loss"):
        opt.update(params, state, params)
    with pytest.raises(ValueError, match=r"needs params"):
        opt.update(params, state, value=1.0)
    with pytest.raises(ValueError, match=r"the loss must be a real scalar, got shape \(2,\)"):
        opt.update(params, state, params, value=jnp.ones(2))
    updates, state = opt.update(params, state, params, value=jnp.ones((1,)))  # 1 element is fine
    assert int(state.k) == 1


def test_state_is_a_pytree_that_round_trips(sj):
    """The state flattens to arrays only and unflattens to an equal state (what a checkpointer needs)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    opt = sj.schedule_free_plus()
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(2)}
    state = opt.init(params)
    updates, state = opt.update(jax.tree.map(jnp.ones_like, params), state, params, value=2.0)
    leaves, treedef = jax.tree.flatten(state)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    again = jax.tree.unflatten(treedef, [np.asarray(leaf) for leaf in leaves])
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), state, again))


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_import_sfplus_jax_without_torch(sj):
    """With torch made unimportable, ``import sfplus.jax`` works and trains a step; ``sfplus.PAPER`` too."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import jax.numpy as jnp, sfplus, sfplus.jax\n"
        "opt = sfplus.jax.schedule_free_plus(**sfplus.PAPER)\n"
        "p = {'w': jnp.ones(3)}\n"
        "u, s = opt.update(p, opt.init(p), p, value=1.0)\n"
        "assert int(s.k) == 1 and sys.modules['torch'] is None\n"
        "try:\n"
        "    sfplus.ScheduleFreePlus\n"
        "except ImportError:\n"
        "    print('ok')\n"
    )
    result = _run_python(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_import_sfplus_is_lazy_about_torch():
    """``import sfplus`` (presets, schedule) imports no torch; the torch names still resolve on access."""
    code = (
        "import sys, sfplus\n"
        "from sfplus import PAPER, PRESETS, annealed_beta, polyak_step\n"
        "assert 'torch' not in sys.modules, 'import sfplus imported torch'\n"
        "from sfplus import ScheduleFreePlus, ScheduleFreePlusReference, schedulefree_plus_update\n"
        "assert sfplus.ScheduleFreePlus is ScheduleFreePlus and 'torch' in sys.modules\n"
        "assert sfplus.functional.schedulefree_plus_update is schedulefree_plus_update\n"
        "assert set(sfplus.__all__) <= set(dir(sfplus))\n"
        "print('ok')\n"
    )
    result = _run_python(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        sfplus.NoSuchThing  # noqa: B018
