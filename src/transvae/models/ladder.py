"""The design ladder from ViT-VAE to TransVAE (paper Sections 3.2-3.3, Figures 3 and 4).

Every rung is a registered model plus ``create_model`` keyword overrides, so training and
evaluation code run each rung through the same API::

    from transvae.models.ladder import LADDER, ladder
    for label, base, overrides in ladder("mini"):          # or "t" for the paper's Tiny size
        model = transvae.create_model(base, **overrides)

``LADDER`` is ``ladder("mini")``; ``cpu_regimes()`` the two CPU-scale comparisons of the benchmarks. The main path changes one thing per rung; the DWConv FFN rung
is the alternative the paper compares with FullConv (Figure 4a) and is not on the path to the
final model. ``branches(size)`` lists the side experiments: Conv-FFN in the single-stage model
(Figure 4b), TransVAE without RMSNorm (Figure 4c), TransVAE with QK-norm in place of the
RMSNorm before QKV, and the attention-free CNN-VAE baseline of Section 3. ``python -m transvae.models.ladder`` prints the parameter table of
``docs/architecture.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

Rung = tuple[str, str, dict[str, Any]]

SIZES = ("mini", "t")

# Micro designs switched off, applied to the multi-stage TransVAE to get the plain-ViT-block rungs.
_PLAIN_BLOCKS = dict(ffn_type="mlp", mlp_ratio=4.0, qkv_norm="none", dc_shortcut=False)
_SEQCONV_ROPE = dict(pos_embed="rope", patch_embed="seqconv", patch_out="seqconv")


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"unknown ladder size '{size}', expected one of {SIZES}")


def ladder(size: str = "mini") -> list[Rung]:
    """The main path ViT-VAE -> TransVAE as ``(label, base model name, overrides)``.

    Args:
        size: ``"mini"`` (CPU-sized, ~2M parameters) or ``"t"`` (the paper's Tiny).
    """
    _check_size(size)
    vit, tv = f"vit-vae-{size}-f16d32", f"transvae-{size}-f16d32"
    return [
        ("ViT-VAE (learned abs. PE)", vit, {}),
        ("ViT, no PE", vit, dict(pos_embed="none")),
        ("ViT + RoPE", vit, dict(pos_embed="rope")),
        ("+ SeqConv encoder", vit, dict(pos_embed="rope", patch_embed="seqconv")),
        ("+ SeqConv decoder", vit, dict(_SEQCONV_ROPE)),
        ("+ multi-stage (CNN front stages)", tv, dict(_PLAIN_BLOCKS)),
        ("+ DWConv FFN (x4; alternative)", tv, dict(_PLAIN_BLOCKS, ffn_type="dwconv")),
        ("+ FullConv FFN (x1)", tv, dict(_PLAIN_BLOCKS, ffn_type="fullconv", mlp_ratio=1.0)),
        ("+ RMSNorm before QKV", tv, dict(dc_shortcut=False)),
        ("+ DC shortcut (= TransVAE)", tv, {}),
    ]


def branches(size: str = "mini") -> list[Rung]:
    """Side experiments of Figures 4(b), 4(c) (plus QK-norm) and Section 3.1, as ``(label, base, overrides)``."""
    _check_size(size)
    vit, tv, cnn = (f"{f}-{size}-f16d32" for f in ("vit-vae", "transvae", "cnn-vae"))
    return [
        ("single-stage + DWConv FFN", vit, dict(_SEQCONV_ROPE, ffn_type="dwconv")),
        ("single-stage + FullConv FFN", vit, dict(_SEQCONV_ROPE, ffn_type="fullconv", mlp_ratio=1.0)),
        ("TransVAE without RMSNorm", tv, dict(qkv_norm="none")),
        ("TransVAE with QK-norm instead", tv, dict(qkv_norm="qk")),
        ("CNN-VAE, no attention (Section 3 baseline)", cnn, dict(stage_attn=False, mid_attn=False)),
    ]


LADDER: list[Rung] = ladder("mini")


@dataclass(frozen=True)
class Regime:
    """A CPU-scale comparison: the crop size, the models (label, base, overrides) and the default subset."""

    crop: int
    specs: tuple[Rung, ...]
    default: tuple[str, ...]  # labels run when none are chosen


def cpu_regimes() -> dict[str, Regime]:
    """The comparisons of ``benchmarks/learning_efficiency.py``, both with an 8 x 8 latent grid:
    ``f16-128`` (the attention-free CNN-VAE, the ladder and its branches at 128 px) and ``f8-64``
    (the f8 members at 64 px: CNN-VAE, ViT-VAE with 8 px patches, TransVAE and its qkv norms)."""
    no_attn = dict(stage_attn=False, mid_attn=False)
    f16 = (("CNN-VAE (no attention)", "cnn-vae-mini-f16d32", no_attn), *ladder("mini"))
    f16 += tuple(b for b in branches("mini") if not b[1].startswith("cnn-vae"))
    f8 = (
        ("CNN-VAE (no attention)", "cnn-vae-mini-f8d16", no_attn),
        ("ViT-VAE (learned abs. PE)", "vit-vae-mini-f8d16", {}),
        ("TransVAE", "transvae-mini-f8d16", {}),
        ("TransVAE without RMSNorm", "transvae-mini-f8d16", dict(qkv_norm="none")),
        ("TransVAE with QK-norm instead", "transvae-mini-f8d16", dict(qkv_norm="qk")),
    )
    core = ("CNN-VAE (no attention)", "ViT-VAE (learned abs. PE)")
    return {
        "f16-128": Regime(128, f16, (*core, "+ DC shortcut (= TransVAE)")),
        "f8-64": Regime(64, f8, (*core, "TransVAE")),
    }


def _fmt_overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "(none)"


def markdown_table(sizes: tuple[str, ...] = SIZES) -> str:
    """Markdown table of every rung and branch with its overrides and parameter counts (meta device)."""
    from .registry import create_model

    rows = []
    per_size = {s: ladder(s) + branches(s) for s in sizes}
    for i, (label, base, overrides) in enumerate(per_size[sizes[0]]):
        counts = []
        for s in sizes:
            _, b, o = per_size[s][i]
            counts.append(f"{create_model(b, device='meta', **o).num_parameters() / 1e6:.2f}M")
        rows.append((label, base.replace(f"-{sizes[0]}-", "-{size}-"), _fmt_overrides(overrides), *counts))
    head = ["rung", "base", "overrides", *(f"params ({s})" for s in sizes)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(f"`{c}`" if j in (1, 2) else c for j, c in enumerate(r)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the design-ladder table (parameter counts).")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    args = parser.parse_args(argv)
    print(markdown_table(tuple(args.sizes)))


if __name__ == "__main__":
    main()
