"""``sfplus train`` end to end, in real processes: exact resume after a stop, SIGKILL or SIGTERM; bad input.

The runs are the ``tiny`` recipe (a 50k-parameter model) for 60 steps with a checkpoint every 10, so the
whole file stays within seconds per run on CI. Each interrupted run is compared with one uninterrupted run
of the same command: per-step losses and step sizes, the last val_loss and the final weights must be equal,
not close.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest
import torch

from sfplus_lab.cli import main as cli_main

RUN = ["--recipe", "tiny", "--tokens", "30720", "--checkpoint-every", "10", "--eval-every", "10", "--seed", "0"]
FINAL = "step_0000060"
#: Runs ``sfplus`` with a hook right after step k (argv: k, then "stop" or "wait", then sfplus's arguments).
#: "stop" stops the run there as SIGTERM would (same code path), at a step chosen by the test. "wait" writes the
#: file "waiting" and holds the run there until a signal has been received (at most 300 s), so that a test's
#: signal arrives at that step however loaded the machine is.
AFTER_STEP = """
import sys, time
from pathlib import Path
from sfplus_lab.cli import main
from sfplus_lab.trainer import Trainer
k, mode = int(sys.argv[1]), sys.argv[2]
real = Trainer.train_step
def train_step(self):
    out = real(self)
    if self.step + 1 == k and mode == "stop":
        self.stop_requested = True
    elif self.step + 1 == k:  # "wait"
        Path("waiting").write_text(str(k))
        deadline = time.monotonic() + 300
        while not self.stop_requested and time.monotonic() < deadline:
            time.sleep(0.01)
    return out
Trainer.train_step = train_step
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("sfplus-cache")
    return {**os.environ, "SFPLUS_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def sfplus(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sfplus", "train", *args], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout,
    )


def rows(run: Path, kind: str) -> list[dict]:
    return [r for r in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == kind]


def assert_same_run(a: Path, b: Path) -> None:
    train_a, train_b = rows(a, "train"), rows(b, "train")
    assert [r["step"] for r in train_b] == [r["step"] for r in train_a]
    for key in ("loss", "alpha", "lr", "c", "beta"):
        assert [r.get(key) for r in train_b] == [r.get(key) for r in train_a], key
    assert rows(b, "eval")[-1]["val_loss"] == rows(a, "eval")[-1]["val_loss"]
    wa = torch.load(a / "checkpoints" / FINAL / "model.pt", weights_only=True)
    wb = torch.load(b / "checkpoints" / FINAL / "model.pt", weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


class References(dict):
    """Uninterrupted runs, made on first use, one per optimizer."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        super().__init__()
        self.root, self.env = root, env

    def __missing__(self, optimizer: str) -> Path:
        proc = sfplus([*RUN, "--optimizer", optimizer, "--out", optimizer], self.env, self.root)
        assert proc.returncode == 0, proc.stderr
        self[optimizer] = self.root / optimizer
        return self[optimizer]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env) -> References:
    return References(tmp_path_factory.mktemp("reference"), env)


def test_uninterrupted_run_writes_everything(reference):
    run = reference["sfplus"]
    evals = rows(run, "eval")
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert {"val_loss/austen-persuasion", "val_loss/melville-mobydick"} <= set(evals[-1])
    train = rows(run, "train")
    assert len(train) == 60 and {"loss", "alpha", "beta", "c", "tok_per_s", "tokens"} <= set(train[0])
    assert (run / "loss.png").stat().st_size > 0 and (run / "step_size.png").stat().st_size > 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["n_layer"] == 3 and config["optim"]["name"] == "sfplus"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000050", FINAL]
    assert "lr" in rows(reference["adamw-cosine"], "train")[0]


@pytest.mark.parametrize(
    "optimizer, k",
    [
        ("sfplus", 3),
        ("sfplus", 17),
        ("adamw-cosine", 17),
        pytest.param("adamw-wsd", 17, marks=pytest.mark.slow),
        pytest.param("adamw-linear", 3, marks=pytest.mark.slow),
        pytest.param("sf-adamw", 17, marks=pytest.mark.slow),
    ],
)
def test_resume_in_a_new_process_is_bitwise_identical(reference, env, tmp_path, optimizer, k):
    """k=3 is inside the warmup (5 steps), k=17 after c_warmup (10) and mid-anneal; neither is a boundary."""
    if optimizer == "adamw-wsd":
        pytest.importorskip("transformers")
    if optimizer == "sf-adamw":
        pytest.importorskip("schedulefree")
    stop = subprocess.run(
        [sys.executable, "-c", AFTER_STEP, str(k), "stop", "train", *RUN, "--optimizer", optimizer, "--out", "B"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert stop.returncode == 143, stop.stderr  # stopped early without a signal: SIGTERM's code
    assert f"stopped at step {k}/60" in stop.stdout
    assert (tmp_path / "B" / "checkpoints" / f"step_{k:07d}" / "COMPLETE").exists()
    resumed = sfplus(["--out", "B", "--resume"], env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {k}" in resumed.stdout
    assert_same_run(reference[optimizer], tmp_path / "B")


def _start(env: dict[str, str], cwd: Path, launcher: tuple[str, ...] = ("-m", "sfplus")) -> subprocess.Popen:
    """``sfplus train *RUN --out B`` in the background; ``launcher`` may put AFTER_STEP's hook in front."""
    return subprocess.Popen(
        [sys.executable, *launcher, "train", *RUN, "--out", "B"], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the interruption point: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.02)


def test_sigkill_then_resume_ends_with_the_same_val_loss(reference, env, tmp_path):
    proc = _start(env, tmp_path)
    _wait_for(lambda: (tmp_path / "B" / "checkpoints" / "step_0000010").exists(), proc)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "B" / "checkpoints" / FINAL).exists()
    resumed = sfplus(["--out", "B", "--resume"], env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(reference["sfplus"], tmp_path / "B")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_exits_non_zero(reference, env, tmp_path, sig, code):
    """So that ``sfplus train ... && sfplus export ...`` never exports a partial run. The run waits after step 13
    for the signal (AFTER_STEP's "wait"): sent on a count of logged rows instead, a loaded machine let the run
    finish first."""
    proc = _start(env, tmp_path, ("-c", AFTER_STEP, "13", "wait"))
    _wait_for(lambda: (tmp_path / "waiting").exists(), proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, stderr
    assert "stopped at step" in stdout and f"exit status {code}" in stdout and "Traceback" not in stderr
    step = int(stdout.split("stopped at step ")[1].split("/")[0])
    assert step == 13
    assert (tmp_path / "B" / "checkpoints" / f"step_{step:07d}" / "COMPLETE").exists()
    resumed = sfplus(["--out", "B", "--resume"], env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(reference["sfplus"], tmp_path / "B")


def test_data_file_trains_and_a_missing_one_is_one_clear_line(env, tmp_path):
    text = gzip.decompress(
        (resources.files("sfplus_lab.data") / "builtin" / "austen-persuasion.txt.gz").read_bytes()
    ).decode("utf-8")
    (tmp_path / "some.txt").write_text(text[:60_000])
    proc = sfplus(["--recipe", "tiny", "--tokens", "5120", "--data", "some.txt", "--out", "S"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "final validation loss" in proc.stdout
    assert "val_loss/some" in rows(tmp_path / "S", "eval")[-1]
    missing = sfplus(["--recipe", "tiny", "--data", "missing.txt", "--out", "M"], env, tmp_path)
    assert missing.returncode == 2
    assert "missing.txt" in missing.stderr and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


BAD_INPUT = [
    (["--tokens", "lots"], "--tokens needs an integer"),
    (["--tokens", "0"], "tokens must be a positive integer"),
    (["--model", "7b"], "unknown model size"),
    (["--optimizer", "sgd"], "unknown optimizer"),
    (["--lr", "-1"], "lr must be"),
    (["--batch-size", "0"], "batch_size"),
    (["--checkpoint-every", "x"], "--checkpoint-every needs an integer"),
    (["--keep-checkpoints", "1"], "keep must be an integer >= 2"),
    (["--tokenizer", "words"], "tokenizer"),
    (["--resume", "--force"], "contradict"),
    (["--recipe", "huge"], "unknown recipe"),
    (["--tokens", "1000", "--tokens-per-param", "2"], "either tokens or tokens_per_param"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_flags_are_one_line_errors(args, message, tmp_path, capsys):
    assert cli_main(["train", "--out", str(tmp_path / "R"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_empty_data_file_and_unwritable_folder(env, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert cli_main(["train", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "E")]) == 2
    assert "empty.txt" in capsys.readouterr().err
    (tmp_path / "afile").write_text("not a folder")
    assert cli_main(["train", "--recipe", "tiny", "--out", str(tmp_path / "afile" / "run")]) == 2
    assert "cannot write to run folder" in capsys.readouterr().err


def test_existing_run_is_never_overwritten_without_resume_or_force(env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SFPLUS_CACHE", env["SFPLUS_CACHE"])
    run = tmp_path / "R"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 999}\n')
    (run / "my-notes.txt").write_text("keep me")
    assert cli_main(["train", "--recipe", "tiny", "--out", str(run)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == '{"kind": "train", "step": 999}\n'
    args = ["train", "--recipe", "tiny", "--tokens", "1024", "--out", str(run), "--force"]
    assert cli_main(args) == 0
    assert (run / "my-notes.txt").read_text() == "keep me"  # --force removes only the run's own files
    assert [r["step"] for r in rows(run, "train")] == [1, 2]


def test_resume_with_a_different_model_fails_with_a_message(reference, env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SFPLUS_CACHE", env["SFPLUS_CACHE"])
    import shutil

    shutil.copytree(reference["sfplus"], tmp_path / "R")
    assert cli_main(["train", "--out", str(tmp_path / "R"), "--resume", "--model", "100k"]) == 2
    err = capsys.readouterr().err
    assert "cannot --resume" in err and "model_size" in err


def test_checkpoint_with_another_model_shape_is_refused(reference, env, monkeypatch):
    monkeypatch.setenv("SFPLUS_CACHE", env["SFPLUS_CACHE"])
    from dataclasses import replace

    from sfplus_lab.data import load_corpus
    from sfplus_lab.errors import UserError
    from sfplus_lab.recipes import get_recipe
    from sfplus_lab.trainer import Trainer

    cfg = get_recipe("tiny")
    cfg = replace(cfg, train=replace(cfg.train, model_size="100k"))
    trainer = Trainer(cfg, load_corpus(None), reference["sfplus"])
    with pytest.raises(UserError, match="incompatible model config"):
        trainer.resume_from(reference["sfplus"] / "checkpoints")
