"""Sweeps: many ``Trainer`` runs (models x seeds x settings), each in its own process, resumable.

    jobs = [SweepJob(Path(f"runs/sweep/{m}/seed{s}"), {"model.name": m, "train.seed": s, ...})
            for m in ("transvae-mini-f16d32", "cnn-vae-mini-f16d32") for s in (0, 1, 2)]
    run_sweep(jobs, workers=2)         # two single-threaded processes at a time

Each job runs ``python -m transvae.training.sweep RUN_DIR/sweep_job.json`` with
``OMP_NUM_THREADS`` set to its ``threads`` (one thread per process: several processes on a
shared machine do not spin-wait on each other's cores), logging to ``RUN_DIR/sweep.log``. A
job whose run folder has a checkpoint continues it (``--resume``); a larger ``train.max_steps``
extends a finished run. A job may register a model variant first (``variant``: name, base,
overrides; ``models.registry.register_variant``), so runs of variants resume by name too.

Every session appends one line to ``RUN_DIR/sessions.jsonl``: its provenance (commit, dirty
tree, command, versions, machine, load average at the start and the end, wall seconds) and the
steps it trained, so a run trained over several sessions says which code trained which steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..utils.process import cli_env
from ..utils.provenance import Provenance

__all__ = ["SESSIONS", "SweepJob", "pending", "run_job", "run_sweep"]

SESSIONS = "sessions.jsonl"
JOB_FILE = "sweep_job.json"


@dataclass
class SweepJob:
    """One run of a sweep.

    Args:
        run_dir: its run folder.
        overrides: dotted config keys for ``build_config`` (``model.name``, ``train.seed``, ...).
        variant: ``(name, base, overrides)`` to register before building ``model.name``.
        threads: torch / OpenMP threads of its process.
    """

    run_dir: Path
    overrides: dict[str, Any]
    variant: tuple[str, str, dict[str, Any]] | None = None
    threads: int = 1


def run_job(job: SweepJob) -> dict[str, Any]:
    """Run (or continue) one job in this process; returns the Trainer's summary."""
    import torch

    from ..models.registry import register_variant
    from .benchmark import exported_step
    from .config import build_config
    from .trainer import Trainer

    torch.set_num_threads(job.threads)
    prov = Provenance.start(seeds=[job.overrides.get("train.seed", 0)])
    if job.variant is not None:
        name, base, over = job.variant
        register_variant(name, base, **over)
    run = Path(job.run_dir)
    before = exported_step(run) or 0
    resume = (run / "checkpoints" / "last.pt").is_file()
    summary = Trainer(build_config(overrides=job.overrides), run, resume=resume).fit()
    line = prov.finish(steps={"from": before, "to": summary["step"]}, status=summary["status"])
    with open(run / SESSIONS, "a") as f:
        f.write(json.dumps(line) + "\n")
    return summary


def pending(jobs: list[SweepJob], resume: bool) -> list[SweepJob]:
    """The jobs whose exported model is short of their ``train.max_steps``, in the given order.

    Raises:
        FileExistsError: a job's run folder was started before and ``resume`` is False (the
            message names it and says to pass --resume or choose other folders).
    """
    from .benchmark import exported_step

    started = [j.run_dir for j in jobs if (Path(j.run_dir) / "config.yaml").exists()]
    if started and not resume:
        raise FileExistsError(
            f"{len(started)} run folder(s) exist (e.g. {started[0]}): pass --resume to continue or extend them, or use other folders"
        )
    return [j for j in jobs if (exported_step(j.run_dir) or 0) < j.overrides.get("train.max_steps", 0)]


def run_sweep(jobs: list[SweepJob], workers: int = 1, quiet: bool = False) -> list[int]:
    """Run ``jobs``, ``workers`` processes at a time (in the order given); their exit statuses.

    Each job's output goes to ``RUN_DIR/sweep.log``; one line per finished job is printed.
    """

    def one(job: SweepJob) -> int:
        run = Path(job.run_dir)
        run.mkdir(parents=True, exist_ok=True)
        spec = {**asdict(job), "run_dir": str(run)}
        (run / JOB_FILE).write_text(json.dumps(spec, indent=1, default=list))
        env = cli_env(job.threads)
        t0 = time.time()
        with open(run / "sweep.log", "a") as log:
            cmd = [sys.executable, "-m", "transvae.training.sweep", str(run / JOB_FILE)]
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if not quiet:
            tail = (run / "sweep.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
            print(f"  {run}: exit {rc} after {time.time() - t0:.0f} s; {tail[0][-160:]}", flush=True)
        return rc

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(one, jobs))


def main(argv: list[str] | None = None) -> int:
    """``python -m transvae.training.sweep JOB.json``: run one job (what ``run_sweep`` starts)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m transvae.training.sweep RUN_DIR/sweep_job.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    variant = tuple(spec["variant"]) if spec.get("variant") else None
    job = SweepJob(Path(spec["run_dir"]), spec["overrides"], variant, int(spec.get("threads", 1)))
    summary = run_job(job)
    print(f"{job.run_dir}: {summary['status']} at step {summary['step']}")
    return int(summary.get("exit_status", 0))


if __name__ == "__main__":
    sys.exit(main())
