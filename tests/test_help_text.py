"""The command's help kept on disk: the same pages as the parser's, printed without importing
JAX, written anew when anything they depend on changes, and never a reason to fail."""

import os
import subprocess
import sys

import pytest

from metajax.cli import command, dispatch, help_text

PAGES = [
    "",
    "train",
    "train sinusoid",
    "train omniglot",
    "train images",
    "eval",
    "plot",
    "adapt",
    "data",
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of metajax's, for this test alone."""
    monkeypatch.setenv("METAJAX_CACHE", str(tmp_path))
    return tmp_path


def _printed(argv, capsys):
    """What ``metajax ARGV`` prints and its status, run in this process."""
    try:
        status = command.main(argv)
    except SystemExit as stop:  # argparse's own --help exits
        status = stop.code
    return capsys.readouterr().out, status


@pytest.mark.parametrize("page", PAGES)
def test_a_kept_page_is_the_parsers_own_and_needs_no_parser(page, cache, capsys, monkeypatch):
    argv = [*page.split(), "--help"]
    built, status = _printed(argv, capsys)  # nothing kept yet: the parser prints it, and keeps it
    assert status == 0 and built.startswith("usage: metajax")
    assert len(list((cache / "help").glob("*.json"))) == 1

    def no_parser():
        raise AssertionError("the parser was built")

    monkeypatch.setattr(dispatch, "build_parser", no_parser)
    assert _printed(argv, capsys) == (built, 0)
    assert _printed([*page.split(), "-h"], capsys) == (built, 0)


def test_only_a_plain_help_request_is_answered_from_disk():
    assert help_text.requested(["--help"]) == ""
    assert help_text.requested(["train", "sinusoid", "-h"]) == "train sinusoid"
    assert help_text.requested(["train", "sinusoid"]) is None
    assert help_text.requested([]) is None
    # Anything with other flags goes to the parser, which may refuse them first.
    assert help_text.requested(["train", "--config", "c.json", "--help"]) is None
    assert help_text.requested(["train", "sinusoid", "--seed", "1", "--help"]) is None
    assert help_text.requested(["--help", "train"]) is None


def test_a_subcommand_that_does_not_exist_is_the_parsers_to_refuse(cache, capsys):
    _printed(["--help"], capsys)
    with pytest.raises(SystemExit) as stop:
        command.main(["trian", "--help"])
    assert stop.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_the_key_follows_the_terminal_width_and_the_source(cache, monkeypatch, tmp_path):
    first = help_text.key()
    assert first is not None and help_text.key() == first
    monkeypatch.setenv("COLUMNS", "61")  # argparse wraps the page to the terminal's width
    narrow = help_text.key()
    assert narrow != first
    # A changed source file of metajax (an editable install's edit) changes the key.
    source = tmp_path / "package"
    source.mkdir()
    (source / "module.py").write_text("x = 1\n")
    monkeypatch.setattr(help_text, "_PACKAGE", source)
    before = help_text.key()
    stat = (source / "module.py").stat()
    os.utime(source / "module.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert help_text.key() != before


def test_a_damaged_page_file_is_removed_and_written_anew(cache, capsys):
    built, _ = _printed(["train", "--help"], capsys)
    (kept,) = (cache / "help").glob("*.json")
    kept.write_text('{"train": "cut sh')  # a file cut short
    assert help_text.cached(["train", "--help"]) is None
    assert not kept.exists()
    assert _printed(["train", "--help"], capsys) == (built, 0)  # the parser's, kept again
    assert help_text.cached(["train", "--help"]) == built


def test_an_unwritable_cache_costs_only_speed(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("METAJAX_CACHE", str(blocker / "metajax"))  # under a file
    built, status = _printed(["eval", "--help"], capsys)
    assert status == 0 and built.startswith("usage: metajax eval")
    assert help_text.cached(["eval", "--help"]) is None


def test_at_most_the_newest_files_are_kept(cache):
    folder = cache / "help"
    folder.mkdir()
    for index in range(help_text.KEPT + 3):
        (folder / f"old{index}.json").write_text("{}")
        os.utime(folder / f"old{index}.json", (index, index))
    help_text.keep(dispatch.build_parser())
    left = sorted(path.name for path in folder.glob("*.json"))
    assert len(left) == help_text.KEPT and f"{help_text.key()}.json" in left
    assert "old0.json" not in left and f"old{help_text.KEPT + 2}.json" in left


def test_help_from_disk_imports_no_jax(child_env, tmp_path):
    env = {**child_env, "METAJAX_CACHE": str(tmp_path)}
    line = [sys.executable, "-X", "importtime", "-m", "metajax", "train", "sinusoid", "--help"]
    first = subprocess.run(line, capture_output=True, text=True, env=env, timeout=300)
    second = subprocess.run(line, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout and "--inner-lr" in second.stdout

    def imported(result):
        return {row.split("|")[-1].strip() for row in result.stderr.splitlines() if "|" in row}

    assert "jax" in imported(first)  # built the parser, and kept its pages
    assert {"jax", "numpy", "equinox", "fakes"}.isdisjoint(imported(second))


def test_import_metajax_imports_no_jax_until_a_name_is_used():
    seen = "print('jax' in sys.modules)"
    code = f"import sys, metajax; {seen}; metajax.maml; {seen}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "True"], result.stderr
