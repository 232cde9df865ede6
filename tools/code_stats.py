"""Structure figures of a checkout: lines per package, long functions, import cycles, repeated blocks.

    python tools/code_stats.py                 # this checkout
    python tools/code_stats.py --root /tmp/old # another checkout (e.g. `git worktree add /tmp/old REV`)
    python tools/code_stats.py --json out.json

What it counts (the figures of issue 22, docs/architecture.md):

- lines of ``src/transvae`` per package, of ``benchmarks/`` and of ``tests/`` (all lines of .py files);
- functions longer than 80 lines in ``src/`` (AST: ``def`` to its last line);
- modules that import each other (pairs) and import cycles of any length among ``transvae``'s
  modules (grimp's import graph, function-level imports included);
- repeated blocks: pairs of places in ``src/``, ``benchmarks/``, ``tests/`` and ``tools/`` that share
  six or more consecutive lines, compared after dropping blank, comment, import and lone-bracket
  lines and folding white space ("same"), or also with names, strings and numbers replaced by
  placeholders ("shape"). A pair is counted once however long the shared run is.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import sys
import tokenize
from collections import defaultdict
from pathlib import Path

WINDOW = 6
MAX_FUNCTION_LINES = 80


def py_files(root: Path, *parts: str) -> list[Path]:
    return sorted(p for part in parts for p in (root / part).rglob("*.py") if "__pycache__" not in p.parts)


def line_count(files: list[Path]) -> int:
    return sum(len(p.read_text(errors="replace").splitlines()) for p in files)


def long_functions(files: list[Path], root: Path) -> list[str]:
    out = []
    for p in files:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{p.relative_to(root)}:{node.lineno} {node.name} ({n})")
    return out


def import_cycles(src: Path) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """(pairs of modules that import each other, strongly connected sets of 2+ modules)."""
    import grimp

    sys.path.insert(0, str(src))
    graph = grimp.build_graph("transvae", include_external_packages=False, cache_dir=None)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    pairs = sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, ()))
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return pairs, sorted(comps)


_SKIP = re.compile(r"^(import |from \S+ import |[\)\]\}\(\[\{,:]*$)")


def _lines(path: Path, shape: bool) -> list[tuple[int, str]]:
    """(line number, normalised text) of the lines that count (see the module docstring)."""
    text = path.read_text(errors="replace")
    kept = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    by_line: dict[int, list[str]] = defaultdict(list)
    for tok in tokens:
        if tok.type in (
            tokenize.COMMENT,
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            continue
        value = tok.string
        if shape and tok.type in (tokenize.NAME, tokenize.STRING, tokenize.NUMBER):
            value = (
                tok.string
                if tok.string in _KEYWORDS
                else {tokenize.NAME: "N", tokenize.STRING: "S"}.get(tok.type, "0")
            )
        by_line[tok.start[0]].append(value)
    raw = text.splitlines()
    for n in sorted(by_line):
        if _SKIP.match(raw[n - 1].strip()):
            continue
        kept.append((n, " ".join(by_line[n])))
    return kept


_KEYWORDS = set(__import__("keyword").kwlist) | {"self", "cls"}


def repeated_blocks(files: list[Path], root: Path, shape: bool) -> list[tuple[str, str]]:
    """Pairs of files (and the first line of the shared run in each) sharing WINDOW+ counted lines."""
    seen: dict[tuple[str, ...], list[tuple[Path, int]]] = defaultdict(list)
    for p in files:
        lines = _lines(p, shape)
        for i in range(len(lines) - WINDOW + 1):
            window = tuple(t for _, t in lines[i : i + WINDOW])
            if shape and sum(len(t) for t in window) < 60:  # thin shapes (brackets, keywords) are boilerplate
                continue
            seen[window].append((p, lines[i][0]))
    pairs: dict[tuple[str, str], tuple[str, str]] = {}
    for places in seen.values():
        if len(places) < 2 or len(places) > 8:  # a run in more than 8 places is boilerplate
            continue
        for a in range(len(places)):
            for b in range(a + 1, len(places)):
                (pa, la), (pb, lb) = places[a], places[b]
                if pa == pb and abs(la - lb) < WINDOW:
                    continue
                key = tuple(sorted((str(pa.relative_to(root)), str(pb.relative_to(root)))))
                pairs.setdefault(key, (f"{pa.relative_to(root)}:{la}", f"{pb.relative_to(root)}:{lb}"))
    return sorted(pairs.values())


def stats(root: Path) -> dict:
    src = root / "src" / "transvae"
    packages = {
        p.name: line_count(py_files(src, p.name))
        for p in sorted(src.iterdir())
        if p.is_dir() and p.name != "__pycache__"
    }
    src_files = py_files(root, "src")
    everything = src_files + py_files(root, "benchmarks", "tests", "tools")
    pairs, cycles = import_cycles(root / "src")
    same = repeated_blocks(everything, root, shape=False)
    alike = repeated_blocks(everything, root, shape=True)
    in_src = [p for p in set(same) | set(alike) if p[0].startswith("src/") or p[1].startswith("src/")]
    return {
        "lines": {
            "src": line_count(src_files),
            "benchmarks": line_count(py_files(root, "benchmarks")),
            "tests": line_count(py_files(root, "tests")),
        },
        "src_packages": packages,
        "functions_over_80_lines": long_functions(src_files, root),
        "modules_importing_each_other": pairs,
        "import_cycles": cycles,
        "repeated_blocks": {
            "same": len(same),
            "same_or_alike": len(set(same) | set(alike)),
            "in_src": len(in_src),
            "pairs": sorted(set(same) | set(alike)),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--root", default=str(Path(__file__).resolve().parents[1]), help="the checkout to measure"
    )
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    s = stats(Path(args.root).resolve())
    print(
        f"lines: src {s['lines']['src']}, benchmarks {s['lines']['benchmarks']}, tests {s['lines']['tests']}"
    )
    print("src packages: " + ", ".join(f"{k} {v}" for k, v in s["src_packages"].items()))
    print(f"functions over {MAX_FUNCTION_LINES} lines in src: {len(s['functions_over_80_lines'])}")
    for f in s["functions_over_80_lines"]:
        print(f"  {f}")
    print(
        f"modules importing each other: {len(s['modules_importing_each_other'])}; import cycles: {len(s['import_cycles'])}"
    )
    for c in s["import_cycles"]:
        print("  cycle: " + " -> ".join(c))
    r = s["repeated_blocks"]
    print(
        f"repeated blocks of {WINDOW}+ lines: {r['same_or_alike']} pairs ({r['same']} identical), {r['in_src']} touching src/"
    )
    for a, b in r["pairs"]:
        print(f"  {a} ~ {b}")
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
