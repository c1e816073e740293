"""``metajax adapt`` on bad input: every option and path is checked before any work, each
refusal names the option or folder, prints no traceback and writes nothing; names that are
not valid UTF-8 are shown and written escaped."""

import csv
import os
import subprocess
import sys

import pytest
from bad_input import refused, snapshot
from images import train_image_run, write_task

from metajax.cli import console, main

SINUSOID = ["--meta-steps", "10", "--steps-per-call", "10", "--no-progress", "--no-plots"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A finished 3-way image run, a task of 3 classes for it, a sinusoid run and a file."""
    _, run = train_image_run(tmp_path_factory, plots=False)  # adapt reads no figure
    root = tmp_path_factory.mktemp("task")
    write_task(root, {"left": 30, "middle": 31, "right": 32}, 2, 1)
    write_task(root / "two", {"a": 30, "b": 31}, 2, 1)
    (root / "afile").write_text("not a folder")
    (root / "empty").mkdir()
    assert main(["train", "sinusoid", *SINUSOID, "--out", str(root / "sinusoid")]) == 0
    return run, root


def adapt(run, root, *args, support="support", query="query"):
    return [
        "adapt",
        str(run),
        "--support",
        str(root / support),
        "--query",
        str(root / query),
        *args,
    ]


BOUND = "must be an integer in [0, 2147483647]"
OPTIONS = [
    (["--adapt-steps", "-1"], f"argument --adapt-steps: {BOUND}, got -1"),
    # An OverflowError from inside a jitted call before: train's bounds were not applied.
    (["--adapt-steps", "2147483648"], f"argument --adapt-steps: {BOUND}, got 2147483648"),
    (["--out", "a.txt"], "argument --out: must end in .csv or .json, got 'a.txt'"),
    (["--out", ""], "argument --out: must end in .csv or .json, got ''"),
    (["--out", "{root}/afile/p.csv"], "argument --out: cannot write '{root}/afile/p.csv': "),
    (["--steps", "3"], "unrecognized arguments: --steps 3"),
]
if sys.platform == "linux":  # a folder that takes no new files, whoever runs the test
    OPTIONS.append(
        (
            ["--out", "/proc/p.csv"],
            "argument --out: cannot write '/proc/p.csv': '/proc' cannot be written: ",
        )
    )


@pytest.mark.parametrize("args, message", OPTIONS, ids=[" ".join(a) for a, _ in OPTIONS])
def test_a_bad_option_is_named_before_any_work(task, args, message, capsys):
    run, root = task
    before = snapshot(root), snapshot(run)
    args = [arg.format(root=root) for arg in args]
    status, error = refused(adapt(run, root, *args), capsys)
    assert status == 2
    assert error.startswith("metajax adapt: error: ") and message.format(root=root) in error
    assert (snapshot(root), snapshot(run)) == before


def test_an_out_file_that_is_a_folder_is_refused(task, capsys):
    run, root = task
    (root / "p.csv").mkdir()
    try:
        status, error = refused(adapt(run, root, "--out", str(root / "p.csv")), capsys)
    finally:
        (root / "p.csv").rmdir()
    assert (status, error) == (
        2,
        f"metajax adapt: error: argument --out: '{root}/p.csv' is a folder; name a file in it",
    )


FOLDERS = [
    (
        {"support": "two/support"},
        "the support set '{root}/two/support' has 2 class folders (a, b), but the run was "
        "trained for 3-way tasks: give 3 folders of images, one per class",
    ),
    ({"support": "nowhere"}, "the support set '{root}/nowhere' is not a folder of class folders"),
    ({"support": "afile"}, "the support set '{root}/afile' is not a folder of class folders"),
    ({"query": "nowhere"}, "'{root}/nowhere' is not a folder of images"),
    ({"query": "empty"}, "'{root}/empty' holds no images (files ending in "),
]


@pytest.mark.parametrize("folders, message", FOLDERS, ids=[str(f) for f, _ in FOLDERS])
def test_a_bad_support_or_query_folder_is_named_and_nothing_is_written(
    task, folders, message, capsys
):
    run, root = task
    before = snapshot(root), snapshot(run)
    out = str(root / "p.csv")
    status, error = refused(adapt(run, root, "--out", out, **folders), capsys)
    assert status == 1
    assert error.startswith(f"metajax: error: {message.format(root=root)}"), error
    assert (snapshot(root), snapshot(run)) == before


def test_a_run_that_is_missing_or_of_another_family_is_named(task, capsys):
    _, root = task
    for target, message in (
        (root / "nowhere", f"run directory '{root}/nowhere' does not exist"),
        (
            root / "sinusoid",
            f"'{root}/sinusoid' is a run of the sinusoid family; adapting to images needs a run "
            "of an image family (images or omniglot)",
        ),
    ):
        status, error = refused(adapt(target, root), capsys)
        assert (status, error) == (1, f"metajax: error: {message}")


def undecoded(name: bytes) -> str:
    """A file name that is not valid UTF-8, as Python holds it."""
    return os.fsdecode(name)


def test_names_that_are_not_utf8_are_shown_and_written_escaped(task, tmp_path, child_env):
    run, _ = task
    latin1 = undecoded(b"caf\xe9")  # a folder named in Latin-1: byte 0xe9 is no UTF-8
    write_task(tmp_path, {latin1: 30, "b": 31, "c": 32}, 2, 1)
    out = tmp_path / undecoded(b"p\xff.csv")
    command = adapt(run, tmp_path, "--out", str(out))
    # A strict UTF-8 console raised UnicodeEncodeError here, after the predictions were made.
    result = subprocess.run(
        [sys.executable, "-m", "metajax", *command],
        capture_output=True,
        env={**child_env, "PYTHONIOENCODING": "utf-8"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode() == console.NOTE + "\n"  # once, for the argument and the names
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert sorted(row["image"] for row in rows) == ["b_0.png", "c_0.png", "caf\\xe9_0.png"]
    assert list(rows[0])[3:] == ["b", "c", "caf\\xe9"]  # a column per class
    lines = result.stdout.decode().splitlines()
    assert "caf\\xe9_0.png" in [line.split()[0] for line in lines]
    assert lines[-1] == f"metajax: wrote {tmp_path}/p\\xff.csv"
