"""Shared test fixtures: explicit seeds, and markers that skip what this machine cannot run.

Every test seeds its own ``torch.Generator``: the ``gen`` fixture hands one out, seeded
from the test's name so that two tests never share a stream by accident and a rerun is identical.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# ``tests/cases.py`` is imported as ``cases`` by every test folder.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def gen(request: pytest.FixtureRequest) -> torch.Generator:
    """A CPU generator seeded from the test's node id (stable across runs and machines)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


#: Test folders made of many tiny problems (float64 optimizer checks, tiny models trained by the
#: integrations): there one torch thread is faster than several on a shared box.
_ONE_THREAD_FOLDERS = {"optim", "integrations"}


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_problems(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.path.parent.name not in _ONE_THREAD_FOLDERS:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with a reason, where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker: gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_silent_compile_fallback() -> Iterator[None]:
    """Fail a test during which a ``torch.compile`` of the fused path failed for good.

    sfplus then falls back to the eager paths with one warning and a process-wide flag
    (``sfplus.functional._compile_failed``), so every later test of the compiled path in the session would
    silently test the eager one. (A test that sets the flag through ``monkeypatch`` gets it restored before
    this check runs.)
    """
    import sfplus.functional

    before = sfplus.functional._compile_failed
    yield
    if not before and sfplus.functional._compile_failed:
        pytest.fail("torch.compile of the fused path failed during this test; sfplus fell back to the eager paths "
                    "for the rest of the session (see the RuntimeWarning)")
