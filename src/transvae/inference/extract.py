"""``extract-latents``: a whole image folder -> sharded safetensors of latents for diffusion training.

Layout of ``OUT`` (the form LightningDiT's ``ImgLatentDataset`` reads: every ``*.safetensors``
holds ``latents``, ``latents_flip`` and ``labels``, and ``latents_stats.pt`` holds the
per-channel ``mean`` / ``std`` of shape (1, C, 1, 1)):

    latents_shard00000.safetensors   latents (N, C, h, w), latents_flip (N, C, h, w) unless
                                     --no-flip, labels (N,) int64; metadata: file_names (JSON),
                                     total_size, dtype, shard
    ...
    extraction.json                  the settings; a rerun with other settings is refused
    manifest.json                    shards, counts, classes, skipped files (written last)
    latents_stats.pt / .json         per-channel mean and std of ``latents`` over the dataset (the
                                     JSON adds scaling_factor / shift_factor for diffusion)

Shard ``i`` holds the sorted files ``[i*S, (i+1)*S)``; with ``world_size`` processes (torchrun)
rank ``r`` extracts the shards with ``i % world_size == r``. A shard is written atomically, so
an existing shard file is complete and a rerun skips it (resume). Rank 0 computes the statistics
and the manifest from the shard files once every shard exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.io import ImageLoadError, list_images, load_image, pil_to_tensor
from ..data.latents import latent_channel_stats, save_latent_stats
from ..data.transforms import ResizeTooLarge
from ..data.transforms import adm_center_crop as center_crop_resize  # ADM's crop, on purpose
from ..models.persistence import model_identity
from ..utils.config import parse_json, read_json
from ..utils.failures import run_isolated
from ..utils.files import atomic_path, atomic_write_bytes, check_writable
from ..utils.text import printable
from .limits import check_batch_fits
from .runner import InferenceRunner

SHARD_PATTERN = "latents_shard{:05d}.safetensors"


def find_classes(root: Path, files: list[Path]) -> list[str]:
    """Class names (sorted first-level folders, as torchvision's ImageFolder) when every image
    lies in a sub-folder of ``root``; otherwise ``[]`` (an unlabelled folder)."""
    rels = [f.relative_to(root) for f in files]
    if not rels or any(len(r.parts) < 2 for r in rels):
        return []
    return sorted({r.parts[0] for r in rels})


class _CropDataset(Dataset):
    def __init__(self, files: list[Path], resolution: int):
        self.files, self.resolution = files, resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            im = center_crop_resize(load_image(self.files[i]), self.resolution)
            return i, pil_to_tensor(im), ""
        except ImageLoadError as e:
            return i, None, e.reason
        except ResizeTooLarge as e:
            return i, None, str(e)


def _collate(items):
    return items


def _shard_complete(path: Path, expected_files: list[str]) -> bool:
    """A shard counts as done when it opens and lists the files we would have put in it
    (minus skipped ones, which are recorded in its metadata)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        names = parse_json(meta.get("file_names", "null"), f"{path} metadata")
        skipped = parse_json(meta.get("skipped", "[]"), f"{path} metadata")
    except Exception:
        return False
    return isinstance(names, list) and sorted(names + [s[0] for s in skipped]) == sorted(expected_files)


def _write_shard(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    with atomic_path(path) as tmp:  # complete or absent, never half a shard; the umask's permissions
        save_file(tensors, str(tmp), metadata=meta)


def extract_latents(
    data_dir: str | os.PathLike,
    runner: InferenceRunner,
    out_dir: str | os.PathLike,
    model_ref: str = "",
    resolution: int = 256,
    shard_size: int = 10000,
    batch_size: int = 32,
    flip: bool = True,
    sample: bool = False,
    latent_dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    barrier=None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Encode every image of ``data_dir`` into latent shards under ``out_dir``.

    Args:
        data_dir: image folder; first-level sub-folders are classes when all images are in them.
        runner: an ``InferenceRunner`` (device, dtype, tiling of the model).
        out_dir: output folder (see the module docstring for its layout).
        model_ref: the model path / repo id, recorded in the metadata.
        resolution: images are centre-cropped and resized to ``resolution`` squared.
        shard_size: images per shard.
        batch_size: images per forward pass.
        flip: also store latents of horizontally flipped images (``latents_flip``).
        sample: store posterior samples instead of posterior means.
        latent_dtype: dtype of the stored latents.
        num_workers: DataLoader workers decoding images.
        rank, world_size: this process's slice of the shards.
        barrier: callable that waits for all ranks (``torch.distributed.barrier``) or None.
        progress: show a tqdm bar.
    Returns:
        The manifest (on the rank that wrote it, once all shards exist), else None.
    Raises:
        ValueError: a resolution that is not a multiple of f, or other settings than the
            extraction already in ``out_dir``.
        MemoryError: a batch at ``resolution`` cannot fit in the free memory (estimated first).
        DiskFullError: the shards still to write do not fit on the disk (checked first).
    """
    data_dir, out = Path(data_dir), Path(out_dir)
    if resolution % runner.f:
        raise ValueError(f"--resolution {resolution} must be a multiple of the compression ratio {runner.f}")
    check_batch_fits(runner.model, [resolution], batch_size, runner.device, runner.dtype)
    files = list_images(data_dir)
    if not files:
        raise FileNotFoundError(f"no images found under {data_dir}")
    job = _Extraction(runner, data_dir, out, files, model_ref, resolution, flip, sample, latent_dtype)
    job.record_settings(shard_size, write=rank == 0)
    n_shards = -(-len(files) // shard_size)
    todo = [
        i
        for i in range(rank, n_shards, world_size)
        if not _shard_complete(out / SHARD_PATTERN.format(i), job.rels[i * shard_size : (i + 1) * shard_size])
    ]
    n_todo = sum(len(job.rels[i * shard_size : (i + 1) * shard_size]) for i in todo)
    # the shards still to write must fit on the disk (checked before any image is encoded)
    per_image = runner.model.latent_channels * (resolution // runner.f) ** 2 * latent_dtype.itemsize
    check_writable(out, n_todo * per_image * (2 if flip else 1), what="--out")
    bar = tqdm(total=n_todo, desc=f"extract (rank {rank})", unit="img", disable=not progress or n_todo == 0)
    for i in todo:
        idx = list(range(i * shard_size, min((i + 1) * shard_size, len(files))))
        job.write_shard(i, idx, batch_size, num_workers, bar)
    bar.close()

    if barrier is not None:
        barrier()
    if rank != 0:
        return None
    shards = [out / SHARD_PATTERN.format(i) for i in range(n_shards)]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        # another (non-torchrun) job still owns these shards; the last one to finish, or a
        # rerun with --world-size 1, writes the statistics
        return None
    return finalize(out, shards, job.settings)


class _Extraction:
    """One ``extract_latents`` job: its settings (recorded in ``extraction.json`` and in every
    shard, with the tokenizer's identity) and the encoding of one shard."""

    def __init__(self, runner, data_dir, out, files, model_ref, resolution, flip, sample, latent_dtype):
        self.runner, self.out, self.files = runner, out, files
        self.resolution, self.flip, self.sample, self.latent_dtype = resolution, flip, sample, latent_dtype
        self.model_ref = str(model_ref)
        self.classes = find_classes(data_dir, files)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.rels = [f.relative_to(data_dir).as_posix() for f in files]
        self.tokenizer = model_identity(runner.model)  # name + fingerprint: gen-train refuses mixed shards
        self.data_dir = str(data_dir.resolve())

    def record_settings(self, shard_size: int, write: bool) -> None:
        """Write ``extraction.json`` (rank 0), or refuse other settings than the ones already there."""
        self.settings = {
            "data_dir": self.data_dir,
            "model": self.model_ref,
            "model_name": self.runner.model.model_name,
            "tokenizer": self.tokenizer,
            "resolution": self.resolution,
            "shard_size": shard_size,
            "flip": self.flip,
            "sample": self.sample,
            "latent_dtype": str(self.latent_dtype).removeprefix("torch."),
            "num_images": len(self.files),
            "classes": self.classes,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "extraction.json"
        if path.is_file():
            old = read_json(path, what="extraction record")
            if not isinstance(old, dict):
                raise ValueError(f"{path} is not an extraction record; use a new --out folder")
            old.setdefault("tokenizer", self.tokenizer)  # written before tokenizers were fingerprinted
            if old != self.settings:
                diff = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
                raise ValueError(
                    f"{self.out} holds an extraction with other settings (differs in {diff}); use a new --out folder"
                )
        elif write:
            atomic_write_bytes(path, (json.dumps(self.settings, indent=2) + "\n").encode())

    def _encode(self, batch: list[tuple[int, torch.Tensor]]) -> list:
        x = torch.stack([t for _, t in batch])  # (B, 3, R, R)
        enc = self.runner.encode
        z = enc(x, sample=self.sample).latent.to("cpu", self.latent_dtype)  # (B, C, R/f, R/f)
        zf = enc(x.flip(-1), sample=self.sample).latent.to("cpu", self.latent_dtype) if self.flip else z
        return list(zip(z, zf, strict=True))

    def write_shard(self, i: int, idx: list[int], batch_size: int, num_workers: int, bar) -> None:
        """Encode the images ``idx`` into shard ``i`` (unreadable ones skipped and recorded)."""
        loader = DataLoader(
            _CropDataset([self.files[j] for j in idx], self.resolution),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_collate,
        )
        lat, lat_flip, labels, names, skipped = [], [], [], [], []

        def fail(k: int, reason: str) -> None:
            skipped.append([self.rels[idx[k]], reason])
            bar.write(f"failed {printable(self.files[idx[k]])}: {printable(reason)}")

        for items in loader:
            for k, _, err in items:
                if err:
                    fail(k, err)
            good = [(k, x) for k, x, err in items if x is not None]
            # a batch that fails (out of memory, ...) is retried image by image; failures are skipped
            for k, (z, zf) in run_isolated(self._encode, [k for k, _ in good], good, fail) if good else []:
                lat.append(z.contiguous())
                lat_flip.append(zf.contiguous())
                rel = self.rels[idx[k]]
                names.append(rel)
                labels.append(self.class_index[rel.split("/")[0]] if self.classes else 0)
            bar.update(len(items))
        c, h = self.runner.model.latent_channels, self.resolution // self.runner.f
        empty = torch.zeros(0, c, h, h, dtype=self.latent_dtype)
        tensors = {
            "latents": torch.stack(lat) if lat else empty,
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
        if self.flip:
            tensors["latents_flip"] = torch.stack(lat_flip) if lat_flip else empty
        meta = {
            "file_names": json.dumps(names),
            "skipped": json.dumps(skipped),
            "total_size": str(len(names)),
            "dtype": str(self.latent_dtype),
            "shard": str(i),
            "model": self.model_ref,
            "resolution": str(self.resolution),
            "tokenizer": json.dumps(self.tokenizer),
        }
        _write_shard(self.out / SHARD_PATTERN.format(i), tensors, meta)


def finalize(out: Path, shards: list[Path], settings: dict[str, Any]) -> dict[str, Any]:
    """Write ``latents_stats.pt`` / ``.json`` and ``manifest.json`` from the finished shards."""
    stats = latent_channel_stats(shards)
    # LightningDiT's ImgLatentDataset torch.load()s latents_stats.pt: {'mean', 'std'}, each (1, C, 1, 1);
    # latents_stats.json also names the tokenizer (name + fingerprint) the statistics belong to
    save_latent_stats(out, {**stats, "tokenizer": settings.get("tokenizer")})
    entries, skipped, total = [], [], 0
    for p in shards:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        n = int(meta.get("total_size", 0))
        total += n
        skipped += parse_json(meta.get("skipped", "[]"), f"{p} metadata")
        entries.append({"file": p.name, "num_images": n})
    scaling = {
        k: stats[k] for k in ("scaling_factor", "shift_factor", "scaling_factor_no_shift") if k in stats
    }
    manifest = {
        **settings,
        "num_latents": total,
        "shards": entries,
        "skipped": skipped,
        "scaling": scaling,
        "complete": True,
    }
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
