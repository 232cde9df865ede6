"""Measuring autoencoders: speed of several models side by side, ``torch.compile``, memory, kernels.

    from transvae.inference.benchmarking import measure_inference
    from transvae.inference.peers import build_autoencoder
    models = [build_autoencoder(n) for n in ("transvae-t-f16d32", "flux-vae-config")]
    measure_inference(models, 256, torch.float32, torch.device("cpu"), batch=1, iters=5, warmup=1)

- ``measure_inference``: the models run interleaved, one encode + decode pass each in rotating
  order (background load hits them alike), medians of the timed passes; the first pass is
  untimed and measures peak memory (``utils.peak_memory``).
- ``clock("thread")`` times by this thread's CPU time instead of wall-clock: robust to other jobs
  time-slicing the same cores (single-threaded CPU runs only).
- ``measure_compile`` (eager vs ``torch.compile``, interleaved), ``profile_table``
  (``torch.profiler``), ``stage_breakdown`` (time and FLOPs per encoder/decoder stage),
  ``sdpa_backends`` (which attention kernel ran), ``inference_memory`` (the GPU suite's method
  through ``InferenceRunner``; ``model_memory`` for a registered model), ``matmul_peak_gflops``
  (the yardstick), ``benchmark`` (one model), ``extract_throughput`` (``transvae extract-latents``).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..models.base import AutoencoderBase
from ..utils.peak_memory import PeakMemory, measure_peak
from .peers import AutoencoderHandle, build_autoencoder
from .runner import InferenceRunner

__all__ = [
    "DTYPES", "benchmark", "bf16_conv_slowdown", "clock", "dtype_name", "extract_throughput", "inference_memory",
    "matmul_peak_gflops", "measure_compile", "measure_inference", "model_memory", "profile_table", "sdpa_backends",
    "speed_records", "stage_breakdown", "timed_pass",
]  # fmt: skip

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
Clock = Callable[[], float]
GIB = 2**30


def clock(name: str = "wall") -> Clock:
    """``"wall"`` (``time.perf_counter``) or ``"thread"`` (``time.thread_time``: this thread's
    CPU time; refused unless torch runs one thread, whose work it would otherwise miss)."""
    if name == "thread" and torch.get_num_threads() != 1:
        raise ValueError("the thread clock measures one thread's CPU time: set torch's threads to 1")
    return {"wall": time.perf_counter, "thread": time.thread_time}[name]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pass(
    h: AutoencoderHandle,
    x: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    tick: Clock = time.perf_counter,
) -> tuple[float, float]:
    """One encode + decode pass of ``h`` (autocast to ``dtype`` unless fp32): (encode s, decode s)."""
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        _sync(device)
        t0 = tick()
        z = h.encode(x)
        _sync(device)
        t1 = tick()
        h.decode(z)
        _sync(device)
        t2 = tick()
    return t1 - t0, t2 - t1


def measure_inference(
    handles: list[AutoencoderHandle], res: int, dtype: torch.dtype, device: torch.device, batch: int,
    iters: int, warmup: int = 1, channels_last: bool = False, tick: Clock = time.perf_counter,
) -> dict[str, dict[str, float | None]]:  # fmt: skip
    """Interleave the models pass by pass on random ``batch`` x 3 x ``res`` x ``res`` images.

    Returns:
        per model name: ``encode_img_s``, ``decode_img_s``, ``reconstruct_img_s`` (images per
        second of the median pass segments / whole pass) and ``peak_mem_mb`` (first pass).
    """
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times: dict[str, list[tuple[float, float]]] = {h.name: [] for h in handles}
    mem = {}
    for it in range(warmup + iters):
        for h in handles[it % len(handles) :] + handles[: it % len(handles)]:  # rotate who goes first
            if it == 0:
                with PeakMemory(device) as pm:
                    timed_pass(h, x, device, dtype, tick)
                mem[h.name] = pm.mb
            elif it >= warmup:
                times[h.name].append(timed_pass(h, x, device, dtype, tick))
            else:
                timed_pass(h, x, device, dtype, tick)
    return {
        name: dict(
            encode_img_s=batch / statistics.median(t[0] for t in ts),
            decode_img_s=batch / statistics.median(t[1] for t in ts),
            reconstruct_img_s=batch / statistics.median(t[0] + t[1] for t in ts),
            peak_mem_mb=mem[name],
        )
        for name, ts in times.items()
    }


def speed_records(
    handles: list[AutoencoderHandle], res: int, dtype: torch.dtype, device: torch.device, batch: int, iters: int,
    warmup: int = 1, channels_last: bool = False, tick: Clock = time.perf_counter, tiny: bool = False,
) -> dict[str, dict]:  # fmt: skip
    """``measure_inference`` plus what explains it: parameters, GFLOP per image (encode, decode;
    meta device, ``tiny`` as for ``build_autoencoder``) and the achieved GFLOP/s of the whole pass."""
    from .peers import autoencoder_handle_flops

    m = measure_inference(handles, res, dtype, device, batch, iters, warmup, channels_last, tick)
    out = {}
    for h in handles:
        enc, dec = autoencoder_handle_flops(h.name, res, tiny)
        r = dict(params_M=h.params / 1e6, **m[h.name], encode_gflop_per_img=enc, decode_gflop_per_img=dec)
        out[h.name] = dict(r, gflop_per_img=enc + dec, achieved_gflops=(enc + dec) * r["reconstruct_img_s"])
    return out


def measure_compile(
    h: AutoencoderHandle, res: int, dtype: torch.dtype, device: torch.device, batch: int, iters: int,
    backend: str = "inductor",
) -> dict:  # fmt: skip
    """Eager vs ``torch.compile``d encode and decode (compiled separately), interleaved.

    Returns:
        ``compile_s`` (the first compiled pass), ``encode_speedup`` and ``decode_speedup``
        (median eager time / median compiled time). ``backend="eager"`` only traces (dry runs).
    """
    compiled = AutoencoderHandle(h.name, h.module, h.api, h.channels_last)
    compiled.encode = torch.compile(h.encode, backend=backend)
    compiled.decode = torch.compile(h.decode, backend=backend)
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    t0 = time.perf_counter()
    timed_pass(compiled, x, device, dtype)  # compiles
    compile_s = time.perf_counter() - t0
    ts: dict[str, list[tuple[float, float]]] = {"eager": [], "compiled": []}
    for it in range(iters + 1):
        pair = [("eager", h), ("compiled", compiled)]
        for key, hh in pair if it % 2 else pair[::-1]:
            r = timed_pass(hh, x, device, dtype)
            if it:
                ts[key].append(r)
    med = {k: [statistics.median(t[i] for t in v) for i in (0, 1)] for k, v in ts.items()}
    return dict(
        model=h.name, resolution=res, dtype={v: k for k, v in DTYPES.items()}[dtype], backend=backend,
        compile_s=compile_s, encode_speedup=med["eager"][0] / med["compiled"][0],
        decode_speedup=med["eager"][1] / med["compiled"][1],
    )  # fmt: skip


def matmul_peak_gflops(
    device: torch.device, dtype: torch.dtype, n: int, reps: int = 3, tick: Clock = time.perf_counter
) -> float:
    """Best-of-``reps`` GFLOP/s of an n x n x n matmul in ``dtype``: the yardstick for achieved rates."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = tick()
        torch.mm(a, b)
        _sync(device)
        best = min(best, tick() - t0)
    return 2 * n**3 / best / 1e9


def bf16_conv_slowdown(device: torch.device) -> float:
    """Time of a small 3x3 conv under bf16 autocast divided by fp32 (best of 2 each): without
    native bf16 instructions oneDNN runs bf16 convolutions through slow reference kernels."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device)
    x = torch.randn(1, 64, 32, 32, device=device)
    best = {}
    for dt in (torch.float32, torch.bfloat16):
        with torch.no_grad(), torch.autocast(device.type, dtype=dt, enabled=dt != torch.float32):
            conv(x)
            ts = []
            for _ in range(2):
                _sync(device)
                t0 = time.perf_counter()
                conv(x)
                _sync(device)
                ts.append(time.perf_counter() - t0)
        best[dt] = min(ts)
    return best[torch.bfloat16] / best[torch.float32]


def profile_table(h: AutoencoderHandle, res: int, device: torch.device, rows: int = 15) -> str:
    """``torch.profiler`` table (by self time) of one fp32 encode + decode pass after a warm-up."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.rand(1, 3, res, res, device=device) * 2 - 1
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    timed_pass(h, x, device, torch.float32)
    with profile(activities=acts) as prof:
        timed_pass(h, x, device, torch.float32)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=55)


def _stages(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The encoder's and decoder's direct children, ModuleLists expanded (one row per stage)."""
    rows = []
    for part in ("encoder", "decoder"):
        for name, child in getattr(module, part).named_children():
            kids = enumerate(child) if isinstance(child, torch.nn.ModuleList) else [(None, child)]
            rows += [
                (f"{part}.{name}" + ("" if i is None else f".{i}"), c)
                for i, c in kids
                if not isinstance(c, torch.nn.Identity)
            ]
    return rows


def stage_breakdown(
    h: AutoencoderHandle, res: int, device: torch.device, iters: int, tick: Clock = time.perf_counter
) -> list[dict]:
    """Seconds, GFLOP and GFLOP/s of every encoder / decoder stage of a transvae model in one
    fp32 pass (median of ``iters`` passes after a warm-up), timed with forward hooks; FLOPs
    counted per module on the meta device. ``share`` is each stage's fraction of the total."""
    from ..models.flops import flops_by_module

    meta = build_autoencoder(h.name, "meta")
    meta.module.requires_grad_(False)
    with torch.no_grad():
        counts = flops_by_module(lambda: meta.decode(meta.encode(torch.empty(1, 3, res, res, device="meta"))))
    parts, start = _stages(h.module), {}
    per_pass: dict[str, list[float]] = {n: [] for n, _ in parts}

    def hooks(name: str, m: torch.nn.Module):
        def pre(*_):
            _sync(device)
            start[name] = tick()

        def post(*_):
            _sync(device)
            per_pass[name][-1] += tick() - start[name]

        return m.register_forward_pre_hook(pre), m.register_forward_hook(post)

    handles = [hk for n, m in parts for hk in hooks(n, m)]
    x = torch.rand(1, 3, res, res, device=device) * 2 - 1
    try:
        for _ in range(iters + 1):  # the first pass is warm-up
            for v in per_pass.values():
                v.append(0.0)
            timed_pass(h, x, device, torch.float32)
    finally:
        for hk in handles:
            hk.remove()
    rows = []
    for name, m in parts:
        part, rest = name.split(".", 1)
        gflop = counts.get(f"{type(getattr(meta.module, part)).__name__}.{rest}", 0.0)
        sec = statistics.median(per_pass[name][1:] or per_pass[name])
        rows.append(
            dict(
                part=name,
                module=type(m).__name__,
                seconds=sec,
                gflop=gflop,
                gflops=gflop / sec if sec else None,
            )
        )
    total = sum(r["seconds"] for r in rows) or 1.0
    return [dict(r, share=r["seconds"] / total) for r in rows]


SDPA_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


def sdpa_backends(h: AutoencoderHandle, x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> dict:
    """Which scaled-dot-product-attention implementations one pass of ``h`` called (profiler op
    names), the attention kernels' GPU time, and whether the pass runs with the math fallback
    forbidden (``torch.nn.attention.sdpa_kernel`` with the fused backends only)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    timed_pass(h, x, device, dtype)  # warm-up
    with profile(activities=acts) as prof:
        timed_pass(h, x, device, dtype)
    backends: dict[str, int] = {}
    kernels = []
    for e in prof.key_averages():
        if e.key in SDPA_OPS:
            backends[SDPA_OPS[e.key]] = backends.get(SDPA_OPS[e.key], 0) + e.count
        dev_us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if dev_us and any(k in e.key.lower() for k in ("flash", "fmha", "attention", "attn", "sdpa")):
            kernels.append({"kernel": e.key[:160], "calls": e.count, "gpu_ms": dev_us / 1e3})
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    fused += [SDPBackend.CUDNN_ATTENTION] if hasattr(SDPBackend, "CUDNN_ATTENTION") else []
    error = None
    try:
        with sdpa_kernel(fused):
            timed_pass(h, x, device, dtype)
    except RuntimeError as e:
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    return {
        "backends": backends,
        "math_fallback_used": backends.get("math", 0) > 0,
        "runs_without_math": error is None,
        "without_math_error": error,
        "attention_kernels": sorted(kernels, key=lambda k: -k["gpu_ms"])[:6],
    }


MEMORY_METHOD = (
    "Per model: one warm-up reconstruction, then encode and decode of the batch through "
    "InferenceRunner(dtype=...) (torch.autocast), each measured by utils.peak_memory.measure_peak: "
    "peak_allocated_gib = torch.cuda.max_memory_allocated (weights, input, activations); "
    "peak_reserved_gib = max_memory_reserved; non_allocator_gib = device memory in use outside the "
    "allocator (CUDA context, kernels); process_total_gib = peak_reserved_gib + non_allocator_gib, "
    "what nvidia-smi would show at the peak. On a CPU only activation_peak_gib (growth of the peak "
    "RSS) and weights_gib."
)


def inference_memory(model: AutoencoderBase, x: torch.Tensor, dtype: torch.dtype) -> dict:
    """Memory and time of one encode and one decode of ``x`` through ``InferenceRunner`` (see
    ``MEMORY_METHOD``), after a warm-up reconstruction.

    Raises:
        torch.OutOfMemoryError: the runner fell back to tiles after running out of memory (that
            would not be a measurement of the whole batch).
        FloatingPointError: a non-finite reconstruction.
    """
    runner = InferenceRunner(model, dtype=dtype)
    device = runner.device
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    runner.reconstruct(x)  # warm-up: kernels chosen, library workspaces allocated
    held, t0 = {}, time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = measure_peak(lambda: held.update(enc=runner.encode(x)), device)
        dec = measure_peak(lambda: held.update(rec=runner.decode(held["enc"].latent)), device)
    _sync(device)
    seconds = time.perf_counter() - t0
    if any("out of memory" in str(w.message) for w in caught):
        raise torch.OutOfMemoryError(
            f"out of memory at batch {x.shape[0]} (InferenceRunner fell back to tiles)"
        )
    if not torch.isfinite(held["rec"]).all():
        raise FloatingPointError("non-finite reconstruction")
    v = {"weights_gib": weights / GIB, "pass_s": seconds, "img_per_s_one_pass": x.shape[0] / seconds}
    v.update({k: None if enc[k] is None or dec[k] is None else max(enc[k], dec[k]) for k in enc})
    v["encode_peak_allocated_gib"] = enc.get("peak_allocated_gib")
    v["decode_peak_allocated_gib"] = dec.get("peak_allocated_gib")
    if v.get("peak_reserved_gib") is not None:
        v["process_total_gib"] = v["peak_reserved_gib"] + v["non_allocator_gib"]
    return v


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"`` (the inverse of ``DTYPES``)."""
    return {v: k for k, v in DTYPES.items()}[dtype]


def model_memory(name: str, res: int, batch: int, dtype: torch.dtype, device: torch.device) -> dict:
    """``inference_memory`` of the registered model ``name`` (fresh weights) on a random batch:
    ``params_M``, ``fp32_weights`` and, if ``dtype`` is not fp32, ``bf16_weights`` (weights in
    ``dtype``)."""
    from ..models import create_model

    model = create_model(name, device=device).eval()
    x = torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    row = {"params_M": model.num_parameters("total") / 1e6}
    row["fp32_weights"] = inference_memory(model, x, dtype)
    if dtype != torch.float32:
        row["bf16_weights"] = inference_memory(model.to(dtype), x, dtype)
    return row


EXTRACT_METHOD = (
    "the real CLI (extract-latents, flips: two encodes per image) on n copies of the photos, small and large n; "
    "end_to_end_img_s = n / wall-clock; marginal_img_s = (n_large - n_small) / (t_large - t_small)"
)


def extract_throughput(
    model_dir: Path, photos: list[Path], counts: tuple[int, ...], work: Path, resolution: int, dtype: torch.dtype,
    batch: int, device: torch.device, workers: int = 0, timeout: float | None = None,
) -> dict:  # fmt: skip
    """``transvae extract-latents`` in a subprocess on ``n`` copies of ``photos`` for each ``n`` of
    ``counts`` (``EXTRACT_METHOD``): per run its wall-clock ``seconds``, ``num_latents``, ``command``
    and ``end_to_end_img_s``; overall ``end_to_end_img_s`` (the largest n) and ``marginal_img_s``
    (what one more image costs, start-up excluded).

    Raises:
        RuntimeError: the command failed or wrote another number of latents.
    """
    from ..utils.process import run_cli

    runs = []
    for n in counts:
        (folder := work / f"extract_src_{n}").mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(photos[i % len(photos)] for i in range(n)):
            shutil.copyfile(f, folder / f"img_{i:05d}{f.suffix.lower()}")
        out = work / f"extract_out_{n}"
        args = ["extract-latents", str(folder), "--model", str(model_dir), "--out", str(out),
                "--resolution", str(resolution), "--dtype", dtype_name(dtype), "--batch-size", str(batch),
                "--num-workers", str(workers), "--device", str(device)]  # fmt: skip
        t0 = time.perf_counter()
        run_cli(args, threads=torch.get_num_threads() if device.type == "cpu" else None, timeout=timeout)
        seconds, got = (
            time.perf_counter() - t0,
            json.loads((out / "manifest.json").read_text())["num_latents"],
        )
        if got != n:
            raise RuntimeError(f"extract-latents wrote {got} latents for {n} images")
        runs.append({"seconds": seconds, "num_latents": got, "command": "-m transvae.cli " + " ".join(args),
                     "images": n, "end_to_end_img_s": n / seconds})  # fmt: skip
    dt, dn = runs[-1]["seconds"] - runs[0]["seconds"], runs[-1]["images"] - runs[0]["images"]
    return {
        "runs": runs,
        "end_to_end_img_s": runs[-1]["end_to_end_img_s"],
        "marginal_img_s": dn / dt if dt > 0 else None,
    }


def benchmark(
    model: AutoencoderBase, resolution: int | tuple[int, int] = 256, batch_size: int = 1,
    dtype: str | torch.dtype = "fp32", device: str | torch.device | None = None, compile: bool = False,
    warmup: int = 2, iters: int = 5, compile_kwargs: dict | None = None,
) -> dict[str, float]:  # fmt: skip
    """Time one model's encode and decode through ``InferenceRunner`` (e.g. eager vs compiled).

    Args:
        model: the autoencoder.
        resolution: image side (or (H, W)) in pixels.
        batch_size, dtype, device, compile, compile_kwargs: as for ``InferenceRunner``.
        warmup: untimed iterations (they include compilation when ``compile=True``).
        iters: timed iterations.
    Returns:
        dict with ``first_call_s`` (first encode + decode, including compilation),
        ``encode_s`` / ``decode_s`` (median seconds per batch) and ``images_per_s``.
    """
    # a benchmark measures the dtype it asks for, even where it is known to be slow
    runner = InferenceRunner(
        model, device=device, dtype=dtype, compile=compile, compile_kwargs=compile_kwargs, force_dtype=True
    )
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    x = (torch.rand(batch_size, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(
        runner.device
    )

    def timed(fn: Callable) -> tuple[float, object]:
        _sync(runner.device)
        t0 = time.perf_counter()
        out = fn()
        _sync(runner.device)
        return time.perf_counter() - t0, out

    t_first_e, enc = timed(lambda: runner.encode(x))
    t_first_d, _ = timed(lambda: runner.decode(enc.latent))
    for _ in range(max(warmup - 1, 0)):
        runner.decode(runner.encode(x).latent)
    te, td = [], []
    for _ in range(iters):
        t, enc = timed(lambda: runner.encode(x))
        te.append(t)
        t, _ = timed(lambda z=enc.latent: runner.decode(z))
        td.append(t)
    enc_s, dec_s = statistics.median_high(te), statistics.median_high(td)
    return {
        "first_call_s": t_first_e + t_first_d,
        "encode_s": enc_s,
        "decode_s": dec_s,
        "images_per_s": batch_size / (enc_s + dec_s),
    }
