"""Text that is safe to print: names from the file system never reach the terminal raw.

A file name may hold any byte but ``/`` and NUL: an escape sequence in a name can set the
terminal's title or clear the screen, and a newline can forge a separate output line (a fake
"failed ..." line). ``printable`` escapes such characters before a name is printed.
"""

from __future__ import annotations

__all__ = ["printable"]


def _is_control(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F  # C0 controls, DEL, C1 controls


def printable(s: object) -> str:
    """``str(s)`` with every C0/C1 control character and DEL written as ``\\xNN``.

    Ordinary Unicode (accents, CJK, emoji) is kept as is; a backslash is kept too, so the result
    is for people to read, not to parse back.

    Args:
        s: a file name, path or message (anything; ``str()`` is applied first).
    Returns:
        the text with no character that a terminal would interpret.
    """
    text = str(s)
    if not any(_is_control(ch) for ch in text):
        return text
    return "".join(f"\\x{ord(ch):02x}" if _is_control(ch) else ch for ch in text)
