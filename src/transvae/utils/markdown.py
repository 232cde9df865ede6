"""Markdown tables, and generated blocks inside hand-written documents.

A document keeps its prose by hand and lets a program own some blocks, each between markers:

    <!-- results:speed-cpu -->
    | run | img/s |
    ...
    <!-- /results -->

``replace_blocks(text, {"speed-cpu": new})`` rewrites what is between the markers of each
named block (the markers stay); ``find_blocks(text)`` returns the current contents, so a test
can check that a document still says what its sources say.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BLOCK", "find_blocks", "fmt_number", "markdown_table", "render_files", "replace_blocks"]

BLOCK = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def fmt_number(v: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` significant digits (one decimal from 100 on), None as
    ``-``, anything else as ``str``."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    headers: Sequence[str] | None = None,
    fmt: Callable[[Any], str] = fmt_number,
    align: str = "",
) -> str:
    """Rows of dicts -> a markdown table.

    Args:
        rows: one dict per row; a missing key is an empty cell (``fmt(None)``).
        columns: the keys, in order.
        headers: the header cells (default: the keys).
        fmt: value -> cell text.
        align: one character per column, ``l`` or ``r`` (default: all ``---``).
    """
    head = list(headers or columns)
    rule = [":---" if a == "l" else "---:" if a == "r" else "---" for a in (align or "-" * len(columns))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def find_blocks(text: str) -> dict[str, str]:
    """{name: body} of every marked block in ``text`` (the body without the markers)."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def replace_blocks(text: str, blocks: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` with the body of each named block replaced (a body gets a final newline).

    Returns:
        (the new text, the names in ``text`` that ``blocks`` has no body for).
    """
    missing: list[str] = []

    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in blocks:
            missing.append(name)
            return m[0]
        body = blocks[name].rstrip("\n") + "\n"
        return f"{m[1]}{body}{m[4]}"

    return BLOCK.sub(sub, text), missing


def render_files(
    paths: Sequence[str | os.PathLike], renderers: Mapping[str, Callable[[], str]], check: bool = False
) -> list[str]:
    """Rewrite every marked block of every file with ``renderers[name]()``.

    Args:
        paths: the documents.
        renderers: block name -> a function returning its body.
        check: change nothing, only compare.
    Returns:
        ``"path: name"`` of every block whose body differed (was stale).
    Raises:
        KeyError: a document has a block no renderer is known for.
    """
    stale = []
    for path in map(Path, paths):
        text = path.read_text()
        old = find_blocks(text)
        if unknown := sorted(set(old) - set(renderers)):
            raise KeyError(f"{path}: unknown results block(s) {unknown}; known: {sorted(renderers)}")
        new, _ = replace_blocks(text, {n: renderers[n]() for n in old})
        stale += [f"{path}: {n}" for n, body in find_blocks(new).items() if body != old[n]]
        if not check and new != text:
            path.write_text(new)
    return stale
