"""``GenerationTask``: LightningDiT on extracted latents, as a task of the training engine.

Everything a run needs besides the generator itself comes from ``transvae.training.engine``:
the loop, bf16 autocast on GPUs, AdamW and its update, the EMA, exact resume from atomic
checkpoints, ``torchrun`` DDP, signals, the run-folder lock and the logs. This task supplies:

- ``build``: the named LightningDiT sized for the latents (channels, classes), DDP-wrapped;
- ``batches``: normalised latents (and their mirrors) in the engine's seeded, resumable order
  (``BucketBatchSampler``, the same sampler as autoencoder training);
- ``train_step``: the rectified-flow loss (``flow.RectifiedFlow``);
- ``validate``: on held-out latents (``data.val_latents``), the flow loss at fixed noise and,
  with ``sample.val_num > 0``, the latent Frechet distance of ``val_num`` generated latents
  (EMA weights, fixed seeds, so checkpoints are compared on the same noise);
- ``save_samples``: a decoded sample grid when ``data.vae`` names the tokenizer;
- ``export``: ``RUN/model`` (the generator's ``save_pretrained``), loadable by ``gen-sample``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ...data.datasets import BucketBatchSampler
from ...data.io import save_image_grid, tensor_to_uint8
from ...data.latents import LatentDataError, LatentDataset, LatentFolder, LatentStats, collate_latents
from ...generation.flow import RectifiedFlow
from ...generation.sampling import SamplerConfig, initial_noise, sample_ode
from ...metrics.latent_fd import DEFAULT_PATCH, LatentFrechetDistance
from ...models.lightningdit import GeneratorConfigError, LightningDiT
from ...models.persistence import load_model, model_fingerprint, unwrap_model
from ...models.registry import create_model, model_config
from ...utils.memory import available_bytes, estimate_module_memory, format_bytes
from .. import distributed as D
from ..config import GenConfig
from ..task import Task, TrainingError, ignore_sigterm

log = logging.getLogger("transvae.train")


class GenerationTask(Task):
    """Train a LightningDiT on the latents of ``cfg.data.latents``.

    Args:
        cfg: the resolved ``GenConfig``.
    """

    label = "gen-train"
    progress_keys = ("total", "mse", "cos")
    # data.latents may move (a resumed run finds its latents by content: ``checkpoint_note``'s
    # fingerprint), not change
    fixed_on_resume = ("model.name", "data.latent_norm", "data.multiplier", "model.qk_norm")

    def __init__(self, cfg: GenConfig):
        self.cfg = cfg
        self.flow = RectifiedFlow(
            cfg.flow.logit_normal, cfg.flow.logit_mean, cfg.flow.logit_std, cfg.flow.cosine_loss
        )
        self.model: LightningDiT | None = None
        self._val_fd: LatentFrechetDistance | None = None

    # -- building ---------------------------------------------------------------------------------
    def _overrides(self) -> dict[str, Any]:
        m = self.cfg.model
        return {
            "in_channels": self.folder.channels,
            "num_classes": self.num_classes,
            "class_dropout": m.class_dropout,
            "qk_norm": m.qk_norm,
            "gradient_checkpointing": m.gradient_checkpointing,
            "pos_embed_order": self._pos_embed_order(),
        }

    def _pos_embed_order(self) -> str:
        """The sin-cos table order of the model being trained: DiT's for a new run; for a resumed
        run the one its checkpoint records, or the row-first order of the runs started before the
        checkpoints recorded it (the table is no weight: a silent change would pass ``strict``)."""
        note = getattr(self, "_resumed_note", None)
        if note is None:
            return model_config(self.cfg.model.name).pos_embed_order
        return note.get("pos_embed_order", "rows_first")

    def preflight(self) -> int:
        """Open the latents (headers only), size the generator on the meta device."""
        d = self.cfg.data
        if not d.latents:
            raise TrainingError(
                "no training latents: pass --latents DIR (written by `transvae extract-latents`)"
            )
        try:
            self.folder = LatentFolder(d.latents)
            self.val_folder = LatentFolder(d.val_latents) if d.val_latents else None
            self.num_classes = self.folder.num_classes()
            cfg = model_config(self.cfg.model.name, **self._overrides())
        except (LatentDataError, GeneratorConfigError, KeyError) as e:
            raise TrainingError(str(e).strip("'\"")) from e
        self._check_resumed_note()
        if d.vae:
            self._check_vae(d.vae)
        if self.val_folder is not None and self.val_folder.shape != self.folder.shape:
            raise TrainingError(
                f"data.val_latents have shape {self.val_folder.shape}, the training latents {self.folder.shape}"
            )
        h, w = self.folder.grid
        if h % cfg.patch_size or w % cfg.patch_size:
            raise TrainingError(
                f"the latent grid {h}x{w} is not a multiple of {self.cfg.model.name}'s patch size {cfg.patch_size}"
            )
        meta = create_model(self.cfg.model.name, device="meta", **self._overrides())
        n = meta.num_parameters()
        ema = 1 if self.cfg.train.ema else 0
        if self.cfg.train.check_memory:
            # activations of one micro-batch (meta-device forward), weights, gradients, two AdamW
            # moments and the EMA copy
            b = max(1, self.engine.micro_batch)
            inputs = (
                torch.empty(b, *self.folder.shape, device="meta"),
                torch.empty(b, device="meta"),
                torch.zeros(b, dtype=torch.int64, device="meta"),
            )
            bf16 = self.engine.autocast_dtype is not None
            est = estimate_module_memory(meta, inputs, train=True, dtype_bytes=2 if bf16 else 4)
            need, free = est.total + 4 * n * ema, available_bytes(self.engine.device)
            if free is not None and need > free:
                raise TrainingError(
                    f"{self.cfg.model.name} at batch {b} per process needs about {format_bytes(need)} "
                    f"(activations {format_bytes(est['activations'])}), {format_bytes(free)} is free on "
                    f"{self.engine.device}; lower --batch-size (train.batch_size), raise train.grad_accum, "
                    f"use a smaller --model (or train.check_memory=false)"
                )
        # one checkpoint: weights, EMA, AdamW moments; the new file sits next to the old one until
        # the rename; plus the exported model
        return 2 * 4 * n * (3 + ema) + 4 * n + (64 << 20)

    def _check_vae(self, path: str) -> None:
        """``data.vae`` (the tokenizer that decodes the sample grids) must be the one that made
        the latents: same latent channels and, when the latents record it, the same fingerprint."""
        try:
            self._vae = load_model(path)  # on the CPU; moved to the device at the first grid
        except (FileNotFoundError, ValueError) as e:
            raise TrainingError(f"data.vae: {str(e).splitlines()[0]}") from e
        if getattr(self._vae, "latent_channels", None) != self.folder.channels:
            raise TrainingError(
                f"data.vae is not a tokenizer of {self.folder.channels}-channel latents ({self._vae.model_name})"
            )
        made_by = self.folder.tokenizer
        if made_by is not None and made_by.get("fingerprint") != model_fingerprint(self._vae):
            raise TrainingError(
                f"data.vae {path} ({self._vae.model_name}) is not the tokenizer that made the latents "
                f"({made_by.get('name')}, fingerprint {made_by.get('fingerprint')})"
            )

    def build(self) -> None:
        e, d = self.engine, self.cfg.data
        if d.latent_norm:
            self.stats = self.folder.stats(save=e.is_main)
        else:
            c = self.folder.channels
            self.stats = LatentStats(torch.zeros(c), torch.ones(c))
        self.dataset = LatentDataset(
            self.folder, self.stats, d.multiplier, d.flip, cache_bytes=int(d.cache_gb * 2**30)
        )
        model = create_model(self.cfg.model.name, **self._overrides())
        self.model = model.to(e.device).train()
        self.wrapped = D.wrap_ddp(self.model, e.dist, [])
        e.add_optimizer("main", list(self.model.parameters()), state_module=self.model)
        if e.is_main:
            log.info(
                "%s: %.1fM parameters on %d latents %s (%d classes)",
                self.cfg.model.name,
                self.model.num_parameters() / 1e6,
                len(self.folder),
                "x".join(map(str, self.folder.shape)),
                self.num_classes,
            )

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def ema_target(self) -> nn.Module | None:
        return self.model

    def eval_model(self) -> LightningDiT:
        """The weights to sample from: the EMA copy when enabled."""
        return self.engine.ema.module if self.engine.ema is not None else self.model

    # -- the step -----------------------------------------------------------------------------------
    def batches(self) -> Iterator[dict[str, Any]]:
        e, t = self.engine, self.cfg.train
        sampler = BucketBatchSampler(
            self.dataset, e.micro_batch, e.dist.rank, e.dist.world_size, t.seed, [(0, 0)], e.data_pos
        )
        workers = self.cfg.data.num_workers
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate_latents,
            pin_memory=e.device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=ignore_sigterm if workers > 0 else None,
            # a private generator: creating the iterator must not draw from the global RNG, or a
            # resumed run would draw other noise than a straight one
            generator=torch.Generator().manual_seed(t.seed),
        )
        for batch in loader:
            e.data_pos = (int(batch["epoch"]), int(batch["batch"]) + 1)
            yield batch

    def train_step(self, batches: Iterator[dict[str, Any]], step: int) -> dict[str, torch.Tensor]:
        e, accum = self.engine, self.cfg.train.grad_accum
        sums: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = next(batches)
            x = batch["latent"].to(e.device, non_blocking=True)  # (B, C, h, w)
            y = batch["label"].to(e.device, non_blocking=True)  # (B,)
            with e.no_sync(self.wrapped, micro == accum - 1):
                with e.autocast():
                    loss, logs = self.flow.loss(self.wrapped, x, y)
                (loss / accum).backward()
            for k, v in {"total": loss.detach(), **logs}.items():
                sums[f"loss/{k}"] = sums.get(f"loss/{k}", 0) + v.float() / accum
        return sums

    # -- validation, samples, export ------------------------------------------------------------------
    def _sampler(self, steps: int) -> SamplerConfig:
        s = self.cfg.sample
        return SamplerConfig(steps, s.solver, s.shift, s.cfg_scale, s.cfg_interval_start, s.cfg_channels)

    @torch.no_grad()
    def generate(self, num: int, seed: int, steps: int) -> torch.Tensor:
        """``num`` generated latents in the normalised space, spread over the ranks and gathered
        on every rank. Returns (num, C, h, w) float32 on the CPU."""
        e, model = self.engine, self.eval_model()
        was_training = model.training
        model.eval()
        mine = list(range(e.dist.rank, num, e.dist.world_size))
        labels = torch.arange(num, dtype=torch.int64) % self.num_classes
        out = torch.zeros(num, *self.folder.shape)
        bs = max(1, e.micro_batch)
        for i in range(0, len(mine), bs):
            e.check_stop()
            idx = mine[i : i + bs]
            noise = initial_noise(self.folder.shape, seed, idx).to(e.device)
            x = sample_ode(
                model,
                noise,
                labels[idx].to(e.device),
                self._sampler(steps),
                model.null_label,
                e.autocast_dtype,
            )
            out[idx] = x.float().cpu()
        model.train(was_training)
        if e.dist.enabled:
            dev = out.to(e.device)
            torch.distributed.all_reduce(dev)  # every index is filled by exactly one rank
            out = dev.cpu()
        return out

    def _val_latents(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Held-out (latents (b, C, h, w), labels (b,)) batches, at most ``data.val_size``."""
        if not hasattr(self, "_val_labels"):
            self._val_labels = self.val_folder.labels().clamp_(0, self.num_classes - 1)
        start = 0
        for z in self.val_folder.iter_batches(256, limit=self.cfg.data.val_size):
            yield z, self._val_labels[start : start + len(z)]
            start += len(z)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Flow loss on held-out latents (fixed noise) and the latent FD of generated samples."""
        if self.val_folder is None:
            return {}
        e, d, s = self.engine, self.cfg.data, self.cfg.sample
        model = self.eval_model()
        was_training = model.training
        model.eval()
        g = torch.Generator().manual_seed(s.val_seed)
        total, n = 0.0, 0
        for z, y in self._val_latents():
            e.check_stop()
            x, y = self.stats.normalize(z, d.multiplier).to(e.device), y.to(e.device)
            with e.autocast():
                loss, _ = self.flow.loss(model, x, y, generator=g)
            total += float(loss) * len(x)
            n += len(x)
        model.train(was_training)
        metrics = {"val/flow_loss": total / max(n, 1)}
        if s.val_num > 0:
            if self._val_fd is None:
                self._val_fd = LatentFrechetDistance(self.folder.channels, DEFAULT_PATCH)
                for z, _ in self._val_latents():
                    self._val_fd.update_real(self.stats.normalize(z, d.multiplier))
            self._val_fd.reset_fake()
            self._val_fd.update_fake(self.generate(s.val_num, s.val_seed, s.val_steps))
            try:
                metrics["val/latent_fd"] = self._val_fd.compute()["latent_fd"]
            except ValueError as err:
                if e.is_main:
                    log.warning("latent FD skipped: %s", err)
        return metrics

    def describe(self, metrics: dict[str, float]) -> str:
        parts = [f"flow loss {metrics['val/flow_loss']:.4f}"] if "val/flow_loss" in metrics else []
        if "val/latent_fd" in metrics:
            parts.append(f"latent FD {metrics['val/latent_fd']:.4f}")
        return ", ".join(parts)

    def save_samples(self, path: Path) -> Path | None:
        """A grid of ``log.grid_images`` decoded samples when ``data.vae`` is set."""
        if not self.cfg.data.vae or self.cfg.log.grid_images == 0:
            return None
        x = self.generate(self.cfg.log.grid_images, self.cfg.sample.val_seed, self.cfg.sample.val_steps)
        e = self.engine
        if not e.is_main:
            return None
        self._vae.to(e.device)  # loaded and checked in preflight
        z = self.stats.denormalize(x, self.cfg.data.multiplier).to(e.device)
        with torch.no_grad(), e.autocast():
            images = torch.cat([self._vae.decode(zb).float() for zb in z.split(max(1, e.micro_batch))])
        return save_image_grid(tensor_to_uint8(images).cpu(), path, nrow=8)

    def export(self) -> Path | None:
        if not self.engine.is_main:
            return None
        meta = latents_metadata(self.folder, self.stats, self.cfg.data.multiplier)
        return unwrap_model(self.eval_model()).save_pretrained(
            self.engine.run.model_dir,
            **meta,
            step=self.engine.step,
            ema=self.engine.ema is not None,
            sample=dict(vars(self.cfg.sample)),
        )

    def checkpoint_note(self) -> dict[str, Any]:
        return {
            "model_name": self.cfg.model.name,
            "latent_shape": list(self.folder.shape),
            "num_classes": self.num_classes,
            "latents_fingerprint": self.folder.fingerprint(),
            "pos_embed_order": self._pos_embed_order(),
        }

    def load_checkpoint_note(self, note: dict[str, Any]) -> None:
        # called before ``preflight``: kept, and compared once the latents are opened
        self._resumed_note = dict(note)

    def _check_resumed_note(self) -> None:
        note = getattr(self, "_resumed_note", None)
        if note is None:
            return
        mine = self.checkpoint_note()
        if "latents_fingerprint" not in note:
            log.warning(
                "the checkpoint records no fingerprint of its latents (an older run): training on %s as given",
                self.folder.folder,
            )
        keys = ["latents_fingerprint", *(k for k in mine if k != "latents_fingerprint")]  # content first
        for k in keys:
            if k in note and note[k] != mine[k]:
                raise TrainingError(
                    f"the checkpoint was trained on other latents than {self.folder.folder} ({k} {note[k]!r}, "
                    f"this folder {mine[k]!r}); pass --latents with the folder the run trained on"
                )


def latents_metadata(folder: LatentFolder, stats: LatentStats, multiplier: float) -> dict[str, Any]:
    """What a generator trained on ``folder`` must carry to be sampled: the normalisation, the
    latent shape, the class names and the tokenizer that made the latents (its name and
    fingerprint from the shards, plus ``extraction.json``'s settings: text, recorded for a check at
    decoding time; nothing is loaded from it)."""
    ext = folder.extraction  # read (and checked) when the folder was opened
    tokenizer = {k: ext[k] for k in ("model", "model_name", "resolution", "sample") if k in ext}
    if folder.tokenizer is not None:
        tokenizer.update(
            model_name=folder.tokenizer.get("name"), fingerprint=folder.tokenizer.get("fingerprint")
        )
    return {
        "latent_stats": stats.to_dict(),
        "latent_multiplier": float(multiplier),
        "latent_shape": list(folder.shape),
        "classes": folder.classes,
        "tokenizer": tokenizer,
        "latents": str(folder.folder.resolve()),
    }
