"""``import sfplus`` needs torch alone; an integration without its framework says what to install."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def test_import_sfplus_loads_no_framework() -> None:
    code = (
        "import sys, sfplus, sfplus.integrations; "
        "heavy = [m for m in ('transformers', 'accelerate', 'lightning', 'safetensors', 'numpy') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]" or out == "['numpy']", out  # torch itself may pull numpy in; nothing else


@pytest.mark.parametrize(
    ("module", "blocked", "hint"),
    [
        ("sfplus.integrations.lightning", "lightning.pytorch", "pip install lightning"),
        ("sfplus.integrations.transformers", "transformers", "pip install transformers accelerate"),
    ],
)
def test_missing_framework_names_the_package(monkeypatch: pytest.MonkeyPatch, module: str, blocked: str, hint: str):
    monkeypatch.setitem(sys.modules, blocked, None)  # makes ``import blocked`` raise ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=hint):
        importlib.import_module(module)
    monkeypatch.delitem(sys.modules, module, raising=False)  # the next import gets the real module
