"""The training loop: two-stage VAE training with the paper's recipe, from one CPU to many GPUs.

Stage 1 trains encoder + decoder with every loss except the GAN; stage 2 freezes the encoder and
trains the decoder with all losses including the GAN, whose discriminator has its own
optimizer (Appendix D). The loop is one ``Trainer.fit`` call; everything it needs to continue
exactly after an interruption (weights, EMA, optimizers, schedulers, RNG states, data position,
counters) goes into ``RUN_DIR/checkpoints/last.pt``, and ``RUN_DIR/model/`` always holds the
latest exported weights (EMA when enabled), loadable with ``transvae.from_pretrained``.

Fault handling: non-finite loss or gradients skip the step (counted; the run stops after
``train.max_nonfinite`` in a row, leaving the last good checkpoint intact); SIGTERM/SIGINT save
a checkpoint and return cleanly; the run folder is probed for writability and free space
before any training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import (
    BucketBatchSampler,
    ImageFolderDataset,
    collate,
    is_webdataset,
    make_webdataset,
)
from ..data.io import tensor_to_uint8
from ..data.transforms import TrainTransform, ValTransform, parse_buckets
from ..losses import VAELoss
from ..models.base import AutoencoderBase
from ..models.hub import unwrap_model
from ..utils.device import resolve_device
from . import distributed as D
from .checkpoint import check_writable, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .ema import EMA

log = logging.getLogger("transvae.train")

CHECKPOINT_NAME = "last.pt"
_BAR_KEYS = ("total", "l1", "lpips", "g_loss", "d_loss")


class TrainingError(RuntimeError):
    """The run cannot continue (e.g. too many non-finite steps); the message says why."""


class GeneratorStep(nn.Module):
    """Autoencoder forward + generator loss in one ``forward``, so that DDP sees every trainable
    parameter of the generator side (autoencoder and the loss's own layers, e.g. the VF
    projection) in one wrapper and all-reduces all their gradients."""

    def __init__(self, model: AutoencoderBase, loss_fn: VAELoss):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, x: torch.Tensor, step: int, stage: int):
        """x: (B, 3, H, W) -> (loss scalar, logs dict, AutoencoderOutput)."""
        out = self.model(x)
        loss, logs = self.loss_fn(x, out, self.model, step, stage)
        return loss, logs, out


class DiscriminatorStep(nn.Module):
    """The discriminator loss as a module ``forward`` (its own DDP wrapper / optimizer)."""

    def __init__(self, loss_fn: VAELoss):
        super().__init__()
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor, recon: torch.Tensor, step: int, stage: int):
        """x, recon: (B, 3, H, W) -> (discriminator loss, logs)."""
        return self.loss_fn.discriminator_loss(x, recon, step, stage)


def _ignore_sigterm(worker_id: int) -> None:  # noqa: ARG001
    # A scheduler preempting the job signals the whole process group; the workers must not die
    # first, or the main process fails before it can save its checkpoint. The main process
    # shuts its workers down itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _lr_lambda(warmup: int):
    # linear warmup over `warmup` optimizer steps, then constant (Appendix D)
    return lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0


class Trainer:
    """Builds everything from a ``TrainConfig`` and runs the loop.

    Args:
        cfg: the resolved configuration (``build_config``).
        run_dir: the run folder (config, logs, TensorBoard, grids, checkpoints, ``model/``).
        resume: continue from ``run_dir/checkpoints/last.pt``.
        train_dataset / val_dataset: optional ready datasets (quick start, tests) instead of
            the folders of ``cfg.data``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | os.PathLike,
        resume: bool = False,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
    ):
        from ..models.registry import create_model

        self.cfg, self.run_dir = cfg, Path(run_dir)
        t = cfg.train
        self.dist = D.init_distributed(resolve_device(t.device))  # ValueError: a bad train.device
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        world = self.dist.world_size
        if t.batch_size % (world * t.grad_accum):
            raise TrainingError(
                f"train.batch_size={t.batch_size} is not divisible by ranks x grad_accum = {world} x {t.grad_accum}"
            )
        self.micro_batch = t.batch_size // (world * t.grad_accum)
        self.autocast_dtype = None
        if t.precision == "bf16" or (t.precision == "auto" and self.device.type == "cuda"):
            self.autocast_dtype = torch.bfloat16
        if t.distributed == "fsdp" and t.ema and world > 1:
            raise TrainingError(
                "train.ema is not supported with train.distributed=fsdp yet; set --train.ema=false"
            )

        self._seed_everything(t.seed + self.dist.rank)
        ckpt_path = self.run_dir / "checkpoints" / CHECKPOINT_NAME
        state = load_checkpoint(ckpt_path) if resume else None

        # -- model ------------------------------------------------------------------------
        if cfg.model.init and state is None:
            from ..models.hub import load_model

            model = load_model(cfg.model.init)
            if model.model_name != cfg.model.name:
                log.warning(
                    "--init model is %s; training it (model.name=%s ignored)",
                    model.model_name,
                    cfg.model.name,
                )
                cfg.model.name = model.model_name
        else:
            model = create_model(cfg.model.name)
        model = model.to(self.device).train()
        if cfg.model.gradient_checkpointing:
            model.set_gradient_checkpointing(True)
        if t.stage == 2:
            # stage 2: the latent space is fixed; only the decoder (and discriminator) learn
            model.encoder.requires_grad_(False)
        self.model = model

        # -- losses and optimizers --------------------------------------------------------
        self.loss_fn = VAELoss(cfg.loss, model).to(self.device)
        if t.stage == 2:
            # the loss's own trainable layers (VF projection) act on the frozen latent: frozen too
            for p in self.loss_fn.generator_parameters():
                p.requires_grad_(False)
        self.disc = self.loss_fn.discriminator if t.stage == 2 else None
        # DDP wrappers: the generator side ignores the discriminator and vice versa
        disc_names = (
            {f"loss_fn.discriminator.{n}" for n, _ in self.disc.named_parameters()} if self.disc else set()
        )
        loss_names = {f"loss_fn.{n}" for n, p in self.loss_fn.named_parameters() if p.requires_grad}
        gen_step = GeneratorStep(model, self.loss_fn)
        if t.distributed == "fsdp" and self.dist.enabled:
            D.shard_fsdp(model, self.dist)
            self.gen_step = gen_step
        else:
            self.gen_step = D.wrap_ddp(gen_step, self.dist, sorted(disc_names))
        o = cfg.optim
        gen_params = [p for p in model.parameters() if p.requires_grad]
        gen_params += [p for p in self.loss_fn.generator_parameters() if p.requires_grad]
        self.gen_params = gen_params
        self.opt = torch.optim.AdamW(
            gen_params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, eps=o.eps
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(o.warmup_steps))
        self.disc_opt = self.disc_sched = self.disc_step = None
        if self.disc is not None:
            disc_params = [p for p in self.loss_fn.discriminator_parameters() if p.requires_grad]
            self.disc_params = disc_params
            self.disc_opt = torch.optim.AdamW(
                disc_params,
                lr=o.lr * cfg.loss.disc_lr_mult,
                betas=o.betas,
                weight_decay=o.weight_decay,
                eps=o.eps,
            )
            self.disc_sched = torch.optim.lr_scheduler.LambdaLR(
                self.disc_opt, _lr_lambda(o.disc_warmup_steps)
            )
            self.disc_step = D.wrap_ddp(
                DiscriminatorStep(self.loss_fn), self.dist, sorted(loss_names - disc_names)
            )
        self.ema = EMA(model, t.ema_decay, t.ema_warmup) if t.ema else None

        # -- counters and data position ---------------------------------------------------
        self.step = 0
        self.data_pos = (0, 0)  # (epoch, next batch) of the per-rank batch stream
        self.nonfinite_total = self.nonfinite_in_row = 0
        self.bad_files: dict[str, str] = {}
        self.history: list[dict[str, Any]] = []
        if state is not None:
            self._load_state(state)

        # -- data -------------------------------------------------------------------------
        self.train_dataset = train_dataset or self._build_train_dataset()
        self.val_dataset = val_dataset
        if self.val_dataset is None and cfg.data.val:
            self.val_dataset = ImageFolderDataset(
                cfg.data.val,
                ValTransform(cfg.data.resolution),
                max_images=cfg.data.val_images,
                replace_bad=False,
            )
        self._stop_signal: str | None = None
        self.writer = None

    # ---------------------------------------------------------------------------------------
    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build_train_dataset(self) -> Dataset:
        d = self.cfg.data
        if not d.train:
            raise TrainingError("no training data: pass --data DIR (or set data.train in the config)")
        tf = TrainTransform(d.resolution, d.scale, d.hflip)
        if is_webdataset(d.train):
            return make_webdataset(
                d.train, tf, self.cfg.train.seed + self.dist.rank, d.shuffle_buffer, d.strict
            )
        return ImageFolderDataset(d.train, tf, seed=self.cfg.train.seed, strict=d.strict)

    def _make_loader(self) -> DataLoader:
        d, t = self.cfg.data, self.cfg.train
        common = dict(
            num_workers=d.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            # a private generator: creating the iterator must not consume the global RNG,
            # or a resumed run would draw different posterior samples than a straight one
            generator=torch.Generator().manual_seed(t.seed),
        )
        if d.num_workers > 0:
            common["persistent_workers"] = True
            common["worker_init_fn"] = _ignore_sigterm
        if isinstance(self.train_dataset, torch.utils.data.IterableDataset):
            return DataLoader(self.train_dataset, batch_size=self.micro_batch, **common)
        f = unwrap_model(self.model).spatial_compression_ratio
        buckets = parse_buckets(d.buckets, f) if d.buckets else [(0, 0)]
        if not d.buckets and d.resolution % f:
            raise TrainingError(f"data.resolution={d.resolution} is not a multiple of the model's ratio {f}")
        sampler = BucketBatchSampler(
            self.train_dataset,
            self.micro_batch,
            self.dist.rank,
            self.dist.world_size,
            t.seed,
            buckets,
            self.data_pos,
        )
        return DataLoader(self.train_dataset, batch_sampler=sampler, **common)

    def expected_checkpoint_bytes(self) -> int:
        """Rough size of one checkpoint round: weights, EMA, Adam moments, discriminator, export."""
        n_model = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.gen_params)
        n_disc = sum(p.numel() for p in self.disc.parameters()) if self.disc is not None else 0
        per_ckpt = 4 * (n_model * (2 if self.ema else 1) + 2 * n_train + 3 * n_disc)
        # the new checkpoint exists next to the old one until the rename, plus model/ export
        return 2 * per_ckpt + 4 * n_model + (64 << 20)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as plain tensors / dicts / ints (rank 0's view)."""
        state: dict[str, Any] = {
            "step": self.step,
            "model": unwrap_model(self.model).state_dict(),
            "model_name": self.cfg.model.name,
            "loss": self.loss_fn.state_dict(),  # trained loss layers only: discriminator, VF projection
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "data_pos": list(self.data_pos),
            "counters": {"nonfinite_total": self.nonfinite_total, "nonfinite_in_row": self.nonfinite_in_row},
            "bad_files": dict(self.bad_files),
            "config": self.cfg.to_dict(),
            "world_size": self.dist.world_size,
            "rng": self._gather_rng(),
            "history": json.dumps(self.history),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.disc_opt is not None:
            state["disc_optimizer"] = self.disc_opt.state_dict()
            state["disc_scheduler"] = self.disc_sched.state_dict()
        return state

    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = rng_state()
        if not self.dist.enabled:
            return [mine]
        out: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(out, mine)
        return out

    def _load_state(self, state: dict[str, Any]) -> None:
        name = state.get("model_name")
        if name != self.cfg.model.name:
            raise TrainingError(
                f"the checkpoint is for model '{name}', but model.name is '{self.cfg.model.name}'"
            )
        unwrap_model(self.model).load_state_dict(state["model"])
        missing, unexpected = self.loss_fn.load_state_dict(state["loss"], strict=False)
        if missing or unexpected:  # e.g. loss weights changed between the runs
            log.warning("loss state: missing %s, unexpected %s (loss weights changed?)", missing, unexpected)
        if state["config"]["train"]["stage"] == self.cfg.train.stage:
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            if self.disc_opt is not None and "disc_optimizer" in state:
                self.disc_opt.load_state_dict(state["disc_optimizer"])
                self.disc_sched.load_state_dict(state["disc_scheduler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.data_pos = tuple(int(v) for v in state["data_pos"])
        c = state["counters"]
        self.nonfinite_total, self.nonfinite_in_row = int(c["nonfinite_total"]), int(c["nonfinite_in_row"])
        self.bad_files = dict(state.get("bad_files", {}))
        self.history = json.loads(state.get("history", "[]"))
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            log.warning(
                "checkpoint from %d ranks resumed on %d: RNG streams re-seeded",
                len(rngs),
                self.dist.world_size,
            )
            self._seed_everything(self.cfg.train.seed + 7919 * self.step + self.dist.rank)

    def save(self) -> None:
        """Write ``checkpoints/last.pt`` atomically, then export ``model/`` (EMA when enabled)."""
        state = self.state_dict()  # collective (RNG gather): every rank calls it
        if self.is_main:
            ckdir = self.run_dir / "checkpoints"
            path = save_checkpoint(ckdir / CHECKPOINT_NAME, state)
            keep = self.cfg.train.keep_checkpoints
            if keep > 0:
                snap = ckdir / f"step_{self.step:08d}.pt"
                if snap.exists():
                    snap.unlink()
                os.link(path, snap)  # a second name for the same bytes, no extra space
                for old in sorted(ckdir.glob("step_*.pt"))[:-keep]:
                    old.unlink()
            self.export_model()
        D.barrier(self.dist)

    def export_model(self) -> Path:
        """``save_pretrained`` the weights to publish (EMA when enabled) into ``RUN_DIR/model``."""
        m = self.ema.module if self.ema is not None else unwrap_model(self.model)
        meta = {"step": self.step, "stage": self.cfg.train.stage, "ema": self.ema is not None}
        return m.save_pretrained(self.run_dir / "model", **meta)

    # -- evaluation -------------------------------------------------------------------------
    def eval_model(self) -> AutoencoderBase:
        return self.ema.module if self.ema is not None else unwrap_model(self.model)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR / SSIM over the validation set (uint8-quantised, averaged over images), posterior mode."""
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        if self.val_dataset is None:
            return {}
        model = self.eval_model()
        was_training = model.training
        model.eval()
        psnr, ssim, n = 0.0, 0.0, 0
        loader = DataLoader(self.val_dataset, batch_size=self.micro_batch, collate_fn=collate)
        for batch in loader:
            if batch["image"] is None:
                continue
            x = batch["image"].to(self.device)
            with self._autocast():
                rec = model(x, sample_posterior=False).sample
            a, b = tensor_to_uint8(rec).float(), tensor_to_uint8(x).float()  # (B, 3, H, W)
            psnr += (
                peak_signal_noise_ratio(a, b, data_range=255.0, reduction="none", dim=(1, 2, 3)).sum().item()
            )
            ssim += structural_similarity_index_measure(a, b, data_range=255.0, reduction="none").sum().item()
            n += x.shape[0]
        model.train(was_training)
        return {"val/psnr": psnr / max(n, 1), "val/ssim": ssim / max(n, 1), "val/images": n}

    @torch.no_grad()
    def save_grid(self, tag: str) -> Path | None:
        """PNG grid of (input | reconstruction) pairs for the first ``log.grid_images`` images."""
        import torchvision

        ds = self.val_dataset
        if ds is None and isinstance(self.train_dataset, ImageFolderDataset):
            ds = self.train_dataset
        if ds is None:
            return None
        items = [ds[i]["image"] for i in range(min(self.cfg.log.grid_images, len(ds)))]
        items = [im for im in items if im is not None]
        if not items:
            return None
        xs = torch.stack(items).to(self.device)  # (k, 3, H, W)
        model = self.eval_model()
        was_training = model.training
        model.eval()
        with self._autocast():
            rec = model(xs, sample_posterior=False).sample.float()
        model.train(was_training)
        pairs = torch.stack([xs, rec], 1).flatten(0, 1)  # (2k, 3, H, W): input, recon, input, ...
        grid = torchvision.utils.make_grid(
            tensor_to_uint8(pairs).cpu(), nrow=min(8, 2 * len(items)), padding=2
        )
        out = self.run_dir / "samples" / f"{tag}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        torchvision.io.write_png(grid, str(out))
        return out

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # -- logging ----------------------------------------------------------------------------
    def _setup_logging(self) -> None:
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
        (self.run_dir / "config.yaml").write_text(text)
        (self.run_dir / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        fh = logging.FileHandler(self.run_dir / "train.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(fh)
        log.setLevel(logging.INFO)
        self._log_handler = fh
        if self.cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def _log_scalars(self, scalars: dict[str, float]) -> None:
        if not self.is_main:
            return
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, self.step)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **scalars}) + "\n")

    def _count_bad(self, batch: dict[str, Any]) -> None:
        for entry in batch["skipped"]:
            path, _, reason = entry.partition(": ")
            if path not in self.bad_files:
                self.bad_files[path] = reason
                if self.is_main:
                    log.warning("skipped bad image %s", entry)

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._stop_signal = signal.Signals(signum).name

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until ``train.max_steps`` (or a signal); returns a summary dict."""
        if self.is_main:
            check_writable(self.run_dir, self.expected_checkpoint_bytes())
            for stale in (self.run_dir / "checkpoints").glob(".*.tmp"):  # left by a killed writer
                stale.unlink()
        self._setup_logging()
        old_handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                old_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        t0 = time.time()
        try:
            status = self._loop()
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            if self.writer is not None:
                self.writer.close()
            if getattr(self, "_log_handler", None) is not None:
                log.removeHandler(self._log_handler)
                self._log_handler.close()
        summary = {
            "status": status,
            "step": self.step,
            "wall_seconds": round(time.time() - t0, 1),
            "nonfinite_steps": self.nonfinite_total,
            "bad_files": len(self.bad_files),
            "history": self.history,
        }
        if self.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            if self.bad_files:
                log.warning(
                    "%d bad image files were skipped (see %s)",
                    len(self.bad_files),
                    self.run_dir / "bad_files.txt",
                )
                (self.run_dir / "bad_files.txt").write_text(
                    "".join(f"{p}: {r}\n" for p, r in self.bad_files.items())
                )
        return summary

    def _evaluate_and_record(self, tag: str) -> None:
        if self.is_main:
            metrics = self.validate()
            if metrics:
                self.history.append({"step": self.step, **metrics})
                self._log_scalars(metrics)
                log.info(
                    "step %d: validation PSNR %.2f dB, SSIM %.4f",
                    self.step,
                    metrics["val/psnr"],
                    metrics["val/ssim"],
                )
            self.save_grid(tag)
        D.barrier(self.dist)

    def _loop(self) -> str:
        t, lg = self.cfg.train, self.cfg.log
        if self.step == 0 and t.max_steps > 0:
            self._evaluate_and_record(f"step_{0:08d}")
        loader = self._make_loader()
        it = iter(loader)
        bar = None
        if self.is_main and lg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=t.max_steps, initial=self.step, desc=f"stage {t.stage}", unit="step", dynamic_ncols=True
            )
        images, t_last, status = 0, time.time(), "finished"
        deadline = time.time() + 60 * t.max_minutes if t.max_minutes > 0 else math.inf
        try:
            while self.step < t.max_steps:
                logs = self._train_step(it)
                images += self.cfg.train.batch_size
                self.step += 1
                if bar is not None:
                    bar.update(1)
                if self.step % lg.every == 0 or self.step == t.max_steps:
                    dt = max(time.time() - t_last, 1e-9)
                    scalars = {
                        **logs,
                        "train/img_per_s": images / dt,
                        "train/lr": self.sched.get_last_lr()[0],
                    }
                    if self.ema is not None:
                        scalars["train/ema_decay"] = self.ema.decay
                    self._log_scalars(scalars)
                    if bar is not None:
                        short = {
                            k.split("/")[-1]: f"{v:.3g}"
                            for k, v in logs.items()
                            if k.split("/")[-1] in _BAR_KEYS
                        }
                        bar.set_postfix({**dict(list(short.items())[:4]), "img/s": f"{images / dt:.1f}"})
                    images, t_last = 0, time.time()
                if self.step % lg.image_every == 0 and self.step < t.max_steps and self.is_main:
                    self.save_grid(f"step_{self.step:08d}")
                if self.step % lg.val_every == 0 and self.step < t.max_steps:
                    self._evaluate_and_record(f"step_{self.step:08d}")
                if self.step % t.checkpoint_every == 0 and self.step < t.max_steps:
                    self.save()
                if time.time() > deadline and self._stop_signal is None:
                    self._stop_signal = "time limit"
                if D.any_rank(self._stop_signal is not None, self.dist):
                    status = f"stopped by {self._stop_signal or 'a signal on another rank'}"
                    log.warning(
                        "%s at step %d: saving a checkpoint; continue with --resume", status, self.step
                    )
                    break
        finally:
            if bar is not None:
                bar.close()
            del it
        # preemption: save as fast as possible; otherwise a final evaluation (same choice on all ranks)
        if not D.any_rank(self._stop_signal in ("SIGTERM", "SIGINT"), self.dist):
            self._evaluate_and_record(f"step_{self.step:08d}")
        self.save()
        return status

    def _train_step(self, it) -> dict[str, float]:
        t = self.cfg.train
        stage = t.stage
        pairs = []
        loss_ok = True
        logs: dict[str, float] = {}
        for micro in range(t.grad_accum):
            batch = next(it)
            self._count_bad(batch)
            if batch.get("batch", -1) >= 0:
                self.data_pos = (int(batch["epoch"]), int(batch["batch"]) + 1)
            x = batch["image"].to(self.device, non_blocking=True)
            sync = micro == t.grad_accum - 1 or not hasattr(self.gen_step, "no_sync")
            ctx = contextlib.nullcontext() if sync else self.gen_step.no_sync()
            with ctx:
                with self._autocast():
                    loss, step_logs, out = self.gen_step(x, self.step, stage)
                loss_ok &= bool(torch.isfinite(loss).item())
                (loss / t.grad_accum).backward()
            pairs.append((x, out.sample.detach()))
            for k, v in step_logs.items():
                logs[f"loss/{k}"] = logs.get(f"loss/{k}", 0.0) + float(v) / t.grad_accum
        gnorm = self._clip(self.gen_params)
        ok = loss_ok and math.isfinite(gnorm)
        ok = not D.any_rank(not ok, self.dist)
        if ok:
            self.opt.step()
            self.sched.step()
            if self.ema is not None:
                self.ema.update(unwrap_model(self.model))
            self.nonfinite_in_row = 0
        else:
            self._nonfinite("generator")
        self.opt.zero_grad(set_to_none=True)
        logs["train/grad_norm"] = gnorm
        if self.disc_step is not None and ok and self.loss_fn.gan_active(self.step, stage):
            logs.update(self._disc_step(pairs))
        return logs

    def _disc_step(self, pairs) -> dict[str, float]:
        t = self.cfg.train
        self.disc_opt.zero_grad(set_to_none=True)  # drop the grads the generator's GAN term left
        logs: dict[str, float] = {}
        d_ok = True
        for micro, (x, rec) in enumerate(pairs):
            sync = micro == len(pairs) - 1 or not hasattr(self.disc_step, "no_sync")
            ctx = contextlib.nullcontext() if sync else self.disc_step.no_sync()
            with ctx:
                with self._autocast():
                    d_loss, d_logs = self.disc_step(x, rec, self.step, t.stage)
                d_ok &= bool(torch.isfinite(d_loss).item())
                if d_loss.requires_grad:
                    (d_loss / len(pairs)).backward()
            for k, v in d_logs.items():
                logs[f"disc/{k}"] = logs.get(f"disc/{k}", 0.0) + float(v) / len(pairs)
        gnorm = self._clip(self.disc_params)
        if not D.any_rank(not (d_ok and math.isfinite(gnorm)), self.dist):  # every rank calls the collective
            self.disc_opt.step()
            self.disc_sched.step()
        else:
            self._nonfinite("discriminator")
        self.disc_opt.zero_grad(set_to_none=True)
        logs["train/disc_grad_norm"] = gnorm
        return logs

    def _clip(self, params: list[torch.Tensor]) -> float:
        grads = [p for p in params if p.grad is not None]
        if not grads:
            return 0.0
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))

    def _nonfinite(self, which: str) -> None:
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        limit = self.cfg.train.max_nonfinite
        log.warning(
            "step %d: non-finite %s loss or gradients, step skipped (%d in a row)",
            self.step,
            which,
            self.nonfinite_in_row,
        )
        if self.nonfinite_in_row >= limit:
            raise TrainingError(
                f"{self.nonfinite_in_row} non-finite steps in a row (train.max_nonfinite={limit}) at step {self.step}: "
                f"training diverged. The last good checkpoint is {self.run_dir / 'checkpoints' / CHECKPOINT_NAME}; "
                f"try a lower optim.lr, a longer optim.warmup_steps or train.precision=fp32, then --resume"
            )
