"""The GPU check in one command: memory, speed, training and extraction, side by side (issue 14).

Parts (run in this order; each one's result goes into ``OUT/gpu_suite.json`` as soon as it exists,
and everything printed goes to ``OUT/gpu_suite.log`` too):

1. ``memory``   inference memory of every registered paper variant (Tables 3-6: TransVAE, CNN-VAE,
                ViT-VAE, Swin-VAE, all sizes), 256 x 256, batch 16, bf16, through
                ``InferenceRunner`` (the library's bf16 path), next to the paper's "Infer. GPU Mem".
2. ``speed``    encode / decode / reconstruct img/s at 256, 512, 1024 in bf16 (and 256 in fp32) of
                TransVAE-T/B/L, the FLUX-VAE and SD-VAE configurations and DC-AE f32c32 (random
                weights), interleaved (``speed.measure_inference``), achieved TFLOP/s against a
                matmul measured in the same run;
   ``sdpa``     which scaled-dot-product-attention kernel each model's attention ran (profiler op
                names: flash / efficient / cudnn / math), and whether it runs with the math
                fallback forbidden;
   ``compile``  ``torch.compile`` speed-up (``speed.measure_compile``), run last (the slowest part).
3. ``train``    img/s and peak memory of stage-1 steps (``transvae.training.Trainer``, bf16
                autocast) of TransVAE-T and CNN-VAE-T at 256 px, batch 16, with and without
                gradient checkpointing; then a 300-step stage-1 TransVAE-T run on photo crops
                (``--data``, e.g. BSDS500/train; scikit-image's photos when absent): does the loss
                fall, with no non-finite step?
4. ``extract``  ``transvae extract-latents`` throughput (the real CLI, in a subprocess) at 256 px.

Every item degrades on its own: an error (out of memory, a missing kernel, a missing diffusers
class) is recorded with its message and the suite goes on. ``--budget-s`` bounds the whole run:
each item is estimated (FLOPs at a fraction of the measured matmul rate, plus build overheads)
before it starts and skipped, with the reason, when it does not fit into what is left of its
part's share; an item that overruns is interrupted. ``--dry-run`` runs every part at tiny sizes
(nano models, quarter-width diffusers peers, 32-64 px, a few steps) on whatever device there is,
in well under two minutes on a CPU: it proves that the suite works, not how fast anything is.

    python benchmarks/gpu_suite.py --out runs/gpu --data /path/to/bsds500/train      # on a GPU
    python benchmarks/gpu_suite.py --dry-run --out /tmp/g                             # anywhere
    python benchmarks/gpu_suite.py --prepare .gpu --data ../shared/data/bsds500/train # for the device tool

``--prepare DIR`` downloads the wheels that a bare GPU machine lacks (diffusers, lpips and their
missing needs; ``docs/benchmarks.md`` names the machine) and copies the photos, for a ``device``
tool run that carries ``DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import speed
import torch
from bench_utils import REPO, machine_info, sync, write_json

from transvae.utils.device import resolve_device

log = logging.getLogger("gpu_suite")
GIB = 2**30

# "Infer. GPU Mem" of the paper (Appendix B, Table 3; Appendix C, Tables 4, 5 and 6): measured on
# an H20 GPU during inference at 256 x 256, batch 16, bf16. The paper does not say what it
# counted (allocator peak, reserved memory or the whole process as nvidia-smi shows it).
PAPER_MEM_SOURCE = (
    "paper Tables 3-6 (Appendices B and C), 'Infer. GPU Mem': H20 GPU, inference at 256x256, "
    "batch 16, BFloat16; what was counted is not stated"
)
PAPER_MEM_GIB = {
    # Table 3, TransVAE
    "transvae-l-f8d16": 6.3,
    "transvae-t-f16d32": 7.4,
    "transvae-b-f16d32": 7.6,
    "transvae-l-f16d32": 12.0,
    "transvae-h-f16d32": 17.0,
    "transvae-g-f16d32": 21.5,
    # Table 4, CNN-VAE
    "cnn-vae-t-f16d32": 7.3,
    "cnn-vae-b-f16d32": 7.4,
    "cnn-vae-l-f16d32": 14.2,
    "cnn-vae-h-f16d32": 18.4,
    "cnn-vae-g-f16d32": 31.1,
    # Table 5, ViT-VAE
    "vit-vae-t-f16d32": 7.2,
    "vit-vae-b-f16d32": 7.9,
    "vit-vae-l-f16d32": 10.4,
    "vit-vae-h-f16d32": 14.4,
    "vit-vae-g-f16d32": 21.3,
    # Table 6, Swin-VAE
    "swin-vae-t-f16d32": 7.4,
    "swin-vae-b-f16d32": 7.6,
    "swin-vae-l-f16d32": 12.0,
    "swin-vae-h-f16d32": 17.0,
    "swin-vae-g-f16d32": 21.5,
}
PAPER_FAMILIES = ("transvae", "cnn-vae", "vit-vae", "swin-vae")

MEMORY_METHOD = (
    "Per model, on a fresh allocator (previous model freed, cache emptied): build with random "
    "weights (fp32), one warm-up reconstruction, then encode and decode of a batch of 16 at "
    "256x256 through InferenceRunner(dtype='bf16') (torch.autocast; the library's --dtype bf16), "
    "each after torch.cuda.reset_peak_memory_stats. peak_allocated_gib = "
    "torch.cuda.max_memory_allocated over encode and decode (weights, input and activations: "
    "every tensor the caching allocator handed out); peak_reserved_gib = "
    "torch.cuda.max_memory_reserved (the allocator's segments, allocated or cached); "
    "non_allocator_gib = device memory in use (torch.cuda.mem_get_info) minus the allocator's "
    "reserved memory right after the passes: CUDA context, loaded kernels, library handles; "
    "process_total_gib = peak_reserved_gib + non_allocator_gib, what nvidia-smi would show at "
    "the peak. Variant 'bf16_weights' repeats it after model.to(torch.bfloat16). The same code "
    "measures every row. On a CPU (dry run) only activation_peak_gib (growth of the peak RSS) "
    "and weights_gib are measured."
)

SPEED_MODELS = (
    "transvae-t-f16d32",
    "transvae-b-f16d32",
    "transvae-l-f16d32",
    # the same TransVAE-T with channels-last weights and inputs: should the library compute in
    # channels-last on GPUs too, as it does on CPUs (models.blocks.compute_layout)?
    "transvae-t-f16d32+channels-last",
    "flux-vae-config",
    "sd-vae-config",
    "dc-ae-f32c32-config",
)
COMPILE_MODELS = ("transvae-t-f16d32", "flux-vae-config")
TRAIN_MODELS = ("transvae-t-f16d32", "cnn-vae-t-f16d32")
# Relative shares of the budget: a part may use its share of the time left when it starts,
# divided by the shares of the parts still to run (so a part's unused time passes on, and a
# rerun of one part gets the whole budget).
PART_SHARES = {"memory": 0.22, "speed": 0.24, "sdpa": 0.03, "train": 0.28, "extract": 0.07, "compile": 0.16}
PARTS = tuple(PART_SHARES)
SDPA_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


@dataclass
class Sizes:
    """Everything that differs between the real run (``full``) and ``--dry-run`` (``dry_run``)."""

    dry: bool
    memory_models: list[str]
    memory_res: int
    memory_batch: int
    speed_models: tuple[str, ...]
    tiny_peers: bool  # quarter-width diffusers peers (speed.build(tiny=True))
    speed_settings: list[tuple[int, torch.dtype, int]]  # (resolution, dtype, batch)
    speed_iters: int
    speed_warmup: int
    compile_models: tuple[str, ...]
    compile_res: int
    compile_batch: int
    compile_backend: str
    train_models: tuple[str, ...]
    train_res: int
    train_batch: int
    train_steps: int
    train_log_every: int
    run_model: str
    run_steps: int
    run_batch: int
    run_log_every: int
    run_lr: float
    run_warmup: int
    paper_loss: bool  # L1 + LPIPS + KL + VF with stand-in networks (loss_overrides), else L1 + KL
    extract_res: int
    extract_images: tuple[int, int]  # images of the small and the large extraction run
    extract_batch: int
    matmul_n: int
    matmul_reps: int

    @classmethod
    def full(cls, bf16: torch.dtype) -> Sizes:
        return cls(
            dry=False,
            memory_models=paper_variants(),
            memory_res=256,
            memory_batch=16,
            speed_models=SPEED_MODELS,
            tiny_peers=False,
            # fewer images per batch at higher resolutions (the same pixels would starve the GPU at 256)
            speed_settings=_unique(
                [(256, bf16, 16), (512, bf16, 8), (1024, bf16, 4), (256, torch.float32, 16)]
            ),
            speed_iters=3,
            speed_warmup=2,
            compile_models=COMPILE_MODELS,
            compile_res=256,
            compile_batch=16,
            compile_backend="inductor",
            train_models=TRAIN_MODELS,
            train_res=256,
            train_batch=16,
            train_steps=12,
            train_log_every=3,
            run_model="transvae-t-f16d32",
            run_steps=300,
            run_batch=16,
            run_log_every=10,
            run_lr=1e-4,  # the paper's (Appendix D), with a short warm-up
            run_warmup=50,
            paper_loss=True,
            extract_res=256,
            extract_images=(64, 1024),
            extract_batch=32,
            matmul_n=8192,
            matmul_reps=10,
        )

    @classmethod
    def dry_run(cls, bf16: torch.dtype) -> Sizes:
        return cls(
            dry=True,
            memory_models=[f"{f}-nano-f16d32" for f in PAPER_FAMILIES],
            memory_res=64,
            memory_batch=1,
            speed_models=("transvae-nano-f16d32", "transvae-nano-f16d32+channels-last") + SPEED_MODELS[4:],
            tiny_peers=True,
            speed_settings=_unique([(32, bf16, 1), (32, torch.float32, 1)]),
            speed_iters=1,
            speed_warmup=1,
            compile_models=("transvae-nano-f16d32",),
            compile_res=32,
            compile_batch=1,
            compile_backend="eager",  # traces with dynamo, compiles nothing: seconds on a CPU
            train_models=("transvae-nano-f16d32", "cnn-vae-nano-f16d32"),
            train_res=32,
            train_batch=2,
            train_steps=4,
            train_log_every=2,
            run_model="transvae-nano-f16d32",
            run_steps=16,
            run_batch=4,
            run_log_every=2,
            run_lr=1e-3,
            run_warmup=2,
            paper_loss=False,  # the stand-in loss networks would cost most of a tiny step
            extract_res=32,
            extract_images=(4, 12),
            extract_batch=4,
            matmul_n=512,
            matmul_reps=3,
        )


def _unique(settings: list) -> list:
    """Drop repeats (bf16 is fp32 on a CPU without native bf16)."""
    return list(dict.fromkeys(settings))


def paper_variants() -> list[str]:
    """The registered variants of the paper's Tables 3-6, smallest first (so that a budget cut
    drops the largest)."""
    from transvae.models import create_model
    from transvae.models.registry import get_model_entry, list_models

    names = [
        n
        for n in list_models()
        if get_model_entry(n).paper_params is not None and get_model_entry(n).family in PAPER_FAMILIES
    ]
    return sorted(names, key=lambda n: create_model(n, device="meta").num_parameters("total"))


# --- budget, items, results ----------------------------------------------------------------------


class BudgetExceeded(Exception):
    """Raised inside an item that ran past the end of its part's share of the budget."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``BudgetExceeded`` in the main thread after ``seconds`` (SIGALRM; a no-op elsewhere)."""
    usable = hasattr(signal, "setitimer") and _is_main_thread()
    if not usable or not math.isfinite(seconds):
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise BudgetExceeded(f"interrupted after its {seconds:.0f} s of budget")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def one_line(e: BaseException) -> str:
    """``"OutOfMemoryError: CUDA out of memory. Tried to ..."`` (first line, at most 300 chars)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Suite:
    """Runs items under the budget and keeps the JSON on disk up to date.

    Args:
        out: output folder (``gpu_suite.json``, ``gpu_suite.log``).
        budget_s: seconds for the whole run.
        device: where the models run.
    """

    def __init__(self, out: Path, budget_s: float, device: torch.device, parts: tuple[str, ...] = PARTS):
        self.out, self.device, self.planned = out, device, list(parts)
        self.t0 = time.monotonic()
        self.end = self.t0 + budget_s
        self.part_end = self.end
        self.results: dict = {"parts": {}}

    def left(self) -> float:
        return min(self.end, self.part_end) - time.monotonic()

    def begin_part(self, name: str, **info) -> dict:
        todo = self.planned[self.planned.index(name) :] if name in self.planned else [name]
        share = PART_SHARES[name] / sum(PART_SHARES[p] for p in todo)
        self.part_end = time.monotonic() + share * max(self.end - time.monotonic(), 0)
        part = {"status": "running", "budget_s": round(self.part_end - time.monotonic(), 1), **info}
        part.setdefault("rows", [])
        self.results["parts"][name] = part
        self._part_t0 = time.monotonic()
        log.info(
            "== %s (up to %.0f s; %.0f s left in all)", name, part["budget_s"], self.end - time.monotonic()
        )
        return part

    def end_part(self, name: str) -> None:
        part = self.results["parts"][name]
        statuses = [r["status"] for r in part["rows"]]
        if not statuses or all(s == "skipped" for s in statuses):
            part["status"] = "skipped"
        elif all(s == "ok" for s in statuses):
            part["status"] = "ok"
        elif any(s == "ok" for s in statuses):
            part["status"] = "partial"
        else:
            part["status"] = "failed"
        part["elapsed_s"] = round(time.monotonic() - self._part_t0, 1)
        self.write()

    def run(self, part: str, label: dict, estimate_s: float, fn: Callable[[], dict]) -> dict:
        """Run ``fn`` (returns the row's values) as one item of ``part`` if ``estimate_s`` fits."""
        row = {**label, "estimate_s": round(estimate_s, 1)}
        left = self.left()
        if estimate_s > left:
            row.update(
                status="skipped", reason=f"budget: needs ~{estimate_s:.0f} s, {max(left, 0):.0f} s left"
            )
            log.info("[%s] %s skipped: %s", part, _label(label), row["reason"])
        else:
            t0 = time.perf_counter()
            try:
                with deadline(left):
                    values = fn()
                row.update(values)
                row["status"] = "ok"
            except (Exception, BudgetExceeded) as e:  # noqa: BLE001 -- every failure is a result
                row["status"] = "error"
                row["error"] = one_line(e)
                log.warning("[%s] %s failed: %s", part, _label(label), row["error"])
                log.debug("%s", traceback.format_exc())
            row["elapsed_s"] = round(time.perf_counter() - t0, 2)
            free_memory(self.device)
            if row["status"] == "ok":
                log.info(
                    "[%s] %s: %s (%.1f s, estimated %.1f s)",
                    part,
                    _label(label),
                    _summary(row),
                    row["elapsed_s"],
                    estimate_s,
                )
        self.results["parts"][part]["rows"].append(row)
        self.write()
        return row

    def write(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        write_json(self.out / "gpu_suite.json", _finite_or_none(self.results))


def _label(label: dict) -> str:
    return " ".join(f"{v}" if k == "model" else f"{k}={v}" for k, v in label.items())


_SUMMARY_KEYS = (
    "peak_allocated_gib",
    "process_total_gib",
    "activation_peak_gib",
    "reconstruct_img_s",
    "backends",
    "img_per_s",
    "peak_mem_gib",
    "loss_falls",
    "marginal_img_s",
    "encode_speedup",
)


def _summary(row: dict) -> str:
    """The headline values of a row (also one level down, e.g. ``fp32_weights``), for the log."""
    parts = []
    for prefix, d in [("", row)] + [(f"{k}.", v) for k, v in row.items() if isinstance(v, dict)]:
        for k in _SUMMARY_KEYS:
            v = d.get(k)
            if v is not None:
                parts.append(f"{prefix}{k}={v:.3g}" if isinstance(v, float) else f"{prefix}{k}={v}")
    return ", ".join(parts) or "done"


def _finite_or_none(x):
    """JSON has no NaN/Inf: non-finite floats become None (and are flagged by the checks)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    return x


# --- 1. inference memory -------------------------------------------------------------------------


def measure_peak(fn: Callable[[], object], device: torch.device) -> dict:
    """Run ``fn`` once and return what it used (see ``MEMORY_METHOD``), in GiB."""
    if device.type != "cuda":
        with speed.PeakMemory(device) as pm:
            fn()
        return {"activation_peak_gib": None if pm.mb is None else pm.mb / 1024}
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    free, total = torch.cuda.mem_get_info(device)
    reserved = torch.cuda.memory_reserved(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {
        "activation_peak_gib": (peak - base) / GIB,
        "peak_allocated_gib": peak / GIB,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
        "non_allocator_gib": (total - free - reserved) / GIB,
    }


def model_memory(name: str, res: int, batch: int, dtype: torch.dtype, device: torch.device) -> dict:
    """Inference memory of one registered model, with fp32 weights and (if ``dtype`` is not fp32)
    with weights in ``dtype``; both through ``InferenceRunner`` under autocast."""
    from transvae.models import create_model

    model = create_model(name, device=device).eval()
    x = torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    row: dict = {"params_M": model.num_parameters("total") / 1e6}
    variants = [("fp32_weights", None)] + ([("bf16_weights", dtype)] if dtype != torch.float32 else [])
    for key, weight_dtype in variants:
        if weight_dtype is not None:
            model.to(weight_dtype)
        row[key] = _memory_variant(model, x, dtype, device)
        free_memory(device)
    return row


def _memory_variant(model, x: torch.Tensor, dtype: torch.dtype, device: torch.device) -> dict:
    """One warm-up reconstruction, then the measured encode and decode (``MEMORY_METHOD``)."""
    from transvae.inference import InferenceRunner

    runner = InferenceRunner(model, dtype=dtype)
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    runner.reconstruct(x)  # warm-up: kernels chosen, library workspaces allocated
    t0 = time.perf_counter()
    held = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = measure_peak(lambda: held.update(enc=runner.encode(x)), device)
        dec = measure_peak(lambda: held.update(rec=runner.decode(held["enc"].latent)), device)
    sync(device)
    seconds = time.perf_counter() - t0
    if any("out of memory" in str(w.message) for w in caught):
        # InferenceRunner retries in tiles after an OOM: that would not be a batch-16 measurement
        raise torch.OutOfMemoryError("out of memory at batch 16 (InferenceRunner fell back to tiles)")
    if not torch.isfinite(held["rec"]).all():
        raise FloatingPointError("non-finite reconstruction")
    v = {"weights_gib": weights / GIB, "pass_s": seconds, "img_per_s_one_pass": x.shape[0] / seconds}
    for k in enc:
        a, b = enc[k], dec[k]
        v[k] = None if a is None or b is None else max(a, b)
    v["encode_peak_allocated_gib"] = enc.get("peak_allocated_gib")
    v["decode_peak_allocated_gib"] = dec.get("peak_allocated_gib")
    if v.get("peak_reserved_gib") is not None:
        v["process_total_gib"] = v["peak_reserved_gib"] + v["non_allocator_gib"]
    return v


def memory_estimate(
    name: str, res: int, batch: int, rate: float, device: torch.device
) -> tuple[float, float]:
    """(seconds to build ``name`` and run its 2 x 2 passes (see ``model_memory``), GFLOP per image)."""
    from transvae.models import create_model

    params = create_model(name, device="meta").num_parameters("total")
    gflop = sum(speed.flops_per_image(name, res))
    build = (1.0 + 1.0 * params / 1e9) if device.type == "cuda" else (0.2 + 20 * params / 1e9)
    return build + 2 * 2 * gflop * batch / rate + (2.0 if device.type == "cuda" else 0.1), gflop


def part_memory(suite: Suite, sz: Sizes, dtype: torch.dtype, rate: float) -> None:
    suite.begin_part(
        "memory",
        method=MEMORY_METHOD,
        paper_source=PAPER_MEM_SOURCE,
        resolution=sz.memory_res,
        batch_size=sz.memory_batch,
        dtype=_dname(dtype),
    )
    for name in sz.memory_models:
        est, gflop = memory_estimate(name, sz.memory_res, sz.memory_batch, rate, suite.device)
        row = suite.run(
            "memory",
            {"model": name},
            est,
            lambda name=name: model_memory(name, sz.memory_res, sz.memory_batch, dtype, suite.device),
        )
        row["paper_infer_mem_gib"] = PAPER_MEM_GIB.get(name)
        row["gflop_per_img"] = gflop
    suite.end_part("memory")


# --- 2. speed, attention kernels, torch.compile ----------------------------------------------------


def _dname(dtype: torch.dtype) -> str:
    return {v: k for k, v in speed.DTYPES.items()}[dtype]


DTYPE_OF = speed.DTYPES


def part_speed(suite: Suite, sz: Sizes, peaks: dict, rates: dict) -> list[speed.Bench]:
    part = suite.begin_part(
        "speed",
        method=(
            "speed.measure_inference: per setting all models interleaved pass by pass (rotating "
            "order), first pass measures memory (allocator peak above the weights), median of the "
            f"timed passes; {sz.speed_warmup} untimed + {sz.speed_iters} timed passes. GFLOP per "
            "image counted on the meta device (attention through its matmuls); achieved = GFLOP x "
            "img/s; fraction_of_matmul_peak against an n x n matmul of the same dtype measured at "
            "the start and the end of this run, the better of the two (machine.matmul_peak_gflops)."
        ),
        models=list(sz.speed_models),
    )
    benches, flops = [], {}
    for name in sz.speed_models:
        try:
            benches.append(speed.build(name, suite.device, sz.tiny_peers))
        except Exception as e:  # noqa: BLE001 -- e.g. a diffusers without AutoencoderDC
            part.setdefault("build_errors", {})[name] = one_line(e)
            log.warning("[speed] cannot build %s: %s", name, one_line(e))
    for res, dtype, batch in sz.speed_settings:
        for b in benches:
            if (b.name, res) not in flops:
                flops[(b.name, res)] = speed.flops_per_image(b.name, res, sz.tiny_peers)
        gflop = sum(sum(flops[(b.name, res)]) for b in benches)
        passes = sz.speed_warmup + sz.speed_iters
        est = passes * gflop * batch / rates[dtype] + (
            3.0 * len(benches) if suite.device.type == "cuda" else 0.5
        )
        label = {"resolution": res, "dtype": _dname(dtype), "batch_size": batch}

        def go(res=res, dtype=dtype, batch=batch):
            m = speed.measure_inference(
                benches, res, dtype, suite.device, batch, sz.speed_iters, sz.speed_warmup, False
            )
            models = {}
            for b in benches:
                enc_gf, dec_gf = flops[(b.name, res)]
                r = dict(params_M=b.params / 1e6, **m[b.name])
                r["gflop_per_img"] = enc_gf + dec_gf
                r["achieved_tflops"] = r["gflop_per_img"] * r["reconstruct_img_s"] / 1e3
                r["fraction_of_matmul_peak"] = r["achieved_tflops"] * 1e3 / peaks[dtype]
                models[b.name] = r
            ref = models.get("flux-vae-config")
            for r in models.values():
                r["reconstruct_vs_flux"] = r["reconstruct_img_s"] / ref["reconstruct_img_s"] if ref else None
            return {"models": models}

        suite.run("speed", label, est, go)
    suite.end_part("speed")
    return benches


def sdpa_backends(b: speed.Bench, x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> dict:
    """Which SDPA implementations one encode + decode pass of ``b`` called (profiler op names),
    the attention kernels' GPU time, and whether the pass runs with the math fallback forbidden."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    speed.timed_pass(b, x, device, dtype)  # warm-up
    with profile(activities=acts) as prof:
        speed.timed_pass(b, x, device, dtype)
    backends: dict[str, int] = {}
    kernels = []
    for e in prof.key_averages():
        if e.key in SDPA_OPS:
            backends[SDPA_OPS[e.key]] = backends.get(SDPA_OPS[e.key], 0) + e.count
        dev_us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        low = e.key.lower()
        if dev_us and any(k in low for k in ("flash", "fmha", "attention", "attn", "sdpa")):
            kernels.append({"kernel": e.key[:160], "calls": e.count, "gpu_ms": dev_us / 1e3})
    kernels.sort(key=lambda k: -k["gpu_ms"])
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        fused.append(SDPBackend.CUDNN_ATTENTION)
    try:
        with sdpa_kernel(fused):
            speed.timed_pass(b, x, device, dtype)
        fused_only = "ok"
    except RuntimeError as e:
        fused_only = one_line(e)
    return {
        "backends": backends,
        "math_fallback_used": backends.get("math", 0) > 0,
        "runs_without_math": fused_only == "ok",
        "without_math_error": None if fused_only == "ok" else fused_only,
        "attention_kernels": kernels[:6],
    }


def part_sdpa(suite: Suite, sz: Sizes, benches: list[speed.Bench], dtype: torch.dtype, rates: dict) -> None:
    res, _, batch = sz.speed_settings[0]
    suite.begin_part(
        "sdpa",
        method=(
            "torch.profiler over one encode + decode pass: counts of the aten SDPA implementations "
            "(_scaled_dot_product_{flash,efficient,cudnn}_attention, _attention_math) and the GPU "
            "time of attention kernels; then the same pass under torch.nn.attention.sdpa_kernel "
            "without the MATH backend (runs_without_math)."
        ),
        resolution=res,
        batch_size=batch,
        dtype=_dname(dtype),
    )
    x = torch.rand(batch, 3, res, res, device=suite.device) * 2 - 1
    for b in benches:
        gflop = sum(speed.flops_per_image(b.name, res, sz.tiny_peers))
        est = 4 * gflop * batch / rates[dtype] + (2.0 if suite.device.type == "cuda" else 0.3)
        suite.run("sdpa", {"model": b.name}, est, lambda b=b: sdpa_backends(b, x, suite.device, dtype))
    suite.end_part("sdpa")


def part_compile(suite: Suite, sz: Sizes, dtype: torch.dtype, rates: dict) -> None:
    suite.begin_part(
        "compile",
        method=(
            "speed.measure_compile: encode and decode wrapped in torch.compile separately; "
            "compile_s = first compiled pass; eager and compiled passes interleaved, median speed-up."
        ),
        backend=sz.compile_backend,
        resolution=sz.compile_res,
        batch_size=sz.compile_batch,
        dtype=_dname(dtype),
    )
    for name in sz.compile_models:
        gflop = sum(speed.flops_per_image(name, sz.compile_res, sz.tiny_peers))
        compile_s = 60.0 if sz.compile_backend == "inductor" else 5.0
        est = compile_s + 12 * gflop * sz.compile_batch / rates[dtype]

        def go(name=name):
            b = speed.build(name, suite.device, sz.tiny_peers)
            return speed.measure_compile(
                b,
                sz.compile_res,
                dtype,
                suite.device,
                sz.compile_batch,
                sz.speed_iters,
                backend=sz.compile_backend,
            )

        suite.run("compile", {"model": name}, est, go)
    suite.end_part("compile")


# --- 3. training -------------------------------------------------------------------------------------


def loss_overrides(sz: Sizes) -> tuple[dict, str]:
    """Stage-1 loss terms: the paper's (L1 + LPIPS-VGG16 + KL + VF-DINOv2) with randomly
    initialised LPIPS / DINOv2 stand-ins (nothing to download; the same FLOPs as the pretrained
    networks), LPIPS dropped when its package is missing; a dry run uses L1 + KL only."""
    o = {"loss.gan_weight": 0.0}
    if not sz.paper_loss:
        o.update({"loss.lpips_weight": 0.0, "loss.vf_weight": 0.0})
        return o, "L1 + KL (dry run)"
    o["loss.pretrained"] = False
    try:
        import lpips  # noqa: F401
    except ImportError:
        o["loss.lpips_weight"] = 0.0
        return o, "L1 + KL + VF (lpips package missing: no LPIPS; DINOv2 stand-in with random weights)"
    return o, "L1 + LPIPS + KL + VF (LPIPS-VGG16 and DINOv2 stand-ins with random weights)"


def train_once(
    suite: Suite,
    sz: Sizes,
    name: str,
    data_dir: Path,
    run_dir: Path,
    steps: int,
    batch: int,
    log_every: int,
    precision: str,
    checkpointing: bool,
    lr: float = 1e-4,
    warmup: int = 1000,
) -> dict:
    """One ``Trainer.fit`` (stage 1) on ``data_dir``; returns throughput, memory and the loss curve."""
    from transvae.training import Trainer, build_config

    loss_o, terms = loss_overrides(sz)
    workers = 0 if sz.dry else min(8, max(1, (os.cpu_count() or 2) // 2))
    cfg = build_config(
        overrides={
            "model.name": name,
            "model.gradient_checkpointing": checkpointing,
            "data.train": [str(data_dir)],
            "data.resolution": sz.train_res,
            "data.num_workers": workers,
            "train.batch_size": batch,
            "train.max_steps": steps,
            "train.precision": precision,
            "train.device": str(suite.device),
            "train.checkpoint_every": 10**9,
            "optim.lr": lr,
            "optim.warmup_steps": warmup,
            "log.every": log_every,
            "log.image_every": 10**9,
            "log.val_every": 10**9,
            "log.tensorboard": False,
            "log.progress": False,
            **loss_o,
        }
    )
    if run_dir.exists():
        shutil.rmtree(run_dir)
    holder = {}

    def fit():
        trainer = Trainer(cfg, run_dir)
        holder["summary"] = trainer.fit()
        holder["params"] = sum(p.numel() for p in trainer.model.parameters())

    mem = measure_peak(fit, suite.device)
    summary = holder["summary"]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in logged if "train/img_per_s" in r]
    rates = [r["train/img_per_s"] for r in logged[1:]] or [r["train/img_per_s"] for r in logged]
    curve = [
        {
            "step": r["step"],
            "total": r.get("loss/total"),
            "l1": r.get("loss/l1"),
            "img_per_s": r["train/img_per_s"],
        }
        for r in logged
    ]
    return {
        "status_of_fit": summary["status"],
        "steps": summary["step"],
        "nonfinite_steps": summary["nonfinite_steps"],
        "params_M": holder["params"] / 1e6,
        "img_per_s": statistics.median(rates) if rates else None,
        "img_per_s_windows": [round(r, 3) for r in rates],
        "peak_mem_gib": mem.get("peak_allocated_gib", mem.get("activation_peak_gib")),
        "activation_peak_gib": mem["activation_peak_gib"],
        "loss_terms": terms,
        "curve": curve,
    }


def train_estimate(name: str, res: int, batch: int, steps: int, rate: float, sz: Sizes, device) -> float:
    """Trainer construction (model, stand-in loss networks) plus ``steps`` steps at 3x forward FLOPs."""
    gflop = sum(speed.flops_per_image(name, res))
    setup = 15.0 if device.type == "cuda" else 2.5
    return setup + steps * 3 * gflop * batch / rate


def part_train(
    suite: Suite, sz: Sizes, data_dir: Path, work: Path, dtype: torch.dtype, rate: float
) -> Path | None:
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    suite.begin_part(
        "train",
        method=(
            "transvae.training.Trainer.fit (stage 1, no validation set) on the photo folder; "
            "img_per_s = median of the trainer's own train/img_per_s windows (every log.every "
            "steps; the first window, with warm-up, dropped); peak memory = allocator peak over "
            "the Trainer's construction and fit (weights, AdamW state, EMA, loss networks, "
            "activations). The run's loss_falls compares the mean total loss of the first three "
            "logged windows with the last three."
        ),
        data=str(data_dir),
        resolution=sz.train_res,
        precision=precision,
    )
    for name in sz.train_models:
        for ckpt in (False, True):
            est = train_estimate(name, sz.train_res, sz.train_batch, sz.train_steps, rate, sz, suite.device)
            suite.run(
                "train",
                {
                    "model": name,
                    "kind": "steps",
                    "gradient_checkpointing": ckpt,
                    "batch_size": sz.train_batch,
                },
                est * (1.3 if ckpt else 1.0),
                lambda name=name, ckpt=ckpt: train_once(
                    suite,
                    sz,
                    name,
                    data_dir,
                    work / f"train_{name}_{int(ckpt)}",
                    sz.train_steps,
                    sz.train_batch,
                    sz.train_log_every,
                    precision,
                    ckpt,
                ),
            )
            shutil.rmtree(work / f"train_{name}_{int(ckpt)}", ignore_errors=True)
    run_dir = work / "train_run"
    est = train_estimate(sz.run_model, sz.train_res, sz.run_batch, sz.run_steps, rate, sz, suite.device)

    def long_run():
        r = train_once(
            suite,
            sz,
            sz.run_model,
            data_dir,
            run_dir,
            sz.run_steps,
            sz.run_batch,
            sz.run_log_every,
            precision,
            False,
            lr=sz.run_lr,
            warmup=sz.run_warmup,
        )
        totals = [c["total"] for c in r["curve"]]
        finite = all(v is not None and math.isfinite(v) for v in totals)
        k = max(1, min(3, len(totals) // 2))
        first, last = statistics.fmean(totals[:k]), statistics.fmean(totals[-k:])
        r.update(
            loss_first=first,
            loss_last=last,
            loss_falls=bool(finite and last < first),
            all_logged_losses_finite=finite,
            lr=sz.run_lr,
            warmup_steps=sz.run_warmup,
        )
        return r

    row = suite.run(
        "train",
        {"model": sz.run_model, "kind": "run", "steps": sz.run_steps, "batch_size": sz.run_batch},
        est,
        long_run,
    )
    suite.end_part("train")
    return run_dir / "model" if row["status"] == "ok" else None


# --- 4. extraction -------------------------------------------------------------------------------------


def replicate_images(src: list[Path], n: int, dest: Path) -> Path:
    """``n`` image files in ``dest`` (copies of ``src``, cycled)."""
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = src[i % len(src)]
        shutil.copyfile(s, dest / f"img_{i:05d}{s.suffix.lower()}")
    return dest


def run_extract_cli(
    folder: Path, model_dir: Path, out: Path, sz: Sizes, device: torch.device, dtype, timeout: float
) -> dict:
    """``python -m transvae.cli extract-latents`` in a subprocess; wall-clock seconds and counts."""
    workers = 0 if sz.dry else min(8, max(1, (os.cpu_count() or 2) // 2))
    cmd = [
        sys.executable,
        "-m",
        "transvae.cli",
        "extract-latents",
        str(folder),
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--resolution",
        str(sz.extract_res),
        "--dtype",
        _dname(dtype),
        "--batch-size",
        str(sz.extract_batch),
        "--num-workers",
        str(workers),
        "--device",
        str(device),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    if device.type == "cpu":
        env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(timeout, 1.0))
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"extract-latents exited with {p.returncode}: {' | '.join(tail)}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"seconds": seconds, "num_latents": manifest["num_latents"], "command": " ".join(cmd[1:])}


def part_extract(
    suite: Suite, sz: Sizes, data_dir: Path, model_dir: Path | None, work: Path, dtype, rate: float
) -> None:
    from transvae.data.io import list_images

    suite.begin_part(
        "extract",
        method=(
            "The real CLI (python -m transvae.cli extract-latents, default flip: two encodes per "
            "image) on n copies of the photos, run twice (small and large n); end_to_end_img_s = "
            "n / wall-clock of the whole process (start-up, model load, JPEG decode, encode, "
            "shard writing); marginal_img_s = (n_large - n_small) / (t_large - t_small), the "
            "steady-state rate without the fixed start-up."
        ),
        resolution=sz.extract_res,
        dtype=_dname(dtype),
        batch_size=sz.extract_batch,
    )

    def go():
        model_ref, model_note = model_dir, "the 300-step training run's exported model"
        if model_ref is None or not (model_ref / "config.json").is_file():
            from transvae.models import create_model

            model_ref = work / "extract_model"
            create_model(sz.run_model).save_pretrained(model_ref)
            model_note = "random weights (the training run did not finish)"
        src = list_images(data_dir)
        runs = []
        for n in sz.extract_images:
            folder = replicate_images(src, n, work / f"extract_src_{n}")
            r = run_extract_cli(
                folder, model_ref, work / f"extract_out_{n}", sz, suite.device, dtype, suite.left()
            )
            if r["num_latents"] != n:
                raise RuntimeError(f"extract-latents wrote {r['num_latents']} latents for {n} images")
            r.update(images=n, end_to_end_img_s=n / r["seconds"])
            runs.append(r)
        (a, b) = runs[0], runs[-1]
        dt = b["seconds"] - a["seconds"]
        return {
            "model": sz.run_model,
            "model_weights": model_note,
            "runs": runs,
            "end_to_end_img_s": b["end_to_end_img_s"],
            "marginal_img_s": (b["images"] - a["images"]) / dt if dt > 0 else None,
        }

    n_total = sum(sz.extract_images)
    gflop = speed.flops_per_image(sz.run_model, sz.extract_res)[0]
    est = 2 * (12.0 if suite.device.type == "cuda" else 3.0) + 2 * n_total * gflop / rate + 0.01 * n_total
    suite.run("extract", {"model": sz.run_model}, est, go)
    suite.end_part("extract")


# --- checks against the targets ------------------------------------------------------------


def checks(results: dict) -> dict:
    """The issue's performance targets, evaluated on what was measured (None: not measured)."""
    parts = results["parts"]
    out: dict = {}
    speed_rows = [r for r in parts.get("speed", {}).get("rows", []) if r["status"] == "ok"]
    first = speed_rows[0] if speed_rows else None
    ratio = None
    if first is not None:
        t = first["models"].get("transvae-t-f16d32") or next(iter(first["models"].values()))
        ratio = t.get("reconstruct_vs_flux")
    out["transvae_t_reconstruct_vs_flux"] = {
        "setting": None if first is None else {k: first[k] for k in ("resolution", "dtype", "batch_size")},
        "value": ratio,
        "target": ">= 2",
        "met": None if ratio is None else ratio >= 2,
    }
    mem = {}
    for r in parts.get("memory", {}).get("rows", []):
        paper = r.get("paper_infer_mem_gib")
        if r["status"] != "ok" or paper is None or not r["model"].startswith("transvae"):
            continue
        for variant in ("fp32_weights", "bf16_weights"):
            total = r.get(variant, {}).get("process_total_gib")
            if total is not None:
                mem.setdefault(variant, {})[r["model"]] = {
                    "measured": total,
                    "paper": paper,
                    "met": total <= paper,
                }
    out["transvae_memory_within_paper"] = {
        "measure": "process_total_gib (allocator peak reserved + context) <= the paper's column",
        **{v: {"rows": rows, "met": all(x["met"] for x in rows.values())} for v, rows in mem.items()},
        "met": None if "fp32_weights" not in mem else all(x["met"] for x in mem["fp32_weights"].values()),
    }
    attn = {
        r["model"]: r["backends"]
        for r in parts.get("sdpa", {}).get("rows", [])
        if r["status"] == "ok" and r["model"].startswith("transvae")
    }
    out["transvae_attention_fused"] = {
        "backends": attn,
        "met": None if not attn else all(b and "math" not in b for b in attn.values()),
    }
    run = next((r for r in parts.get("train", {}).get("rows", []) if r.get("kind") == "run"), None)
    ok = run is not None and run["status"] == "ok"
    out["train_run_loss_falls_no_nonfinite"] = {
        "met": None if not ok else bool(run["loss_falls"] and run["nonfinite_steps"] == 0),
    }
    return out


# --- data, preparation, main ------------------------------------------------------------------------


def photo_folder(data: Path | None, work: Path) -> tuple[Path, str]:
    """``--data`` if it holds images, else scikit-image's photos written by the quick start's
    ``prepare_data`` (nothing downloaded)."""
    from transvae.data.io import list_images

    if data is not None:
        try:
            if list_images(data):
                return data, f"--data {data}"
        except (FileNotFoundError, OSError):
            pass
        log.warning("no images under --data %s: using scikit-image's photos", data)
    from transvae.cli.quickstart import prepare_data

    train, _ = prepare_data(work / "photos", 256)
    return train, "scikit-image's bundled photos (transvae quickstart's prepare_data at 256 px)"


# what the GPU machine's image lacks of the suite's needs (its other requirements are there;
# diffusers reads versions through the standard library's importlib.metadata on Python >= 3.8)
PREPARE_PACKAGES = ("diffusers", "lpips")


def prepare(dest: Path, data: Path | None) -> None:
    """Wheels the GPU machine lacks (same versions as here) and a copy of the photos, in ``dest``."""
    from importlib.metadata import version

    whl = dest / "whl"
    whl.mkdir(parents=True, exist_ok=True)
    pins = [f"{p}=={version(p)}" for p in PREPARE_PACKAGES]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "manylinux2014_x86_64",
        "-d",
        str(whl),
        *pins,
    ]
    print("+", " ".join(cmd))
    subprocess.run(cmd, check=True)
    if data is not None:
        target = dest / "photos"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(data, target)
        print(f"copied {data} -> {target}")
    print(f"prepared {dest}; carry it (a folder ignored by git) in the device run (docs/benchmarks.md, GPU)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="output folder: gpu_suite.json and gpu_suite.log")
    p.add_argument("--data", type=Path, default=None, help="photo folder for training and extraction")
    p.add_argument(
        "--budget-s", type=float, default=None, help="seconds for the whole run (default 420; dry run 1800)"
    )
    p.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default all)"
    )
    p.add_argument("--dry-run", action="store_true", help="every part at tiny sizes (CI; a CPU is enough)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available) | cuda | cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (dry run on a CPU: 1)")
    p.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    p.add_argument(
        "--prepare", type=Path, default=None, help="download wheels + copy --data into this folder, exit"
    )
    args = p.parse_args(argv)
    if args.prepare is not None:
        prepare(args.prepare, args.data)
        return 0
    if args.out is None:
        p.error("--out is required")
    if args.budget_s is None:
        args.budget_s = 1800.0 if args.dry_run else 420.0
    args.out.mkdir(parents=True, exist_ok=True)
    _setup_logging(args.out / "gpu_suite.log")
    device = resolve_device(args.device)
    if args.threads or (args.dry_run and device.type == "cpu"):
        torch.set_num_threads(args.threads or 1)  # a shared CPU: no OpenMP spin-waiting on busy cores
    if device.type == "cpu" and not args.dry_run:
        log.warning("no CUDA device: the full-size suite on a CPU would take hours; use --dry-run")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_suite_"))
    work.mkdir(parents=True, exist_ok=True)
    args.command = "python benchmarks/gpu_suite.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        run_suite(args, device, work)
    finally:
        if not args.keep_work and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def run_suite(args: argparse.Namespace, device: torch.device, work: Path) -> dict:
    suite = Suite(args.out, args.budget_s, device, tuple(p for p in PARTS if p in args.parts))
    bf16 = torch.bfloat16
    machine = machine_info(device)
    if device.type == "cpu" and not speed.cpu_has_native_bf16():
        bf16 = torch.float32  # reference bf16 kernels: minutes per pass (docs/benchmarks.md)
        machine["dtype_substituted"] = "bf16 -> fp32 (this CPU has no native bf16)"
    sz = Sizes.dry_run(bf16) if args.dry_run else Sizes.full(bf16)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        machine.update(
            gpu_memory_gib=props.total_memory / GIB,
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_multiprocessors=props.multi_processor_count,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    suite.results.update(
        suite="gpu_suite",
        command=args.command,
        dry_run=args.dry_run,
        budget_s=args.budget_s,
        machine=machine,
    )
    dtypes = list(dict.fromkeys([bf16, torch.float32]))
    peaks = {d: speed.matmul_peak_gflops(device, d, sz.matmul_n, sz.matmul_reps) for d in dtypes}
    machine["matmul_n"] = sz.matmul_n
    # estimates assume a fraction of the matmul rate: a quarter for inference, a sixth for training
    # (on a CPU bf16 convolutions are far from the AMX matmul rate: the fp32 rate for both)
    rates = {d: 0.25 * peaks[d if device.type == "cuda" else torch.float32] for d in dtypes}
    log.info(
        "device %s, matmul peak %s, budget %.0f s%s",
        machine.get("gpu", machine["cpu"]),
        ", ".join(f"{_dname(d)} {v / 1e3:.1f} TFLOP/s" for d, v in peaks.items()),
        args.budget_s,
        " (dry run)" if args.dry_run else "",
    )
    suite.write()
    data_dir, data_note = photo_folder(args.data, work)
    suite.results["data"] = data_note

    if "memory" in args.parts:
        part_memory(suite, sz, bf16, rates[bf16])
    benches = []
    if "speed" in args.parts or "sdpa" in args.parts:
        if "speed" in args.parts:
            benches = part_speed(suite, sz, peaks, rates)
        else:
            benches = [speed.build(n, device, sz.tiny_peers) for n in sz.speed_models]
        if "sdpa" in args.parts:
            part_sdpa(suite, sz, benches, bf16, rates)
    benches.clear()
    free_memory(device)
    model_dir = None
    if "train" in args.parts:
        model_dir = part_train(suite, sz, data_dir, work, bf16, rates[bf16] * 2 / 3)
    if "extract" in args.parts:
        part_extract(suite, sz, data_dir, model_dir, work, bf16, rates[bf16])
    if "compile" in args.parts:
        part_compile(suite, sz, bf16, rates)
    # the matmul again at the end: the better of the two is the machine's rate during the run
    peaks = {
        d: max(peaks[d], speed.matmul_peak_gflops(device, d, sz.matmul_n, sz.matmul_reps)) for d in dtypes
    }
    machine["matmul_peak_gflops"] = {_dname(d): v for d, v in peaks.items()}
    for row in suite.results["parts"].get("speed", {}).get("rows", []):
        for r in row.get("models", {}).values():
            r["fraction_of_matmul_peak"] = r["achieved_tflops"] * 1e3 / peaks[DTYPE_OF[row["dtype"]]]
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    suite.results["checks"] = checks(suite.results)
    suite.write()
    log.info("checks: %s", json.dumps(_finite_or_none(suite.results["checks"]), default=str))
    log.info("wrote %s (%.0f s)", args.out / "gpu_suite.json", time.monotonic() - suite.t0)
    return suite.results


def _setup_logging(path: Path) -> None:
    log.setLevel(logging.DEBUG)
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    fh = logging.FileHandler(path, mode="w")
    fh.setFormatter(fmt)
    fh.setLevel(logging.DEBUG)
    sh = logging.StreamHandler(sys.stdout)
    sh.setFormatter(fmt)
    sh.setLevel(logging.INFO)
    log.addHandler(fh)
    log.addHandler(sh)
    log.propagate = False


if __name__ == "__main__":
    sys.exit(main())
