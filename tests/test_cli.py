"""One exit-status convention for every command-line tool (faithfulfaces_core/cli.py)."""

from __future__ import annotations

import pytest

from faithfulfaces_core import cli
from faithfulfaces_core.errors import MissingModelError


def _raise(exc: BaseException):
    def body() -> int:
        raise exc

    return body


def test_statuses_and_messages(capsys):
    assert cli.run_command(lambda: cli.EXIT_STOPPED, interrupted="x") == 3
    assert cli.run_command(_raise(MissingModelError("put model.pth in models/x")), interrupted="x") == cli.EXIT_ERROR
    assert capsys.readouterr().err == "error: put model.pth in models/x\n"
    assert cli.run_command(_raise(KeyboardInterrupt()), interrupted="rerun to resume") == 130
    assert capsys.readouterr().err == "rerun to resume\n"
    with pytest.raises(ZeroDivisionError):  # a bug is not dressed up as a user error
        cli.run_command(_raise(ZeroDivisionError()), interrupted="x")
    assert (cli.EXIT_OK, cli.EXIT_ERROR, cli.EXIT_USAGE, cli.EXIT_STOPPED, cli.EXIT_DIVERGED) == (0, 1, 2, 3, 4)


def test_every_tool_exits_1_on_bad_input_and_2_on_a_usage_error(tmp_path, capsys):
    import runpy

    from faithfulfaces_core.eval.cli import main as eval_main
    from faithfulfaces_core.pose.convert import main as convert_main

    build = runpy.run_path("training/build_dataset.py")["main"]
    train = runpy.run_path("training/train_lora.py")["main"]
    missing = tmp_path / "missing"
    bad_input = {
        "build_dataset": lambda: build(["merge", str(missing), "--out", str(tmp_path / "m")]),
        "train_lora": lambda: train(["--set", "data.batchsize=2"]),
        "eval": lambda: eval_main([str(missing / "r.png"), str(missing / "v.mp4"), "--backend", "dlib-hog"]),
        "convert": lambda: convert_main([str(missing / "w.pth")]),
    }
    for name, call in bad_input.items():
        assert call() == cli.EXIT_ERROR, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, (name, err)
    for call in (lambda: build(["--no-such-flag"]), lambda: train(["--no-such-flag"]),
                 lambda: eval_main(["--no-such-flag"]), lambda: convert_main(["--no-such-flag"])):
        with pytest.raises(SystemExit) as exit_info:
            call()
        assert exit_info.value.code == cli.EXIT_USAGE
    capsys.readouterr()
