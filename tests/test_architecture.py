"""The package's structure, checked: layers point downward (import-linter's contract in
``pyproject.toml``), no module imports another's private ``_name`` across packages, no two modules
import each other, and no function is longer than a screen (docs/architecture.md)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "transvae"
MAX_FUNCTION_LINES = 80


def lint_imports(src_root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the repository's contract on the package found under ``src_root``."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {"PYTHONPATH": str(src_root), "PATH": "", "HOME": str(src_root)}
    return subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=src_root,
        timeout=300,
    )


def test_layers_point_downward():
    r = lint_imports(ROOT / "src")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 kept, 0 broken" in r.stdout


def test_the_layer_contract_fails_on_a_deliberate_upward_import(tmp_path):
    copy = tmp_path / "src" / "transvae"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    text = copy / "utils" / "text.py"
    text.write_text(text.read_text() + "\n\ndef _upward():\n    from transvae.cli import common  # noqa: F401\n")
    r = lint_imports(tmp_path / "src")
    assert r.returncode != 0
    assert "transvae.utils is not allowed to import transvae.cli" in r.stdout
    assert "transvae.utils.text -> transvae.cli.common" in r.stdout


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("transvae", include_external_packages=False, cache_dir=None)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_no_module_imports_a_private_name_of_another_package():
    """``from transvae.x import _helper`` from outside ``transvae.x``'s package is a sideways
    reach into a private helper (aliasing a public name as ``_x`` is fine)."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        package = ".".join(module.split(".")[:2])
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = _resolve(module, node, path.name == "__init__.py")
            if not target.startswith("transvae") or target.startswith(package + ".") or target == package:
                continue
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private or any(p.startswith("_") for p in target.split(".")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from {target} import {private}")
    assert not bad, "\n".join(bad)


def test_no_two_modules_import_each_other(graph):
    pairs = sorted(
        (a, b)
        for a in graph.modules
        for b in graph.find_modules_directly_imported_by(a)
        if a < b and graph.direct_import_exists(importer=b, imported=a)
    )
    assert not pairs, pairs


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "\n".join(long)
