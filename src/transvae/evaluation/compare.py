"""Several tokenizers on the same images, one report: ``transvae evaluate --model A --model B``.

Each model is evaluated by ``run_evaluation`` with the same options, protocol and seed (its own
full report goes to ``OUT/<name>/``); ``compare_models`` then writes ``OUT/comparison.json``,
``OUT/comparison.md`` and ``OUT/comparison.html``: one row per tokenizer and resolution (its
metrics, reconstruction throughput, peak GPU memory, parameters and latent shape) and the same
images reconstructed by every model side by side, so the differences can be seen as well as read.

    from transvae.evaluation.compare import compare_models
    compare_models({"ours": model_a, "sd-vae": model_b}, "data/val", "cmp/", resolutions=(256,))
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data.io import list_images
from ..metrics.psnr import psnr_per_image
from .pipeline import EvaluationOptions, run_evaluation
from .report import (
    Markup,
    code,
    fmt,
    html_table,
    img,
    join,
    label,
    metric_value,
    png_data_uri,
    small,
    tag,
    write_json,
    write_page,
)  # fmt: skip
from .runner import reconstruct_files

BR = Markup("<br>")
GENERIC_NAMES = {"model", "ema", "final", "checkpoint", "last", "best"}  # say nothing about a model


def model_labels(paths: list[str]) -> list[str]:
    """Short, distinct, file-name-safe names for models given by path or Hub id:
    ``runs/sd-ft/model`` -> ``sd-ft-model``, ``stabilityai/sd-vae-ft-mse`` -> ``sd-vae-ft-mse``;
    repeats get ``-2``, ``-3``."""
    out: list[str] = []
    for p in paths:
        parts = [x for x in Path(str(p).rstrip("/")).parts if x not in ("", ".", "/")] or ["model"]
        name = parts[-1] if parts[-1] not in GENERIC_NAMES or len(parts) < 2 else f"{parts[-2]}-{parts[-1]}"
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
        base, k = name, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def _row(name: str, model: nn.Module, path: str | None, result: dict) -> dict:
    f = getattr(model, "spatial_compression_ratio", 1)
    side = result["resolution"] // f
    return {
        "model": name,
        "path": path,
        "parameters": sum(p.numel() for p in model.parameters()),
        "latent_shape": [getattr(model, "latent_channels", None), side, side],
        **result,
    }


def compare_models(
    models: Mapping[str, nn.Module],
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    paths: Mapping[str, str] | None = None,
    examples: int = 4,
    **options: Any,
) -> dict:
    """Evaluate every model on ``data`` with the same options; write the comparison.

    Args:
        models: name -> autoencoder (on any device; each is moved to ``options["device"]`` for its
            turn and back to the CPU after it, so only one occupies the accelerator).
        data: image folder or file.
        out_dir: ``out_dir/<name>/`` gets each model's own report, ``out_dir/comparison.*`` the
            comparison.
        paths: name -> where the model came from (recorded).
        examples: images reconstructed by every model side by side (the first ones, by path).
        options: ``EvaluationOptions`` fields, shared by all models.
    Returns:
        the comparison.json payload.
    """
    o = EvaluationOptions(**options)
    out_dir, device = Path(out_dir), torch.device(o.device)
    rows, runs, strips = [], {}, {}
    files = list_images(Path(data))[: o.limit] if o.limit else list_images(Path(data))
    for name, model in models.items():
        model.to(device)
        path = (paths or {}).get(name, options.get("model_path"))
        payload = run_evaluation(model, data, out_dir=out_dir / name, **{**options, "model_path": path})
        runs[name] = {k: payload.get(k) for k in ("output_dir", "output_error", "skipped")}
        rows += [_row(name, model, (paths or {}).get(name), r) for r in payload["results"]]
        if examples:
            strips[name] = reconstruct_files(
                model, files[: 4 * examples], o.resolutions[0], o.protocol, device, o.dtype, o.seed, examples
            )
        model.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    comparison = {
        "models": {n: {"path": (paths or {}).get(n), **runs[n]} for n in models},
        "metrics": list(dict.fromkeys(o.metrics)),
        "protocol": o.protocol,
        "resolutions": list(o.resolutions),
        "rows": rows,
        "run": {"device": str(device), "dtype": str(o.dtype).replace("torch.", ""), "batch_size": o.batch_size,
                "seed": o.seed, "command": o.command, "data": str(data)},
    }  # fmt: skip
    write_comparison(out_dir, comparison, strips)
    return comparison


# -- outputs -------------------------------------------------------------------------------------
SPEED_COLUMNS = (
    ("images_per_second", "img/s", "{:.2f}"),
    ("peak_memory_mb", "peak GPU MB", "{:.0f}"),
)


def _cells(row: dict, metrics: list[str]) -> list[str]:
    cells = [fmt(m, metric_value(row, m)) for m in metrics]
    cells += ["–" if row.get(k) is None else form.format(row[k]) for k, _, form in SPEED_COLUMNS]
    return cells + [f"{row['parameters'] / 1e6:.1f} M", "×".join(str(x) for x in row["latent_shape"])]


def _header(metrics: list[str]) -> list[str]:
    return ["model", "resolution", *(label(m) for m in metrics), *(h for _, h, _ in SPEED_COLUMNS),
            "parameters", "latent"]  # fmt: skip


def comparison_markdown(comparison: dict) -> str:
    """The comparison table: a row per model and resolution."""
    metrics, head = comparison["metrics"], _header(comparison["metrics"])
    lines = ["| " + " | ".join(head) + " |", "|:---|" + "---:|" * (len(head) - 1)]
    for r in comparison["rows"]:
        lines.append("| " + " | ".join([r["model"], str(r["resolution"]), *_cells(r, metrics)]) + " |")
    return "\n".join(lines)


def write_comparison(out_dir: Path, comparison: dict, strips: Mapping[str, tuple]) -> dict[str, Path]:
    """``comparison.json``, ``comparison.md`` and ``comparison.html`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"comparison.{k}" for k in ("json", "md", "html")}
    write_json(paths["json"], comparison)
    run = comparison["run"]
    lines = [
        f"# Tokenizer comparison on `{run['data']}`",
        "",
        f"Protocol `{comparison['protocol']}`, {run['device']}, autocast {run['dtype']}, batch size "
        f"{run['batch_size']}, seed {run['seed']}. Each model's full report: `<model>/report.html`.",
        "",
        comparison_markdown(comparison),
        "",
        "img/s: encode + decode throughput measured during the evaluation pass (first batch left out); "
        "peak GPU MB: weights + the forward's peak allocation (CUDA only).",
    ]
    paths["md"].write_text("\n".join(lines) + "\n")
    _write_comparison_html(paths["html"], comparison, strips)
    return paths


def _write_comparison_html(path: Path, comparison: dict, strips: Mapping[str, tuple]) -> None:
    metrics = comparison["metrics"]
    rows = [[r["model"], r["resolution"], *_cells(r, metrics)] for r in comparison["rows"]]
    models = [join([tag("b", n), ": ", code(m.get("path") or n)]) for n, m in comparison["models"].items()]
    parts = [
        tag("h2", "Metrics"),
        html_table(rows, _header(metrics)),
        small("img/s: encode + decode during the evaluation pass (first batch left out); peak GPU MB: "
              "weights + the forward's peak allocation (CUDA only)."),
        tag("h2", "Models"),
        *(tag("p", m) for m in models),
    ]  # fmt: skip
    if strips:
        parts += [tag("h2", "The same images, reconstructed by each model"), _strips_table(strips)]
    run = comparison["run"]
    if run.get("command"):
        parts.append(tag("p", join(["Command: ", code(run["command"])]), cls="small"))
    write_page(path, "Tokenizer comparison", parts)


def _strips_table(strips: Mapping[str, tuple]) -> Any:
    """input | model A | model B ... for each example image, with each reconstruction's PSNR."""
    names = list(strips)
    first_names, first_inputs, _ = strips[names[0]]
    rows = []
    for j, (fname, x) in enumerate(zip(first_names, first_inputs, strict=True)):
        cells = [join([code(fname), BR, img(png_data_uri(x.permute(1, 2, 0).numpy()), "input")])]
        for n in names:
            _, inputs, recs = strips[n]
            psnr = float(psnr_per_image(inputs[j : j + 1], recs[j : j + 1])[0])
            cells.append(join([f"{n}: {psnr:.2f} dB", BR,
                               img(png_data_uri(recs[j].permute(1, 2, 0).numpy()), n)]))  # fmt: skip
        rows.append(cells)
    width = max(128, min(int(first_inputs.shape[-1]), 256))
    return html_table(rows, ["input", *names], cls="ex", style=f"--w:{width}px")
