"""Reading a finished (or interrupted) training run folder back: its validation curve and its cost.

    h = run_history("runs/x")
    h["curve"]          # [{"step", "psnr", "ssim", "cpu_seconds", "wall_seconds"}, ...]
    h["cpu_s_per_step"] # CPU seconds per training step (validation and checkpoints excluded)

The engine logs, with every ``log.every`` steps, the time spent inside training steps so far
(``train/cpu_seconds``: CPU seconds of the training process; ``train/wall_seconds``), summed over
resumed sessions; a validation at step s is paired with the value logged at step s (or the last
one before it). Runs written before those were logged have ``None`` there and their wall seconds
per step are estimated from ``train/img_per_s`` (the median over logging intervals that contain
no validation or checkpoint).
"""

from __future__ import annotations

import bisect
import json
import os
import statistics
from pathlib import Path
from typing import Any

from ..utils.config import read_json, read_yaml

__all__ = ["run_history"]


def _config(run: Path) -> dict[str, Any]:
    if (run / "config.yaml").is_file():
        return read_yaml(run / "config.yaml")
    return read_json(run / "config.json")  # runs made before the engine split


def _legacy_s_per_step(rows: list[dict], cfg: dict[str, Any]) -> float | None:
    every, batch = cfg["log"]["every"], cfg["train"]["batch_size"]
    events = (cfg["log"]["val_every"], cfg["train"]["checkpoint_every"])
    clean, every_interval = [], []
    for r in rows:
        every_interval.append(batch / r["train/img_per_s"])
        start = r["step"] - every  # the interval (start, step] follows a validation / checkpoint at start?
        if not any(start > 0 and start % q == 0 for q in events):
            clean.append(every_interval[-1])
    chosen = clean or every_interval
    return statistics.median(chosen) if chosen else None


def _session(s: dict[str, Any]) -> dict[str, Any]:
    m = s.get("machine", {})
    return {
        **{k: s.get(k) for k in ("started_at", "wall_seconds", "steps", "status", "git")},
        "load_average": [m.get("load_average_at_start"), m.get("load_average_at_end")],
    }


def run_history(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The validation curve and training cost of a ``Trainer`` run folder.

    Returns:
        ``step`` (the exported model's step), ``curve`` (per validation: ``step``, ``psnr``,
        ``ssim``, ``cpu_seconds`` and ``wall_seconds`` spent in training steps up to it),
        ``cpu_seconds`` / ``wall_seconds`` (in training steps up to the last logged step; None
        for old runs), ``cpu_s_per_step`` / ``wall_s_per_step`` (those divided by the steps),
        ``sessions`` (``training.sweep``'s records: start, commit, load average, steps trained).
    """
    run = Path(run_dir)
    cfg = _config(run)
    vals, logs = {}, []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "val/psnr" in r:
            vals[r["step"]] = r  # a resumed run logs a step once (metrics.jsonl is cut back)
        elif "train/img_per_s" in r:
            logs.append(r)
    logs.sort(key=lambda r: r["step"])
    steps = [r["step"] for r in logs]

    def at(step: int, key: str) -> float | None:
        if step == 0:
            return 0.0 if logs and key in logs[0] else None
        i = bisect.bisect_right(steps, step) - 1
        return logs[i].get(key) if i >= 0 else None

    curve = [
        {"step": s, "psnr": v["val/psnr"], "ssim": v.get("val/ssim"), "cpu_seconds": at(s, "train/cpu_seconds"),
         "wall_seconds": at(s, "train/wall_seconds")}
        for s, v in sorted(vals.items())
    ]  # fmt: skip
    meta = read_json(run / "model" / "config.json").get("metadata", {}) if (run / "model").is_dir() else {}
    step = int(meta.get("step", curve[-1]["step"] if curve else 0))
    last = logs[-1] if logs else {}
    cpu, wall = last.get("train/cpu_seconds"), last.get("train/wall_seconds")
    n = last.get("step", 0)
    wall_per_step = wall / n if wall is not None and n else _legacy_s_per_step(logs, cfg)
    sessions = run / "sessions.jsonl"  # written by training.sweep
    sessions = (
        [json.loads(x) for x in sessions.read_text().splitlines() if x.strip()] if sessions.is_file() else []
    )
    return dict(
        sessions=[_session(x) for x in sessions],
        step=step,
        curve=curve,
        cpu_seconds=cpu,
        wall_seconds=wall,
        cpu_s_per_step=cpu / n if cpu is not None and n else None,
        wall_s_per_step=wall_per_step,
    )
