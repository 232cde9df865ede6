"""Saving and loading trained generators: ``config.json`` + ``model.safetensors``.

The folder has the layout of the autoencoders' ``save_pretrained`` (written by the same
``transvae.models.hub.save_model_folder``); ``config.json``'s ``metadata`` holds what sampling
needs besides the weights: the latent statistics and multiplier the generator was trained with
(``latent_stats``, ``latent_multiplier``), the latent shape, the number of classes and the
tokenizer that produced the latents. Nothing is unpickled: JSON parsed as data, safetensors
checked against the architecture before any weight is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..models.base import CONFIG_NAME, WEIGHTS_NAME
from ..models.hub import check_weights, save_model_folder
from .latents import LatentFolder, LatentStats
from .lightningdit import ARCHITECTURE, GeneratorConfigError, LightningDiT, LightningDiTConfig
from .registry import build_generator

_MAX_CONFIG_BYTES = 1 << 20


def save_generator(model: LightningDiT, folder: str | os.PathLike, **metadata: Any) -> Path:
    """Atomically write ``config.json`` (with ``metadata``) and ``model.safetensors`` to ``folder``."""
    return save_model_folder(model, folder, **metadata)


def read_generator_config(folder: Path) -> tuple[LightningDiTConfig, str, dict[str, Any]]:
    """Parse ``folder/config.json``: (config, registered name, metadata)."""
    path = folder / CONFIG_NAME
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise GeneratorConfigError(f"{path} is larger than {_MAX_CONFIG_BYTES} bytes: not a generator config")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GeneratorConfigError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict) or raw.get("architecture") != ARCHITECTURE:
        found = raw.get("architecture") if isinstance(raw, dict) else None
        raise GeneratorConfigError(
            f"{path} is not a LightningDiT generator (architecture {found!r}); "
            f"pass the run folder written by `transvae gen-train`"
        )
    raw = dict(raw)
    raw.pop("architecture")
    name = raw.pop("model_name", ARCHITECTURE)
    metadata = raw.pop("metadata", {}) or {}
    if not isinstance(metadata, dict):
        raise GeneratorConfigError(f"{path}: 'metadata' must be an object")
    return LightningDiTConfig.from_dict(raw), str(name), metadata


def generator_folder(path: str | os.PathLike) -> Path:
    """The folder holding the generator's ``config.json``: ``path`` or ``path/model`` (a run
    folder). Local only: a generator is never fetched because a path looks like a Hub id."""
    p = Path(path)
    for cand in (p / "model", p):  # a run folder's own config.json is the training config
        if (cand / CONFIG_NAME).is_file():
            return cand
    raise FileNotFoundError(
        f"{p} holds no generator: expected a `transvae gen-train` run folder or its model/ sub-folder"
    )


def load_generator(
    path: str | os.PathLike, device: str | torch.device | None = None, step: int | None = None
) -> tuple[LightningDiT, dict[str, Any]]:
    """Load a generator saved by ``save_generator`` (its folder or the ``gen-train`` run folder).

    Args:
        path: the run folder or its ``model/`` folder.
        device: where to put the weights.
        step: load the weights of the snapshot ``RUN/checkpoints/step_{step:08d}.pt`` instead
            (the EMA weights when the run has them; ``train.keep_checkpoints`` keeps snapshots).
    Returns:
        (model in eval mode, metadata dict; ``metadata["step"]`` is the step loaded).
    Raises:
        FileNotFoundError: no such folder / no weights / no such snapshot; GeneratorConfigError:
            not a generator.
    """
    from safetensors.torch import load_file

    folder = generator_folder(path)
    config, name, metadata = read_generator_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME}")
    model = build_generator(config, name, device="meta")
    try:
        check_weights(model, weights)
    except ValueError as e:
        raise GeneratorConfigError(str(e)) from e
    target = torch.device(device) if device is not None else torch.device("cpu")
    if step is None:
        state = load_file(str(weights), device=str(target))
    else:
        state = _snapshot_weights(folder, step, target)
        metadata = {**metadata, "step": step}
    ref = model.state_dict()
    if state.keys() != ref.keys() or any(state[k].shape != ref[k].shape for k in ref):
        raise GeneratorConfigError(f"the weights of step {step} do not match {folder / CONFIG_NAME}")
    model.load_state_dict({k: v.to(ref[k].dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.eval(), metadata


def _snapshot_weights(folder: Path, step: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The generator weights (EMA if present) of ``RUN/checkpoints/step_{step:08d}.pt``."""
    from ..training.checkpoint import CheckpointError, load_checkpoint

    run = folder.parent if folder.name == "model" else folder
    path = run / "checkpoints" / f"step_{step:08d}.pt"
    if not path.is_file():
        have = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.pt"))
        raise FileNotFoundError(f"no snapshot of step {step} in {run / 'checkpoints'} (steps kept: {have})")
    try:
        ck = load_checkpoint(path, map_location="cpu")  # the optimizer state stays off the GPU
    except CheckpointError as e:
        raise FileNotFoundError(str(e)) from e
    state = ck["ema"]["weights"] if "ema" in ck else ck.get("model")
    if not isinstance(state, dict):
        raise GeneratorConfigError(f"{path} holds no generator weights")
    return {k: v.to(device) for k, v in state.items()}


def latents_metadata(folder: LatentFolder, stats: LatentStats, multiplier: float) -> dict[str, Any]:
    """What a generator trained on ``folder`` must carry to be sampled: the normalisation, the
    latent shape, the class names and the tokenizer named in ``extraction.json`` (text, recorded
    for a check at decoding time; nothing is loaded from it)."""
    tokenizer: dict[str, Any] = {}
    path = folder.folder / "extraction.json"
    if path.is_file() and path.stat().st_size < _MAX_CONFIG_BYTES:
        try:
            ext = json.loads(path.read_text())
        except (OSError, ValueError):
            ext = {}
        if isinstance(ext, dict):
            tokenizer = {k: ext[k] for k in ("model", "model_name", "resolution", "sample") if k in ext}
    return {
        "latent_stats": stats.to_dict(),
        "latent_multiplier": float(multiplier),
        "latent_shape": list(folder.shape),
        "classes": folder.classes,
        "tokenizer": tokenizer,
        "latents": str(folder.folder.resolve()),
    }


def stats_from_metadata(metadata: dict[str, Any]) -> tuple[LatentStats, float]:
    """The (statistics, multiplier) a generator was trained with, from its metadata."""
    if "latent_stats" not in metadata:
        raise GeneratorConfigError("the generator's config.json has no latent_stats metadata")
    mult = float(metadata.get("latent_multiplier", 1.0))
    return LatentStats.from_dict(metadata["latent_stats"]), mult
