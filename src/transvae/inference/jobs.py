"""Folder jobs: reconstruct, encode or decode many files with one runner, where one file's
failure never stops the others.

Each job takes ``(source, output name)`` pairs (``files.collect_inputs``), writes every output
atomically under ``out`` and returns a ``JobReport``. Per file, whatever goes wrong (an unreadable
image, bad latent metadata, a CPU or CUDA out-of-memory error, full-size tensors that cannot fit)
is reported once through ``on_failure(path, reason)`` and the job goes on; a batch that fails is
retried one file at a time (``transvae.utils.failures.run_isolated``), so only the files that fail
on their own are lost. A full disk stops the job (every later file would fail too): the report
says so in ``stopped``. ``on_failure`` may raise to stop at the first failure (``--strict``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.io import tensor_to_pil, tensor_to_uint8
from ..utils.failures import failure_reason, run_isolated
from ..utils.files import DiskFullError, atomic_write_bytes
from .batching import iter_image_batches, pad_batch
from .latent_files import LatentRecord, check_geometry, load_latent, save_latent
from .limits import check_full_size, loadable_pixels
from .padding import Pad, crop, padded_size
from .runner import InferenceRunner

__all__ = ["JobReport", "decode_files", "encode_files", "reconstruct_files"]

FailureHandler = Callable[[Path, str], None]


@dataclass
class JobReport:
    """What a folder job did.

    Attributes:
        written: number of output files written.
        failures: ``(input path, reason)`` for every input that produced no output.
        psnr: per-image PSNR (dB) of reconstructions against their inputs (``reconstruct_files``).
        stopped: why the job stopped before the end (a full disk), else None.
    """

    written: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    stopped: str | None = None


class _Job:
    """Shared bookkeeping: the progress bar, failures and writes."""

    def __init__(self, total: int, desc: str, on_failure: FailureHandler | None, progress: bool):
        self.report = JobReport()
        self.bar = tqdm(total=total, desc=desc, unit="file", disable=not progress, dynamic_ncols=True)
        self.on_failure = on_failure

    def fail(self, path: Path, reason: str) -> None:
        self.report.failures.append((path, reason))
        if self.on_failure is not None:
            self.on_failure(path, reason)

    def write(self, src: Path, fn: Callable[[], None]) -> bool:
        """Run a write; an ordinary OSError fails this file, a full disk stops the job."""
        try:
            fn()
        except DiskFullError:
            raise
        except OSError as e:
            self.fail(src, f"cannot write the output ({failure_reason(e)})")
            return False
        self.report.written += 1
        return True

    def close(self) -> None:
        self.bar.close()


def _write_png(path: Path, x: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    tensor_to_pil(x).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _passes(n: int, pixels: int, batch_size: int, max_pixels: int | None) -> list[slice]:
    """Split ``n`` same-size images into forward passes of at most ``max_pixels`` pixels in all
    (at least one image each; one image per pass when it is tiled anyway)."""
    per = batch_size if max_pixels is None else max(1, min(batch_size, max_pixels // max(pixels, 1)))
    return [slice(i, i + per) for i in range(0, n, per)]


def _image_job(
    runner: InferenceRunner,
    items: list[tuple[Path, Path]],
    desc: str,
    batch_size: int,
    num_workers: int,
    on_failure: FailureHandler | None,
    progress: bool,
    compute: Callable[[torch.Tensor, list[Pad]], list],
    emit: Callable[[_Job, int, torch.Tensor, object], None],
) -> JobReport:
    """Load, batch, check, ``compute(x_padded, pads) -> [result per image]`` (isolated per image
    on failure) and ``emit(job, index, image, result)`` every image of ``items``."""
    files = [src for src, _ in items]
    job = _Job(len(files), desc, on_failure, progress)

    def fail(i: int, reason: str) -> None:
        job.fail(files[i], reason)

    def run(batch: list[tuple[int, torch.Tensor]]) -> list:
        x, pads = pad_batch([t for _, t in batch], runner.f)  # (B, 3, H', W')
        return compute(x, pads)

    limit, why = loadable_pixels(runner.device)
    try:
        for idx, xs, err in iter_image_batches(files, runner.f, batch_size, num_workers, None, limit, why):
            if xs is None:
                fail(idx[0], err)
                job.bar.update(1)
                continue
            hp, wp = padded_size(xs[0].shape[1], xs[0].shape[2], runner.f)
            try:  # full-size tensors that cannot fit even when tiled: refused before allocating
                check_full_size(hp, wp, runner.device)
            except MemoryError as e:
                for i in idx:
                    fail(i, failure_reason(e))
                job.bar.update(len(idx))
                continue
            batch = list(zip(idx, xs, strict=True))
            for part in _passes(len(batch), hp * wp, batch_size, runner.max_pixels):
                chunk = batch[part]
                images = dict(chunk)
                for i, result in run_isolated(run, [i for i, _ in chunk], chunk, fail):
                    emit(job, i, images[i], result)
                job.bar.update(len(chunk))
    except DiskFullError as e:
        job.report.stopped = e.strerror or str(e)
    finally:  # also when on_failure stops the job (--strict)
        job.close()
    return job.report


def reconstruct_files(
    runner: InferenceRunner,
    items: list[tuple[Path, Path]],
    out: Path,
    batch_size: int = 8,
    num_workers: int = 0,
    sample: bool = False,
    seed: int = 0,
    compare: bool = False,
    on_failure: FailureHandler | None = None,
    progress: bool = True,
) -> JobReport:
    """Reconstruct images of any size to PNGs ``out / name`` (and ``out / "compare" / name``).

    Args:
        runner: the model, device, precision and tiling.
        items: (image path, output name relative to ``out``).
        out: output folder.
        batch_size: images per forward pass (same padded size; fewer above ``runner.max_pixels``).
        num_workers: image decoding processes.
        sample, seed: decode a posterior sample (seeded) instead of the mean.
        compare: also write input | reconstruction side by side.
        on_failure: ``(path, reason)`` for each input that produces no output (may raise).
        progress: a progress bar over files.
    Returns:
        JobReport with the PSNR of every reconstruction against its input
        (``transvae.metrics.psnr.psnr_per_image`` on the uint8 images).
    """
    from ..metrics.psnr import psnr_per_image

    gen = torch.Generator(device=runner.device).manual_seed(seed) if sample else None
    names = dict(enumerate(dst for _, dst in items))

    def compute(x: torch.Tensor, pads: list[Pad]) -> list:
        rec = runner.reconstruct(x, sample=sample, generator=gen).cpu()  # (B, 3, H', W')
        return [crop(rec[k], pads[k]) for k in range(len(pads))]  # (3, H, W) each

    def emit(job: _Job, i: int, x: torch.Tensor, r: torch.Tensor) -> None:
        def write() -> None:
            _write_png(out / names[i], r)
            if compare:
                _write_png(out / "compare" / names[i], torch.cat([x, r], dim=-1))

        if job.write(items[i][0], write):
            job.report.psnr.append(float(psnr_per_image(tensor_to_uint8(x)[None], tensor_to_uint8(r)[None])))

    return _image_job(
        runner, items, "reconstruct", batch_size, num_workers, on_failure, progress, compute, emit
    )


def encode_files(
    runner: InferenceRunner,
    items: list[tuple[Path, Path]],
    out: Path,
    model_ref: str = "",
    batch_size: int = 8,
    num_workers: int = 0,
    sample: bool = False,
    seed: int = 0,
    scaling_factor: float = 1.0,
    shift_factor: float = 0.0,
    latent_dtype: torch.dtype = torch.float32,
    on_failure: FailureHandler | None = None,
    progress: bool = True,
) -> JobReport:
    """Encode images of any size to latent files ``out / name`` (``latent_files`` format).

    Args:
        runner, items, out, batch_size, num_workers, sample, seed, on_failure, progress: as
            for ``reconstruct_files``.
        model_ref: the model's path or repo id, recorded in each file as provenance.
        scaling_factor, shift_factor: store ``(z - shift) * scale`` (finite, scale non-zero).
        latent_dtype: dtype of the stored latents.
    Returns:
        JobReport.
    """
    gen = torch.Generator(device=runner.device).manual_seed(seed) if sample else None
    model = runner.model

    def compute(x: torch.Tensor, pads: list[Pad]) -> list:
        z = runner.encode(x, sample=sample, generator=gen).latent.cpu()  # (B, C, h, w)
        return [(z[k], pads[k]) for k in range(len(pads))]

    def emit(job: _Job, i: int, x: torch.Tensor, result) -> None:
        z, pad = result
        src, dst = items[i]
        rec = LatentRecord(
            latent=((z - shift_factor) * scaling_factor).to(latent_dtype),
            model=model_ref,
            model_name=model.model_name,
            size=(x.shape[1], x.shape[2]),
            pad=pad,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            sampled=sample,
        )
        extra = {
            "architecture": model.config.architecture,
            "latent_channels": str(model.latent_channels),
            "spatial_compression_ratio": str(runner.f),
            "source": str(src),
        }
        job.write(src, lambda: save_latent(out / dst, rec, **extra))

    return _image_job(runner, items, "encode", batch_size, num_workers, on_failure, progress, compute, emit)


def _check_latent_file(
    src: Path, runner_for: Callable[[LatentRecord], InferenceRunner], force: bool
) -> tuple[LatentRecord, InferenceRunner]:
    """Read one latent file and check it against the runner that would decode it (see
    ``decode_files``); raises ``ValueError`` / ``MemoryError`` / ``OSError`` naming the problem."""
    rec = load_latent(src)
    r = runner_for(rec)
    name = r.model.model_name
    if rec.model_name and rec.model_name != name and not force:
        raise ValueError(
            f"encoded with '{rec.model_name}' but the decoding model is '{name}'; "
            "pass --model with the encoding model, or --force to decode anyway"
        )
    c = rec.latent.shape[0]
    if c != r.model.latent_channels:
        raise ValueError(
            f"latent has {c} channels, the decoding model {name} expects {r.model.latent_channels}"
        )
    problem = check_geometry(rec, r.f)
    if problem:
        raise ValueError(problem)
    h, w = rec.latent.shape[-2:]
    check_full_size(h * r.f, w * r.f, r.device, what="decoded image")
    return rec, r


def decode_files(
    items: list[tuple[Path, Path]],
    out: Path,
    runner_for: Callable[[LatentRecord], InferenceRunner],
    batch_size: int = 8,
    force: bool = False,
    on_failure: FailureHandler | None = None,
    progress: bool = True,
) -> JobReport:
    """Decode latent files to PNGs of their original size, ``out / name``.

    Every file is checked before it is decoded: readable, floating-point and finite values, a
    padding and image size that fit its grid, the channels of the decoding model, and a
    ``model_name`` equal to the decoding model's (unless ``force``). Consecutive files with the
    same grid and model are decoded together.

    Args:
        items: (latent path, output name relative to ``out``).
        out: output folder.
        runner_for: the runner that decodes a given file (the ``--model`` one; raise
            ``ValueError`` to refuse the file).
        batch_size: latents per forward pass (fewer above the runner's ``max_pixels``).
        force: decode files whose ``model_name`` differs from the decoding model's.
        on_failure, progress: as for ``reconstruct_files``.
    Returns:
        JobReport.
    """
    job = _Job(len(items), "decode", on_failure, progress)
    pending: list[tuple[Path, Path, LatentRecord]] = []
    key: tuple | None = None
    runner: InferenceRunner | None = None

    def decode(batch: list[tuple[Path, Path, LatentRecord]]) -> list[torch.Tensor]:
        z = torch.stack([rec.unscaled() for _, _, rec in batch])  # (B, C, h, w)
        x = runner.decode(z).cpu()  # (B, 3, h*f, w*f)
        return [crop(x[k], rec.pad) for k, (_, _, rec) in enumerate(batch)]

    def flush() -> None:
        if not pending:
            return
        h, w = pending[0][2].latent.shape[-2:]
        for part in _passes(len(pending), h * w * runner.f**2, batch_size, runner.max_pixels):
            chunk = pending[part]
            for (src, dst), img in run_isolated(decode, [(s, d) for s, d, _ in chunk], chunk, _fail_pair):
                job.write(src, lambda dst=dst, img=img: _write_png(out / dst, img))
            job.bar.update(len(chunk))
        pending.clear()

    def _fail_pair(pair: tuple[Path, Path], reason: str) -> None:
        job.fail(pair[0], reason)

    try:
        for src, dst in items:
            try:
                rec, r = _check_latent_file(src, runner_for, force)
            except (ValueError, MemoryError, OSError) as e:
                job.fail(src, failure_reason(e).removeprefix(f"{src}: "))
                job.bar.update(1)
                continue
            k = (id(r), tuple(rec.latent.shape))
            if k != key or len(pending) >= batch_size:
                flush()
                key, runner = k, r
            pending.append((src, dst, rec))
        flush()
    except DiskFullError as e:
        job.report.stopped = e.strerror or str(e)
    finally:  # also when on_failure stops the job (--strict)
        job.close()
    return job.report
