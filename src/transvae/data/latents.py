"""Reading the latent shards of ``transvae extract-latents`` for diffusion training.

The folder layout is the one ``transvae.inference.extract`` writes and LightningDiT's
``ImgLatentDataset`` reads, used here unchanged: every ``*.safetensors`` file holds
``latents`` (N, C, h, w), optionally ``latents_flip`` (N, C, h, w, the latents of the mirrored
images) and ``labels`` (N,) int64; ``manifest.json`` lists the class names.

Normalisation (LightningDiT's ``latent_norm`` / ``latent_multiplier``): the generator trains on

    x = (z - mean) / std * multiplier

with per-channel ``mean`` / ``std`` from ``latents_stats.pt`` in the same folder: a
``torch.save``d dict ``{"mean": (1, C, 1, 1), "std": (1, C, 1, 1)}`` float32 tensors (the
population statistics of ``latents`` over every shard; ``latents_stats.json`` holds the same
numbers as text plus the diffusers-style ``scaling_factor`` / ``shift_factor``). It is read with
``torch.load(weights_only=True)``, so it can only hold tensors. A folder without it (latents
written by another tool) gets it computed once, streamed shard by shard, and saved there.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from ..utils.config import parse_json, read_json
from ..utils.files import atomic_write_bytes

log = logging.getLogger("transvae.data")

STATS_NAME = "latents_stats.pt"
_MAX_CHANNELS = 4096
MAX_CLASSES = 100_000  # ImageNet-21k has 21 841; a label beyond this is a broken shard, not a class


class LatentDataError(ValueError):
    """A latents folder is missing, empty or inconsistent; the message names the file."""


@dataclass(frozen=True)
class LatentStats:
    """Per-channel statistics of a latent data set and the normalisation built on them.

    Attributes:
        mean, std: (C,) float32.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @property
    def channels(self) -> int:
        return self.mean.numel()

    def normalize(self, z: torch.Tensor, multiplier: float = 1.0) -> torch.Tensor:
        """(B, C, h, w) tokenizer latents -> the generator's space ``(z - mean) / std * multiplier``."""
        m, s = self.mean.to(z.device).view(1, -1, 1, 1), self.std.to(z.device).view(1, -1, 1, 1)
        return (z.float() - m) / s * multiplier

    def denormalize(self, x: torch.Tensor, multiplier: float = 1.0) -> torch.Tensor:
        """The inverse of ``normalize``: (B, C, h, w) generator samples -> tokenizer latents."""
        m, s = self.mean.to(x.device).view(1, -1, 1, 1), self.std.to(x.device).view(1, -1, 1, 1)
        return x.float() / multiplier * s + m

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> tuple[LatentStats, float]:
        """The (statistics, multiplier) a generator was trained with, from its ``metadata``
        (``latent_stats``, ``latent_multiplier``: what ``gen-train`` exports with the weights)."""
        if "latent_stats" not in metadata:
            raise LatentDataError("the generator's config.json has no latent_stats metadata")
        try:
            mult = float(metadata.get("latent_multiplier", 1.0))
        except (TypeError, ValueError) as e:
            raise LatentDataError(
                f"latent_multiplier must be a number, got {metadata.get('latent_multiplier')!r}"
            ) from e
        if not (math.isfinite(mult) and mult > 0):
            raise LatentDataError(f"latent_multiplier must be a finite number > 0, got {mult}")
        return cls.from_dict(metadata["latent_stats"]), mult

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentStats:
        """From ``{"mean": [...], "std": [...]}`` (lists or tensors of C values)."""
        try:
            mean = torch.as_tensor(d["mean"], dtype=torch.float32).flatten()
            std = torch.as_tensor(d["std"], dtype=torch.float32).flatten()
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise LatentDataError(f"latent statistics need 'mean' and 'std' number lists ({e})") from e
        if mean.numel() != std.numel() or not 0 < mean.numel() <= _MAX_CHANNELS:
            raise LatentDataError(
                f"latent statistics: mean ({mean.numel()}) and std ({std.numel()}) sizes differ"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise LatentDataError("latent statistics must be finite with std > 0")
        return cls(mean, std)


class LatentStatistics:
    """Streaming per-channel mean/variance of latents (Chan et al.'s parallel update, float64).

    ``update(z)`` with (B, C, h, w) or (B, C) tensors of any batch and grid size, then ``compute()``.
    """

    def __init__(self) -> None:
        self.count = 0  # values per channel seen so far
        self.num_latents = 0
        self.mean: torch.Tensor | None = None  # (C,)
        self.m2: torch.Tensor | None = None  # (C,) sum of squared deviations
        self.sumsq: torch.Tensor | None = None  # (C,) sum of squares, for the shift-free scale
        self.min = math.inf
        self.max = -math.inf

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> None:
        """Add latents: (B, C, h, w) or (B, C)."""
        if z.ndim not in (2, 4):
            raise ValueError(f"expected latents of shape (B, C, h, w) or (B, C), got {tuple(z.shape)}")
        v = z.detach().to("cpu", torch.float64).transpose(0, 1).reshape(z.shape[1], -1)  # (C, B*h*w)
        n = v.shape[1]
        if n == 0:
            return
        mean_b = v.mean(1)
        m2_b = (v - mean_b[:, None]).pow(2).sum(1)
        if self.mean is None:
            self.mean, self.m2, self.sumsq = mean_b, m2_b, v.pow(2).sum(1)
        else:
            if mean_b.shape != self.mean.shape:
                raise ValueError(f"channel count changed from {self.mean.shape[0]} to {mean_b.shape[0]}")
            total = self.count + n
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2_b + delta.pow(2) * (self.count * n / total)
            self.sumsq = self.sumsq + v.pow(2).sum(1)
        self.count += n
        self.num_latents += z.shape[0]
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def compute(self) -> dict:
        """Statistics as plain JSON-able data.

        Returns:
            dict with ``num_latents``, ``channels``, ``values_per_channel``, per-channel ``mean`` and
            ``std`` (population std), ``global_mean`` / ``global_std`` over all values,
            ``shift_factor`` (= global mean), ``scaling_factor`` (= 1 / global std; use as
            ``(z - shift_factor) * scaling_factor``), ``scaling_factor_no_shift`` (= 1 / RMS; use as
            ``z * scaling_factor`` like SD 1.x/2.x/SDXL, without a shift), ``min``, ``max``.
        """
        if self.mean is None or self.count == 0:
            raise ValueError("no latents were given")
        var_c = self.m2 / self.count  # (C,)
        g_mean = self.mean.mean()
        # equal counts per channel: total variance = mean within-channel var + spread of channel means
        g_var = (var_c + (self.mean - g_mean).pow(2)).mean()
        rms = (self.sumsq.sum() / (self.count * self.mean.numel())).sqrt()
        g_std = float(g_var.sqrt())
        return {
            "num_latents": self.num_latents,
            "channels": int(self.mean.numel()),
            "values_per_channel": self.count,
            "mean": self.mean.tolist(),
            "std": var_c.sqrt().tolist(),
            "global_mean": float(g_mean),
            "global_std": g_std,
            "shift_factor": float(g_mean),
            "scaling_factor": 1.0 / g_std if g_std > 0 else math.inf,
            "scaling_factor_no_shift": 1.0 / float(rms) if rms > 0 else math.inf,
            "min": self.min,
            "max": self.max,
        }


def latent_statistics(latents: torch.Tensor | Iterable[torch.Tensor]) -> dict:
    """Per-channel mean/std of latents and suggested diffusion ``scaling_factor`` / ``shift_factor``.

    Args:
        latents: a (N, C, h, w) tensor, or an iterable of such batches (sizes may differ).
    Returns:
        the dict of ``LatentStatistics.compute`` (see there for the keys).
    """
    acc = LatentStatistics()
    if isinstance(latents, torch.Tensor):
        acc.update(latents)
    else:
        for z in latents:
            acc.update(z)
    return acc.compute()


def latent_channel_stats(shards: list[Path], key: str = "latents") -> dict[str, Any]:
    """Per-channel statistics of ``key`` over all shards, streamed one shard at a time.

    Returns:
        the dict of ``LatentStatistics.compute``:
        per-channel ``mean`` / ``std`` (lists of C floats), ``shift_factor``,
        ``scaling_factor`` (use as ``(z - shift) * scale``), ``num_latents``, ...
    """
    acc = LatentStatistics()
    for p in shards:
        with safe_open(str(p), framework="pt") as f:
            if key in f.keys():
                acc.update(f.get_tensor(key))  # (N, C, h, w)
    return acc.compute()


def load_latent_stats(folder: str | os.PathLike) -> LatentStats | None:
    """``folder/latents_stats.pt`` as ``LatentStats``, or None if there is no such file.

    Raises:
        LatentDataError: the file exists but is not a dict of ``mean`` / ``std`` tensors.
    """
    path = Path(folder) / STATS_NAME
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle payload or a truncated file
        raise LatentDataError(f"{path} is not a statistics file of tensors ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict):
        raise LatentDataError(f"{path} must hold a dict with 'mean' and 'std', got {type(d).__name__}")
    try:
        return LatentStats.from_dict(d)
    except LatentDataError as e:
        raise LatentDataError(f"{path}: {e}") from e


def save_latent_stats(folder: str | os.PathLike, stats: dict[str, Any]) -> Path:
    """Write ``latents_stats.pt`` (and ``.json``) in the form ``extract-latents`` writes.

    Args:
        folder: the latents folder.
        stats: the dict of ``latent_channel_stats`` (``mean`` / ``std`` lists ...).
    """
    folder = Path(folder)
    mean, std = torch.tensor(stats["mean"]), torch.tensor(stats["std"])
    buf = io.BytesIO()
    torch.save({"mean": mean.view(1, -1, 1, 1), "std": std.view(1, -1, 1, 1)}, buf)
    atomic_write_bytes(folder / STATS_NAME, buf.getvalue())
    atomic_write_bytes(folder / "latents_stats.json", (json.dumps(stats, indent=2) + "\n").encode())
    return folder / STATS_NAME


class LatentFolder:
    """The index of a latents folder: shards, their sizes, the latent shape and the classes.

    Every shard header is checked (keys, shapes, dtypes) without reading tensor data; a shard
    that cannot be opened or is inconsistent is skipped with a warning, never the whole folder.

    Args:
        folder: a folder written by ``transvae extract-latents`` (or LightningDiT's extractor).
    Raises:
        LatentDataError: no usable shard.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise LatentDataError(f"latents folder not found: {self.folder}")
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise LatentDataError(
                f"no *.safetensors latent shards in {self.folder} (write them with `transvae extract-latents`)"
            )
        self.files: list[Path] = []
        self.counts: list[int] = []
        self.skipped: list[tuple[str, str]] = []
        self.shape: tuple[int, int, int] | None = None  # (C, h, w)
        self.has_flip = True
        self.dtype = ""
        self.tokenizer: dict[str, str] | None = None  # {"name", "fingerprint"} of extract-latents
        tokenizer_shard = ""
        for f in files:
            try:
                n, shape, flip, dtype, tok = self._inspect(f)
            except Exception as e:  # corrupt header, missing keys, wrong shapes
                self.skipped.append((f.name, str(e)))
                warnings.warn(f"skipping latent shard {f}: {e}", RuntimeWarning, stacklevel=2)
                continue
            if tok is not None:
                if self.tokenizer is not None and tok != self.tokenizer:
                    raise LatentDataError(
                        f"{self.folder} mixes latents of different tokenizers: {tokenizer_shard} "
                        f"({self.tokenizer.get('name')} {self.tokenizer.get('fingerprint')}) and {f.name} "
                        f"({tok.get('name')} {tok.get('fingerprint')}); extract them again into separate folders"
                    )
                self.tokenizer, tokenizer_shard = tok, f.name
            if self.shape is not None and shape != self.shape:
                reason = f"latent shape {shape} differs from {self.shape} of {self.files[0].name}"
                self.skipped.append((f.name, reason))
                warnings.warn(f"skipping latent shard {f}: {reason}", RuntimeWarning, stacklevel=2)
                continue
            if n == 0:
                continue
            self.shape, self.dtype = shape, dtype
            self.has_flip &= flip
            self.files.append(f)
            self.counts.append(n)
        if not self.files or self.shape is None:
            why = f"; skipped: {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""
            raise LatentDataError(f"no usable latents in {self.folder}{why}")
        self.offsets = [0]
        for n in self.counts:
            self.offsets.append(self.offsets[-1] + n)
        self.classes = self._read_classes()
        self.extraction = self._read_json("extraction.json", "extraction record")

    @staticmethod
    def _inspect(path: Path) -> tuple[int, tuple[int, int, int], bool, str, dict | None]:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            tok = (f.metadata() or {}).get("tokenizer")
            if not {"latents", "labels"} <= keys:
                raise LatentDataError(f"needs 'latents' and 'labels' tensors, has {sorted(keys)}")
            lat = f.get_slice("latents")
            shape, dtype = list(lat.get_shape()), lat.get_dtype()
            labels = f.get_slice("labels").get_shape()
            if len(shape) != 4 or not 0 < shape[1] <= _MAX_CHANNELS or min(shape[2:]) < 1:
                raise LatentDataError(f"'latents' must be (N, C, h, w), got {shape}")
            if dtype not in ("F32", "F16", "BF16", "F64"):
                raise LatentDataError(f"'latents' must be floating point, got {dtype}")
            if list(labels) != shape[:1] or f.get_slice("labels").get_dtype() not in ("I64", "I32"):
                raise LatentDataError(f"'labels' must be ({shape[0]},) integers, got {labels}")
            flip = "latents_flip" in keys and list(f.get_slice("latents_flip").get_shape()) == shape
        if tok is not None:
            tok = parse_json(tok, f"{path.name} metadata 'tokenizer'")
            if not isinstance(tok, dict):
                raise LatentDataError(f"metadata 'tokenizer' must be an object, got {tok!r}")
        return shape[0], (shape[1], shape[2], shape[3]), flip, dtype, tok

    def _read_json(self, name: str, what: str) -> dict[str, Any]:
        """``name`` of the folder as a JSON object ({} when absent); refused in one line when it is
        not one (bounded size and nesting: ``utils.config.read_json``)."""
        path = self.folder / name
        if not path.exists():
            return {}
        try:
            data = read_json(path, what=what)
        except (OSError, ValueError) as e:
            raise LatentDataError(str(e).splitlines()[0]) from e
        if not isinstance(data, dict):
            raise LatentDataError(f"{what} {path} must be a JSON object")
        return data

    def _read_classes(self) -> list[str]:
        classes = self._read_json("manifest.json", "latents manifest").get("classes", [])
        if not isinstance(classes, list) or len(classes) > MAX_CLASSES:
            raise LatentDataError(f"{self.folder / 'manifest.json'}: 'classes' must be a list of class names")
        return [str(c) for c in classes]

    def fingerprint(self) -> str:
        """A short hash of what the folder holds (shard names, sizes and safetensors headers:
        shapes, offsets, metadata), read without the tensor data: a resumed run checks it trains
        on the same latents wherever the folder now lies.

        Returns:
            16 hex digits.
        """
        import hashlib
        import struct

        h = hashlib.sha256()
        for f in self.files:
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                header = fh.read(min(n, 100 << 20))
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            h.update(header)
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return self.offsets[-1]

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def grid(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]

    def nbytes(self, flip: bool) -> int:
        """Bytes that loading every latent (and its mirror if ``flip``) as float32 would take."""
        c, h, w = self.shape
        return len(self) * c * h * w * 4 * (2 if flip else 1)

    def labels(self) -> torch.Tensor:
        """(N,) int64 labels of every latent, in order."""
        out = []
        for f in self.files:
            with safe_open(str(f), framework="pt") as h:
                out.append(h.get_tensor("labels").long())
        return torch.cat(out)

    def num_classes(self) -> int:
        """The classes named in ``manifest.json``, else the largest label + 1 (at least 1).

        Raises:
            LatentDataError: a label outside ``[0, number of named classes)``, or, without class
                names, above ``MAX_CLASSES`` (one broken label must not size the generator),
                naming the shard.
        """
        limit = len(self.classes) or MAX_CLASSES
        top = 0
        for f in self.files:
            with safe_open(str(f), framework="pt") as h:
                labels = h.get_tensor("labels").long()
            if labels.numel() == 0:
                continue
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= limit:
                named = (
                    f"the {len(self.classes)} classes of manifest.json"
                    if self.classes
                    else f"{MAX_CLASSES} classes"
                )
                raise LatentDataError(
                    f"{f.name} holds class label {lo if lo < 0 else hi}, outside [0, {limit}) ({named}); "
                    f"extract the latents again"
                )
            top = max(top, hi + 1)
        return max(len(self.classes), top, 1)

    def locate(self, index: int) -> tuple[int, int]:
        """Global latent index -> (shard number, row in that shard)."""
        import bisect

        s = bisect.bisect_right(self.offsets, index) - 1
        return s, index - self.offsets[s]

    def iter_batches(self, batch_size: int = 256, key: str = "latents", limit: int = 0):
        """Yield (B, C, h, w) float32 batches of ``key`` in order, one shard in memory at a time.

        Args:
            batch_size: rows per batch; key: ``"latents"`` or ``"latents_flip"``.
            limit: stop after this many latents (0 = all).
        """
        seen = 0
        for f, n in zip(self.files, self.counts, strict=True):
            with safe_open(str(f), framework="pt") as h:
                sl = h.get_slice(key)
                for i in range(0, n, batch_size):
                    take = min(batch_size, n - i)
                    if limit:
                        take = min(take, limit - seen)
                    if take <= 0:
                        return
                    yield sl[i : i + take].float()
                    seen += take

    def stats(self, save: bool = True) -> LatentStats:
        """The folder's ``latents_stats.pt``; computed from the shards (and saved when ``save``
        and the folder is writable) if there is none."""
        found = load_latent_stats(self.folder)
        if found is not None:
            if found.channels != self.channels:
                raise LatentDataError(
                    f"{self.folder / STATS_NAME} has {found.channels} channels, the latents have {self.channels}"
                )
            return found
        log.info("computing latent statistics of %s (no %s)", self.folder, STATS_NAME)
        d = latent_channel_stats(self.files)
        if save:
            try:
                save_latent_stats(self.folder, d)
                log.info("saved %s", self.folder / STATS_NAME)
            except OSError as e:
                warnings.warn(
                    f"could not save {self.folder / STATS_NAME} ({e}); using the statistics computed now",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return LatentStats.from_dict(d)


class LatentDataset(Dataset):
    """Normalised latents and labels for diffusion training.

    With ``flip`` (and ``latents_flip`` in the shards), the dataset has 2N items: item ``i < N``
    is latent ``i``, item ``N + i`` its mirror image. Shuffling the 2N items replaces
    LightningDiT's coin flip per sample, so the data order (and a resumed run) is fixed by the
    sampler's seed alone.

    Args:
        folder: a ``LatentFolder`` or its path.
        stats: the normalisation statistics (None: the folder's own, see ``LatentFolder.stats``).
        multiplier: LightningDiT's ``latent_multiplier`` (1.0 in its recipes).
        flip: also serve the mirrored latents.
        cache_bytes: load every latent into memory when they take at most this many bytes (as
            float32); otherwise each item is read from its shard on demand.
    """

    def __init__(
        self,
        folder: LatentFolder | str | os.PathLike,
        stats: LatentStats | None = None,
        multiplier: float = 1.0,
        flip: bool = True,
        cache_bytes: int = 2 << 30,
    ):
        self.folder = folder if isinstance(folder, LatentFolder) else LatentFolder(folder)
        self.stats = stats if stats is not None else self.folder.stats()
        if self.stats.channels != self.folder.channels:
            raise LatentDataError(
                f"statistics have {self.stats.channels} channels, the latents in {self.folder.folder} "
                f"have {self.folder.channels}"
            )
        self.multiplier = multiplier
        self.flip = flip and self.folder.has_flip
        if flip and not self.folder.has_flip:
            warnings.warn(
                f"{self.folder.folder}: no 'latents_flip' in every shard; training without mirrored latents",
                RuntimeWarning,
                stacklevel=2,
            )
        self.labels = self.folder.labels()
        self._cache: torch.Tensor | None = None
        if self.folder.nbytes(self.flip) <= cache_bytes:
            keys = ["latents", "latents_flip"] if self.flip else ["latents"]
            self._cache = torch.cat([torch.cat(list(self.folder.iter_batches(4096, k))) for k in keys])
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.folder) * (2 if self.flip else 1)

    def __getstate__(self):  # open shard handles stay in the process that opened them
        return {**self.__dict__, "_handles": {}}

    def _read(self, index: int) -> torch.Tensor:
        n = len(self.folder)
        key = "latents_flip" if index >= n else "latents"
        shard, row = self.folder.locate(index % n)
        h = self._handles.get(shard)
        if h is None:
            h = self._handles[shard] = safe_open(str(self.folder.files[shard]), framework="pt")
        return h.get_slice(key)[row : row + 1][0].float()

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        """``key``: an index, or ``(index, epoch, batch, ...)`` from ``BucketBatchSampler``.

        Returns:
            dict with ``latent`` (C, h, w) float32 normalised, ``label`` int, ``index``,
            ``epoch``, ``batch``.
        """
        index, epoch, batch = (key[0], key[1], key[2]) if isinstance(key, tuple) else (int(key), 0, -1)
        z = self._cache[index] if self._cache is not None else self._read(index)
        x = self.stats.normalize(z[None], self.multiplier)[0]  # (C, h, w)
        label = int(self.labels[index % len(self.folder)])
        return {"latent": x, "label": label, "index": index, "epoch": epoch, "batch": batch}


def collate_latents(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``LatentDataset`` items: ``latent`` (B, C, h, w), ``label`` (B,) and the data position."""
    return {
        "latent": torch.stack([s["latent"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
        "epoch": samples[0]["epoch"],
        "batch": samples[0]["batch"],
    }
