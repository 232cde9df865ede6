"""The training engine: one loop, one checkpoint format and one set of fault rules for every task.

``Engine(task, run_dir, resume).fit()`` runs any ``Task`` (``task.py`` documents the split of
duties). Everything needed to continue exactly after an interruption (modules, EMA, optimizers,
schedulers, RNG states of every rank, data position, counters, the resolved config) goes into
``RUN_DIR/checkpoints/last.pt``; ``--resume`` reads the configuration stored there.

Faults: a non-finite logged value or gradient norm skips the step for every optimizer (counted;
the run stops after ``train.max_nonfinite`` in a row, leaving the last good checkpoint intact);
SIGTERM / SIGINT and the ``train.max_minutes`` budget save a checkpoint and stop cleanly
(``summary["exit_status"]``: 143 after SIGTERM, 130 after SIGINT, so schedulers requeue a
preempted job; 0 otherwise). Before any training work: the sizes against free memory
(``task.preflight``), the run folder's writability and free space, and its lock (one process
per run folder). The run folder's layout and every write into it belong to ``RunFolder``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..models.persistence import unwrap_model
from ..utils.device import resolve_device
from ..utils.runlock import RunLockedError
from . import distributed as D
from .checkpoint import load_checkpoint, rng_state, set_rng_state
from .config import config_changes
from .ema import EMA
from .optim import OptimizerSlot, make_optimizer
from .run_folder import RunFolder, RunFolderError
from .state import load_module_state, load_optimizer_state, module_state, optimizer_state
from .task import StopRequested, Task, TrainingError

log = logging.getLogger("transvae.train")

CHECKPOINT_NAME = RunFolder.LAST
EXIT_STATUS = {"SIGTERM": 143, "SIGINT": 130}  # 128 + signal number, as a shell reports it
_RESERVED = {"step", "data_pos", "counters", "bad_files", "config", "world_size", "rng", "history"}
_RESERVED |= {"optimizers", "ema", "task", "format_version"}
# keys no task may change on --resume: the checkpoint's optimizer state belongs to that optimizer
FIXED_ON_RESUME = ("optim.optimizer",)
# train.fit_to_budget plans again at these fractions of the way, each time at the speed since the
# previous plan: the speed of a shared machine drifts (here +-20 % over 5 minutes)
FIT_AGAIN = (0.5, 0.8, 0.95)


class Engine:
    """Runs a ``Task``: builds it, restores it, loops, checkpoints.

    Args:
        task: what to train (its ``cfg`` has ``train``, ``log`` and ``optim`` sections).
        run_dir: the run folder (config, logs, TensorBoard, samples, checkpoints, exports).
        resume: continue from ``run_dir/checkpoints/last.pt``.
        saved: that checkpoint when the caller has already read it (``RunFolder.open``), so it is
            read once.
    Attributes a task may use: ``cfg``, ``run`` (the ``RunFolder``), ``run_dir``, ``dist`` (rank,
        world size), ``device``, ``is_main``, ``micro_batch`` (per rank and micro-step),
        ``resuming``, ``ema``, ``data_pos`` (read and update), ``step``; methods ``autocast``,
        ``no_sync``, ``add_optimizer``, ``record_bad``, ``check_stop``.
    """

    def __init__(self, task: Task, run_dir: str | Path, resume: bool = False, saved: dict | None = None):
        self.task, self.cfg, self.resuming = task, task.cfg, resume
        self.run = RunFolder(run_dir)
        t = self.cfg.train
        self.dist = D.init_distributed(resolve_device(t.device))  # ValueError: a bad train.device
        self.device, self.is_main = self.dist.device, self.dist.is_main
        world = self.dist.world_size
        if t.batch_size % (world * t.grad_accum):
            raise TrainingError(
                f"train.batch_size={t.batch_size} is not divisible by ranks x grad_accum = {world} x {t.grad_accum}"
            )
        self.micro_batch = t.batch_size // (world * t.grad_accum)
        if t.distributed == "fsdp" and t.ema and world > 1:
            raise TrainingError(
                "train.ema is not supported with train.distributed=fsdp yet; set --train.ema=false"
            )
        self.autocast_dtype = self._precision()
        self.step, self.data_pos = 0, (0, 0)  # data_pos: (epoch, next batch) of this rank's stream
        self.planned_steps = t.max_steps  # lowered by train.fit_to_budget
        self.nonfinite_total = self.nonfinite_in_row = 0
        # time inside training steps (forward, backward, update; no validation, checkpoint or
        # samples), summed over resumes: CPU seconds of this process, and wall seconds
        self.train_cpu_seconds = self.train_wall_seconds = 0.0
        self.bad_files: dict[str, str] = {}
        self.history: list[dict[str, Any]] = []
        self.slots: dict[str, OptimizerSlot] = {}
        self.ema: EMA | None = None
        self._stop: str | None = None
        self._preempted = False
        self._seed(t.seed + self.dist.rank)
        task.engine = self
        # a resumed run's checkpoint is read first (memory-mapped, cheap): its stored config and
        # model description decide what is built; nothing is written before the lock is held
        state = (saved if saved is not None else load_checkpoint(self.checkpoint_path)) if resume else None
        if state is not None:
            self._check_resume_config(state["config"])
            task.load_checkpoint_note(state.get("task", {}))
        self._claim_run_folder(task.preflight())
        try:
            task.build()
            target = task.ema_target()
            if t.ema and target is not None:
                self.ema = EMA(unwrap_model(target), t.ema_decay, t.ema_warmup)
                start = task.ema_init()
                if start is not None:
                    self.ema.module.load_state_dict(start)
            if state is not None:
                self._load_state(state)
                if self.is_main:  # steps logged after the checkpoint are trained (and logged) again
                    dropped = self.run.truncate_metrics(self.step)
                    if dropped:
                        log.info("resume: %d metrics.jsonl lines after step %d dropped", dropped, self.step)
        except BaseException:
            self.run.release()
            raise

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def checkpoint_path(self) -> Path:
        return self.run.checkpoint_path

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until ``train.max_steps``, a signal or the time budget; returns the summary
        (also written to ``summary.json``) with ``status`` and ``exit_status``."""
        t0 = time.time()
        if self.is_main:
            self.run.start_logging(self.cfg.to_dict(), self.cfg.log.tensorboard)
        old_handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            status = self._loop()
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            self.run.stop_logging()
            self.run.release()
        summary = {
            "status": status,
            # non-zero only for a run cut short by a signal (here or on another rank): requeue it
            "exit_status": 0
            if status == "finished"
            else EXIT_STATUS.get(self._stop or "", 143 if self._preempted else 0),
            "step": self.step,
            "planned_steps": self.planned_steps,
            "wall_seconds": round(time.time() - t0, 1),
            "train_cpu_seconds": round(self.train_cpu_seconds, 3),  # in training steps, all sessions
            "train_wall_seconds": round(self.train_wall_seconds, 3),
            "nonfinite_steps": self.nonfinite_total,
            "bad_files": len(self.bad_files),
            "history": self.history,
        }
        if self.is_main:
            self.run.write_json(RunFolder.SUMMARY, summary)
            if self.bad_files:
                path = self.run.write_bad_files(self.bad_files)
                log.warning("%d bad input files were skipped (see %s)", len(self.bad_files), path)
        return summary

    def _loop(self) -> str:
        t, lg = self.cfg.train, self.cfg.log
        if self.step == 0 and t.max_steps > 0:
            self._validate()
        if D.any_rank(self._stop in EXIT_STATUS, self.dist):  # a signal during the first validation
            self._preempted = True
            log.warning(
                "stopped by %s before training: saving a checkpoint; continue with --resume", self._stop
            )
            self.save()
            return f"stopped by {self._stop or 'a signal on another rank'}"
        deadline = time.time() + 60 * t.max_minutes if t.max_minutes > 0 else math.inf
        batches, bar, status = self.task.batches(), self._progress_bar(), "finished"
        images, t_last = 0, time.time()
        # train.fit_to_budget: plan after 5 % of the steps (at most 50), then at FIT_AGAIN of the way
        start, fits = self.step, 0
        since = (start, time.time())  # (step, time) the next plan measures the speed from
        fit_at = start + min(50, max(1, (self.planned_steps - start) // 20)) if t.fit_to_budget else -1
        try:
            while self.step < self.planned_steps:
                c0, w0 = time.process_time(), time.perf_counter()
                logs = self.task.train_step(batches, self.step)  # forward + backward, no host sync
                if time.time() > deadline and self._stop is None and self.step + 1 < self.planned_steps:
                    self._stop = "time limit"  # (a budget that ends during the last step ends nothing)
                values, stop = self._update(logs)  # clip, the one host sync, step or skip
                self.train_cpu_seconds += time.process_time() - c0
                self.train_wall_seconds += time.perf_counter() - w0
                self.step, images = self.step + 1, images + t.batch_size
                if bar is not None:
                    bar.update(1)
                if self.step % lg.every == 0 or self.step == self.planned_steps:
                    self._log_step(values, images / max(time.time() - t_last, 1e-9), bar)
                    images, t_last = 0, time.time()
                if self.step == fit_at:  # after the log: train/lr is the LR the step ran with
                    since, fits = self._fit_to_budget(since, deadline, bar), fits + 1
                    later = [start + int(f * (self.planned_steps - start)) for f in FIT_AGAIN[fits - 1 :]]
                    fit_at = next((s for s in later if s > self.step), -1)
                last = self.step == self.planned_steps
                if self.step % lg.image_every == 0 and not last:
                    self._samples()
                if self.step % lg.val_every == 0 and not last:
                    self._validate()
                if self.step % t.checkpoint_every == 0 and not last:
                    self.save()
                if stop:
                    status = f"stopped by {self._stop or 'a signal on another rank'}"
                    log.warning(
                        "%s at step %d: saving a checkpoint; continue with --resume", status, self.step
                    )
                    break
        finally:
            if bar is not None:
                bar.close()
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # shuts DataLoader workers down
        if not self._preempted:  # preemption: save as fast as possible; otherwise a final evaluation
            self._validate()
        self.save()
        return status

    def _fit_to_budget(self, since: tuple[int, float], deadline: float, bar) -> tuple[int, float]:
        """``train.fit_to_budget``: plan the steps that fit before ``deadline`` at the speed of the
        steps since ``since`` = (step, time) (wall time, with whatever checkpoints and samples they
        included; 3 % kept in hand), at most ``train.max_steps``, and end the LR schedule there.
        The slowest rank's plan is everyone's (the plan is made at the same step on every rank).
        Returns (step, time) now, where the next plan's measurement starts."""
        now = time.time()
        per_step = (now - since[1]) / max(1, self.step - since[0])
        fits = self.step + int(0.97 * max(0.0, deadline - now) / per_step)
        planned = max(self.step, min(self.cfg.train.max_steps, int(D.min_over_ranks(fits, self.dist))))
        if planned != self.planned_steps and self.is_main:
            log.info(
                "step %d: %.3f s/step, so %d steps fit in train.max_minutes=%g: the run and its LR schedule end there",
                self.step,
                per_step,
                planned,
                self.cfg.train.max_minutes,
            )
        self._plan(planned)
        if bar is not None:
            bar.total = planned
            bar.refresh()
        return self.step, now

    def _plan(self, steps: int) -> None:
        """Train to ``steps`` and make every optimizer's LR schedule end there."""
        self.planned_steps = steps
        for s in self.slots.values():
            s.set_total(steps)

    def _update(self, logs: dict[str, torch.Tensor | float]) -> tuple[dict[str, float], bool]:
        """Clip every optimizer's gradients, read the logged values, the norms and the finite /
        stop flags of every rank in ONE host synchronisation, then step all optimizers and the
        EMA, or none. Returns the logged values (averaged over ranks) and whether to stop."""
        slots = [s for s in self.slots.values() if s.has_grads()]
        tensors = {k: v for k, v in logs.items() if isinstance(v, torch.Tensor)}
        tensors.update({s.norm_key: s.clip() for s in slots})
        parts = [v.detach().float().reshape(1).to(self.device) for v in tensors.values()]
        vec = torch.cat(parts) if parts else torch.zeros(0, device=self.device)
        bad = (~torch.isfinite(vec)).any().float().reshape(1)
        flags = torch.tensor([self._stop is not None, self._stop in EXIT_STATUS], device=self.device).float()
        packed = torch.cat([vec, bad, flags])
        if self.dist.enabled:
            torch.distributed.all_reduce(packed)  # sums: logged values become means over ranks
        host = packed.tolist()  # the step's only host synchronisation
        n, world = len(tensors), self.dist.world_size
        values = {k: float(v) for k, v in logs.items() if not isinstance(v, torch.Tensor)}
        values.update({k: v / world for k, v in zip(tensors, host[:n], strict=True)})
        stop, self._preempted = host[n + 1] > 0, host[n + 2] > 0
        if host[n] > 0:
            self._nonfinite([k for k, v in values.items() if not math.isfinite(v)])
        else:
            for s in slots:
                s.step()
            if self.ema is not None:
                self.ema.update(unwrap_model(self.task.ema_target()))
            self.nonfinite_in_row = 0
        for s in self.slots.values():
            s.zero_grad()
        return values, stop

    # -- services for tasks ---------------------------------------------------------------------
    def add_optimizer(
        self,
        name: str,
        params: list[torch.Tensor],
        state_module: nn.Module | None = None,
        lr: float | None = None,
        warmup_steps: int | None = None,
    ) -> OptimizerSlot:
        """Register an AdamW, or Muon with AdamW for what Muon does not take (``cfg.optim``'s
        optimizer, betas, weight decay, eps, clipping), that the engine steps, checkpoints and logs.
        The first one registered is the main one (``train/lr``). An ``lr`` override (the
        discriminator's ``loss.disc_lr_mult``) scales ``optim.muon_lr`` by the same factor.

        Args:
            name: ``"main"`` for the first; e.g. ``"disc"`` for others (checkpoint and log key).
            params: its parameters (frozen ones are dropped).
            state_module: the module that owns ``params`` (needed under FSDP).
            lr, warmup_steps: override ``optim.lr`` / ``optim.warmup_steps``.
        """
        o = self.cfg.optim
        lr = o.lr if lr is None else lr
        slot = make_optimizer(
            name,
            params,
            lr,
            o.warmup_steps if warmup_steps is None else warmup_steps,
            o.betas,
            o.weight_decay,
            o.eps,
            o.grad_clip,
            state_module,
            o.decay,
            self.cfg.train.max_steps,
            o.decay_floor,
            o.optimizer,
            o.muon_lr * lr / o.lr,
            o.muon_momentum,
        )
        self.slots[name] = slot
        return slot

    def autocast(self):
        """The step's autocast context (bf16 on GPUs with ``train.precision`` auto/bf16)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @staticmethod
    def no_sync(module: nn.Module, last: bool):
        """DDP's ``no_sync`` on all but the ``last`` micro-batch of a gradient-accumulation step."""
        if last or not hasattr(module, "no_sync"):
            return contextlib.nullcontext()
        return module.no_sync()

    def record_bad(self, entries: list[str]) -> None:
        """Count unreadable inputs (``"path: reason"``), each logged once and listed at the end."""
        for entry in entries:
            path, _, reason = entry.partition(": ")
            if path not in self.bad_files:
                self.bad_files[path] = reason
                if self.is_main:
                    log.warning("skipped bad input %s", entry)

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as plain data (collective: every rank calls it;
        rank 0's copy is complete)."""
        state: dict[str, Any] = {
            "step": self.step,
            "data_pos": list(self.data_pos),
            "counters": {
                "nonfinite_total": self.nonfinite_total,
                "nonfinite_in_row": self.nonfinite_in_row,
                "train_cpu_seconds": self.train_cpu_seconds,
                "train_wall_seconds": self.train_wall_seconds,
                "planned_steps": self.planned_steps,
            },
            "bad_files": dict(self.bad_files),
            "config": self.cfg.to_dict(),
            "world_size": self.dist.world_size,
            "rng": self._gather_rng(),
            "history": json.dumps(self.history),
            "task": self.task.checkpoint_note(),
            "optimizers": {
                name: {
                    "optimizer": optimizer_state(s.optimizer, s.state_module),
                    "scheduler": s.scheduler_state(),
                }
                for name, s in self.slots.items()
            },
        }
        for name, module in self.task.modules().items():
            if name in _RESERVED:
                raise ValueError(f"task module name '{name}' is reserved for the engine")
            state[name] = module_state(module)
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        for name, module in self.task.modules().items():
            strict = name not in self.task.optional_state
            if name not in state and not strict:  # e.g. a module added by a newer version
                log.warning("the checkpoint has no '%s' state: it keeps its initial weights", name)
                continue
            result = load_module_state(module, state[name], strict=strict)
            if not strict and (result.missing_keys or result.unexpected_keys):
                log.warning(
                    "%s state: missing %s, unexpected %s (options changed?)",
                    name,
                    result.missing_keys,
                    result.unexpected_keys,
                )
        for name, s in self.slots.items():
            saved = state["optimizers"].get(name)
            if saved is None:
                log.warning("the checkpoint has no '%s' optimizer: it starts fresh", name)
                continue
            load_optimizer_state(s.optimizer, s.state_module, saved["optimizer"])
            s.scheduler.load_state_dict(saved["scheduler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.data_pos = tuple(int(v) for v in state["data_pos"])
        c = state["counters"]
        self.nonfinite_total, self.nonfinite_in_row = int(c["nonfinite_total"]), int(c["nonfinite_in_row"])
        self.train_cpu_seconds = float(c.get("train_cpu_seconds", 0.0))  # 0: a checkpoint of an older version
        self.train_wall_seconds = float(c.get("train_wall_seconds", 0.0))
        # a plan fitted to an earlier session's budget holds until max_steps is changed
        max_steps = self.cfg.train.max_steps
        same = state["config"].get("train", {}).get("max_steps") == max_steps
        self._plan(min(max_steps, int(c.get("planned_steps", max_steps))) if same else max_steps)
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
            self._seed(self.cfg.train.seed + 7919 * self.step + self.dist.rank)

    def save(self) -> None:
        """Write ``checkpoints/last.pt`` atomically (plus ``step_*.pt`` hard links when
        ``train.keep_checkpoints``), then ``task.export()``. Every rank calls it."""
        state = self.state_dict()
        if self.is_main:
            self.run.save_checkpoint(state, self.step, self.cfg.train.keep_checkpoints)
        del state
        self.task.export()
        D.barrier(self.dist)

    # -- helpers --------------------------------------------------------------------------------------
    def _precision(self) -> torch.dtype | None:
        dtype, warning = self.cfg.train.autocast_dtype(self.device)
        if warning and self.is_main:
            log.warning("%s", warning)
        return dtype

    def _claim_run_folder(self, checkpoint_bytes: int) -> None:
        """Rank 0: writable, enough free space, and the lock; all ranks agree before going on."""
        error: Exception | None = None
        if self.is_main:
            try:
                self.run.claim(checkpoint_bytes)
            except (OSError, RunLockedError, RunFolderError) as e:
                error = e
        if D.any_rank(error is not None, self.dist):
            if error is not None:
                raise error
            raise TrainingError("rank 0 could not claim the run folder (see its message)")

    def _check_resume_config(self, old: dict[str, Any]) -> None:
        """Refuse changes to ``task.fixed_on_resume`` and ``FIXED_ON_RESUME`` keys; announce every
        other change in one line."""
        changes = config_changes(old, self.cfg.to_dict())
        for key, before, after in changes:
            if key in self.task.fixed_on_resume or key in FIXED_ON_RESUME:
                raise TrainingError(
                    f"--resume cannot change {key} ({before!r} -> {after!r}); start a new run with another --out"
                )
        if self.is_main:
            for key, before, after in changes:
                log.warning("resume: %s changed from %r to %r", key, before, after)

    def check_stop(self) -> None:
        """For tasks' long loops: raise ``StopRequested`` once a SIGTERM / SIGINT has arrived."""
        if self._stop in EXIT_STATUS:
            raise StopRequested(self._stop)

    def _validate(self) -> None:
        try:
            metrics = self.task.validate()
        except StopRequested:
            log.warning("validation at step %d interrupted by %s", self.step, self._stop)
            self._reshard()
            return
        self._reshard()
        if metrics:
            self.history.append({"step": self.step, **metrics})
            if self.is_main:
                self.run.log_scalars(self.step, metrics)
            if self.is_main:
                log.info("step %d: validation %s", self.step, self.task.describe(metrics))
        self._samples()

    def _samples(self) -> None:
        try:
            self.task.save_samples(self.run.sample_path(self.step))
        except StopRequested:
            log.warning("sample grid of step %d interrupted by %s", self.step, self._stop)
        self._reshard()
        D.barrier(self.dist)

    def _reshard(self) -> None:
        for module in self.task.modules().values():  # FSDP: back to the sharded parameters
            D.reshard(module)

    def _log_step(self, values: dict[str, float], img_per_s: float, bar) -> None:
        main = next(iter(self.slots.values()), None)
        scalars = {**values, "train/img_per_s": img_per_s}
        scalars["train/cpu_seconds"] = round(self.train_cpu_seconds, 3)
        scalars["train/wall_seconds"] = round(self.train_wall_seconds, 3)
        if main is not None:
            sched = main.scheduler  # the LR this step ran with (get_last_lr() is the next step's)
            scalars["train/lr"] = sched.base_lrs[0] * sched.lr_lambdas[0](max(0, sched.last_epoch - 1))
        if self.ema is not None:
            scalars["train/ema_decay"] = self.ema.decay
        if self.is_main:
            self.run.log_scalars(self.step, scalars)
        if bar is not None:
            short = {k.split("/")[-1]: v for k, v in values.items()}
            shown = {k: f"{short[k]:.3g}" for k in self.task.progress_keys if k in short}
            bar.set_postfix({**dict(list(shown.items())[:4]), "img/s": f"{img_per_s:.1f}"})

    def _progress_bar(self):
        if not (self.is_main and self.cfg.log.progress):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.planned_steps, initial=self.step, desc=self.task.label, unit="step", dynamic_ncols=True
        )

    def _nonfinite(self, keys: list[str]) -> None:
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        limit = self.cfg.train.max_nonfinite
        if self.is_main:
            log.warning(
                "step %d: non-finite %s, step skipped (%d in a row)",
                self.step,
                ", ".join(keys[:4]) or "values",
                self.nonfinite_in_row,
            )
        if self.nonfinite_in_row >= limit:
            raise TrainingError(
                f"{self.nonfinite_in_row} non-finite steps in a row (train.max_nonfinite={limit}) at step "
                f"{self.step}: training diverged. The last good checkpoint is {self.checkpoint_path}; try a "
                f"lower optim.lr, a longer optim.warmup_steps or train.precision=fp32, then --resume"
            )

    def _seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = rng_state()
        if not self.dist.enabled:
            return [mine]
        out: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(out, mine)
        return out

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._stop = signal.Signals(signum).name

    def close(self) -> None:
        """Release the run folder without training (``fit`` releases it itself)."""
        self.run.release()
