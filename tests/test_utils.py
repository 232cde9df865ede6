"""The low-level helpers of transvae.utils: memory estimates, precision choice, atomic writes."""

from __future__ import annotations

import math
import os
import stat

import pytest
import torch

import transvae
from transvae.utils.device import choose_dtype, resolve_device
from transvae.utils.files import atomic_write_bytes, default_file_mode
from transvae.utils.memory import estimate_memory, format_bytes

NANO = "transvae-nano-f16d32"


def test_training_estimate_grows_with_batch_and_counts_optimizer_state():
    m = transvae.create_model(NANO, device="meta")
    small = estimate_memory(m, 1, 64, 64, train=True)
    two = estimate_memory(m, 2, 64, 64, train=True)
    big = estimate_memory(m, 4, 64, 64, train=True)
    n = m.num_parameters()
    assert small["weights"] == 4 * n and small["optimizer"] == 12 * n
    # activations grow linearly with the batch (plus the weights the ops save); weights do not
    per_image = two["activations"] - small["activations"]
    assert per_image > 0 and big["activations"] - two["activations"] == pytest.approx(2 * per_image)
    assert big["weights"] == small["weights"]
    # 4x the pixels -> at most 4x the activations (weights saved by the ops do not grow), not the
    # 16x an N x N attention matrix would give: fused SDPA keeps O(N)
    wide = estimate_memory(m, 1, 128, 128, train=True)
    assert 3.0 * small["activations"] < wide["activations"] <= 4.0 * small["activations"]


def test_estimate_counts_real_saved_tensors():
    # the estimate equals what autograd really saves for a real forward pass (CPU flash SDPA
    # saves q, k, v, out and a logsumexp, not the N x N matrix)
    m = transvae.create_model(NANO)
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(torch.zeros(2, 3, 64, 64))
    est = estimate_memory(m, 2, 64, 64, train=True)["activations"]
    assert 0.8 * saved <= est <= 1.25 * saved, (est, saved)


def test_absurd_sizes_give_infinite_or_huge_estimates_quickly():
    m = transvae.create_model("transvae-t-f16d32", device="meta")
    est = estimate_memory(m, 16, 100_000, 100_000, train=True)
    assert est.total > 1e15
    assert format_bytes(math.inf) == "more than any machine has"
    assert format_bytes(3 * 2**30) == "3.0 GiB"


def test_choose_dtype_falls_back_on_slow_cpu(monkeypatch):
    from transvae.utils import device as D

    cpu = torch.device("cpu")
    monkeypatch.setattr(D, "cpu_dtype_is_fast", lambda dt: False)
    dtype, warning = choose_dtype("bf16", cpu)
    assert dtype == torch.float32 and "--force-bf16" in warning and "\n" not in warning
    assert choose_dtype("bf16", cpu, force=True) == (torch.bfloat16, None)
    assert choose_dtype("fp32", cpu) == (torch.float32, None)
    monkeypatch.setattr(D, "cpu_dtype_is_fast", lambda dt: True)
    assert choose_dtype("bf16", cpu) == (torch.bfloat16, None)
    with pytest.raises(ValueError, match="unsupported"):
        choose_dtype(torch.int8, cpu)


@pytest.mark.parametrize("value, fast", [("none", False), ("all", True), ("None", False)])
def test_native_lowp_override_replaces_detection(monkeypatch, value, fast):
    from transvae.utils import device as D

    monkeypatch.setenv(D.NATIVE_LOWP_ENV, value)
    for dt in (torch.bfloat16, torch.float16):
        assert D.cpu_dtype_is_fast(dt) is fast
    assert D.cpu_dtype_is_fast(torch.float32)  # fp32 is never replaced
    dtype, warning = choose_dtype("bf16", torch.device("cpu"))
    assert (dtype == torch.bfloat16) is fast and (warning is None) is fast


def test_native_lowp_override_refuses_a_typo(monkeypatch):
    from transvae.utils import device as D

    monkeypatch.setenv(D.NATIVE_LOWP_ENV, "off")
    with pytest.raises(ValueError, match="TRANSVAE_CPU_NATIVE_LOWP"):
        D.cpu_dtype_is_fast(torch.bfloat16)


def test_resolve_device_errors_are_value_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644 == default_file_mode()
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.bin", b"y")
        assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_printable_escapes_terminal_controls_and_keeps_unicode():
    from transvae.utils.text import printable

    assert printable("photo é 猫 🐱.png") == "photo é 猫 🐱.png"
    assert (
        printable("a\x1b]0;title\x07b\nfailed x\rc\x7f\x9b")
        == "a\\x1b]0;title\\x07b\\x0afailed x\\x0dc\\x7f\\x9b"
    )
    assert printable("plain") == "plain"
    assert "\n" not in printable("x\ny") and printable(3) == "3"


def test_atomic_write_replaces_a_symlink_and_leaves_its_target(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    link = tmp_path / "report.html"
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new" and target.read_text() == "precious"
