"""The ``transvae`` command in a subprocess, from Python: this interpreter, this source tree, a
chosen number of OpenMP threads (benchmarks, sweeps and scripts that run the CLI users run).

    run_cli(["extract-latents", "photos/", "--model", "runs/a/model", "--out", "lat/"], log=Path("x.log"))
    evaluate_cli(Path("runs/a/model"), Path("photos/"), Path("eval/"), [256])["results"]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["cli_env", "evaluate_cached", "evaluate_cli", "run_cli"]

SRC = Path(__file__).resolve().parents[2]  # the folder holding the transvae package


def cli_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a ``transvae`` subprocess: this source tree first on ``PYTHONPATH``,
    ``OMP_NUM_THREADS=threads`` when given."""
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))


def run_cli(
    args: Sequence[str], log: Path | None = None, threads: int | None = 1, timeout: float | None = None
) -> str:
    """Run ``transvae ARGS`` (``python -m transvae.cli``) and wait for it.

    Args:
        args: the command line after ``transvae``.
        log: a file the command line and its output are appended to (else the output is returned).
        threads: ``OMP_NUM_THREADS`` of the subprocess (None: inherited).
        timeout: seconds before it is killed (``subprocess.TimeoutExpired``).
    Returns:
        its output (stdout and stderr; empty when written to ``log``).
    Raises:
        RuntimeError: a non-zero exit status (with the last lines of its output, or the log's name).
    """
    cmd, env = [sys.executable, "-m", "transvae.cli", *map(str, args)], cli_env(threads)
    if log is None:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        output, where = (p.stdout or "") + (p.stderr or ""), ""
    else:
        with open(log, "a") as f:
            f.write(f"$ transvae {' '.join(cmd[3:])}\n")
            f.flush()
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout)
        output, where = "", f"; see {log}"
    if p.returncode != 0:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise RuntimeError(
            f"transvae {cmd[3]} exited with {p.returncode}{where}{': ' + tail if tail else ''}"
        )
    return output


def evaluate_cli(
    model_dir: Path, data: Path, out_dir: Path, resolutions: Sequence[int], limit: int | None = None,
    batch_size: int = 8, extra: Sequence[str] = (),
) -> dict[str, Any]:  # fmt: skip
    """``transvae evaluate`` (PSNR and SSIM: the product's protocol) in a subprocess; its
    ``results.json``, with ``run.command`` the command line."""
    args = [
        "evaluate", "--model", str(model_dir), "--data", str(data), "--out", str(out_dir),
        "--resolution", *map(str, resolutions), "--metrics", "psnr", "ssim", "--batch-size", str(batch_size),
        "--num-workers", "0", "--quiet", *extra, *(["--limit", str(limit)] if limit else []),
    ]  # fmt: skip
    run_cli(args, threads=None)
    payload = json.loads((out_dir / "results.json").read_text())
    payload["run"]["command"] = "transvae " + " ".join(args)
    return payload


def evaluate_cached(
    model_dir: Path, data: Path, out_dir: Path, resolutions: Sequence[int], key: Any, **kw: Any
) -> dict[str, Any]:
    """``evaluate_cli``, reused from ``out_dir/results.json`` when that was made for the same ``key``
    (e.g. the model's step): reruns of a report re-evaluate only what changed."""
    cached = out_dir / "results.json"
    if cached.is_file() and (payload := json.loads(cached.read_text())).get("bench_key") == key:
        return payload
    payload = evaluate_cli(model_dir, data, out_dir, resolutions, **kw)
    cached.write_text(json.dumps({**payload, "bench_key": key}))
    return payload
