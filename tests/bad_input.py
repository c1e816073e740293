"""Helpers of the bad-input tests: a command's exit status and what it printed, and the files
it must leave as they were."""

from pathlib import Path

import pytest

from metajax.cli import main


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path``, by its path relative to it, with its bytes."""
    return {
        str(file.relative_to(path)): file.read_bytes()
        for file in sorted(path.rglob("*"))
        if file.is_file()
    }


def status_of(command: list[str]) -> int:
    """The exit status of ``metajax COMMAND`` (2 for the usage errors argparse exits with)."""
    try:
        return main(command)
    except SystemExit as exit:
        return int(exit.code)


def refused(command: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Runs ``metajax COMMAND`` in this process; returns its exit status and the last line it
    wrote to stderr, after checking that it wrote no traceback and nothing to stdout."""
    capsys.readouterr()
    status = status_of(command)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and out == "", (out, err)
    return status, err.splitlines()[-1]
