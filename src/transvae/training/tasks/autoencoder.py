"""The autoencoder task (``transvae train``): the paper's two-stage recipe on the training engine.

Stage 1 trains encoder + decoder with L1 + LPIPS + KL + VF; no discriminator is built in stage 1
(recipes keep ``gan_weight: 0.1`` for stage 2, where it applies). Stage 2 freezes the encoder
and trains the decoder with all losses including the GAN, whose discriminator has its own
optimizer (Appendix D). The engine (``engine.py``) runs the loop; this module builds the model
and loss, streams the images, does one step's forward + backward, validates and exports
``RUN_DIR/model`` (EMA weights when enabled), loadable with ``transvae.from_pretrained``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ...data.datasets import BucketBatchSampler, ImageFolderDataset, collate, is_webdataset, make_webdataset
from ...data.transforms import TrainTransform, ValTransform, parse_buckets
from ...losses import LossConfig, VAELoss
from ...losses.gan import NLayerDiscriminator
from ...models.base import AutoencoderBase
from ...models.distributions import DiagonalGaussianDistribution
from ...models.persistence import unwrap_model
from ...utils.memory import available_bytes, estimate_memory, format_bytes
from .. import distributed as D
from ..config import TrainConfig
from ..state import is_sharded, module_state
from ..task import Task, TrainingError, ignore_sigterm
from ..validation import reconstruction_metrics, save_reconstruction_grid
from .finetune import anchor_loss, latent_drift, load_matching, load_training_state, save_training_state
from .probe import diffusability

log = logging.getLogger("transvae.train")


class GeneratorStep(nn.Module):
    """Autoencoder forward + generator loss in one ``forward``, so that DDP sees every trainable
    parameter of the generator side (autoencoder and the loss's own layers, e.g. the VF
    projection) in one wrapper and all-reduces all their gradients. With an ``anchor`` encoder
    (a full fine-tune), the latent-anchor term is added (``finetune.anchor_loss``)."""

    def __init__(
        self,
        model: AutoencoderBase,
        loss_fn: VAELoss,
        anchor: nn.Module | None = None,
        anchor_weight: float = 0.0,
    ):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.anchor_weight = anchor_weight
        self._anchor = [anchor]  # a plain list: the frozen copy is not part of this module's state

    def forward(self, x: torch.Tensor, step: int, stage: int):
        """x: (B, 3, H, W) -> (loss scalar, logs of 0-d tensors, AutoencoderOutput)."""
        out = self.model(x, sample_posterior=True)  # training samples z ~ q(z|x) (the KL term's premise)
        loss, logs = self.loss_fn(x, out, self.model, step, stage)
        anchor = self._anchor[0]
        if anchor is not None and self.anchor_weight > 0 and stage == 1:
            with torch.no_grad():
                mean0 = DiagonalGaussianDistribution(anchor(x)).mean
            a = anchor_loss(out.posterior.mean, mean0)
            loss = loss + self.anchor_weight * a
            logs = {**logs, "anchor": a.detach(), "total": loss.detach()}
        return loss, logs, out


class DiscriminatorStep(nn.Module):
    """The discriminator loss as a module ``forward`` (its own DDP wrapper / optimizer)."""

    def __init__(self, loss_fn: VAELoss):
        super().__init__()
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor, recon: torch.Tensor, step: int, stage: int):
        """x, recon: (B, 3, H, W) -> (discriminator loss, logs)."""
        return self.loss_fn.discriminator_loss(x, recon, step, stage)


def stage_loss_config(cfg: TrainConfig) -> LossConfig:
    """The loss options a stage really uses: stage 1 builds no discriminator (``gan_weight`` 0),
    so no parameter exists that DDP would wait for a gradient of; stage 2 builds no VF term
    (``vf_weight`` 0): with the encoder frozen it cannot train anything, and DINOv2 would be
    loaded (or, offline, looked for) only to log a number."""
    if cfg.train.stage == 1 and cfg.loss.gan_weight > 0:
        return dataclasses.replace(cfg.loss, gan_weight=0.0)
    if cfg.train.stage == 2 and cfg.loss.vf_weight > 0:
        return dataclasses.replace(cfg.loss, vf_weight=0.0)
    return cfg.loss


def model_from_config_dict(d: dict[str, Any], device: str | torch.device | None = None) -> AutoencoderBase:
    """Rebuild an architecture from ``model.config_dict()`` (as stored in checkpoints), untrained."""
    from ...models.registry import build_model, get_architecture

    raw = dict(d)
    arch = raw.pop("architecture")
    name = raw.pop("model_name", arch)
    cls = get_architecture(arch)
    return build_model(cls, cls.config_class.from_dict(raw), name, device=device)


def meta_model(cfg: TrainConfig, saved_config: dict[str, Any] | None = None) -> AutoencoderBase:
    """The architecture to train, on the meta device (nothing allocated): from a checkpoint's
    model config when resuming, from ``model.init``'s ``config.json``, or from the registry.
    With ``model.init``, ``cfg.model.name`` is set to the saved model's name."""
    from ...models.persistence import read_config, resolve_model_folder
    from ...models.registry import build_model, create_model

    if saved_config is not None:
        return model_from_config_dict(saved_config, device="meta")
    if cfg.model.init:
        cls, config, name = read_config(resolve_model_folder(cfg.model.init))
        if name != cfg.model.name:
            log.warning("--init model is %s; training it (model.name=%s ignored)", name, cfg.model.name)
            cfg.model.name = name
        return build_model(cls, config, name, device="meta")
    return create_model(cfg.model.name, device="meta")


def training_sizes(cfg: TrainConfig, ratio: int) -> list[tuple[int, int]]:
    """The (height, width) crops training will use, checked against the compression ratio.

    Raises:
        TrainingError: a size that is not a multiple of ``ratio`` (naming the option).
    """
    if cfg.data.buckets:
        try:
            return parse_buckets(cfg.data.buckets, ratio)
        except ValueError as e:
            raise TrainingError(f"data.buckets: {e}") from e
    r = cfg.data.resolution
    if r % ratio:
        raise TrainingError(
            f"data.resolution={r} is not a multiple of {cfg.model.name}'s compression ratio {ratio}; "
            f"use e.g. --resolution {max(ratio, round(r / ratio) * ratio)}"
        )
    return [(r, r)]


def check_limits(
    cfg: TrainConfig,
    device: torch.device,
    world_size: int = 1,
    local_world_size: int = 1,
    saved_config: dict[str, Any] | None = None,
) -> int:
    """Limits before any work: crop sizes vs the model's ratio, the estimated training memory
    (``transvae.utils.memory``, meta device) vs the memory free on ``device``.

    Args:
        cfg: the resolved configuration.
        device: where training runs.
        world_size: processes in the run (the per-process micro-batch follows from it).
        local_world_size: processes sharing this machine's memory (CPU runs).
        saved_config: the model config stored in a checkpoint (resume).
    Returns:
        Bytes one checkpoint round needs on disk (for the free-space check).
    Raises:
        TrainingError: one line naming the number and the option.
    """
    t = cfg.train
    model = meta_model(cfg, saved_config)
    sizes = training_sizes(cfg, model.spatial_compression_ratio)
    micro = max(1, t.batch_size // max(1, world_size * t.grad_accum))
    n_model = sum(p.numel() for p in model.parameters())
    n_train = n_model if t.stage == 1 else sum(p.numel() for p in model.decoder.parameters())
    n_disc = 0
    if t.stage == 2 and cfg.loss.gan_weight > 0:
        with torch.device("meta"):
            disc = NLayerDiscriminator(model.config.in_channels, cfg.loss.disc_ndf, cfg.loss.disc_layers)
        n_disc = sum(p.numel() for p in disc.parameters())
    if t.check_memory:
        h, w = max(sizes, key=lambda s: s[0] * s[1])
        bf16 = t.autocast_dtype(device)[0] is not None
        need = estimate_memory(model, micro, h, w, train=True, dtype_bytes=2 if bf16 else 4).total
        need += 4 * n_model * (1 if t.ema else 0) + 16 * n_disc
        free = available_bytes(device)
        if free is not None and device.type == "cpu":
            free //= max(1, local_world_size)
        if free is not None and need > free:
            option = "data.buckets" if cfg.data.buckets else "data.resolution"
            value = f"{h}x{w}" if cfg.data.buckets else str(cfg.data.resolution)
            raise TrainingError(
                f"{option}={value}: training needs about {format_bytes(need)} per process (micro-batch "
                f"{micro} at {h}x{w}, estimated) but {format_bytes(free)} is free on {device.type}; lower "
                f"--resolution or --batch-size, raise train.grad_accum, or set train.check_memory=false"
            )
    per_ckpt = 4 * (n_model * (2 if t.ema else 1) + 2 * n_train + 3 * n_disc)
    # the new checkpoint exists next to the old one until the rename, plus the model/ export
    return 2 * per_ckpt + 4 * n_model + (64 << 20)


class AutoencoderTask(Task):
    """Two-stage autoencoder training (see the module docstring).

    Args:
        cfg: the resolved configuration (``build_config``).
        train_dataset, val_dataset: optional ready datasets (quick start, tests) instead of the
            folders of ``cfg.data``; items are ``{"image": (3, H, W) in [-1, 1], ...}``.
    """

    progress_keys = ("total", "l1", "lpips", "g_loss", "d_loss")
    fixed_on_resume = ("model.name", "train.stage")
    # the loss's trained layers (discriminator, VF projection); the starting encoder of a fine-tune
    optional_state = ("loss", "reference_encoder")

    def __init__(
        self, cfg: TrainConfig, train_dataset: Dataset | None = None, val_dataset: Dataset | None = None
    ):
        self.cfg = cfg
        self.label = f"stage {cfg.train.stage}"
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self._saved_model_config: dict[str, Any] | None = None
        self.disc_step: nn.Module | None = None

    # -- building ---------------------------------------------------------------------------------
    def preflight(self) -> int:
        e = self.engine
        local = int(os.environ.get("LOCAL_WORLD_SIZE", e.dist.world_size))
        return check_limits(self.cfg, e.device, e.dist.world_size, local, self._saved_model_config)

    def build(self) -> None:
        from ...models.persistence import load_model
        from ...models.registry import create_model

        e, cfg, t = self.engine, self.cfg, self.cfg.train
        start = {"online": {}, "discriminator": {}}  # a fine-tune continuing an exported run
        if self._saved_model_config is not None:  # resume: the checkpoint's architecture
            model = model_from_config_dict(self._saved_model_config)
        elif cfg.model.init and not e.resuming:
            model = load_model(cfg.model.init)
            start = load_training_state(cfg.model.init)
        else:
            model = create_model(cfg.model.name)
            if cfg.model.logvar_init is not None:
                model.init_logvar_(cfg.model.logvar_init)
        model = model.to(e.device).train()
        self._build_reference(model)
        if cfg.model.gradient_checkpointing:
            model.set_gradient_checkpointing(True)
        if t.stage == 2:  # the latent space is fixed; only the decoder (and discriminator) learn
            model.encoder.requires_grad_(False)
        self.model = model

        self.loss_fn = VAELoss(stage_loss_config(cfg), model).to(e.device)
        if t.stage == 2:  # the loss's own trainable layers (VF projection) act on the frozen latent
            for p in self.loss_fn.generator_parameters():
                p.requires_grad_(False)
        self._continue_game(model, start)
        disc = self.loss_fn.discriminator
        disc_names = sorted(f"loss_fn.discriminator.{n}" for n, _ in disc.named_parameters()) if disc else []
        gen_step = GeneratorStep(model, self.loss_fn, self.reference_encoder, cfg.loss.anchor_weight)
        ignore = list(disc_names)  # the generator side ignores the discriminator and vice versa
        if t.distributed == "fsdp" and e.dist.enabled:
            # the autoencoder is sharded (FSDP reduce-scatters its gradients); DDP keeps the
            # loss's own small trainable layers (VF projection) in sync
            D.shard_fsdp(model, e.dist)
            ignore += [f"model.{n}" for n, _ in model.named_parameters()]
        self.gen_step = D.wrap_ddp(gen_step, e.dist, ignore)
        gen_params = list(model.parameters()) + self.loss_fn.generator_parameters()
        e.add_optimizer("main", gen_params, state_module=gen_step)
        if disc is not None:
            e.add_optimizer(
                "disc",
                self.loss_fn.discriminator_parameters(),
                state_module=disc,
                lr=cfg.optim.lr * cfg.loss.disc_lr_mult,
                warmup_steps=cfg.optim.disc_warmup_steps,
            )
            loss_names = {f"loss_fn.{n}" for n, p in self.loss_fn.named_parameters() if p.requires_grad}
            self.disc_step = D.wrap_ddp(
                DiscriminatorStep(self.loss_fn), e.dist, sorted(loss_names - set(disc_names))
            )
        if self.train_dataset is None:
            self.train_dataset = self._build_train_dataset()
        if self.val_dataset is None and cfg.data.val:
            self.val_dataset = ImageFolderDataset(
                cfg.data.val,
                ValTransform(cfg.data.resolution),
                max_images=cfg.data.val_images,
                replace_bad=False,
            )

    def _build_train_dataset(self) -> Dataset:
        d = self.cfg.data
        if not d.train:
            raise TrainingError("no training data: pass --data DIR (or set data.train in the config)")
        tf = TrainTransform(
            d.resolution,
            d.scale,
            d.hflip,
            hue=d.hue,
            channel_shuffle=d.channel_shuffle,
            contrast=d.contrast,
            saturation=d.saturation,
            colour_p=d.colour_p,
        )
        if is_webdataset(d.train):
            return make_webdataset(
                d.train, tf, self.cfg.train.seed + self.engine.dist.rank, d.shuffle_buffer, d.strict
            )
        return ImageFolderDataset(d.train, tf, seed=self.cfg.train.seed, strict=d.strict, cache_mb=d.cache_mb)

    def _build_reference(self, model: AutoencoderBase) -> None:
        """A fine-tune (``model.init``) measures latent drift against, and a full one anchors to,
        the starting encoder: the published (EMA) weights ``model`` was loaded with. With the
        encoder frozen (stage 2) that is the model's own encoder; otherwise a frozen copy, kept in
        checkpoints."""
        self.reference_encoder: nn.Module | None = None
        if not self.cfg.model.init:
            return
        if self.cfg.train.stage == 2:
            self.reference_encoder = model.encoder
        else:
            self.reference_encoder = copy.deepcopy(model.encoder).requires_grad_(False).eval()

    def _continue_game(self, model: AutoencoderBase, start: dict[str, dict[str, torch.Tensor]]) -> None:
        """A stage-2 fine-tune of a folder exported by a GAN run continues its adversarial game:
        the decoder from the online (not averaged) weights, the discriminator from its weights,
        and the EMA from the published weights. The encoder stays the published one: its latents
        are the ones diffusion models were trained on."""
        self._ema_start: dict[str, torch.Tensor] | None = None
        disc = self.loss_fn.discriminator
        if self.cfg.train.stage != 2 or disc is None or not start["discriminator"]:
            return
        decoder = {
            k.removeprefix("decoder."): v for k, v in start["online"].items() if k.startswith("decoder.")
        }
        published = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if load_matching(disc, start["discriminator"]) and load_matching(model.decoder, decoder):
            self._ema_start = published
            log.info(
                "continuing the adversarial game of %s (decoder, discriminator, EMA)", self.cfg.model.init
            )

    def modules(self) -> dict[str, nn.Module]:
        mods = {"model": self.model, "loss": self.loss_fn}
        if self.reference_encoder is not None and self.reference_encoder is not self.model.encoder:
            mods["reference_encoder"] = self.reference_encoder
        return mods

    def ema_target(self) -> nn.Module:
        return self.model

    def ema_init(self) -> dict[str, torch.Tensor] | None:
        return self._ema_start

    def eval_model(self) -> AutoencoderBase:
        """The weights to validate and publish: the EMA when enabled."""
        ema = self.engine.ema
        return ema.module if ema is not None else unwrap_model(self.model)

    def checkpoint_note(self) -> dict[str, Any]:
        m = unwrap_model(self.model)
        return {"model_name": m.model_name, "model_config": m.config_dict()}

    def load_checkpoint_note(self, note: dict[str, Any]) -> None:
        name = note.get("model_name")
        if name is not None and name != self.cfg.model.name:
            raise TrainingError(
                f"the checkpoint is for model '{name}', but model.name is '{self.cfg.model.name}'"
            )
        self._saved_model_config = note.get("model_config")

    # -- the step ---------------------------------------------------------------------------------
    def batches(self) -> Iterator[dict[str, Any]]:
        """This rank's batches from ``engine.data_pos`` on (exact resume), counting bad files."""
        e = self.engine
        for batch in self._make_loader():
            e.record_bad(batch["skipped"])
            if batch.get("batch", -1) >= 0:
                e.data_pos = (int(batch["epoch"]), int(batch["batch"]) + 1)
            yield batch

    def _make_loader(self) -> DataLoader:
        e, d, t = self.engine, self.cfg.data, self.cfg.train
        common: dict[str, Any] = dict(
            num_workers=d.num_workers,
            collate_fn=collate,
            pin_memory=e.device.type == "cuda",
            # a private generator: creating the iterator must not consume the global RNG,
            # or a resumed run would draw different posterior samples than a straight one
            generator=torch.Generator().manual_seed(t.seed),
        )
        if d.num_workers > 0:
            common.update(persistent_workers=True, worker_init_fn=ignore_sigterm)
        if isinstance(self.train_dataset, torch.utils.data.IterableDataset):
            return DataLoader(self.train_dataset, batch_size=e.micro_batch, **common)
        f = unwrap_model(self.model).spatial_compression_ratio
        buckets = training_sizes(self.cfg, f) if d.buckets else [(0, 0)]
        sampler = BucketBatchSampler(
            self.train_dataset, e.micro_batch, e.dist.rank, e.dist.world_size, t.seed, buckets, e.data_pos
        )
        return DataLoader(self.train_dataset, batch_sampler=sampler, **common)

    def train_step(self, batches: Iterator[dict[str, Any]], step: int) -> dict[str, torch.Tensor | float]:
        e, t = self.engine, self.cfg.train
        logs: dict[str, torch.Tensor | float] = {}
        pairs = []
        for micro in range(t.grad_accum):
            x = next(batches)["image"].to(e.device, non_blocking=True)
            with e.no_sync(self.gen_step, micro == t.grad_accum - 1):
                with e.autocast():
                    loss, step_logs, out = self.gen_step(x, step, t.stage)
                (loss / t.grad_accum).backward()
            pairs.append((x, out.sample.detach()))
            _accumulate(logs, "loss/", step_logs, t.grad_accum)
        if self.disc_step is not None and self.loss_fn.gan_active(step, t.stage):
            e.slots["disc"].zero_grad()  # drop the gradients the generator's GAN term left there
            for micro, (x, rec) in enumerate(pairs):
                with e.no_sync(self.disc_step, micro == len(pairs) - 1):
                    with e.autocast():
                        d_loss, d_logs = self.disc_step(x, rec, step, t.stage)
                    (d_loss / len(pairs)).backward()
                _accumulate(logs, "disc/", d_logs, len(pairs))
        return logs

    # -- evaluation and outputs ---------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        if self.val_dataset is None:
            return {}
        e, m = self.engine, self.eval_model()
        metrics = reconstruction_metrics(m, self.val_dataset, e.micro_batch, e.dist, e.autocast, e.check_stop)
        steps = self.cfg.train.diffusability_steps
        if steps > 0:
            probe = diffusability(
                m.encoder, self.val_dataset, steps, e.micro_batch, e.dist, e.autocast, e.check_stop
            )
            metrics.update(probe, **({"val/diffusability_seed": self.cfg.train.seed} if probe else {}))
        if self.reference_encoder is not None:
            ref = self.reference_encoder
            metrics.update(
                latent_drift(
                    m.encoder, ref, self.val_dataset, e.micro_batch, e.dist, e.autocast, e.check_stop
                )
            )
            limit = self.cfg.train.max_latent_drift
            if limit > 0 and metrics.get("val/drift_rel_l2", 0.0) > limit:
                raise TrainingError(
                    f"latent drift {metrics['val/drift_rel_l2']:.4f} (relative L2 on the validation images) exceeds "
                    f"train.max_latent_drift={limit:g} at step {e.step}: the latents moved too far from the starting "
                    f"tokenizer's for diffusion models trained on them; the last checkpoint within the limit is kept. "
                    f"Lower optim.lr or raise loss.anchor_weight"
                )
        return metrics

    def describe(self, metrics: dict[str, float]) -> str:
        text = f"PSNR {metrics['val/psnr']:.2f} dB, SSIM {metrics['val/ssim']:.4f} ({metrics['val/images']:.0f} images)"
        if "val/drift_rel_l2" in metrics:
            text += f", latent drift {metrics['val/drift_rel_l2']:.4f} (cos {metrics['val/drift_cos']:.4f})"
        if "val/diffusability" in metrics:
            text += f", diffusability {metrics['val/diffusability']:.4f}"
        return text

    def save_samples(self, path: Path) -> Path | None:
        """(input | reconstruction) grid of the first ``log.grid_images`` validation (or training) images."""
        ds = self.val_dataset
        if ds is None and isinstance(self.train_dataset, ImageFolderDataset):
            ds = self.train_dataset
        if ds is None:
            return None
        items = [ds[i]["image"] for i in range(min(self.cfg.log.grid_images, len(ds)))]
        e = self.engine
        return save_reconstruction_grid(
            self.eval_model(), [im for im in items if im is not None], path, e.is_main, e.device, e.autocast
        )

    def export(self) -> Path | None:
        """``save_pretrained`` the weights to publish (EMA when enabled) into ``RUN_DIR/model``."""
        e = self.engine
        m = self.eval_model()
        meta = {"step": e.step, "stage": self.cfg.train.stage, "ema": e.ema is not None}
        if is_sharded(m):  # FSDP: gather the full weights (every rank), write a plain copy on rank 0
            full = module_state(m)
            if not e.is_main:
                return None
            m = model_from_config_dict(m.config_dict(), device="meta")
            m.load_state_dict(full, assign=True)
        if not e.is_main:
            return None
        folder = m.save_pretrained(e.run.model_dir, **meta)
        if not is_sharded(self.model):  # the online weights and discriminator, for a later fine-tune
            save_training_state(folder, unwrap_model(self.model), self.loss_fn.discriminator)
        return folder


def _accumulate(logs: dict, prefix: str, new: dict, n: int) -> None:
    """Average ``new`` (tensors or floats) over ``n`` micro-batches into ``logs`` without a host sync."""
    for k, v in new.items():
        key = prefix + k
        v = v.detach() if isinstance(v, torch.Tensor) else v
        logs[key] = logs.get(key, 0.0) + v / n
