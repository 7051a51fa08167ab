"""``sfplus export``, ``sfplus merge`` and ``sfplus predict`` on a real tiny ``sfplus train`` run.

Merged and exported weights load back and evaluate to the figure the run reported.
The run: 30 steps of the 50k GPT on the built-in text, evaluations every 5 steps, checkpoints at steps
10, 20 and 30. The run sets a 10-step warm start (c_warmup; the library's default has none), so the
step-10 checkpoint was saved at the end of the warm start (W = 0): a window or online merge from it must
give x_30 exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("safetensors")
pytest.importorskip("numpy")

from sfplus_lab import averaging  # noqa: E402
from sfplus_lab.cli import main  # noqa: E402
from sfplus_lab.merge_math import merge_warnings  # noqa: E402
from sfplus_lab.predict import predict_run  # noqa: E402

TRAIN_FLAGS = [
    "--tokens", "7680", "--model", "50k", "--seq-len", "32", "--batch-size", "8", "--seed", "0",
    "--warmup-steps", "5", "--c-warmup", "10", "--eval-every", "5", "--eval-batches", "2", "--checkpoint-every", "10",
    "--keep-checkpoints", "3", "--evals-per-decade", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("lab")
        out = root / "run"  # the token cache goes to the test's folder, not the user's ~/.cache
        assert main(["train", *TRAIN_FLAGS, "--cache-dir", str(root / "cache"), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def reported(run: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: row for row in rows if "val_loss" in row}


def losses_of(folder: Path) -> dict[str, float]:
    model, config = averaging.load_model(folder)
    return averaging.evaluate_weights(config, model.state_dict())


def assert_same_figure(got: dict[str, float], row: dict) -> None:
    for key, value in got.items():
        assert value == pytest.approx(row[key], rel=1e-6, abs=1e-6), key
    assert got["val_loss"] == pytest.approx(row["val_loss"], rel=1e-6)


def test_run_has_the_expected_checkpoints(run_dir: Path) -> None:
    steps = sorted(int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step_*"))
    assert steps == [10, 20, 30]
    assert set(reported(run_dir)) == {0, 5, 10, 15, 20, 25, 30}


def test_export_loads_back_and_evaluates_to_the_reported_figure(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(run_dir), "--out", str(tmp_path / "x30"), "--eval"]) == 0
    printed = capsys.readouterr().out
    figures = reported(run_dir)
    assert f"val_loss {figures[30]['val_loss']:.4f}" in printed
    assert_same_figure(losses_of(tmp_path / "x30"), figures[30])
    saved = torch.load(run_dir / "checkpoints" / "step_0000030" / "model.pt", weights_only=True)
    model, config = averaging.load_model(tmp_path / "x30")
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    assert config["export"]["step"] == 30 and config["model"]["d_model"] == 32

    assert main(["export", str(run_dir), "--step", "20", "--out", str(tmp_path / "x20")]) == 0
    assert_same_figure(losses_of(tmp_path / "x20"), figures[20])


def test_merges_load_back_and_evaluate_to_the_reported_figure(run_dir: Path, tmp_path: Path) -> None:
    ckpt = run_dir / "checkpoints"
    figures = reported(run_dir)
    # A window or online merge from the end of the warm start (W = 0 at step 10) is x_30 itself.
    for mode in ("window", "online"):
        out = tmp_path / mode
        assert main(["merge", str(ckpt / "step_0000010"), str(ckpt / "step_0000030"), "--weights", mode,
                     "--out", str(out)]) == 0  # fmt: skip
        assert_same_figure(losses_of(out), figures[30])
        record = json.loads((out / "config.json").read_text())["merge"]
        assert [c["weight_sum"] for c in record["checkpoints"]][0] == 0.0
    # A uniform "merge" of one checkpoint is that checkpoint.
    assert main(["merge", str(ckpt / "step_0000020"), "--out", str(tmp_path / "one")]) == 0
    assert_same_figure(losses_of(tmp_path / "one"), figures[20])
    # A real merge is a new model: its weights are the mean, and it evaluates to a finite loss of its own.
    assert main(["merge", str(ckpt / "step_0000020"), str(ckpt / "step_0000030"), "--out", str(tmp_path / "u")]) == 0
    merged, _ = averaging.load_model(tmp_path / "u")
    a = torch.load(ckpt / "step_0000020" / "model.pt", weights_only=True)
    b = torch.load(ckpt / "step_0000030" / "model.pt", weights_only=True)
    for name, value in merged.state_dict().items():
        torch.testing.assert_close(value, (a[name].double() + b[name].double()).div(2).float(), rtol=0, atol=1e-7)
    assert torch.isfinite(torch.tensor(losses_of(tmp_path / "u")["val_loss"]))
    # The window between 20 and 30 averages z over steps 21..30 only: different from x_30.
    assert main(["merge", str(ckpt / "step_0000020"), str(run_dir), "--weights", "window",
                 "--out", str(tmp_path / "w")]) == 0  # fmt: skip
    window, _ = averaging.load_model(tmp_path / "w")
    assert any(not torch.allclose(window.state_dict()[k], b[k]) for k in b)


def test_bad_input_is_one_clear_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    ckpt = run_dir / "checkpoints"
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    torn = tmp_path / "torn" / "checkpoints" / "step_0000010"
    shutil.copytree(ckpt / "step_0000010", torn)
    (torn / "COMPLETE").unlink()
    assert main(["export", str(torn), "--out", str(tmp_path / "o")]) == 2
    assert "not a complete checkpoint" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert main(["merge", str(ckpt / "step_0000030"), str(ckpt / "step_0000010"), "--weights", "window",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "increasing step order" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--step", "15", "--out", str(tmp_path / "o")]) == 2
    assert "10, 20, 30" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_predict_on_the_run(run_dir: Path) -> None:
    p = predict_run(run_dir, fraction=1.0)  # planned steps from the token budget; fit after c_warmup = 10
    assert p.target_step == 30 and (p.fit_from_step, p.fit_until_step) == (11, 30)
    assert p.fit.num_points == 4  # steps 15, 20, 25, 30
    assert p.actual == reported(run_dir)[30]["val_loss"]
    assert p.abs_error == pytest.approx(p.predicted - p.actual)
    early = predict_run(run_dir, fraction=0.5, from_step=0)
    assert (early.fit_from_step, early.fit_until_step, early.fit.num_points) == (0, 15, 4)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_export_and_merge_files_follow_the_umask_like_checkpoints(run_dir: Path, tmp_path: Path, umask: int) -> None:
    """model.safetensors was 0600 in a 0700 folder (mkdtemp's and safetensors' own modes) next to 0644 checkpoints."""
    import os
    import stat

    ckpt = run_dir / "checkpoints"
    previous = os.umask(umask)
    try:
        assert main(["export", str(run_dir), "--out", str(tmp_path / "x")]) == 0
        pair = [str(ckpt / "step_0000020"), str(ckpt / "step_0000030")]
        assert main(["merge", *pair, "--out", str(tmp_path / "m")]) == 0
    finally:
        os.umask(previous)
    for folder in (tmp_path / "x", tmp_path / "m"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
        for name in ("model.safetensors", "config.json"):
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~umask, (folder, name)
    # The checkpoints' own files were written under the process's umask: the mode export now gives too.
    assert stat.S_IMODE((ckpt / "step_0000030" / "model.pt").stat().st_mode) == 0o666 & ~averaging._umask()


def test_a_merge_likely_worse_than_its_newest_input_warns(run_dir: Path, tmp_path: Path, capsys) -> None:
    """A window merge of the quickstart's last two checkpoints once gave val 3.01 against 1.83, silently."""
    ckpt = run_dir / "checkpoints"
    assert main(["merge", str(ckpt / "step_0000020"), str(ckpt / "step_0000030"), "--weights", "window",
                 "--out", str(tmp_path / "w")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: a window merge averages the base iterate z over steps 20-30 only" in err
    assert json.loads((tmp_path / "w" / "config.json").read_text())["merge"]["warnings"]
    # From the end of the warm start (W = 0) the window is the whole average, x_30 itself: nothing to warn of.
    assert main(["merge", str(ckpt / "step_0000010"), str(ckpt / "step_0000030"), "--weights", "window",
                 "--out", str(tmp_path / "w0")]) == 0  # fmt: skip
    assert "warning" not in capsys.readouterr().err
    # Checkpoints of one run far apart: uniform and online warn; one checkpoint or close ones do not.
    for mode in ("uniform", "online"):
        assert main(["merge", str(ckpt / "step_0000020"), str(ckpt / "step_0000030"), "--weights", mode,
                     "--out", str(tmp_path / mode)]) == 0  # fmt: skip
        assert "span steps 20-30" in capsys.readouterr().err
    assert merge_warnings("uniform", [560, 586], [None, None], one_run=True) == []
    assert merge_warnings("online", [100, 586], [1.0, 9.0], one_run=False) == []
    assert "12% of the averaging weight" in merge_warnings("window", [550, 586], [7.0, 8.0], True)[0]
