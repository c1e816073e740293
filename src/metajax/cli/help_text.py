"""The command's help, kept on disk so that ``metajax [COMMAND ...] --help`` prints it without
importing JAX: building the parser needs every family and algorithm, and with them JAX (about
2 s on a small CPU), to print a page that changes only when the code does.

Every command that builds the parser keeps the help of each of its subcommands in
``help/`` of metajax's cache folder (see :func:`metajax._files.cache_dir`), under a key of all
the page depends on: the versions of Python and metajax, the size and time of change of every
source file of metajax and of its plugins (so an editable install's edit counts), the plugins
themselves and the terminal's width. A help request whose key has no readable file builds the
parser as before and writes one. This module imports nothing of JAX's.
"""

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from importlib.metadata import EntryPoint, version
from pathlib import Path

from metajax._files import cache_dir
from metajax.config import plugins

KEPT = 8
"""How many help files the folder keeps, the newest: one per terminal width in use, say."""

_HELP_FLAGS = ("-h", "--help")
_PACKAGE = Path(__file__).resolve().parents[1]


def _source_files(entry_points: list[EntryPoint]) -> list[Path] | None:
    """The source files of metajax and of each plugin; ``None`` if a plugin's is not found
    (the parser, built in full, then says what is wrong with it)."""
    files = sorted(_PACKAGE.rglob("*.py"))
    for entry_point in entry_points:
        top = entry_point.module.split(".")[0]
        try:
            spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        if spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                files.extend(sorted(Path(folder).rglob("*.py")))
        elif spec.origin:
            files.append(Path(spec.origin))
    return files


def key() -> str | None:
    """The key of the help pages this process would print; ``None`` if it cannot be known."""
    entry_points = plugins.entry_points_of_plugins()
    files = _source_files(entry_points)
    if files is None:
        return None
    parts = [sys.version, version("metajax"), str(shutil.get_terminal_size().columns)]
    parts.extend(f"{e.name}={e.value}" for e in entry_points)
    try:
        stats = [(f, f.stat()) for f in files]
    except OSError:
        return None
    parts.extend(f"{f}:{stat.st_size}:{stat.st_mtime_ns}" for f, stat in stats)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _file(help_key: str) -> Path:
    return cache_dir() / "help" / f"{help_key}.json"


def requested(argv: list[str]) -> str | None:
    """The subcommands whose help ``argv`` asks for and nothing else (``"train sinusoid"`` for
    ``train sinusoid --help``, ``""`` for ``--help``); ``None`` for any other command line."""
    if not argv or argv[-1] not in _HELP_FLAGS or len(argv) > 3:
        return None
    words = argv[:-1]
    if any(word.startswith("-") for word in words):
        return None
    return " ".join(words)


def cached(argv: list[str]) -> str | None:
    """The help page ``argv`` asks for, if one was kept for this key; else ``None``."""
    command = requested(argv)
    if command is None:
        return None
    help_key = key()
    if help_key is None:
        return None
    path = _file(help_key)
    try:
        pages = json.loads(path.read_text(encoding="utf-8"))
    except OSError:  # none kept, or a folder that cannot be read
        return None
    except ValueError:  # damaged, or cut short: the parser writes it anew
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return None
    page = pages.get(command) if isinstance(pages, dict) else None
    return page if isinstance(page, str) else None


def pages(parser: argparse.ArgumentParser, command: str = "") -> dict[str, str]:
    """The help page of ``parser`` and of each of its subcommands, by subcommand words."""
    found = {command: parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                found.update(pages(subparser, f"{command} {name}".strip()))
    return found


def keep(parser: argparse.ArgumentParser) -> None:
    """Writes the help pages of ``parser`` for this key, unless they are kept already. A folder
    that cannot be written costs nothing but the speed of the next ``--help``."""
    help_key = key()
    if help_key is None:
        return
    path = _file(help_key)
    if path.is_file():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own, so that two processes writing the same key never mix.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(pages(parser), file)
        os.replace(temporary, path)
        for old in sorted(path.parent.glob("*.json"), key=os.path.getmtime)[:-KEPT]:
            old.unlink(missing_ok=True)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
