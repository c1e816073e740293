"""``metajax eval`` (and ``plot``, which reads a run the same way) on bad input: every option
and path is checked before any work, each refusal names the option or file, prints no
traceback and leaves the run's files as they were; names that are not valid UTF-8 are printed
escaped."""

import subprocess
import sys

import pytest
from bad_input import deny_new_files, refused, snapshot

from metajax.cli import console, main

QUICK = ["--meta-steps", "20", "--steps-per-call", "10", "--log-every", "10", "--no-progress"]
# An evaluation that takes a moment, for the cases that get past the checks.
SMALL = ["--num-tasks", "4", "--shots", "2", "--adapt-steps", "1", "--no-plots"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished sinusoid run, and a file beside it."""
    root = tmp_path_factory.mktemp("bad-eval")
    assert main(["train", "sinusoid", *QUICK, "--no-plots", "--out", str(root / "run")]) == 0
    (root / "afile").write_text("not a folder")
    return root / "run"


BOUND = "must be an integer in"
OPTIONS = [
    (["--num-tasks", "1"], f"argument --num-tasks: {BOUND} [2, 2147483647], got 1"),
    (["--num-tasks", "2147483648"], f"argument --num-tasks: {BOUND} [2, 2147483647], got "),
    (["--shots", "0"], "argument --shots: must be a list of at least 1 integers in [1, "),
    (["--shots", "2", "2"], "argument --shots: must be distinct values, got [2, 2]"),
    (["--adapt-steps", "-1"], f"argument --adapt-steps: {BOUND} [0, 2147483647], got -1"),
    (
        ["--adapt-steps", "99999999999"],
        f"argument --adapt-steps: {BOUND} [0, 2147483647], got 99999999999",
    ),
    (["--query-shots", "many"], "argument --query-shots: must be an integer or shots, got 'many'"),
    (
        ["--query-shots", "0"],
        "argument --query-shots: must be an integer in [1, 2147483647] or 'shots', got 0",
    ),
    (["--eval-seed", "-1"], f"argument --eval-seed: {BOUND} [0, 4294967295], got -1"),
    (
        ["--eval-seed", "100000000000000000000"],
        f"argument --eval-seed: {BOUND} [0, 4294967295], got 100000000000000000000",
    ),
    (["--validation-tasks", "1"], f"argument --validation-tasks: {BOUND} [2, 2147483647], got 1"),
    (["--inner-lr", "-1"], "argument --inner-lr: must be a finite number > 0, got -1.0"),
    (["--inner-lr", "nan"], "argument --inner-lr: must be a finite number > 0, got nan"),
    (
        ["--tune-inner-lr", "--inner-lr", "0.1"],
        "argument --inner-lr: must be left unset when tuning it, got 0.1",
    ),
    (["--adapt_steps", "3"], "unrecognized arguments: --adapt_steps 3"),
]


@pytest.mark.parametrize("args, message", OPTIONS, ids=[" ".join(a) for a, _ in OPTIONS])
def test_a_bad_option_is_named_before_any_work(run, args, message, capsys):
    before = snapshot(run)
    status, error = refused(["eval", str(run), *args], capsys)
    assert status == 2
    assert error.startswith("metajax eval: error: ") and message in error, error
    assert snapshot(run) == before


@pytest.mark.parametrize("option", [["--test-data", "elsewhere"], ["--test-overlap", "keep"]])
def test_test_data_for_a_run_without_image_data_is_refused(run, option, capsys):
    before = snapshot(run)
    status, error = refused(["eval", str(run), *option, *SMALL], capsys)
    assert (status, error) == (
        1,
        f"metajax: error: {option[0]} is for runs of the image families; '{run}' is a run of "
        "sinusoid, whose tasks come from no image data",
    )
    assert snapshot(run) == before


def test_adaptation_too_long_for_memory_is_refused_naming_the_sizes(run, capsys):
    before = snapshot(run)
    status, error = refused(["eval", str(run), "--adapt-steps", "2147483647"], capsys)
    assert status == 1
    assert error.startswith("metajax: error: evaluation needs more memory than this device has")
    assert "--adapt-steps 2147483647, " in error and error.endswith("choose smaller ones")
    assert snapshot(run) == before


OUT_FOLDERS = [
    ("afile", "'{root}/afile' is a file, not a folder; choose a folder"),
    ("afile/sub", "'{root}/afile/sub' cannot be created: '{root}/afile' is a file, not a folder"),
    ("", "'' is an empty name; name a folder"),
]
if sys.platform == "linux":  # a folder that takes no new folders, whoever runs the test
    OUT_FOLDERS.append(("/proc/x", "'/proc/x' cannot be created in '/proc': "))


@pytest.mark.parametrize("out, message", OUT_FOLDERS, ids=[o or "empty" for o, _ in OUT_FOLDERS])
def test_an_out_folder_that_cannot_be_written_is_refused_before_any_work(run, out, message, capsys):
    root = run.parent
    out = out if out.startswith("/") or not out else str(root / out)
    before = snapshot(root)
    status, error = refused(["eval", str(run), *SMALL, "--out", out], capsys)
    assert status == 2
    assert error.startswith(f"metajax eval: error: argument --out: {message.format(root=root)}")
    assert snapshot(root) == before


def test_plot_into_a_run_folder_that_cannot_be_written_is_refused_before_drawing(
    run, capsys, monkeypatch
):
    deny_new_files(monkeypatch)
    before = snapshot(run)
    status, error = refused(["plot", str(run)], capsys)
    assert (status, error) == (1, f"metajax: error: '{run}' cannot be written: Permission denied")
    assert snapshot(run) == before  # no figure drawn


@pytest.mark.parametrize("option", [[], ["--baseline"]], ids=["run", "baseline"])
def test_a_missing_or_misnamed_run_is_named(run, option, capsys):
    root = run.parent
    before = snapshot(root)
    for name, message in (
        ("nowhere", f"run directory '{root}/nowhere' does not exist"),
        ("afile", f"'{root}/afile' is a file, not a run directory"),
    ):
        target = [*option, str(root / name)]
        command = ["eval", *target] if not option else ["eval", str(run), *target]
        status, error = refused(command, capsys)
        assert (status, error) == (1, f"metajax: error: {message}")
    assert snapshot(root) == before


def test_names_that_are_not_utf8_are_printed_escaped_on_a_utf8_console(run, child_env):
    # A strict UTF-8 stdout raised UnicodeEncodeError here, after the evaluation was done.
    out = run.parent / b"e\xff".decode("utf-8", "surrogateescape")
    result = subprocess.run(
        [sys.executable, "-m", "metajax", "eval", str(run), *SMALL, "--out", str(out)],
        capture_output=True,
        env={**child_env, "PYTHONIOENCODING": "utf-8"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode() == console.NOTE + "\n"
    shown = str(run.parent).encode() + b"/e\\xff/eval.json"
    assert result.stdout.splitlines()[-1] == b"metajax: wrote " + shown
    assert (out / "eval.json").is_file()


def test_the_console_escapes_only_what_it_cannot_encode():
    undecoded = b"caf\xe9".decode("utf-8", "surrogateescape")
    for text, encoding, shown in (
        (undecoded, "utf-8", b"caf\\xe9"),
        (undecoded, "ascii", b"caf\\xe9"),
        ("caf\u00e9", "utf-8", "caf\u00e9".encode()),
        ("caf\u00e9 \u4e2d", "ascii", b"caf\\xe9 \\u4e2d"),
    ):
        console.escape_output()  # registers the error handler
        assert text.encode(encoding, "metajax-escape") == shown
