"""Prepare a folder for a GPU machine lent through the device tool (docs/benchmarks.md, section 6).

The wheels its image lacks (diffusers, lpips: the versions installed here, for CPython 3.12 on
manylinux x86_64) and a copy of the photos for ``benchmarks/gpu_suite.py --data``; carry the
folder (ignored by git) in the device run:

    python tools/prepare_gpu.py .gpu --data ../shared/data/bsds500/train
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dest", type=Path, help="the folder to fill (e.g. .gpu)")
    p.add_argument("--data", type=Path, default=None, help="a photo folder to copy into DEST/photos")
    args = p.parse_args(argv)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
           "-d", str(args.dest / "whl"), *(f"{p}=={version(p)}" for p in ("diffusers", "lpips"))]  # fmt: skip
    subprocess.run(cmd, check=True)
    if args.data is not None:
        shutil.rmtree(args.dest / "photos", ignore_errors=True)
        shutil.copytree(args.data, args.dest / "photos")
    print(f"prepared {args.dest}; carry it in the device run (docs/benchmarks.md, section 6)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
