"""Device and precision choice, shared by training, evaluation and inference.

``resolve_device`` turns ``"auto"`` / ``"cpu"`` / ``"cuda:1"`` into a ``torch.device`` (CUDA when
available for ``"auto"``). ``choose_dtype`` decides what a requested reduced precision really
runs in: on GPUs bf16 / fp16 autocast is what users want; on CPUs without native bf16 / fp16
arithmetic (no AVX512-BF16 / AMX / ARM BF16) autocast makes convolutions tens of times slower
than fp32 (a 768x512 photo took over 3 minutes with the nano model), so the request falls back
to fp32 with a one-line warning unless the caller insists (``force=True``, ``--force-bf16``).

``TRANSVAE_CPU_NATIVE_LOWP`` overrides the detection for the whole process: ``none`` treats
every CPU as lacking native bf16 / fp16 (the fallback path), ``all`` as having both; ``auto``
(or unset) detects. CI runs the test suite once with ``none`` so that both branches are covered
whatever CPU it lands on.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path

import torch

__all__ = ["DTYPES", "NATIVE_LOWP_ENV", "choose_dtype", "cpu_dtype_is_fast", "resolve_device"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# CPU feature flags (Linux /proc/cpuinfo) that mean native arithmetic in that dtype
_NATIVE_FLAGS = {
    torch.bfloat16: ("avx512_bf16", "amx_bf16", "bf16"),  # x86 AVX512-BF16 / AMX; ARM "bf16"
    torch.float16: ("avx512_fp16", "amx_fp16", "fphp"),  # x86 AVX512-FP16 / AMX-FP16; ARM "fphp"
}


NATIVE_LOWP_ENV = "TRANSVAE_CPU_NATIVE_LOWP"
_NATIVE_LOWP_CHOICES = ("auto", "none", "all")


def native_lowp_override() -> str:
    """``TRANSVAE_CPU_NATIVE_LOWP``: ``"auto"`` (detect), ``"none"`` or ``"all"``.

    Raises:
        ValueError: any other value (a typo must not silently select a branch).
    """
    value = os.environ.get(NATIVE_LOWP_ENV, "auto").strip().lower() or "auto"
    if value not in _NATIVE_LOWP_CHOICES:
        raise ValueError(f"{NATIVE_LOWP_ENV}={value!r}: expected one of {', '.join(_NATIVE_LOWP_CHOICES)}")
    return value


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA if available else CPU; otherwise validate the given device.

    Raises:
        ValueError: an unparsable name, or CUDA requested on a machine without it.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"invalid device '{name}' ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device '{name}' requested but this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_dtype_is_fast(dtype: torch.dtype) -> bool:
    """Whether autocast in ``dtype`` is not much slower than fp32 on this CPU.

    True when the CPU advertises native arithmetic for it (``/proc/cpuinfo`` flags); otherwise a
    ~0.1 s measurement: a 3x3 convolution in ``dtype`` must be at most 3x slower than in fp32.
    Cached for the process. ``TRANSVAE_CPU_NATIVE_LOWP=none|all`` replaces the detection.
    """
    if dtype == torch.float32:
        return True
    override = native_lowp_override()
    if override != "auto":
        return override == "all"
    return _detect_fast(dtype)


@functools.cache
def _detect_fast(dtype: torch.dtype) -> bool:
    if _cpu_flags() & set(_NATIVE_FLAGS.get(dtype, ())):
        return True
    if platform.system() == "Darwin" and platform.machine() == "arm64" and dtype == torch.float16:
        return True
    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    x = torch.randn(1, 32, 32, 32)

    def best(dt: torch.dtype) -> float:
        times = []
        with torch.no_grad(), torch.autocast("cpu", dtype=dt, enabled=dt != torch.float32):
            for _ in range(3):
                t0 = time.perf_counter()
                conv(x)
                times.append(time.perf_counter() - t0)
        return min(times)

    try:
        return best(dtype) <= 3.0 * best(torch.float32) + 1e-4
    except RuntimeError:  # autocast does not support this dtype on this build
        return False


def choose_dtype(
    requested: str | torch.dtype, device: torch.device, force: bool = False
) -> tuple[torch.dtype, str | None]:
    """The compute dtype to use for a requested precision on ``device``.

    Args:
        requested: ``"fp32"``, ``"bf16"``, ``"fp16"`` or a torch dtype.
        device: where the work runs.
        force: use the requested dtype even where it is known to be slow.
    Returns:
        ``(dtype, warning)``: ``warning`` is a one-line message when the request was replaced by
        fp32 (print or log it), else None.
    """
    dtype = DTYPES[requested] if isinstance(requested, str) else requested
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"unsupported compute dtype {requested!r}; use fp32, bf16 or fp16")
    if dtype == torch.float32 or device.type != "cpu" or force or cpu_dtype_is_fast(dtype):
        return dtype, None
    name = _DTYPE_NAMES[dtype]
    return torch.float32, (
        f"this CPU has no native {name} arithmetic ({name} would be tens of times slower than fp32): "
        f"using fp32; pass --force-{name} to insist"
    )
