"""The whole evaluation of one model on one folder: every resolution, latent analysis, outputs.

``run_evaluation`` is what ``transvae evaluate`` calls; it is usable from Python as well::

    from transvae.evaluation import run_evaluation
    payload = run_evaluation(model, "data/val", out_dir="eval/", resolutions=(256, 512), metrics=("psnr", "ssim"))
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from transvae.data.io import list_images

from ..inference.limits import check_batch_fits
from ..metrics.base import build_metrics, metric_class
from ..metrics.collection import MetricCollection
from ..metrics.features import feature_networks
from ..utils.provenance import Provenance
from .latent_analysis import linear_probe, uniformity_metrics
from .protocol import class_labels, get_protocol
from .report import summary_for_json, write_outputs
from .runner import LatentOptions, ResolutionResult, evaluate_resolution


def build_metric_collection(
    metrics: Sequence[str],
    device: torch.device | str = "cpu",
    lpips_net: str = "vgg",
    lpips_weights: str | os.PathLike | None = None,
    fid_weights: str | os.PathLike | None = None,
    random_feature_networks: bool = False,
    inception: str = "torch-fidelity",
) -> MetricCollection:
    """The reconstruction metrics by name, with their pretrained networks loaded (before any
    image is read).

    Args:
        metrics: names of metrics that need ``pairs`` (``transvae.metrics.list_metrics({"pairs"})``).
        device: where the networks run.
        lpips_net, lpips_weights: LPIPS trunk and a local copy of its weights.
        fid_weights: a local copy of the FID InceptionV3 weights.
        random_feature_networks: random LPIPS / Inception stand-ins (tests only: not real metrics).
        inception: the FID feature pipeline, "torch-fidelity" or "pytorch-fid" (its resize).
    Raises:
        ValueError: a name that is unknown or not a reconstruction metric.
        WeightsUnavailableError: real weights needed but not available.
    """
    wrong = [m for m in metrics if metric_class(m).needs != {"pairs"}]
    if wrong:
        raise ValueError(f"{wrong} do not measure reconstructions; choose from psnr, ssim, lpips, rfid")
    built = build_metrics(
        metrics,
        device=device,
        lpips_net=lpips_net,
        lpips_weights=lpips_weights,
        random_feature_networks=random_feature_networks,
    )
    variants = {"inception": "inception-pytorch-fid"} if inception == "pytorch-fid" else None
    nets = feature_networks(
        built, {"inception": fid_weights}, random_feature_networks, device=device, variants=variants
    )
    return MetricCollection(built, nets, device)


def check_memory(
    model: nn.Module,
    resolutions: Sequence[int],
    batch_size: int,
    metrics: Sequence[str],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> None:
    """``transvae.inference.limits.check_batch_fits`` for an evaluation pass (the metrics' own
    per-pixel memory, e.g. LPIPS features, counted).

    Raises:
        MemoryError: naming the resolution, the batch size, both sizes and what to change.
    """
    extra = sum(metric_class(m).bytes_per_pixel for m in metrics)
    check_batch_fits(model, resolutions, batch_size, device, dtype, extra_bytes_per_pixel=extra)


@dataclass
class EvaluationOptions:
    """The settings of ``run_evaluation`` (its keyword arguments).

    Attributes:
        resolutions: square sizes R to evaluate (each a multiple of the compression ratio).
        metrics: reconstruction metrics by name (``psnr``, ``ssim``, ``lpips``, ``rfid``: those of
            ``transvae.metrics`` that need ``pairs``); unrequested ones are absent.
        batch_size, num_workers: batching of the pass.
        limit: only the first ``limit`` files (sorted by path).
        device, dtype: where the model runs and its autocast dtype (float32 = none).
        lpips_net, lpips_weights, fid_weights: feature networks (``build_metric_collection``).
        report_images: lowest-PSNR examples shown per resolution in the HTML report.
        latent_stats: per-channel latent mean/std and scaling/shift factors.
        uniformity_samples: latent vectors for VA-VAE's t-SNE uniformity metrics (0 = skip).
        uniformity_repeats: t-SNE runs averaged (VA-VAE: 10).
        probe: linear probe on pooled latents (needs class sub-folders).
        latent_source: "sample" (posterior sample, what diffusion models train on) or "mode".
        seed: for posterior samples, vector sampling, t-SNE and the probe split.
        model_path, command: recorded in the outputs.
        progress: tqdm bars.
        random_feature_networks: random LPIPS/FID networks (tests only).
        save_images: also write the uint8 inputs and reconstructions the metrics saw to
            ``out_dir/images/<R>/{inputs,reconstructions}/`` (PNG), e.g. to check them with other tools.
        protocol: the evaluation protocol by name (``transvae.evaluation.protocol.PROTOCOLS``:
            transvae, adm, va-vae, torch-fidelity).
    """

    resolutions: Sequence[int] = (256,)
    metrics: Sequence[str] = ("psnr", "ssim")
    batch_size: int = 16
    limit: int | None = None
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    num_workers: int = 0
    lpips_net: str = "vgg"
    lpips_weights: str | os.PathLike | None = None
    fid_weights: str | os.PathLike | None = None
    report_images: int = 8
    latent_stats: bool = False
    uniformity_samples: int = 0
    uniformity_repeats: int = 1
    probe: bool = False
    latent_source: str = "sample"
    seed: int = 0
    model_path: str | None = None
    command: str | None = None
    progress: bool = True
    random_feature_networks: bool = False
    save_images: bool = False
    protocol: str = "transvae"

    def latent_options(self, labelled: bool) -> LatentOptions:
        return LatentOptions(
            statistics=self.latent_stats or self.uniformity_samples > 0,
            uniformity_samples=self.uniformity_samples,
            pooled=self.probe and labelled,
            source=self.latent_source,
            seed=self.seed,
        )


def run_evaluation(
    model: nn.Module, data: str | os.PathLike, out_dir: str | os.PathLike | None = None, **options: Any
) -> dict:
    """Evaluate ``model`` on the images under ``data`` at each resolution; write the outputs.

    Args:
        model: an ``AutoencoderBase``, already on ``options["device"]``.
        data: a folder (searched recursively) or one image file.
        out_dir: where results.json / results.md / report.html go (None: write nothing).
        options: the fields of ``EvaluationOptions`` (an unknown name is a ``TypeError``).
    Returns:
        the results.json payload.
    """
    o = EvaluationOptions(**options)
    prov = Provenance.start(seeds=[o.seed], command=o.command, device=o.device)
    protocol = get_protocol(o.protocol)
    device, metrics, root = torch.device(o.device), list(dict.fromkeys(o.metrics)), Path(data)
    folder_fid = protocol.folder_fid and "rfid" in metrics and out_dir is not None
    files = list_images(root)
    num_files, files = len(files), files[: o.limit] if o.limit is not None else files
    if not files:
        raise FileNotFoundError(f"no images found under {root}")
    check_memory(model, o.resolutions, o.batch_size, metrics, device, o.dtype)
    mc = build_metric_collection(
        metrics, device, o.lpips_net, o.lpips_weights, o.fid_weights, o.random_feature_networks,
        inception=protocol.inception,
    )  # fmt: skip
    labels = _probe_labels(files, root) if o.probe and root.is_dir() else None
    latent = o.latent_options(labels is not None)
    context = dict(
        model=model, o=o, root=root, num_files=num_files, files=files, metrics=metrics, mc=mc, protocol=protocol,
        provenance=prov,
    )  # fmt: skip
    results: list[ResolutionResult] = []
    for res in o.resolutions:
        saving = (o.save_images or folder_fid) and out_dir is not None
        save_dir = Path(out_dir) / "images" / str(res) if saving else None
        results.append(
            evaluate_resolution(
                model, files, res, metrics=mc, batch_size=o.batch_size, device=device, dtype=o.dtype,
                num_workers=o.num_workers, keep_worst=o.report_images, latent=latent,
                root=root if root.is_dir() else root.parent, progress=o.progress, save_dir=save_dir,
                protocol=protocol,
            )
        )  # fmt: skip
        if folder_fid:
            results[-1].summary.update(_folder_rfid(save_dir, o, device))
        if out_dir is not None and len(results) < len(o.resolutions):
            # finished resolutions survive a crash or an interrupt in the next one
            _write_partial(Path(out_dir), _payload(results, complete=False, **context))
    payload = _payload(results, complete=True, **context)
    if latent.any:
        payload["latent_source"] = o.latent_source
        payload["latent"] = [
            _latent_analysis(r, labels, o.uniformity_repeats, o.seed, o.probe) for r in results
        ]
    if out_dir is not None:
        written, error = _write_with_fallback(Path(out_dir), payload, results, metrics)
        payload["output_dir"] = None if written is None else str(written)
        if error is not None:
            payload["output_error"] = error
    return payload


def _probe_labels(files: list[Path], root: Path) -> tuple[dict[str, int], list[str]] | None:
    """Class labels by path relative to ``root`` (per-image paths in the results are relative)."""
    found = class_labels(files, root)
    if found is None:
        return None
    return {str(f.relative_to(root)): y for f, y in zip(files, found[0], strict=True)}, found[1]


def _payload(results: list[ResolutionResult], complete: bool, **c) -> dict:
    """The results.json payload of the resolutions done so far."""
    model, o = c["model"], c["o"]
    return {
        "complete": complete,
        "results": [summary_for_json(r.summary) for r in results],
        "model": {
            "name": getattr(model, "model_name", type(model).__name__),
            "path": o.model_path,
            "parameters": sum(p.numel() for p in model.parameters()),
            "spatial_compression_ratio": getattr(model, "spatial_compression_ratio", None),
            "latent_channels": getattr(model, "latent_channels", None),
            "config": model.config_dict() if hasattr(model, "config_dict") else None,
        },
        "data": {
            "path": str(c["root"]),
            "num_files": c["num_files"],
            "limit": o.limit,
            "num_evaluated": len(c["files"]),
        },
        "metrics": c["metrics"],
        "protocol": {**c["protocol"].describe(), **c["mc"].protocols()},
        "run": {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": str(torch.device(o.device)),
            "dtype": str(o.dtype).replace("torch.", ""),
            "batch_size": o.batch_size,
            "transvae_version": _version(),
            "torch_version": torch.__version__,
            "command": o.command,
            "random_feature_networks": o.random_feature_networks,
        },
        "provenance": c["provenance"].finish(steps=len(c["files"])),
        "per_image": {str(r.resolution): r.per_image for r in results},
        "skipped": {str(r.resolution): r.skipped for r in results if r.skipped},
    }


def _folder_rfid(save_dir: Path, o: EvaluationOptions, device: torch.device) -> dict:
    """rFID computed by torch-fidelity itself from the saved PNG folders (``torch-fidelity`` protocol)."""
    from ..metrics.fid import folder_fid

    if o.random_feature_networks:
        return {"rfid_torch_fidelity_skipped": "random feature networks (tests): no torch-fidelity network"}
    value = folder_fid(save_dir / "reconstructions", save_dir / "inputs", o.fid_weights, device)
    return {"rfid_torch_fidelity": value}


def _write_partial(out_dir: Path, payload: dict) -> None:
    """results.json of the finished resolutions; a failure here only warns (the final write and
    its fallback still keep the results)."""
    from .report import write_json

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "results.json", payload)
    except OSError as e:
        warnings.warn(
            f"could not write partial results to {out_dir} ({e.strerror or e})", RuntimeWarning, stacklevel=2
        )


def _write_with_fallback(
    out_dir: Path, payload: dict, results: list[ResolutionResult], metrics: list[str]
) -> tuple[Path | None, str | None]:
    """Write the outputs to ``out_dir``; if that fails (disk full, permissions changed during the
    run), to a fresh folder under the system's temporary directory, so computed results are never
    lost. Returns (the folder written, the error that forced the fallback or None)."""
    try:
        write_outputs(out_dir, payload, results, metrics)
        return out_dir, None
    except OSError as e:
        error = f"could not write the results to {out_dir} ({e.strerror or e})"
    try:
        fallback = Path(tempfile.mkdtemp(prefix="transvae-evaluate-"))
        write_outputs(fallback, payload, results, metrics)
        return fallback, error
    except OSError:
        return None, error


def _latent_analysis(r: ResolutionResult, labels, repeats: int, seed: int, probe: bool) -> dict:
    out: dict = {"resolution": r.resolution, "statistics": r.latent_stats}
    if r.latent_vectors is not None and len(r.latent_vectors) >= 4:
        s = r.latent_stats
        u = uniformity_metrics(r.latent_vectors, s["mean"], s["std"], repeats=repeats, seed=42 + seed)
        r.extras["tsne_embedding"] = u.pop("embedding")  # (N, 2): plotted in the report, too big for JSON
        out["uniformity"] = u
    if probe:
        if labels is None:
            out["linear_probe_skipped"] = (
                "no class sub-folders (data/<class>/<image>) with at least two classes"
            )
        elif r.pooled is not None:
            label_of, classes = labels
            y = [label_of[p["path"]] for p in r.per_image]  # pooled rows follow per_image
            try:
                out["linear_probe"] = linear_probe(r.pooled, y, seed=seed) | {"classes": classes}
            except ValueError as e:
                out["linear_probe_skipped"] = str(e)
    return out


def _version() -> str:
    from transvae import __version__

    return __version__
