#!/usr/bin/env python3
"""Set up and run, from a fresh clone with nothing but python3:

    python3 dev.py quickstart [ARGS]   # trains a mini TransVAE on CPU, then reconstructs
    python3 dev.py test [ARGS]         # the test suite (pytest -q ARGS)

On first use (or after pyproject.toml or the torch pins change) it creates ``.venv`` and installs
``torch`` / ``torchvision`` (the pinned versions below) and then ``-e ".[dev]"`` into it; later
runs go straight to the command. pip's own settings (``PIP_INDEX_URL``, ``PIP_FIND_LINKS``,
pip.conf) apply, e.g. for a CPU-only torch index or a local wheel cache. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]  # the versions the project is tested with
COMMANDS = {
    "quickstart": ["-m", "transvae.cli", "quickstart"],
    "test": ["-m", "pytest", "-q"],
}


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install_key() -> str:
    """What the installed environment depends on: the torch pins and pyproject.toml."""
    return hashlib.sha256(" ".join(TORCH).encode() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_environment() -> Path:
    """Create ``.venv`` and install into it when missing or stale; returns its python."""
    py, stamp = venv_python(), VENV / ".transvae-install"
    if stamp.is_file() and stamp.read_text().strip() == install_key() and py.is_file():
        return py
    if not py.is_file():
        print(f"dev.py: creating {VENV}", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except Exception as e:  # e.g. Debian without the python3-venv package
            sys.exit(f"dev.py: cannot create {VENV} ({e}); install Python's venv module (python3-venv)")
    for args in (TORCH, ["-e", ".[dev]"]):
        print(f"dev.py: pip install {' '.join(args)}", flush=True)
        if subprocess.call([str(py), "-m", "pip", "install", *args], cwd=ROOT) != 0:
            sys.exit(f"dev.py: 'pip install {' '.join(args)}' failed (see above)")
    stamp.write_text(install_key() + "\n")
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        asked = argv[:1] in (["-h"], ["--help"])
        print(__doc__.strip(), file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    py = ensure_environment()
    return subprocess.call([str(py), *COMMANDS[argv[0]], *argv[1:]], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
