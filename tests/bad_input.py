"""Helpers of the bad-input tests: a command's exit status and what it printed, and the files
it must leave as they were."""

import tempfile
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


def deny_new_files(monkeypatch: pytest.MonkeyPatch, folder: Path | None = None) -> None:
    """Makes ``folder`` (every folder, by default) refuse new files, as to a user without write
    permission: metajax probes a folder with a temporary file (root writes anywhere)."""
    make = tempfile.TemporaryFile

    def denied(*args, dir=None, **kwargs):
        if folder is None or str(dir) == str(folder):
            raise PermissionError(13, "Permission denied")
        return make(*args, dir=dir, **kwargs)

    monkeypatch.setattr("metajax._files.tempfile.TemporaryFile", denied)
