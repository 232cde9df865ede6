"""From a trained generator to images: sample latents, undo the normalisation, decode.

``GenerationPipeline`` ties a ``LightningDiT`` to the latent statistics it was trained with and,
optionally, to the tokenizer (through ``transvae.inference.InferenceRunner``, so decoding uses
the tokenizer's own precision and tiling options). ``generate_to_folder`` is what
``transvae gen-sample`` runs: it writes, per batch of samples,

    OUT/images/000000.png ...             the decoded samples (sample index in the name)
    OUT/latents/samples_000000.safetensors  their tokenizer latents (``latents`` (b, C, h, w),
                                          ``labels`` (b,)), the layout of extract-latents shards
    OUT/sampling.json                     the settings; a rerun with other settings is refused

A batch's latent shard is written last (atomically), so it marks the batch complete: a rerun
after a crash skips finished batches and redoes the rest, with the same samples (seeded per
sample index). ``--npz`` finally streams the PNGs into an ADM-style ``.npz``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from ..data.io import png_bytes, tensor_to_uint8
from ..data.latents import LatentStats
from ..generation.sampling import SamplerConfig, check_cfg_channels, initial_noise, sample_ode
from ..models.lightningdit import LightningDiT
from ..models.persistence import load_model, model_fingerprint
from ..training.run_folder import RunFolder
from ..utils.config import read_json
from ..utils.files import atomic_path, atomic_write_bytes, check_writable

SETTINGS_NAME = "sampling.json"
MAX_SAMPLES = 10_000_000  # 200x ADM's 50k; more is a typo, and the label vector alone would be GBs
# LightningDiT's inference settings: used when neither the caller nor the run sets them
SAMPLER_DEFAULTS = {
    "steps": 250,
    "solver": "euler",
    "shift": 0.3,
    "cfg_scale": 1.0,
    "cfg_interval_start": 0.11,
    "cfg_channels": "all",  # runs exported before the option existed guided every channel
}


def sampler_config(metadata: dict[str, Any], **given: Any) -> SamplerConfig:
    """The sampler: ``given`` values (not None) over the run's ``sample`` settings (its recipe)
    over LightningDiT's defaults.

    Raises:
        ValueError: an invalid or non-finite value, naming it.
    """
    recipe = {k: v for k, v in (metadata.get("sample") or {}).items() if k in SAMPLER_DEFAULTS}
    chosen = {**SAMPLER_DEFAULTS, **recipe, **{k: v for k, v in given.items() if v is not None}}
    try:
        return SamplerConfig(**chosen)
    except TypeError as e:
        raise ValueError(f"bad sampler settings {chosen}: {e}") from e


def latent_shape(model: LightningDiT, metadata: dict[str, Any]) -> tuple[int, int, int]:
    """The (C, h, w) a generator samples, from its metadata, checked against the model.

    Raises:
        ValueError: missing, not three positive integers, another channel count than the model's,
            or a grid that is not a multiple of its patch.
    """
    shape = metadata.get("latent_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and v > 0 for v in shape)):
        raise ValueError(f"the generator's latent_shape must be three positive integers, got {shape!r}")
    c, h, w = shape
    p = model.config.patch_size
    if c != model.config.in_channels or h % p or w % p:
        raise ValueError(
            f"the generator's latent_shape {shape} does not fit the model ({model.config.in_channels} channels, "
            f"patch {p})"
        )
    return c, h, w


def check_generation_fits(
    model: LightningDiT, shape: Sequence[int], batch_size: int, device: torch.device, dtype_bytes: int = 4
) -> None:
    """Refuse, before anything is allocated, a batch of ``shape`` latents whose sampling cannot fit
    in the free memory (a meta-device forward of the generator: milliseconds for any size).

    Raises:
        MemoryError: naming the shape, the batch size and both sizes.
    """
    from ..utils.memory import available_bytes, estimate_module_memory, format_bytes

    free = available_bytes(device)
    if free is None:
        return
    with torch.device("meta"):
        meta = type(model)(model.config)
        inputs = (
            torch.empty(batch_size, *shape),
            torch.empty(batch_size),
            torch.zeros(batch_size, dtype=torch.int64),
        )
    need = (
        estimate_module_memory(meta, inputs, train=False, dtype_bytes=dtype_bytes).total * 3
    )  # x, v, guided v
    if need > free:
        raise MemoryError(
            f"sampling {batch_size} latents of shape {list(shape)} needs about {format_bytes(need)} (estimate), more "
            f"than the {format_bytes(free)} free on {device}; lower --batch-size"
        )


def check_tokenizer(metadata: dict[str, Any], vae: torch.nn.Module) -> str | None:
    """Why ``vae`` is not the tokenizer whose latents trained the generator (None when it is, or
    when the generator records no tokenizer): compared by fingerprint when recorded, else by name."""
    made_by = metadata.get("tokenizer") or {}
    name, fingerprint = made_by.get("model_name"), made_by.get("fingerprint")
    if fingerprint:
        got = model_fingerprint(vae)
        if got != fingerprint:
            return (
                f"the generator was trained on latents of {name} (fingerprint {fingerprint}), --vae is "
                f"{vae.model_name} with other weights (fingerprint {got})"
            )
    elif name and vae.model_name != name:
        return f"the generator was trained on latents of '{name}', --vae is '{vae.model_name}'"
    return None


def load_generator(
    path: str | os.PathLike, device: torch.device | str | None = None, step: int | None = None
) -> LightningDiT:
    """A trained generator: ``path`` is a ``gen-train`` run folder or its ``model/`` folder.

    Args:
        path: the run folder (its ``model/`` holds the exported weights) or a model folder.
        device: where to put the weights.
        step: use the weights of the snapshot ``RUN/checkpoints/step_{step:08d}.pt`` instead (the
            EMA copy when the run kept one; ``train.keep_checkpoints`` keeps snapshots).
    Returns:
        the model in eval mode; ``model.metadata`` holds what sampling needs (latent statistics and
        shape, the tokenizer, ...), with ``metadata["step"]`` the step whose weights were loaded.
    Raises:
        FileNotFoundError: no such folder, model or snapshot. ValueError (``ConfigError``): the
            folder holds no generator, or a snapshot that does not fit its config.
    """
    from ..utils.config import ConfigError

    root = Path(path)
    if not any((cand / "config.json").is_file() for cand in (root, root / RunFolder.MODEL)):
        # local only: a run folder is never fetched from the Hub because its path looks like a repo id
        raise FileNotFoundError(
            f"{root} holds no generator: expected a `transvae gen-train` run folder or its model/ sub-folder"
        )
    model = load_model(path, device=device)
    if not isinstance(model, LightningDiT):
        raise ConfigError(
            f"{path} holds a {model.kind} ({model.model_name}), not a generator; pass the run folder "
            f"written by `transvae gen-train`"
        )
    if step is not None:
        run = RunFolder(root.parent if root.name == RunFolder.MODEL else root)
        state = run.snapshot_weights(step)
        ref = model.state_dict()
        if state.keys() != ref.keys() or any(state[k].shape != ref[k].shape for k in ref):
            raise ConfigError(f"the weights of step {step} do not match {run.model_dir / 'config.json'}")
        model.load_state_dict({k: v.to(ref[k]) for k, v in state.items()}, strict=True)
        model.metadata = {**model.metadata, "step": step}
    return model.eval()


class GenerationPipeline:
    """A generator, its latent normalisation and (optionally) the tokenizer that decodes.

    Args:
        model: the trained ``LightningDiT`` (eval mode, on its device).
        stats, multiplier: the normalisation the generator was trained with.
        latent_shape: (C, h, w) of the latents to generate.
        runner: an ``InferenceRunner`` of the tokenizer (None: latents only).
        autocast_dtype: run the generator under autocast in this dtype (None: float32).
    """

    def __init__(
        self,
        model: LightningDiT,
        stats: LatentStats,
        multiplier: float,
        latent_shape: Sequence[int],
        runner=None,
        autocast_dtype: torch.dtype | None = None,
    ):
        c, h, w = (int(v) for v in latent_shape)
        if c != model.config.in_channels or stats.channels != c:
            raise ValueError(
                f"latent channels disagree: generator {model.config.in_channels}, statistics "
                f"{stats.channels}, requested {c}"
            )
        if runner is not None and runner.model.latent_channels != c:
            raise ValueError(
                f"the tokenizer {runner.model.model_name} has {runner.model.latent_channels} latent channels, "
                f"the generator was trained on {c}"
            )
        self.model, self.stats, self.multiplier = model.eval(), stats, multiplier
        self.latent_shape = (c, h, w)
        self.runner = runner
        self.autocast_dtype = autocast_dtype
        self.device = next(model.parameters()).device

    def sample(
        self,
        indices: Sequence[int],
        labels: torch.Tensor,
        seed: int,
        config: SamplerConfig,
        progress=None,
    ) -> torch.Tensor:
        """Generate the samples with the given global ``indices``.

        Args:
            indices: sample indices (each fixes its starting noise with ``seed``).
            labels: (B,) int64 class labels.
            seed: the sampling seed.
            config: the ODE sampler settings.
            progress: called with 1 after every ODE step.
        Returns:
            (B, C, h, w) float32 latents in the tokenizer's own space (denormalised), on the CPU.
        """
        noise = initial_noise(self.latent_shape, seed, indices).to(self.device)
        x = sample_ode(
            self.model,
            noise,
            labels.to(self.device),
            config,
            null_label=self.model.null_label,
            autocast_dtype=self.autocast_dtype,
            progress=progress,
        )
        return self.stats.denormalize(x, self.multiplier).cpu()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) tokenizer latents -> (B, 3, H, W) float32 images in [-1, 1] on the CPU."""
        if self.runner is None:
            raise ValueError("no tokenizer given: this pipeline only samples latents")
        return self.runner.decode(z).clamp(-1, 1).cpu()


def sample_labels(num: int, num_classes: int, class_labels: Sequence[int] | None = None) -> torch.Tensor:
    """Labels of samples 0..num-1: ``class_labels`` repeated, else balanced ``i % num_classes``.

    Returns:
        (num,) int64.
    Raises:
        ValueError: ``num`` outside [1, ``MAX_SAMPLES``] or labels outside the model's classes.
    """
    if not 1 <= num <= MAX_SAMPLES:
        raise ValueError(f"the number of samples must be in [1, {MAX_SAMPLES}], got {num}")
    if class_labels:
        bad = [c for c in class_labels if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"class labels {bad} are outside [0, {num_classes})")
        reps = -(-num // len(class_labels))
        return torch.tensor(list(class_labels) * reps, dtype=torch.int64)[:num]
    return torch.arange(num, dtype=torch.int64) % num_classes


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the settings, or refuse other settings than those of samples already in ``out``
    (settings left by a run that wrote no sample yet are replaced)."""
    path = out / SETTINGS_NAME
    if path.is_file() and any((out / "latents").glob("samples_*.safetensors")):
        try:
            old = read_json(path, what="sampling settings")
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is unreadable ({e}); use a new --out folder") from e
        if isinstance(old, dict) and isinstance(old.get("sampler"), dict):
            # folders written before cfg_channels was recorded guided every channel
            old["sampler"] = {"cfg_channels": "all", **old["sampler"]}
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"{out} holds samples made with other settings (differs in {diff}); use a new --out folder"
            )
    else:
        atomic_write_bytes(path, (json.dumps(settings, indent=2) + "\n").encode())


def generate_to_folder(
    pipe: GenerationPipeline,
    out: str | os.PathLike,
    labels: torch.Tensor,
    seed: int,
    config: SamplerConfig,
    batch_size: int = 16,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``len(labels)`` samples into ``out`` (layout in the module docstring), resumably.

    Args:
        pipe: the pipeline (with a tokenizer, to write PNGs).
        out: output folder.
        labels: (N,) labels of samples 0..N-1 (``sample_labels``).
        seed: sampling seed.
        config: sampler settings.
        batch_size: samples per generator / decoder batch.
        settings: extra provenance recorded in ``sampling.json`` (generator path, tokenizer ...).
        progress: tqdm bars.
    Returns:
        summary dict: ``num``, ``generated`` (this call), ``skipped`` (already there), ``out``.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "latents").mkdir(exist_ok=True)
    num = int(labels.numel())
    c, h, w = pipe.latent_shape
    check_cfg_channels(config.cfg_channels, c)
    full = {
        **(settings or {}),
        "num": num,
        "seed": seed,
        "batch_size": batch_size,
        "sampler": {k: getattr(config, k) for k in SAMPLER_DEFAULTS},
        "latent_shape": [c, h, w],
        "latent_stats": pipe.stats.to_dict(),
        "latent_multiplier": pipe.multiplier,
        "labels_sha": _labels_digest(labels),
    }
    _check_settings(out, full)
    starts = list(range(0, num, batch_size))
    todo = [s for s in starts if not (out / "latents" / f"samples_{s:06d}.safetensors").is_file()]
    # what the samples still to write take on disk at most: uncompressed PNGs and float32 latents
    n_todo = sum(min(batch_size, num - s) for s in todo)
    image_bytes = 3 * h * w * pipe.runner.f**2 if pipe.runner is not None else 0
    check_writable(out, n_todo * (image_bytes + 4 * c * h * w + 1024), what="--out")
    bar = tqdm(total=len(todo) * config.steps, desc="sampling", unit="step", disable=not progress or not todo)
    for s in todo:
        idx = list(range(s, min(s + batch_size, num)))
        y = labels[idx]
        z = pipe.sample(idx, y, seed, config, progress=bar.update)  # (b, C, h, w)
        images = tensor_to_uint8(pipe.decode(z)).permute(0, 2, 3, 1).numpy()  # (b, H, W, 3)
        for k, i in enumerate(idx):
            atomic_write_bytes(out / "images" / f"{i:06d}.png", png_bytes(images[k]))
        with atomic_path(out / "latents" / f"samples_{s:06d}.safetensors") as tmp:
            save_file(
                {"latents": z.contiguous(), "labels": y.contiguous()},
                str(tmp),
                metadata={"first_index": str(s), "seed": str(seed)},
            )
    bar.close()
    n_new = sum(min(batch_size, num - s) for s in todo)
    return {"num": num, "generated": n_new, "skipped": num - n_new, "out": str(out)}


def _labels_digest(labels: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(labels.numpy().astype(np.int64).tobytes()).hexdigest()[:16]


def sample_images(out: str | os.PathLike) -> list[Path]:
    """The PNGs of a ``generate_to_folder`` output, in sample order."""
    return sorted((Path(out) / "images").glob("[0-9]*.png"))


def folder_to_npz(
    out: str | os.PathLike, labels: torch.Tensor | None = None
) -> tuple[Path, list[tuple[Path, str]]]:
    """Stream the PNGs of ``out/images`` into ``out/samples_{N}x{H}x{W}x3.npz`` (ADM's naming).

    The samples all have one size; an image of another size or an unreadable one (a stray file
    that ``gen-sample`` did not write) is left out of the ``.npz`` and returned with the reason,
    so the caller can name it. Labels (``arr_1``) follow each kept sample's index, read from its
    file name (``000123.png`` is sample 123), when every kept file has one.

    Args:
        out: a ``generate_to_folder`` output folder.
        labels: (N,) labels of samples 0..N-1, or None.
    Returns:
        (the ``.npz`` written, [(file left out, why)]).
    Raises:
        FileNotFoundError: no sample images.
    """
    from collections import Counter

    from PIL import Image, UnidentifiedImageError

    from ..data.npz import write_npz

    files, sizes, left_out = sample_images(out), {}, []
    for f in files:
        try:
            with Image.open(f) as im:  # the header only
                sizes[f] = (im.size[1], im.size[0])
        except (OSError, UnidentifiedImageError) as e:
            left_out.append((f, f"unreadable ({e})"))
    if not sizes:
        raise FileNotFoundError(f"no samples in {Path(out) / 'images'}")
    (h, w), _ = Counter(sizes.values()).most_common(1)[0]
    left_out += [(f, f"{s[0]}x{s[1]}, the samples are {h}x{w}") for f, s in sizes.items() if s != (h, w)]
    keep = [f for f in files if sizes.get(f) == (h, w)]

    def blocks():
        for i in range(0, len(keep), 64):
            arrs = []
            for f in keep[i : i + 64]:
                with Image.open(f) as im:
                    arrs.append(np.asarray(im.convert("RGB")))
            yield np.stack(arrs)

    index = [int(f.stem) if f.stem.isdigit() else -1 for f in keep]
    lab = None
    if labels is not None and all(0 <= i < labels.numel() for i in index):
        lab = labels.numpy()[index]
    name = Path(out) / f"samples_{len(keep)}x{h}x{w}x3.npz"
    return write_npz(name, blocks(), len(keep), lab), sorted(left_out)
