"""JAX tests: 4 virtual CPU devices (for the sharding tests), one thread each, set before jax starts.

Nothing here imports jax: where jax or optax is missing, each test skips (``pytest.importorskip`` in the
fixtures below) and the rest of the suite runs as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

#: Virtual CPU devices for the sharding tests (XLA reads the flag when its CPU backend starts).
NUM_DEVICES = 4

if "jax" not in sys.modules:  # the flags only take effect before jax's backend starts
    _flags = os.environ.get("XLA_FLAGS", "")
    for _flag in (
        f"--xla_force_host_platform_device_count={NUM_DEVICES}",
        "--xla_cpu_multi_thread_eigen=false",
        "intra_op_parallelism_threads=1",
    ):
        if _flag.split("=")[0] not in _flags:
            _flags += " " + _flag
    os.environ["XLA_FLAGS"] = _flags.strip()


@pytest.fixture
def sj() -> ModuleType:
    """``sfplus.jax``, or a skip where jax or optax is not installed."""
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    import sfplus.jax

    return sfplus.jax


@pytest.fixture
def x64(sj: ModuleType) -> Iterator[None]:
    """Run the test with 64-bit JAX types (the exactness tests compare float64 trajectories)."""
    import jax

    with jax.enable_x64(True):
        yield
