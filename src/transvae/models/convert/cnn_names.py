"""Tensor names of the CNN-VAE in the two layouts published LDM-family autoencoders use.

``ldm``: CompVis latent-diffusion's ``Encoder`` / ``Decoder`` (also SD 1.x/2.x single files, the
FLUX.1 ``ae.safetensors``, VA-VAE): ``encoder.down.{level}.block.{j}``, ``encoder.mid.attn_1.q``,
``decoder.up.{level}.upsample.conv``, top-level ``quant_conv`` / ``post_quant_conv``.

``diffusers``: ``AutoencoderKL``'s ``encoder.down_blocks.{level}.resnets.{j}``,
``encoder.mid_block.attentions.0.to_q`` (Linear weights, (C, C)), ``decoder.up_blocks.{s}`` with
``s = 0`` the deepest stage, ``conv_norm_out``; older folders name the attention projections
``query`` / ``key`` / ``value`` / ``proj_attn``, accepted too.

The CNN-VAE (``cnn_vae.py``) keeps one list per stage, ``stages.{i}.blocks.{k}``, where the
ResBlocks and (in stages with attention) the attention blocks alternate.
"""

from __future__ import annotations

from typing import Literal

from ..cnn_vae import CNNVAEConfig

Naming = Literal["ldm", "diffusers"]

_RES = {"ldm": {"skip": "nin_shortcut"}, "diffusers": {"skip": "conv_shortcut"}}
# transvae AttnBlock part -> (ldm name, diffusers names: current first, then pre-0.14 ones)
_ATTN = {
    "norm": ("norm", ("group_norm",)),
    "q": ("q", ("to_q", "query")),
    "k": ("k", ("to_k", "key")),
    "v": ("v", ("to_v", "value")),
    "proj_out": ("proj_out", ("to_out.0", "proj_attn")),
}


def _res(prefix: str, part: str, param: str, naming: Naming) -> tuple[str, ...]:
    return (f"{prefix}.{_RES[naming].get(part, part)}.{param}",)


def _attn(prefix: str, part: str, param: str, naming: Naming) -> tuple[str, ...]:
    ldm, diffusers = _ATTN[part]
    names = (ldm,) if naming == "ldm" else diffusers
    return tuple(f"{prefix}.{n}.{param}" for n in names)


def _mid(side: str, rest: list[str], naming: Naming) -> tuple[str, ...]:
    block, part, param = rest[0], rest[1], ".".join(rest[2:])
    if naming == "ldm":
        return (f"{side}.mid.{block}.{part}.{param}",)
    if block == "attn_1":
        return _attn(f"{side}.mid_block.attentions.0", part, param, naming)
    return _res(f"{side}.mid_block.resnets.{int(block[-1]) - 1}", part, param, naming)


def source_names(key: str, cfg: CNNVAEConfig, naming: Naming) -> tuple[str, ...]:
    """The names ``key`` of a CNN-VAE state dict may have in a ``naming`` checkpoint, preferred first.

    Args:
        key: e.g. ``encoder.stages.3.blocks.1.q.weight``.
        cfg: the CNN-VAE's config (which stages have attention, how many stages).
        naming: ``"ldm"`` or ``"diffusers"``.
    Raises:
        KeyError: a key this module does not know (a CNN-VAE change without an update here).
    """
    parts = key.split(".")
    side, rest = parts[0], parts[1:]
    n = len(cfg.ch_mult)
    attn = cfg.attention_stages()
    ldm = naming == "ldm"
    way = "down" if side == "encoder" else "up"  # LDM: down / up; diffusers: down_blocks / up_blocks
    head = rest[0]
    if head in ("conv_in", "conv_out"):
        return (key,)
    if head in ("quant_conv", "post_quant_conv"):
        return (".".join(rest),)
    if head == "norm_out":
        return (key if ldm else f"{side}.conv_norm_out.{rest[1]}",)
    if head == "mid":
        return _mid(side, rest[1:], naming)
    if head in ("downs", "ups"):
        s = int(rest[1])
        level = s if side == "encoder" else n - 1 - s
        if ldm:
            return (f"{side}.{way}.{level}.{way}sample.conv.{rest[-1]}",)
        return (f"{side}.{way}_blocks.{s}.{way}samplers.0.conv.{rest[-1]}",)
    if head == "stages":
        s, k, part, param = int(rest[1]), int(rest[3]), rest[4], ".".join(rest[5:])
        level = s if side == "encoder" else n - 1 - s
        j, is_attn = divmod(k, 2) if level in attn else (k, 0)
        if ldm:
            block, attn_list, res_list = f"{side}.{way}.{level}", "attn", "block"
        else:
            block, attn_list, res_list = f"{side}.{way}_blocks.{s}", "attentions", "resnets"
        if is_attn:
            return _attn(f"{block}.{attn_list}.{j}", part, param, naming)
        return _res(f"{block}.{res_list}.{j}", part, param, naming)
    raise KeyError(f"no {naming} name for the CNN-VAE tensor {key}")
