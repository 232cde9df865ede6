"""Text that reaches a terminal: file names and other values printed as they are would let a name
with escape sequences set the terminal title or clear the screen, and a newline forge a second,
fake line ("failed ...")."""

from __future__ import annotations

import os

__all__ = ["printable"]


def printable(value: str | os.PathLike) -> str:
    """``value`` with control characters (C0, DEL, C1) and undecodable bytes of file names written
    as ``\\xNN`` escapes; every other character, including non-ASCII letters, is kept.

    Args:
        value: a string or a path.
    Returns:
        one line of printable text.
    """
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    return "".join(_escape(c) for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    if n < 0x20 or 0x7F <= n < 0xA0:
        return f"\\x{n:02x}"
    if 0xDC80 <= n <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
        return f"\\x{n - 0xDC00:02x}"
    if 0xD800 <= n <= 0xDFFF:
        return f"\\u{n:04x}"
    return c
