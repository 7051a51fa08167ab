"""The ``sfplus`` command line itself: --version, errors shown with the usage of the command they belong to,
help text for every flag, the exit codes ``train --help`` promises."""

from __future__ import annotations

import pytest

from sfplus_lab.cli import build_parser, main, version


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sfplus {version()}" and version()


@pytest.mark.parametrize(
    "argv, usage",
    [
        (["data", "fetch", "--out", "X"], "usage: sfplus data fetch"),
        (["train", "--bogus"], "usage: sfplus train"),
        (["merge", "a", "--out", "b", "--bogus"], "usage: sfplus merge"),
        (["--bogus"], "usage: sfplus [-h]"),
    ],
)
def test_an_unknown_argument_shows_the_usage_of_its_own_command(argv, usage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and "unrecognized arguments" in err


def test_every_bench_flag_has_help_text():
    parser, _ = build_parser()
    bench = next(a for a in parser._actions if a.dest == "command").choices["bench"]
    missing = [a.option_strings[0] for a in bench._actions if a.option_strings and not a.help]
    assert missing == []


def test_train_help_states_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "130 after Ctrl-C (SIGINT)" in out and "143 after SIGTERM" in out
    assert "6k" in out  # the benchmark's sizes are train sizes too
