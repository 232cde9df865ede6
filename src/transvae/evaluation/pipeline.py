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
from pathlib import Path

import torch
import torch.nn as nn

from transvae.data.io import list_images

from ..inference.limits import check_batch_fits
from .fid import FIDMetric
from .latent_analysis import linear_probe, uniformity_metrics
from .metrics import LPIPSMetric, build_lpips
from .protocol import PROTOCOL, class_labels
from .report import summary_for_json, write_outputs
from .runner import METRICS, LatentOptions, ResolutionResult, evaluate_resolution


def build_metric_networks(
    metrics: Sequence[str],
    device: torch.device,
    lpips_net: str = "vgg",
    lpips_weights: str | os.PathLike | None = None,
    fid_weights: str | os.PathLike | None = None,
    random_feature_networks: bool = False,
) -> tuple[LPIPSMetric | None, FIDMetric | None]:
    """Load the feature networks that the requested metrics need (before any image is read).

    Args:
        random_feature_networks: random LPIPS backbone / FID features (tests only: not real metrics).
    Raises:
        WeightsUnavailableError: real weights needed but not available.
    """
    lp = fid = None
    if "lpips" in metrics:
        lp = build_lpips(lpips_net, lpips_weights, random_init=random_feature_networks, device=device)
    if "rfid" in metrics:
        feature_net = _RandomFeatures().to(device) if random_feature_networks else None
        fid = FIDMetric(feature_net=feature_net, weights_path=fid_weights, device=device)
    return lp, fid


# LPIPS keeps the features of five VGG / AlexNet stages for both images (~122 channels at full
# resolution in fp32 for VGG): ~1 KB per pixel and image
_LPIPS_BYTES_PER_PIXEL = 1024


def check_memory(
    model: nn.Module,
    resolutions: Sequence[int],
    batch_size: int,
    metrics: Sequence[str],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> None:
    """``transvae.inference.limits.check_batch_fits`` for an evaluation pass (LPIPS features
    counted when requested).

    Raises:
        MemoryError: naming the resolution, the batch size, both sizes and what to change.
    """
    extra = _LPIPS_BYTES_PER_PIXEL if "lpips" in metrics else 0
    check_batch_fits(model, resolutions, batch_size, device, dtype, extra_bytes_per_pixel=extra)


class _RandomFeatures(nn.Module):
    """A small random conv net standing in for InceptionV3 (uint8 -> (B, 64)) in offline tests."""

    num_features = 64

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 64, 4, stride=4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.05)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x.float() / 127.5 - 1.0)).mean(dim=(2, 3))  # (B, 64)


def run_evaluation(
    model: nn.Module,
    data: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    resolutions: Sequence[int] = (256,),
    metrics: Sequence[str] = ("psnr", "ssim"),
    batch_size: int = 16,
    limit: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
    lpips_net: str = "vgg",
    lpips_weights: str | os.PathLike | None = None,
    fid_weights: str | os.PathLike | None = None,
    report_images: int = 8,
    latent_stats: bool = False,
    uniformity_samples: int = 0,
    uniformity_repeats: int = 1,
    probe: bool = False,
    latent_source: str = "sample",
    seed: int = 0,
    model_path: str | None = None,
    command: str | None = None,
    progress: bool = True,
    random_feature_networks: bool = False,
    save_images: bool = False,
) -> dict:
    """Evaluate ``model`` on the images under ``data`` at each resolution; write the outputs.

    Args:
        model: an ``AutoencoderBase``, already on ``device``.
        data: a folder (searched recursively) or one image file.
        out_dir: where results.json / results.md / report.html go (None: write nothing).
        resolutions: square sizes R to evaluate (each a multiple of the compression ratio).
        metrics: subset of ("psnr", "ssim", "lpips", "rfid"); unrequested ones are absent.
        batch_size, num_workers: batching of the pass.
        limit: only the first ``limit`` files (sorted by path).
        device, dtype: where the model runs and its autocast dtype (float32 = none).
        lpips_net, lpips_weights, fid_weights: feature networks (see ``build_lpips`` / ``FIDMetric``).
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
    Returns:
        the results.json payload.
    """
    device = torch.device(device)
    metrics = [m for m in METRICS if m in metrics]  # canonical order, no duplicates
    root = Path(data)
    files = list_images(root)
    num_files = len(files)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no images found under {root}")
    check_memory(model, resolutions, batch_size, metrics, device, dtype)
    lp, fid = build_metric_networks(
        metrics, device, lpips_net, lpips_weights, fid_weights, random_feature_networks
    )
    labels = None
    if probe and root.is_dir():
        found = class_labels(files, root)
        if found is not None:  # per-image paths in the results are relative to root
            labels = ({str(f.relative_to(root)): y for f, y in zip(files, found[0], strict=True)}, found[1])
    latent_opts = LatentOptions(
        statistics=latent_stats or uniformity_samples > 0,
        uniformity_samples=uniformity_samples,
        pooled=probe and labels is not None,
        source=latent_source,
        seed=seed,
    )
    results: list[ResolutionResult] = []
    context = dict(
        model=model, model_path=model_path, root=root, num_files=num_files, limit=limit, files=files,
        metrics=metrics, lp=lp, fid=fid, device=device, dtype=dtype, batch_size=batch_size, command=command,
        random_feature_networks=random_feature_networks,
    )  # fmt: skip
    for res in resolutions:
        results.append(
            evaluate_resolution(
                model,
                files,
                res,
                metrics=tuple(metrics),
                batch_size=batch_size,
                device=device,
                dtype=dtype,
                lpips_metric=lp,
                fid_metric=fid,
                num_workers=num_workers,
                keep_worst=report_images,
                latent=latent_opts,
                root=root if root.is_dir() else root.parent,
                progress=progress,
                save_dir=Path(out_dir) / "images" / str(res) if save_images and out_dir is not None else None,
            )
        )
        if out_dir is not None and len(results) < len(resolutions):
            # finished resolutions survive a crash or an interrupt in the next one
            _write_partial(Path(out_dir), _payload(results, complete=False, **context))

    payload = _payload(results, complete=True, **context)
    if latent_opts.any:
        payload["latent_source"] = latent_source
        payload["latent"] = [_latent_analysis(r, labels, uniformity_repeats, seed, probe) for r in results]
    if out_dir is not None:
        written, error = _write_with_fallback(Path(out_dir), payload, results, metrics)
        payload["output_dir"] = None if written is None else str(written)
        if error is not None:
            payload["output_error"] = error
    return payload


def _payload(results: list[ResolutionResult], complete: bool, **c) -> dict:
    """The results.json payload of the resolutions done so far."""
    model, metrics, lp, fid, root = c["model"], c["metrics"], c["lp"], c["fid"], c["root"]
    protocol = {k: v for k, v in PROTOCOL.items() if k not in METRICS or k in metrics}
    if lp is not None:
        protocol["lpips"] += f"; backbone {lp.net_name}, weights {lp.weights_source}"
    if fid is not None:
        protocol["rfid"] += f"; weights {fid.source}"
    return {
        "complete": complete,
        "results": [summary_for_json(r.summary) for r in results],
        "model": {
            "name": getattr(model, "model_name", type(model).__name__),
            "path": c["model_path"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "spatial_compression_ratio": getattr(model, "spatial_compression_ratio", None),
            "latent_channels": getattr(model, "latent_channels", None),
            "config": model.config_dict() if hasattr(model, "config_dict") else None,
        },
        "data": {
            "path": str(root),
            "num_files": c["num_files"],
            "limit": c["limit"],
            "num_evaluated": len(c["files"]),
        },
        "metrics": metrics,
        "protocol": protocol,
        "run": {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": str(c["device"]),
            "dtype": str(c["dtype"]).replace("torch.", ""),
            "batch_size": c["batch_size"],
            "transvae_version": _version(),
            "torch_version": torch.__version__,
            "command": c["command"],
            "random_feature_networks": c["random_feature_networks"],
        },
        "per_image": {str(r.resolution): r.per_image for r in results},
        "skipped": {str(r.resolution): r.skipped for r in results if r.skipped},
    }


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
