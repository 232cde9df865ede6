"""Provenance of a result: which code, command, machine and seeds produced a JSON, and when.

Every result file the project writes for people to read later (the benchmarks' JSONs under
``docs/benchmarks/``, ``transvae evaluate``'s and ``gen-eval``'s ``results.json``) carries a
``provenance`` block, so a number can be traced back to the commit that computed it:

    prov = Provenance.start(seeds=[0, 1, 2])       # at the start of the work
    ...
    write_result("docs/benchmarks/x.json", payload, prov, steps=300)

The block holds the git commit of the source tree and whether it had uncommitted changes (or
why that is unknown: no ``git``, not a checkout), the exact command line, the versions of
torch, torchvision, transvae, diffusers and timm, the CPU model, GPU name and thread counts,
the load average at the start and the end, the seeds, the start time (UTC), the wall seconds
and the steps actually run. ``recorded_after: true`` marks a block written after the fact for
a result that was produced before this module existed (only what could be recovered).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .files import atomic_write_text

__all__ = [
    "Provenance",
    "cpu_model",
    "describe",
    "git_state",
    "machine_info",
    "package_versions",
    "write_result",
]

PACKAGES = ("torch", "torchvision", "transvae", "diffusers", "timm")
SOURCE_ROOT = Path(__file__).resolve().parents[3]  # <checkout>/src/transvae/utils -> <checkout>


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(device: Any = None) -> dict[str, Any]:
    """CPU model, cores, torch / OpenMP threads, GPU name (when ``device`` is CUDA), platform and
    the load average now (1, 5, 15 min): what is needed to read a timing."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": None,
        "platform": platform.platform(),
        "load_average": _load_average(),
    }
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    return info


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions (``importlib.metadata``; None when a package is absent) and Python's."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_state(root: str | os.PathLike = SOURCE_ROOT) -> dict[str, Any]:
    """``{"commit", "dirty", "changed"}`` of the checkout at ``root``; with ``commit: None`` and a
    ``note`` saying why when git is missing or ``root`` is no checkout (an installed package).

    ``dirty`` counts changes to tracked files and untracked files git does not ignore;
    ``changed`` lists up to 20 of them (``git status --porcelain`` lines).
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "note": "git is not installed: commit unknown"}
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return {"commit": None, "dirty": None, "note": f"{root} is not a git checkout: commit unknown"}
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:20]}


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class Provenance:
    """Where a result comes from. Make one with ``Provenance.start()`` when the work begins and
    turn it into the JSON block with ``finish()`` (or let ``write_result`` do it).

    Attributes:
        command: the command line as typed (``sys.argv`` joined, shell-quoted).
        started_at: ISO-8601 UTC time of ``start()``.
        seeds: the seeds the work used.
        git, versions, machine: see ``git_state``, ``package_versions``, ``machine_info``.
        recorded_after: the block was reconstructed after the result was produced.
    """

    command: str
    started_at: str
    seeds: list[int] | None = None
    git: dict[str, Any] = dataclasses.field(default_factory=dict)
    versions: dict[str, str | None] = dataclasses.field(default_factory=dict)
    machine: dict[str, Any] = dataclasses.field(default_factory=dict)
    recorded_after: bool = False
    _t0: float = dataclasses.field(default_factory=time.monotonic, repr=False)

    @classmethod
    def start(
        cls,
        seeds: Sequence[int] | None = None,
        command: str | Sequence[str] | None = None,
        device: Any = None,
    ) -> Provenance:
        """Record the code, command, machine and time now.

        Args:
            seeds: the seeds of the work (None: not seeded).
            command: the command line (default: this process' ``sys.argv``, the interpreter
                written as ``python``); a list is shell-quoted.
            device: the torch device the work runs on (names the GPU when it is CUDA).
        """
        if command is None:
            command = ["python", *sys.argv] if sys.argv and sys.argv[0].endswith(".py") else sys.argv
        if not isinstance(command, str):
            command = shlex.join(str(c) for c in command)
        return cls(
            command=command,
            started_at=_utc_now(),
            seeds=None if seeds is None else [int(s) for s in seeds],
            git=git_state(),
            versions=package_versions(),
            machine=machine_info(device),
        )

    def finish(self, steps: Any = None, **extra: Any) -> dict[str, Any]:
        """The ``provenance`` JSON block, with the wall seconds since ``start()``, the load average
        now, and the steps actually run (a number, or a dict per run)."""
        machine = dict(self.machine)
        machine["load_average_at_start"] = machine.pop("load_average", None)
        machine["load_average_at_end"] = _load_average()
        block = {
            "recorded_after": self.recorded_after,
            "command": self.command,
            "git": self.git,
            "versions": self.versions,
            "machine": machine,
            "seeds": self.seeds,
            "started_at": self.started_at,
            "wall_seconds": round(time.monotonic() - self._t0, 1),
            "steps": steps,
        }
        return {**block, **extra}


def _finite(x: Any) -> Any:
    """JSON has no NaN / Infinity: non-finite floats become None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def write_result(
    path: str | os.PathLike, payload: dict[str, Any], provenance: Provenance, steps: Any = None, **extra: Any
) -> Path:
    """Write ``payload`` plus its ``provenance`` block as JSON, atomically (a crash leaves the old
    file or the new one); non-finite floats are written as null.

    Args:
        path: the JSON file (its folder is created).
        payload: the result, a dict (its ``provenance`` key, if any, is replaced).
        provenance: from ``Provenance.start()`` at the beginning of the work.
        steps: the steps actually run (see ``Provenance.finish``).
        extra: more provenance fields.
    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**payload, "provenance": provenance.finish(steps, **extra)}
    atomic_write_text(path, json.dumps(_finite(body), indent=2) + "\n")
    return path


def describe(provenance: dict[str, Any] | None) -> str:
    """A provenance block in a few words, for a report: ``"commit 0123abc, **dirty tree**"``,
    ``"commit unknown"``, ``"..., provenance recorded after the run"``."""
    p = provenance or {}
    git = p.get("git") or {}
    text = f"commit {git['commit'][:7]}" if git.get("commit") else "commit unknown"
    text += ", **dirty tree**" if git.get("dirty") else ""
    return text + (", provenance recorded after the run" if p.get("recorded_after") or not p else "")
