"""benchmarks/short_finetune.py: every fine-tune starts from the same pretrained weights (not a fresh model),
each configuration gets its own fresh optimizer for exactly the asked steps, and malformed input is a named error."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import short_finetune  # noqa: E402

_TINY = ["--model", "3k", "--pretrain-data", "builtin", "--finetune-data", "builtin", "--pretrain-tokens", "3200",
         "--batch-size", "4", "--seq-len", "16", "--eval-batches", "2"]


def test_finetunes_start_from_the_pretrained_weights(tmp_path: Path) -> None:
    short_finetune.main([*_TINY, "--steps", "3", "7", "--seeds", "0", "--sfplus", "default={}",
                         'w2={"warmup_steps": 2}', "--adamw-lrs", "1e-3", "3e-3", "--out", str(tmp_path)])  # fmt: skip
    doc = json.loads((tmp_path / "short_finetune.json").read_text())
    runs = doc["runs"]
    assert [(r["config"], r["steps"]) for r in runs] == [
        (c, s) for s in (3, 7) for c in ("default", "w2", "adamw-cosine lr 0.001", "adamw-cosine lr 0.003")]
    befores = {r["before"] for r in runs}
    assert len(befores) == 1  # one pretrained model, the same evaluation for every configuration
    before = befores.pop()
    assert before < math.log(256) - 0.3  # trained: well below a fresh byte model's ~ln 256
    assert all(math.isfinite(r["after"]) and r["after"] != before for r in runs)
    assert doc["sfplus"] == {"default": {}, "w2": {"warmup_steps": 2}}
    table = (tmp_path / "short_finetune.md").read_text()
    assert "| configuration | 3 steps | 7 steps |" in table
    assert table.count("**") == 4  # one best AdamW learning rate per step count


@pytest.mark.parametrize("spec, message", [
    ("w200", "expected NAME="), ("w200={bad", "not JSON"), ("=[]", "expected NAME="),
    ('w={"warmup_step": 2}', "warmup_step"),
])  # fmt: skip
def test_malformed_configuration_is_a_named_error(spec: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        short_finetune.parse_sfplus([spec])


def test_unknown_model_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown --model 7k"):
        short_finetune.main(["--model", "7k", "--out", str(tmp_path)])
