"""The ``metajax`` command's entry point: a help page kept on disk (:mod:`metajax.cli.help_text`)
is printed at once; any other command line goes to :mod:`metajax.cli.dispatch`, which imports
JAX and the rest of metajax."""

import sys

from metajax.cli import help_text


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    page = help_text.cached(sys.argv[1:] if argv is None else argv)
    if page is not None:
        sys.stdout.write(page)
        return 0
    from metajax.cli import dispatch  # imports JAX: only past the help kept on disk

    return dispatch.main(argv)
