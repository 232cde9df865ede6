"""Activation statistics at initialisation, per stage (the table in ``docs/architecture.md``).

For a freshly built model and a batch of natural photos it records, at the output of every
stage of encoder and decoder (and the convs into and out of each), the standard deviation of
the activations, and for every residual block the relative size of its update,
``||block(x) - x|| / ||x||``, averaged over the blocks of the stage. These are the two numbers
that show whether an init scheme lets the residual streams grow and whether the Transformer
blocks start with a non-negligible contribution::

    python -m transvae.models.init_stats                       # the mini members at 128 px
    python -m transvae.models.init_stats --models transvae-t-f16d32 cnn-vae-t-f16d32 --resolution 256
    python -m transvae.models.init_stats --qkv-norm --models transvae-mini-f16d32 transvae-t-f16d32
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import ResBlock, TransformerBlock

DEFAULT_MODELS = (
    "transvae-mini-f16d32",
    "cnn-vae-mini-f16d32",
    "vit-vae-mini-f16d32",
    "swin-vae-mini-f16d32",
    "asym-vae-mini-f16d32",
)


def sample_photos(resolution: int, n: int = 4) -> torch.Tensor:
    """``n`` of scikit-image's bundled colour photos, resized (antialiased) to a square:
    (n, 3, R, R) in [-1, 1]. Deterministic and offline."""
    from skimage import data

    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
    out = []
    for name in names[:n]:
        a = torch.from_numpy(getattr(data, name)()[..., :3].copy()).permute(2, 0, 1).float()
        a = F.interpolate(a[None], size=(resolution, resolution), mode="bilinear", antialias=True)[0]
        out.append(a / 127.5 - 1.0)
    return torch.stack(out)


def _is_residual_block(m: nn.Module) -> bool:
    # timm's Swin blocks are residual blocks too (channels-last, same input/output shape)
    return isinstance(m, (ResBlock, TransformerBlock)) or type(m).__name__ == "SwinTransformerBlock"


@torch.no_grad()
def activation_stats(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per-stage activation statistics of ``model`` on images ``x``.

    Args:
        model: an ``AutoencoderBase`` (any architecture of this package).
        x: (B, 3, H, W) images in [-1, 1].
    Returns:
        One dict per recorded point, in forward order: ``part`` (e.g. ``"encoder.stages.2"``),
        ``std`` (of the output), ``rel_update`` (mean ``||f(x) - x|| / ||x||`` over the residual
        blocks of that stage whose input and output shapes agree; ``None`` when it has none).
    """
    rows: dict[str, dict[str, Any]] = {}
    updates: dict[str, list[float]] = {}
    hooks = []

    def record(name: str):
        def hook(_mod, _inp, out):
            out = out if torch.is_tensor(out) else out[0]
            rows[name] = {"part": name, "std": out.float().std().item()}

        return hook

    def update(stage: str):
        def hook(_mod, inp, out):
            i = inp[0]
            if i.shape == out.shape:
                updates.setdefault(stage, []).append(((out - i).norm() / i.norm()).item())

        return hook

    for part in ("encoder", "decoder"):
        root = getattr(model, part)
        for name, child in root.named_children():
            if name == "stages":
                for i, stage in enumerate(child):
                    hooks.append(stage.register_forward_hook(record(f"{part}.stages.{i}")))
                    for m in stage.modules():
                        if _is_residual_block(m):
                            hooks.append(m.register_forward_hook(update(f"{part}.stages.{i}")))
            elif name in ("conv_in", "mid", "conv_out"):
                hooks.append(child.register_forward_hook(record(f"{part}.{name}")))
    was_training = model.training
    model.eval()
    try:
        # with autograd off ResBlock updates its activations in place; the update hook needs the
        # untouched input, so run the forward pass with grad mode on (no backward is taken)
        with torch.enable_grad():
            model(x, sample_posterior=False)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = []
    for name, row in rows.items():
        u = updates.get(name)
        out.append({**row, "rel_update": sum(u) / len(u) if u else None})
    return out


def markdown_table(models: list[str], resolution: int, seed: int = 0) -> str:
    """One row per model: output std after the input conv and each stage, and the mean
    residual-block update per stage, for encoder and decoder (stages in forward order)."""
    from .registry import create_model

    x = sample_photos(resolution)
    head = "| model | part | std: conv_in, stages... | block update per stage |"
    lines = [head, "|---|---|---|---|"]
    for name in models:
        torch.manual_seed(seed)
        rows = activation_stats(create_model(name), x)
        for part in ("encoder", "decoder"):
            mine = [
                r for r in rows if r["part"].startswith(part + ".") and not r["part"].endswith("conv_out")
            ]
            stds = " / ".join(f"{r['std']:.2f}" for r in mine)
            ups = " / ".join(f"{100 * r['rel_update']:.1f}%" for r in mine if r["rel_update"] is not None)
            lines.append(f"| `{name}` | {part} | {stds} | {ups} |")
    return "\n".join(lines)


@torch.no_grad()
def qkv_norm_differences(name: str, x: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Max |difference| of the reconstructions of ``x`` between ``qkv_norm="none"`` and the
    ``"rms"`` / ``"qk"`` variants of ``name`` holding the same weights (the norms' own weights
    are 1 at init). Shows that RMSNorm right behind the block's LayerNorm is the identity at
    initialisation, while QK-norm is not.

    Args:
        name: a registered TransVAE-family model.
        x: (B, 3, H, W) images in [-1, 1].
    """
    from .registry import create_model

    torch.manual_seed(seed)
    ref = create_model(name, qkv_norm="none").eval()
    y_ref = ref(x, sample_posterior=False).sample
    out = {}
    for variant in ("rms", "qk"):
        m = create_model(name, qkv_norm=variant).eval()
        m.load_state_dict(ref.state_dict(), strict=False)  # the variant's extra norms keep weight 1
        out[variant] = (m(x, sample_posterior=False).sample - y_ref).abs().max().item()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Activation std per stage at initialisation.")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--qkv-norm",
        action="store_true",
        help="instead: max output difference of qkv_norm 'rms' / 'qk' vs 'none' (TransVAE-family models)",
    )
    args = p.parse_args(argv)
    if args.qkv_norm:
        x = sample_photos(args.resolution)
        for name in args.models:
            d = qkv_norm_differences(name, x, args.seed)
            print(
                f"{name} ({args.resolution} px): max |rms - none| {d['rms']:.2e}, max |qk - none| {d['qk']:.2e}"
            )
        return
    print(markdown_table(args.models, args.resolution, args.seed))


if __name__ == "__main__":
    main()
