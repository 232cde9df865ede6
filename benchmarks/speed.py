"""Speed, memory and FLOPs of TransVAE and its peers, side by side in one run.

Models: registered names (TransVAE variants, ``cnn-vae-*`` / ``vit-vae-*`` baselines) and
diffusers peers with random weights: ``flux-vae-config`` (FLUX.1 VAE: 16 latent channels, blocks
[128, 256, 512, 512], 2 layers per block, f8, no quant convs), ``sd-vae-config`` (SD VAE: 4
latent channels, same blocks, with quant convs), both ``AutoencoderKL``, and
``dc-ae-f32c32-config`` (DC-AE f32c32-in-1.0, ``AutoencoderDC``).

Per (resolution, dtype) all models are interleaved pass by pass (so background load hits them
alike) and the median is reported. One pass = encode (posterior mode) + decode, timed in two
segments: ``encode_img_s`` and ``decode_img_s`` come from the segments, ``reconstruct_img_s``
from the whole pass. FLOPs are counted with ``torch.utils.flop_counter`` on the meta device
(attention counted through its matmuls), and the achieved FLOP/s is compared with a large
matmul measured in the same run, per dtype. bf16 runs under ``torch.autocast``.

Peak memory: CUDA ``torch.cuda.max_memory_allocated`` above the resident weights; CPU the
growth of the process' peak resident set (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) during one pass, with glibc's malloc told to return large blocks to
the OS so freed activations do not hide later ones (Linux only; ``None`` elsewhere).

    python benchmarks/speed.py --quick
    python benchmarks/speed.py                      # all models, 256/512/1024, fp32 + bf16
    python benchmarks/speed.py --compile --models transvae-t-f16d32 --resolutions 256
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_utils import DOCS_DIR, machine_info, markdown_table, save_figure, subplots, sync, write_json

from transvae.utils.device import resolve_device

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_MODELS = (
    "transvae-t-f16d32",
    "cnn-vae-t-f16d32",
    "vit-vae-t-f16d32",
    "flux-vae-config",
    "sd-vae-config",
)
QUICK_MODELS = ("transvae-t-f16d32", "flux-vae-config")
PEER_CONFIGS = {
    # black-forest-labs/FLUX.1-dev vae/config.json
    "flux-vae-config": dict(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False),
    # CompVis/stable-diffusion-v1-4 (and SD 2.x) vae/config.json
    "sd-vae-config": dict(latent_channels=4, use_quant_conv=True, use_post_quant_conv=True),
}
# mit-han-lab DC-AE "dc-ae-f32c32-in-1.0" (efficientvit dc_ae.py ``dc_ae_f32c32``; diffusers'
# scripts/convert_dcae_to_diffusers.py ``get_ae_config``): widths [128, 256, 512, 512, 1024, 1024],
# encoder depths [0, 4, 8, 2, 2, 2], decoder [0, 5, 10, 2, 2, 2], EfficientViT (ReLU linear
# attention, no multi-scale) in the last three stages, pixel-(un)shuffle resampling.
DC_AE_CONFIGS = {
    "dc-ae-f32c32-config": dict(
        latent_channels=32,
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        encoder_layers_per_block=(0, 4, 8, 2, 2, 2),
        decoder_layers_per_block=(0, 5, 10, 2, 2, 2),
        encoder_qkv_multiscales=((),) * 6,
        decoder_qkv_multiscales=((),) * 6,
        decoder_norm_types=("batch_norm",) * 3 + ("rms_norm",) * 3,
        decoder_act_fns=("relu",) * 3 + ("silu",) * 3,
        downsample_block_type="pixel_unshuffle",
        upsample_block_type="pixel_shuffle",
    ),
}
CHANNELS_LAST = "+channels-last"
# ``tiny=True`` (dry runs of the GPU suite): the same classes and layouts at a quarter of the width
_TINY_KL_WIDTHS = (32, 32, 64, 64)
_TINY_DC_WIDTHS = (32, 32, 64, 64, 128, 128)
_COMMON_PEER = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    act_fn="silu",
    mid_block_add_attention=True,
)


# --- models -----------------------------------------------------------------------------------


class Bench:
    """A model reduced to ``encode(x) -> z`` and ``decode(z) -> image`` callables.

    ``api``: ``"transvae"`` (``encode`` returns a posterior), ``"kl"`` (diffusers
    ``AutoencoderKL``: ``.latent_dist``) or ``"dc"`` (diffusers ``AutoencoderDC``: ``.latent``).
    """

    def __init__(self, name: str, module: torch.nn.Module, api: str, channels_last: bool = False):
        self.name, self.module, self.api = name, module, api
        self.channels_last = channels_last  # inputs converted to channels-last (weights too, in build)
        self.params = sum(p.numel() for p in module.parameters())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.api == "kl":
            return self.module.encode(x).latent_dist.mode()
        if self.api == "dc":
            return self.module.encode(x).latent
        return self.module.encode(x).mode()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        if self.api in ("kl", "dc"):
            return self.module.decode(z).sample
        return self.module.decode(z)


def build(name: str, device: torch.device | str, tiny: bool = False) -> Bench:
    """Build ``name`` (registered model or peer config) with random weights on ``device``.

    ``tiny`` shrinks the diffusers peers' widths (for dry runs); registered models are unchanged.
    A name ending in ``+channels-last`` (e.g. ``transvae-t-f16d32+channels-last``) is that model
    with channels-last weights and inputs.
    """
    if name.endswith(CHANNELS_LAST):
        b = build(name.removesuffix(CHANNELS_LAST), device, tiny)
        b.module.to(memory_format=torch.channels_last)
        return Bench(name, b.module, b.api, channels_last=True)
    if name in PEER_CONFIGS:
        from diffusers import AutoencoderKL

        widths = dict(block_out_channels=_TINY_KL_WIDTHS) if tiny else {}
        with torch.device(device):
            module = AutoencoderKL(**{**_COMMON_PEER, **PEER_CONFIGS[name], **widths})
        return Bench(name, module.eval(), api="kl")
    if name in DC_AE_CONFIGS:
        from diffusers import AutoencoderDC

        widths = (
            dict(encoder_block_out_channels=_TINY_DC_WIDTHS, decoder_block_out_channels=_TINY_DC_WIDTHS)
            if tiny
            else {}
        )
        with torch.device(device):
            module = AutoencoderDC(**{**DC_AE_CONFIGS[name], **widths})
        return Bench(name, module.eval(), api="dc")
    from transvae.models import create_model

    return Bench(name, create_model(name, device=device).eval(), api="transvae")


def flops_per_image(name: str, res: int, tiny: bool = False) -> tuple[float, float]:
    """(encode, decode) GFLOP for one res x res image, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    b = build(name, "meta", tiny)
    # frozen: under no_grad the FLOP counter's module tracker trips over views of parameters
    # that require grad (ViT-VAE's learned position embedding)
    b.module.requires_grad_(False)
    x = torch.empty(1, 3, res, res, device="meta")
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            z = b.encode(x)
        enc = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            b.decode(z)
    return enc / 1e9, fc.get_total_flops() / 1e9


# --- measurement helpers ----------------------------------------------------------------------

_CLOCK = time.perf_counter


def clock() -> float:
    """The timer of every timed pass: wall-clock (default) or, with ``--clock thread``, this
    thread's CPU time, which other jobs time-slicing the same cores do not inflate (single-
    threaded CPU runs only)."""
    return _CLOCK()


def set_clock(name: str) -> None:
    """``"wall"`` (``time.perf_counter``) or ``"thread"`` (``time.thread_time``)."""
    global _CLOCK
    if name == "thread" and torch.get_num_threads() != 1:
        raise SystemExit("--clock thread measures one thread's CPU time: use it with --threads 1")
    _CLOCK = {"wall": time.perf_counter, "thread": time.thread_time}[name]


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB, fixed: big blocks go back to the OS on free
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory (MiB) used by the code inside the ``with`` block, above what was resident before."""

    def __init__(self, device: torch.device):
        self.device, self.mb = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            if _LIBC is not None:
                _LIBC.malloc_trim(0)
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
                self.base = _status_kb("VmRSS")
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.base is not None:
            peak = _status_kb("VmHWM")
            self.mb = None if peak is None else (peak - self.base) / 1024
        return False


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 3) -> float:
    """Best-of-``reps`` GFLOP/s of an n x n x n matmul in ``dtype``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = clock()
        torch.mm(a, b)
        sync(device)
        best = min(best, clock() - t0)
    return 2 * n**3 / best / 1e9


def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 matmul instructions (AVX512-BF16 or AMX); without them oneDNN
    runs bf16 convolutions through slow reference kernels."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def bf16_conv_slowdown(device: torch.device) -> float:
    """Time of a small 3x3 conv under bf16 autocast divided by fp32 (best of 2 each)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device)
    x = torch.randn(1, 64, 32, 32, device=device)
    best = {}
    for dt in (torch.float32, torch.bfloat16):
        with torch.no_grad(), torch.autocast(device.type, dtype=dt, enabled=dt != torch.float32):
            conv(x)
            ts = []
            for _ in range(2):
                sync(device)
                t0 = time.perf_counter()
                conv(x)
                sync(device)
                ts.append(time.perf_counter() - t0)
        best[dt] = min(ts)
    return best[torch.bfloat16] / best[torch.float32]


def timed_pass(b: Bench, x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """One encode + decode pass; returns (encode seconds, decode seconds)."""
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        sync(device)
        t0 = clock()
        z = b.encode(x)
        sync(device)
        t1 = clock()
        b.decode(z)
        sync(device)
        t2 = clock()
    return t1 - t0, t2 - t1


def measure_inference(
    benches: list[Bench],
    res: int,
    dtype: torch.dtype,
    device: torch.device,
    batch: int,
    iters: int,
    warmup: int,
    channels_last: bool,
) -> dict[str, dict]:
    """Interleave the models pass by pass; the first ``warmup`` passes (one of them measures memory) are not timed."""
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = {b.name: [] for b in benches}
    mem = {}
    for it in range(warmup + iters):
        order = benches[it % len(benches) :] + benches[: it % len(benches)]  # rotate who goes first
        for b in order:
            if it == 0:
                with PeakMemory(device) as pm:
                    timed_pass(b, x, device, dtype)
                mem[b.name] = pm.mb
            else:
                enc, dec = timed_pass(b, x, device, dtype)
                if it >= warmup:
                    times[b.name].append((enc, dec))
    out = {}
    for name, ts in times.items():
        enc = statistics.median(t[0] for t in ts)
        dec = statistics.median(t[1] for t in ts)
        rec = statistics.median(t[0] + t[1] for t in ts)
        out[name] = dict(
            encode_img_s=batch / enc,
            decode_img_s=batch / dec,
            reconstruct_img_s=batch / rec,
            peak_mem_mb=mem[name],
        )
    return out


def measure_train_step(
    names: list[str], res: int, device: torch.device, batch: int, iters: int
) -> dict[str, float]:
    """Seconds per image of one training step of the product's ``Trainer`` (forward, L1 + KL,
    backward, grad clipping, AdamW; no EMA, no validation), the median of ``iters`` logged steps
    after a warm-up step. The models run one after the other on random-pixel PNGs of ``res``."""
    import tempfile

    import numpy as np
    from PIL import Image

    from transvae.models import list_models
    from transvae.training import Trainer, build_config

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "images"
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(2 * batch):
            Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)).save(data / f"{i}.png")
        for n in names:
            if n not in list_models():
                print(
                    f"note: skipping {n} in the training-step benchmark: not a registered model",
                    file=sys.stderr,
                )
                continue
            cfg = build_config(
                overrides={
                    "model.name": n,
                    "data.train": [str(data)],
                    "data.resolution": res,
                    "data.num_workers": 0,
                    "loss.lpips_weight": 0.0,
                    "loss.vf_weight": 0.0,
                    "loss.gan_weight": 0.0,
                    "optim.warmup_steps": 0,
                    "train.batch_size": batch,
                    "train.max_steps": iters + 1,
                    "train.ema": False,
                    "train.device": str(device),
                    "train.checkpoint_every": 10**9,
                    "log.every": 1,
                    "log.val_every": 10**9,
                    "log.image_every": 10**9,
                    "log.grid_images": 0,
                    "log.tensorboard": False,
                    "log.progress": False,
                }
            )
            run = Path(tmp) / n
            Trainer(cfg, run).fit()
            lines = (run / "metrics.jsonl").read_text().splitlines()
            rates = [json.loads(x)["train/img_per_s"] for x in lines if "train/img_per_s" in x]
            out[n] = statistics.median(1.0 / r for r in rates[1:])  # the first step is warm-up
    return out


def measure_compile(
    b: Bench,
    res: int,
    dtype: torch.dtype,
    device: torch.device,
    batch: int,
    iters: int,
    backend: str = "inductor",
) -> dict:
    """Eager vs ``torch.compile`` encode/decode throughput for one model (interleaved).

    ``backend`` is passed to ``torch.compile`` (``"eager"`` only traces: the GPU suite's dry run).
    """
    compiled = Bench(b.name, b.module, b.api, b.channels_last)
    compiled.encode = torch.compile(b.encode, backend=backend)
    compiled.decode = torch.compile(b.decode, backend=backend)
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    t0 = time.perf_counter()
    timed_pass(compiled, x, device, dtype)  # compiles
    compile_s = time.perf_counter() - t0
    ts = {"eager": [], "compiled": []}
    for it in range(iters + 1):
        for key, bb in (
            (("eager", b), ("compiled", compiled)) if it % 2 else (("compiled", compiled), ("eager", b))
        ):
            r = timed_pass(bb, x, device, dtype)
            if it:
                ts[key].append(r)
    med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in ts.items()}
    return dict(
        model=b.name,
        resolution=res,
        dtype={v: k for k, v in DTYPES.items()}[dtype],
        backend=backend,
        compile_s=compile_s,
        encode_speedup=med["eager"][0] / med["compiled"][0],
        decode_speedup=med["eager"][1] / med["compiled"][1],
    )


def profile_table(b: Bench, res: int, device: torch.device, rows: int = 15) -> str:
    """torch.profiler table of one fp32 encode + decode pass, by self time."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.rand(1, 3, res, res, device=device) * 2 - 1
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    timed_pass(b, x, device, torch.float32)  # warm-up
    with profile(activities=acts) as prof:
        timed_pass(b, x, device, torch.float32)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=55)


def _parts(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The encoder's and decoder's direct children, ModuleLists expanded (one row per stage)."""
    rows = []
    for part in ("encoder", "decoder"):
        for name, child in getattr(module, part).named_children():
            if isinstance(child, torch.nn.ModuleList):
                rows += [
                    (f"{part}.{name}.{i}", c)
                    for i, c in enumerate(child)
                    if not isinstance(c, torch.nn.Identity)
                ]
            elif not isinstance(child, torch.nn.Identity):
                rows.append((f"{part}.{name}", child))
    return rows


def stage_breakdown(b: Bench, res: int, device: torch.device, iters: int) -> list[dict]:
    """Seconds, GFLOP and GFLOP/s of every encoder/decoder stage in one fp32 pass (median of
    ``iters`` passes), timed with forward hooks; FLOPs counted per module on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = build(b.name, "meta")
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        meta.decode(meta.encode(torch.empty(1, 3, res, res, device="meta")))
    counts = fc.get_flop_counts()  # keyed by the called module's class: "Encoder.stages.0", ...

    parts = _parts(b.module)
    start, acc = {}, {}

    def pre(name):
        def hook(*_):
            sync(device)
            start[name] = clock()

        return hook

    def post(name):
        def hook(*_):
            sync(device)
            acc[name] += clock() - start[name]

        return hook

    handles = [
        h for n, m in parts for h in (m.register_forward_pre_hook(pre(n)), m.register_forward_hook(post(n)))
    ]
    x = torch.rand(1, 3, res, res, device=device) * 2 - 1
    per_pass = {n: [] for n, _ in parts}
    try:
        for it in range(iters + 1):  # the first pass is warm-up
            acc.update({n: 0.0 for n, _ in parts})
            timed_pass(b, x, device, torch.float32)
            if it:
                for n in per_pass:
                    per_pass[n].append(acc[n])
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, m in parts:
        part, rest = name.split(".", 1)
        gflop = sum(counts.get(f"{type(getattr(meta.module, part)).__name__}.{rest}", {}).values()) / 1e9
        sec = statistics.median(per_pass[name])
        rows.append(
            dict(
                part=name,
                module=type(m).__name__,
                seconds=sec,
                gflop=gflop,
                gflops=gflop / sec if sec else None,
            )
        )
    return rows


# --- report -----------------------------------------------------------------------------------


def plot(records: list[dict], path: Path) -> None:
    """Bars of reconstruct throughput relative to flux-vae-config (or the first model) per group."""
    groups = sorted({(r["resolution"], r["dtype"]) for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    ref_name = "flux-vae-config" if "flux-vae-config" in models else models[0]
    fig, ax = subplots(figsize=(max(6, 1.2 * len(groups) * len(models) / 2), 4), dpi=80)
    width = 0.8 / len(models)
    for j, m in enumerate(models):
        for i, g in enumerate(groups):
            r = next((r for r in records if r["model"] == m and (r["resolution"], r["dtype"]) == g), None)
            ref = next(
                (r for r in records if r["model"] == ref_name and (r["resolution"], r["dtype"]) == g), None
            )
            if r is None or ref is None:
                continue
            y = r["reconstruct_img_s"] / ref["reconstruct_img_s"]
            ax.bar(i + j * width, y, width, color=f"C{j}", label=m if i == 0 else None)
            ax.text(
                i + j * width,
                y,
                f"{y:.2f}x\n{r['reconstruct_img_s']:.3g}/s",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], [f"{r}px {d}" for r, d in groups])
    ax.set_ylabel(f"reconstruct throughput / {ref_name}")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(
        "encode + decode throughput, models interleaved in one run (labels: ratio, img/s)", fontsize=9
    )
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", default=None, help=f"default: {' '.join(DEFAULT_MODELS)}")
    p.add_argument("--resolutions", nargs="+", type=int, default=None, help="default 256 512 1024")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=None, help="default 1 on CPU, 8 on CUDA")
    p.add_argument("--iters", type=int, default=None, help="timed passes per model (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes (the first measures memory)")
    p.add_argument("--force-bf16", action="store_true", help="measure bf16 on a CPU without native bf16 too")
    p.add_argument(
        "--channels-last", action="store_true", help="channels-last weights and inputs for every model"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="wall-clock, or this thread's CPU time (CPU, --threads 1): robust to other jobs on the cores",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--train-step",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="training-step benchmark (default: on, off with --quick)",
    )
    p.add_argument("--train-models", nargs="+", default=["transvae-t-f16d32", "cnn-vae-t-f16d32"])
    p.add_argument("--train-res", type=int, default=256)
    p.add_argument(
        "--compile", action="store_true", help="also measure torch.compile speed-ups of encode/decode"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="write a torch.profiler table per model (first resolution, fp32)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="time and FLOPs of every encoder/decoder stage per model (first resolution, fp32)",
    )
    p.add_argument(
        "--quick", action="store_true", help="256 only, TransVAE-T and flux-vae-config, 2 timed passes"
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNG written next to it)")
    p.add_argument("--replot", type=Path, default=None, help="redraw the PNG of an existing JSON and exit")
    args = p.parse_args(argv)
    if args.replot:
        recs = [r for r in json.loads(args.replot.read_text()) if r.get("kind") == "inference"]
        plot(recs, args.replot.with_suffix(".png"))
        print(f"wrote {args.replot.with_suffix('.png')}")
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.clock != "wall" and device.type != "cpu":
        raise SystemExit("--clock thread is for CPU runs")
    set_clock(args.clock)
    names = args.models or list(QUICK_MODELS if args.quick else DEFAULT_MODELS)
    resolutions = args.resolutions or ([256] if args.quick else [256, 512, 1024])
    batch = args.batch_size or (8 if device.type == "cuda" else 1)
    iters = args.iters or (2 if args.quick else 5)
    train_step = args.train_step if args.train_step is not None else not args.quick
    out = args.out or DOCS_DIR / ("speed_quick.json" if args.quick else "speed.json")
    machine = machine_info(device)
    machine["batch_size"], machine["channels_last"], machine["clock"] = batch, args.channels_last, args.clock
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])

    dtypes = list(args.dtypes)
    if device.type == "cpu" and "bf16" in dtypes:
        machine["bf16_native"] = cpu_has_native_bf16()
        machine["bf16_conv_slowdown"] = bf16_conv_slowdown(device)
        if not machine["bf16_native"] and not args.force_bf16:
            dtypes.remove("bf16")
            print(
                f"note: this CPU has no native bf16 (AVX512-BF16/AMX); a bf16 conv runs "
                f"{machine['bf16_conv_slowdown']:.0f}x slower than fp32 here, so bf16 is skipped "
                f"(--force-bf16 to measure it anyway)",
                file=sys.stderr,
            )
    benches = []
    for n in names:
        try:
            b = build(n, device)
        except KeyError as e:
            print(f"note: skipping {n}: {e}", file=sys.stderr)
            continue
        if args.channels_last:
            b.module.to(memory_format=torch.channels_last)
        benches.append(b)
    flops = {(b.name, r): flops_per_image(b.name, r) for b in benches for r in resolutions}

    mm_n = 8192 if device.type == "cuda" else 1024
    peaks = {d: matmul_peak_gflops(device, DTYPES[d], mm_n) for d in dtypes}
    records = []
    for res in resolutions:
        for dname in dtypes:
            print(f"measuring {res}px {dname} ...", flush=True)
            m = measure_inference(
                benches, res, DTYPES[dname], device, batch, iters, args.warmup, args.channels_last
            )
            for b in benches:
                enc_gf, dec_gf = flops[(b.name, res)]
                r = dict(
                    model=b.name,
                    resolution=res,
                    dtype=dname,
                    batch_size=batch,
                    params_M=b.params / 1e6,
                    **m[b.name],
                )
                r["gflop_per_img"] = enc_gf + dec_gf
                r["encode_gflop_per_img"], r["decode_gflop_per_img"] = enc_gf, dec_gf
                r["achieved_gflops"] = r["gflop_per_img"] * r["reconstruct_img_s"]
                records.append(r)
    # the matmul peak again at the end: the best of both is the machine's peak during this run
    peaks = {d: max(peaks[d], matmul_peak_gflops(device, DTYPES[d], mm_n)) for d in dtypes}
    for r in records:
        r["matmul_peak_gflops"] = peaks[r["dtype"]]
        r["fraction_of_matmul_peak"] = r["achieved_gflops"] / peaks[r["dtype"]]
        ref = next(
            (
                q
                for q in records
                if q["model"] == "flux-vae-config"
                and q["resolution"] == r["resolution"]
                and q["dtype"] == r["dtype"]
            ),
            None,
        )
        r["reconstruct_vs_flux"] = r["reconstruct_img_s"] / ref["reconstruct_img_s"] if ref else None
        r["machine"], r["command"] = machine, command

    extra = []
    if train_step:
        print(f"measuring training steps at {args.train_res}px ...", flush=True)
        for n, s in measure_train_step(
            args.train_models, args.train_res, device, batch, max(2, iters // 2)
        ).items():
            extra.append(
                dict(
                    kind="train_step",
                    model=n,
                    resolution=args.train_res,
                    dtype="fp32",
                    batch_size=batch,
                    train_step_s_per_img=s,
                    machine=machine,
                    command=command,
                )
            )
    if args.compile:
        for b in benches:
            for res in resolutions:
                for dname in dtypes:
                    print(f"torch.compile {b.name} {res}px {dname} ...", flush=True)
                    c = measure_compile(b, res, DTYPES[dname], device, batch, iters)
                    extra.append(
                        dict(kind="compile", **c, batch_size=batch, machine=machine, command=command)
                    )

    if args.profile:
        text = []
        for b in benches:
            print(f"profiling {b.name} at {resolutions[0]}px fp32 ...", flush=True)
            text.append(
                f"## {b.name}, {resolutions[0]}px, fp32, batch 1\n{profile_table(b, resolutions[0], device)}"
            )
        prof_path = out.with_name(out.stem + "_profile.txt")
        prof_path.write_text(f"{command}\n\n" + "\n\n".join(text) + "\n")
        print(f"wrote {prof_path}")
    if args.breakdown:
        res = resolutions[0]
        for b in benches:
            print(f"stage breakdown of {b.name} at {res}px fp32 ...", flush=True)
            rows = stage_breakdown(b, res, device, iters)
            total = sum(r["seconds"] for r in rows)
            for r in rows:
                r["share"] = r["seconds"] / total
            extra.append(
                dict(
                    kind="breakdown",
                    model=b.name,
                    resolution=res,
                    dtype="fp32",
                    batch_size=1,
                    stages=rows,
                    machine=machine,
                    command=command,
                )
            )
            print(f"\n{b.name}, {res}px fp32, one image (median of {iters} passes):")
            print(markdown_table(rows, ["part", "module", "seconds", "share", "gflop", "gflops"]))
    for r in records:
        r["kind"] = "inference"
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    write_json(out, records + extra)
    plot(records, out.with_suffix(".png"))

    cols = [
        "model",
        "resolution",
        "dtype",
        "params_M",
        "encode_img_s",
        "decode_img_s",
        "reconstruct_img_s",
        "reconstruct_vs_flux",
        "peak_mem_mb",
        "gflop_per_img",
        "achieved_gflops",
        "fraction_of_matmul_peak",
    ]
    print("\n" + markdown_table(records, cols))
    print("\nmatmul peak GFLOP/s: " + ", ".join(f"{d} {v:.1f}" for d, v in peaks.items()))
    for r in records:
        if r["model"] == "transvae-t-f16d32" and r["reconstruct_vs_flux"]:
            print(
                f"HEADLINE {r['resolution']}px {r['dtype']}: TransVAE-T / FLUX-VAE-config reconstruct throughput = {r['reconstruct_vs_flux']:.2f}x"
            )
    extra_rows = [e for e in extra if e["kind"] != "breakdown"]  # breakdowns were printed above
    if extra_rows:
        print(
            "\n"
            + markdown_table(
                extra_rows,
                [
                    "kind",
                    "model",
                    "resolution",
                    "dtype",
                    "train_step_s_per_img",
                    "compile_s",
                    "encode_speedup",
                    "decode_speedup",
                ],
            )
        )
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
