"""Helpers shared by the benchmark scripts: machine description, tables, and the thin glue that
runs the product's own code -- ``transvae.training.Trainer`` for training, ``transvae evaluate``
for evaluation -- on benchmark variants. Nothing here trains or measures on its own.

The scripts import this module as ``bench_utils`` (Python puts the script's folder on the path
when it runs ``python benchmarks/<script>.py``); the tests load it by file path.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs" / "benchmarks"
RUNS_DIR = REPO / "runs" / "bench"  # gitignored: trained weights never go into git
# BSDS500 next to the checkout (../shared/data/bsds500), also from a worktree one level deeper
DEFAULT_DATA = next(
    (r / "shared" / "data" / "bsds500" for r in REPO.parents if (r / "shared" / "data" / "bsds500").is_dir()),
    REPO.parent / "shared" / "data" / "bsds500",
)
LOAD_CAVEAT = (
    "Measured on a shared machine while other jobs (tests, trainings) ran on the same cores: "
    "absolute times are slowed and noisy; the models are interleaved within one run, so the "
    "ratios between them are the figures to read."
)


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict:
    """Everything needed to interpret timings: CPU, cores, threads, library versions, GPU, load."""
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "caveat": LOAD_CAVEAT,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def slug(label: str) -> str:
    """Filesystem-safe name for a model label: ``"+ SeqConv encoder"`` -> ``"seqconv-encoder"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Rows of dicts -> a markdown table (floats with 3 significant decimals)."""

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.1f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def subplots(*args, **kwargs):
    """``plt.subplots`` on the non-interactive Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: Path) -> None:
    """Lay ``fig`` out, write it to ``path`` (creating its folder) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def line_style(label: str, labels: list[str]) -> dict:
    """Matplotlib style shared by the plots: TransVAE black and thick (its variants black, dashed
    or dotted), CNN-VAE red and thick; the design ladder rungs in between coloured from ViT-VAE
    (dark blue) to the last rung (yellow)."""
    import matplotlib.pyplot as plt

    def is_transvae(x: str) -> bool:
        return x == "TransVAE" or "(= TransVAE)" in x

    if is_transvae(label):
        return dict(color="black", lw=2.2)
    if "TransVAE" in label:  # a TransVAE variant (e.g. another qkv_norm)
        variants = [x for x in labels if "TransVAE" in x and not is_transvae(x)]
        return dict(color="black", lw=1.4, ls=("--", ":", "-.")[variants.index(label) % 3])
    if label.startswith("CNN-VAE"):
        return dict(color="tab:red", lw=2.2)
    rungs = [x for x in labels if not x.startswith("CNN-VAE") and "TransVAE" not in x]
    return dict(color=plt.cm.viridis(rungs.index(label) / max(len(rungs) - 1, 1)), lw=1.2)


# --- models, training and evaluation through the product ------------------------------------


def register_variant(name: str, base: str, overrides: dict[str, Any]) -> str:
    """Register ``base`` + ``overrides`` as model ``name`` (idempotent), so that the product's
    ``Trainer`` (which builds ``model.name`` from the registry, also on ``--resume``) trains it.

    Args:
        name: the new registered name, e.g. ``"bench-f16-128-cnn-vae"``.
        base: a registered model whose defaults are the starting point.
        overrides: config values replacing the base's defaults.
    Returns:
        ``name``.
    """
    from transvae.models import get_model_entry, list_models, register_model

    entry = get_model_entry(base)
    defaults = {**entry.defaults, **overrides}
    if name in list_models():
        if get_model_entry(name).defaults != defaults:
            raise ValueError(f"model '{name}' is already registered with other settings")
        return name
    register_model(
        name, entry.cls, family=entry.family, description=f"benchmark variant of {base}", **defaults
    )
    return name


def train_run(run_dir: Path, overrides: dict[str, Any], resume: bool) -> dict[str, Any]:
    """Train with ``transvae.training.Trainer`` (the product's loop) into ``run_dir``.

    Args:
        run_dir: the Trainer's run folder.
        overrides: dotted config keys (``"model.name"``, ``"optim.lr"``, ...) for ``build_config``.
        resume: continue from ``run_dir/checkpoints/last.pt`` (the run is cumulative: a larger
            ``train.max_steps`` than before extends it).
    Returns:
        the Trainer's summary (``status``, ``step``, ``wall_seconds``, ``history``, ...).
    """
    from transvae.training import Trainer, build_config

    cfg = build_config(overrides=overrides)
    return Trainer(cfg, run_dir, resume=resume).fit()


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.pt").is_file()


def run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved configuration a Trainer run saved (``config.yaml``; runs made before the
    engine split also wrote it as ``config.json``)."""
    if (run_dir / "config.yaml").is_file():
        return yaml.safe_load((run_dir / "config.yaml").read_text())
    return json.loads((run_dir / "config.json").read_text())


def read_run(run_dir: Path) -> dict[str, Any]:
    """A finished (or interrupted) Trainer run: its validation curve and step time.

    Returns:
        ``step`` (last exported step), ``curve`` ([{"step", "psnr", "ssim"}] from the Trainer's
        validations), ``s_per_step`` (median over the logging intervals that contain no
        validation or checkpoint, if any), ``train_seconds`` (``s_per_step`` x steps).
    """
    curve, intervals, all_intervals = [], [], []
    cfg = run_config(run_dir)
    every, batch = cfg["log"]["every"], cfg["train"]["batch_size"]
    events = (cfg["log"]["val_every"], cfg["train"]["checkpoint_every"])
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "val/psnr" in r:
            curve.append({"step": r["step"], "psnr": r["val/psnr"], "ssim": r["val/ssim"]})
        elif "train/img_per_s" in r:
            all_intervals.append(batch / r["train/img_per_s"])  # seconds per step
            start = r["step"] - every  # the interval (start, step] includes a validation or a
            if not any(start > 0 and start % q == 0 for q in events):  # checkpoint made at `start`
                intervals.append(all_intervals[-1])
    curve = sorted(
        {c["step"]: c for c in curve}.values(), key=lambda c: c["step"]
    )  # resumed runs repeat none
    meta = json.loads((run_dir / "model" / "config.json").read_text()).get("metadata", {})
    step = int(meta.get("step", curve[-1]["step"] if curve else 0))
    intervals = intervals or all_intervals  # (when every interval follows a validation)
    s_per_step = statistics.median(intervals) if intervals else None
    return dict(
        step=step,
        curve=curve,
        s_per_step=s_per_step,
        train_seconds=None if s_per_step is None else s_per_step * step,
    )


def evaluate_cli(
    model_dir: Path,
    data: Path,
    out_dir: Path,
    resolutions: Sequence[int],
    limit: int | None = None,
    batch_size: int = 8,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``transvae evaluate`` (PSNR and SSIM, the product's protocol) in a subprocess and
    return its ``results.json``. The command is recorded in the JSON (``run.command``)."""
    cmd = [
        sys.executable, "-m", "transvae.cli", "evaluate", "--model", str(model_dir), "--data", str(data),
        "--out", str(out_dir), "--resolution", *map(str, resolutions), "--metrics", "psnr", "ssim",
        "--batch-size", str(batch_size), "--num-workers", "0", "--quiet", *extra,
    ]  # fmt: skip
    if limit:
        cmd += ["--limit", str(limit)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"transvae evaluate failed ({r.returncode}):\n{r.stderr[-2000:]}")
    payload = json.loads((out_dir / "results.json").read_text())
    payload["run"]["command"] = "transvae " + " ".join(cmd[3:])
    return payload
