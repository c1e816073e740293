"""What the command prints: file names that are not valid UTF-8 (which Python holds as lone
surrogates) are shown with those bytes escaped as ``\\xNN``, on any console, and the command
says so once."""

import argparse
import codecs
import io
import sys

_ESCAPE = "metajax-escape"
NOTE = (
    "metajax: note: names that are not valid UTF-8 are shown and written with those bytes "
    "escaped (\\xNN)"
)


def _escape(error: UnicodeError) -> tuple[str, int]:
    """The codecs error handler: a byte that was not UTF-8 as ``\\xNN``, any other character
    that the console cannot show as Python's ``backslashreplace`` does."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(_shown(c) for c in bad), error.end


def _shown(character: str) -> str:
    if is_undecoded(character):
        return f"\\x{ord(character) - 0xDC00:02x}"
    return character.encode("ascii", "backslashreplace").decode()


def is_undecoded(text: str) -> bool:
    """Whether ``text`` holds a byte that was not valid UTF-8 in a file name (a lone
    surrogate, as :func:`os.fsdecode` leaves it)."""
    return any(0xDC80 <= ord(c) <= 0xDCFF for c in text)


def escape_output() -> None:
    """Makes stdout and stderr escape what they cannot encode instead of raising: a file name
    that is not valid UTF-8 would otherwise end a command in a UnicodeEncodeError on a UTF-8
    console, after its work was done."""
    codecs.register_error(_ESCAPE, _escape)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=_ESCAPE)


def note_escaped(args: argparse.Namespace, *texts: str) -> None:
    """Says once per command (``args`` remembers it) that names are shown escaped, if any of
    ``texts`` holds a name that is not valid UTF-8."""
    if not getattr(args, "escaped_noted", False) and any(is_undecoded(t) for t in texts):
        args.escaped_noted = True
        print(NOTE, file=sys.stderr)
