"""Released LightningDiT checkpoints (hustvl/LightningDiT, ``models/lightningdit.py``) into
transvae's ``LightningDiT`` and back, with equal outputs.

Loading a reference checkpoint into our model with the reference classes unchanged fails on key
names alone; once renamed, three conventions still change the outputs. Every difference and
how it is mapped (``from_reference`` one way, ``to_reference`` the other):

=====================  =====================================  ==================================
part                   reference                              mapping
=====================  =====================================  ==================================
patch embedding        timm ``PatchEmbed``: ``x_embedder.``   renamed (same conv, same
                       ``proj.weight``                        row-major token order)
label table            ``y_embedder.embedding_table``,        renamed; the null class (a last
                       ``num_classes + (dropout > 0)`` rows   row) only with dropout > 0, as ours
SwiGLU                 fused ``mlp.w12`` (2H, D): the first   split into ``fc1_g`` (gate) and
                       H rows gate ``silu(x1) * x2``;         ``fc1_x``; ``w3`` -> ``fc2``; the
                       ``mlp.w3``; H = int(2/3 int(4 D))      width is checked against ours
GELU MLP               timm ``Mlp`` ``fc1`` / ``fc2``         same keys
RoPE pairing           EVA's ``VisionRotaryEmbeddingFast``:   a permutation of each head's query
                       per axis half, interleaved pairs       and key rows (and QK-norm weights):
                       (2i, 2i+1) at frequency f_i; ours      q.k is unchanged when both move
                       pairs (i, i + d/4)                     alike; exact
RoPE frequencies       ``theta^(-2i / (d/2))``, row half      identical (``theta^(-i / (d/4))``,
                       first; stored buffers for one grid    row half first); buffers checked,
                       (positions ``arange(n) / n * n``)      computed per grid here
abs. position table    ``pos_embed`` parameter, column half   ``pos_embed_order="cols_first"``
                       first (``get_2d_sincos_pos_embed``)    (a config option: no permutation
                                                              of weights moves a fixed table);
                                                              an all-zero table is
                                                              ``abs_pos_embed=False``
norms                  ``RMSNorm`` (eps 1e-6, weight) or      same (``rmsnorm``); final
                       affine-free LayerNorm (eps 1e-6);      ``norm_final`` -> ``norm``; a
                       QK-norm: RMSNorm per head              LayerNorm QK-norm (``use_qknorm``
                                                              without ``use_rmsnorm``) has no
                                                              equivalent and is refused
adaLN                  6 D rows, or 4 D with ``wo_shift``     ``wo_shift``: zero shift rows
                       (no shift)                             inserted (shift 0 is no shift)
final layer            ``learn_sigma``: 2 C output channels,  the sigma rows are dropped
                       the second C discarded by forward
timestep / blocks      DiT's, same keys                       unchanged
=====================  =====================================  ==================================

``to_reference`` writes the table and the RoPE buffers our model uses into the reference's
``pos_embed`` / ``feat_rope`` tensors (the reference reads them from the checkpoint), so a
``rows_first`` generator or another ``rope_theta`` also exports exactly. What the reference
cannot express is refused in one line (a non-square grid, QK-norm behind LayerNorm blocks).

Checkpoints are read with ``torch.load(weights_only=True)`` (``.pt`` / ``.pth``: the reference's
``{"model", "ema", "opt"}``, the EMA weights when present) or as ``.safetensors``. The reference
constructor arguments are inferred from the tensor shapes (B / L / XL, patch 1 / 2, 16 / 32
channels, ...) and every tensor is checked against them. ``convert_lightningdit`` writes a model
folder ``transvae gen-sample`` samples from; ``export_lightningdit`` a checkpoint the reference
loads. Nothing here imports the reference code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...data.latents import LatentStats
from ..lightningdit import LightningDiT, LightningDiTConfig
from ..persistence import load_model
from ..pos_embed import rope_2d, sincos_pos_embed_2d
from ..registry import build_model, list_models, model_config

REFERENCE = "hustvl/LightningDiT"
# the constructor arguments of the reference ``LightningDiT`` (models/lightningdit.py)
REFERENCE_ARGS = tuple(
    "input_size patch_size in_channels hidden_size depth num_heads mlp_ratio class_dropout_prob "
    "num_classes learn_sigma use_qknorm use_swiglu use_rope use_rmsnorm wo_shift".split()
)
# reference argument -> our config field, where the two say the same thing
OUR_FIELDS = dict(
    zip(
        "patch_size in_channels hidden_size depth num_heads mlp_ratio class_dropout_prob num_classes "
        "use_qknorm use_swiglu use_rope use_rmsnorm".split(),
        "patch_size in_channels hidden_size depth num_heads mlp_ratio class_dropout num_classes "
        "qk_norm swiglu rope rmsnorm".split(),
        strict=True,
    )
)
# hidden size -> heads of the reference's named sizes (B, L, XL, 1p0B, 1p6B), for checkpoints
# without RoPE buffers (with them, the head width is their last dimension)
REFERENCE_HEADS = {768: 12, 1024: 16, 1152: 16, 1536: 24, 1792: 28}
REFERENCE_ROPE_THETA = 10000.0  # VisionRotaryEmbeddingFast's default; LightningDiT passes none
# LightningDiT's inference settings (configs/lightningdit_xl_vavae_f16d32.yaml), in our terms:
# 250 time points of torchdiffeq's fixed-grid Euler are 249 steps
REFERENCE_SAMPLING = {
    "steps": 249,
    "solver": "euler",
    "shift": 0.3,
    "cfg_channels": 3,
}


class ReferenceCheckpointError(ValueError):
    """A reference checkpoint cannot be read or converted; the message names the tensor."""


# -- reading --------------------------------------------------------------------------------------
def read_reference_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a reference checkpoint as a flat float32 state dict.

    Args:
        path: ``.pt`` / ``.pth`` (``torch.load(weights_only=True)``: a state dict, or the
            reference's ``{"model", "ema", "opt"}`` of which ``ema`` is taken when present, else
            ``model``) or ``.safetensors``. ``module.`` / ``_orig_mod.`` prefixes are removed.
    Raises:
        ReferenceCheckpointError: unreadable, or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceCheckpointError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path))
        else:
            raw = _torch_load(path)
    except Exception as e:  # a pickle with objects, a truncated file, not a checkpoint at all
        raise ReferenceCheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {e})"
        ) from e
    if isinstance(raw, Mapping):
        for key in ("ema", "model"):
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw or not all(torch.is_tensor(v) for v in raw.values()):
        raise ReferenceCheckpointError(f"{path} holds no state dict of tensors (nor 'ema' / 'model' ones)")
    state = {}
    for key, value in raw.items():
        for prefix in ("module.", "_orig_mod."):
            key = key[len(prefix) :] if key.startswith(prefix) else key
        state[key] = value.detach().to("cpu", torch.float32)
    return state


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped when the file allows it (an XL checkpoint
    with its optimiser state is ~8 GB; only the weights taken are then read)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


# -- the reference's shapes -----------------------------------------------------------------------
# feed-forward widths for a token width d and an mlp_ratio r: the reference's SwiGLU rounds twice
def _swiglu_hidden(d: int, r: float) -> int:
    return int(2 / 3 * int(d * r))


def _our_swiglu_hidden(d: int, r: float) -> int:  # ``mlp.SwiGLUFFN``
    return int(2 / 3 * r * d)


def _gelu_hidden(d: int, r: float) -> int:  # timm's ``Mlp`` in both
    return int(d * r)


def _mlp_ratio(width, d: int, hidden: int, first: float | None = None) -> float | None:
    """An ``mlp_ratio`` r with ``width(d, r) == hidden`` (``first`` and 4.0 tried first), or None."""
    start = math.ceil(1.5 * hidden)
    near = [hidden / d, 1.5 * hidden / d, *(m / d for m in range(start, start + 3))]
    tries = [first, 4.0, *near, *(math.nextafter(r, math.inf) for r in near)]
    return next((float(r) for r in tries if r is not None and width(d, r) == hidden), None)


def reference_shapes(args: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of the reference ``LightningDiT(**args)``."""
    d, p, c = args["hidden_size"], args["patch_size"], args["in_channels"]
    n = (args["input_size"] // p) ** 2
    out_c = 2 * c if args["learn_sigma"] else c
    rows = args["num_classes"] + (1 if args["class_dropout_prob"] > 0 else 0)
    shapes: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, n, d),
        "x_embedder.proj.weight": (d, c, p, p),
        "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256),
        "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d),
        "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (rows, d),
    }
    if args["use_rope"]:
        head_dim = d // args["num_heads"]
        shapes["feat_rope.freqs_cos"] = shapes["feat_rope.freqs_sin"] = (n, head_dim)
    for i in range(args["depth"]):
        shapes.update({f"blocks.{i}.{k}": s for k, s in _block_shapes(args).items()})
    if args["use_rmsnorm"]:
        shapes["final_layer.norm_final.weight"] = (d,)
    shapes["final_layer.linear.weight"] = (p * p * out_c, d)
    shapes["final_layer.linear.bias"] = (p * p * out_c,)
    shapes["final_layer.adaLN_modulation.1.weight"] = (2 * d, d)
    shapes["final_layer.adaLN_modulation.1.bias"] = (2 * d,)
    return shapes


def _block_shapes(args: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    d = args["hidden_size"]
    shapes: dict[str, tuple[int, ...]] = {}
    if args["use_rmsnorm"]:
        shapes["norm1.weight"] = shapes["norm2.weight"] = (d,)
    shapes.update({"attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,)})
    if args["use_qknorm"]:
        shapes["attn.q_norm.weight"] = shapes["attn.k_norm.weight"] = (d // args["num_heads"],)
    shapes.update({"attn.proj.weight": (d, d), "attn.proj.bias": (d,)})
    if args["use_swiglu"]:
        h = _swiglu_hidden(d, args["mlp_ratio"])
        shapes.update({"mlp.w12.weight": (2 * h, d), "mlp.w12.bias": (2 * h,)})
        shapes.update({"mlp.w3.weight": (d, h), "mlp.w3.bias": (d,)})
    else:
        h = int(d * args["mlp_ratio"])
        shapes.update({"mlp.fc1.weight": (h, d), "mlp.fc1.bias": (h,)})
        shapes.update({"mlp.fc2.weight": (d, h), "mlp.fc2.bias": (d,)})
    mods = 4 if args["wo_shift"] else 6
    shapes.update({"adaLN_modulation.1.weight": (mods * d, d), "adaLN_modulation.1.bias": (mods * d,)})
    return shapes


def check_reference_state(state: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> None:
    """Every tensor of ``state`` has the key and shape of the reference ``LightningDiT(**args)``.

    Raises:
        ReferenceCheckpointError: one line naming the first missing, unexpected or misshapen
            tensor (and how many more there are).
    """
    expected = reference_shapes(args)
    problems = [f"{k} is missing" for k in expected if k not in state]
    problems += [f"{k} is not a tensor of LightningDiT" for k in state if k not in expected]
    problems += [
        f"{k} has shape {list(state[k].shape)}, {list(s)} expected"
        for k, s in expected.items()
        if k in state and tuple(state[k].shape) != s
    ]
    if problems:
        more = f" ({len(problems) - 1} more problems)" if len(problems) > 1 else ""
        size = ", ".join(f"{k}={args[k]}" for k in ("hidden_size", "depth", "patch_size", "in_channels"))
        raise ReferenceCheckpointError(f"{problems[0]} for a reference LightningDiT with {size}{more}")


# -- inferring the constructor arguments -----------------------------------------------------------
def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ReferenceCheckpointError(f"{key} is missing: not a LightningDiT checkpoint")
    return tuple(state[key].shape)


def reference_config(state: Mapping[str, torch.Tensor], **given: Any) -> dict[str, Any]:
    """The reference constructor arguments of ``state``, inferred from its tensor shapes.

    Args:
        state: a reference state dict (``read_reference_checkpoint``).
        **given: arguments the shapes cannot tell or that the caller knows (``num_heads``
            without RoPE buffers, ``num_classes`` / ``class_dropout_prob``: by default the label
            table's last row is taken as the null class, as in every LightningDiT recipe);
            each is checked against the shapes.
    Returns:
        a dict with every key of ``REFERENCE_ARGS``.
    Raises:
        ReferenceCheckpointError: an unknown argument, a value the shapes contradict, or a
            tensor of another shape than the inferred arguments imply (naming it).
    """
    unknown = sorted(set(given) - set(REFERENCE_ARGS) - {"use_checkpoint"})
    if unknown:
        raise ReferenceCheckpointError(
            f"unknown LightningDiT arguments {unknown}; valid: {list(REFERENCE_ARGS)}"
        )
    d, c, p, p2 = _shape(state, "x_embedder.proj.weight")
    if p != p2:
        raise ReferenceCheckpointError(f"x_embedder.proj.weight has a non-square patch {p}x{p2}")
    n = _shape(state, "pos_embed")[1]
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ReferenceCheckpointError(f"pos_embed has {n} tokens, not a square grid")
    args: dict[str, Any] = {"input_size": grid * p, "patch_size": p, "in_channels": c, "hidden_size": d}
    args["depth"] = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    args["use_rope"] = "feat_rope.freqs_cos" in state
    args["use_rmsnorm"] = "blocks.0.norm1.weight" in state
    args["use_qknorm"] = "blocks.0.attn.q_norm.weight" in state
    args["use_swiglu"] = "blocks.0.mlp.w12.weight" in state
    if "blocks.0.attn.q_norm.bias" in state:
        raise ReferenceCheckpointError(
            "blocks.0.attn.q_norm.bias: QK-norm with LayerNorm (use_qknorm without use_rmsnorm) "
            "has no transvae equivalent (its QK-norm is an RMSNorm)"
        )
    args["wo_shift"] = _shape(state, "blocks.0.adaLN_modulation.1.weight")[0] == 4 * d
    args["learn_sigma"] = _shape(state, "final_layer.linear.weight")[0] == 2 * p * p * c
    args["num_heads"] = _num_heads(state, d, given.get("num_heads"))
    args["mlp_ratio"] = _reference_mlp_ratio(state, args, given.get("mlp_ratio"))
    args.update(_classes(state, given.get("num_classes"), given.get("class_dropout_prob")))
    for k, v in given.items():
        if k in args and v is not None and args[k] != v:
            raise ReferenceCheckpointError(f"{k}={v!r} was given, the checkpoint's shapes say {args[k]!r}")
    check_reference_state(state, args)
    return args


def _num_heads(state: Mapping[str, torch.Tensor], d: int, given: int | None) -> int:
    if "feat_rope.freqs_cos" in state:
        head_dim = _shape(state, "feat_rope.freqs_cos")[1]
        if head_dim < 4 or d % head_dim:
            raise ReferenceCheckpointError(
                f"feat_rope.freqs_cos has head width {head_dim}, not a divisor of {d}"
            )
        return d // head_dim
    heads = given or REFERENCE_HEADS.get(d)
    if heads is None:
        raise ReferenceCheckpointError(
            f"the head count of width {d} without RoPE cannot be read from the shapes: pass num_heads"
        )
    return heads


def _reference_mlp_ratio(
    state: Mapping[str, torch.Tensor], args: Mapping[str, Any], given: float | None
) -> float:
    """An ``mlp_ratio`` for which the reference builds the checkpoint's feed-forward width."""
    if args["use_swiglu"]:
        key, width, axis = "blocks.0.mlp.w3.weight", _swiglu_hidden, 1
    else:
        key, width, axis = "blocks.0.mlp.fc1.weight", _gelu_hidden, 0
    hidden = _shape(state, key)[axis]
    ratio = _mlp_ratio(width, args["hidden_size"], hidden, given)
    if ratio is None:
        raise ReferenceCheckpointError(f"{key}: no mlp_ratio gives its feed-forward width {hidden}")
    return ratio


def _classes(
    state: Mapping[str, torch.Tensor], num_classes: int | None, dropout: float | None
) -> dict[str, Any]:
    rows = _shape(state, "y_embedder.embedding_table.weight")[0]
    if num_classes is not None:
        if rows not in (num_classes, num_classes + 1):
            raise ReferenceCheckpointError(
                f"y_embedder.embedding_table.weight has {rows} rows, not {num_classes} classes (+ a null class)"
            )
        null = rows == num_classes + 1
    else:
        null = dropout is None or dropout > 0  # LightningDiT always trains with label dropout 0.1
    if dropout is None:
        dropout = 0.1 if null else 0.0
    if null != (dropout > 0):
        raise ReferenceCheckpointError(
            f"class_dropout_prob={dropout} disagrees with the label table of {rows} rows for {num_classes} classes"
        )
    return {"num_classes": rows - 1 if null else rows, "class_dropout_prob": float(dropout)}


# -- the RoPE channel pairing ----------------------------------------------------------------------
def rope_permutation(head_dim: int) -> torch.Tensor:
    """(head_dim,) index ``P`` with ``ours[k] = reference[P[k]]`` for one head's query / key
    channels: per axis half of ``h = d/2`` channels, our pair (i, i + d/4) is the reference's
    interleaved pair (2i, 2i + 1), at the same frequency."""
    half, quarter = head_dim // 2, head_dim // 4
    k = torch.arange(head_dim)
    axis, rest = k // half, k % half
    return axis * half + 2 * (rest % quarter) + rest // quarter


def _qk_rows(dim: int, head_dim: int) -> torch.Tensor:
    """(3 dim,) index of the fused QKV rows: ``ours = reference[index]`` (values unchanged)."""
    heads = dim // head_dim
    block = (torch.arange(heads)[:, None] * head_dim + rope_permutation(head_dim)[None]).flatten()
    return torch.cat([block, dim + block, torch.arange(2 * dim, 3 * dim)])


def reference_rope_buffers(grid: int, head_dim: int, theta: float = REFERENCE_ROPE_THETA):
    """The (cos, sin) tables our RoPE uses on a ``grid`` x ``grid`` token grid, in the reference's
    interleaved channel layout: what its ``feat_rope.freqs_cos`` / ``freqs_sin`` hold (up to the
    rounding of its positions ``arange(n) / n * n``). Each (grid^2, head_dim) float32."""
    cos, sin = rope_2d(grid, grid, head_dim, theta)
    inv = torch.argsort(rope_permutation(head_dim))
    return cos[:, inv].contiguous(), sin[:, inv].contiguous()


# -- reference -> ours ----------------------------------------------------------------------------
def our_config(args: Mapping[str, Any], pos_embed_order: str = "cols_first", abs_pos_embed: bool = True):
    """The ``LightningDiTConfig`` of a reference ``LightningDiT(**args)``.

    Raises:
        ReferenceCheckpointError: a feed-forward width our ``mlp_ratio`` cannot reproduce.
    """
    d = args["hidden_size"]
    cfg = {ours: args[ref] for ref, ours in OUR_FIELDS.items()}
    cfg.update(abs_pos_embed=abs_pos_embed, pos_embed_order=pos_embed_order, rope_theta=REFERENCE_ROPE_THETA)
    # our SwiGLU width is int(2/3 * r * D), the reference's int(2/3 * int(r * D)): find an r for ours
    ref_width, our_width = (_swiglu_hidden, _our_swiglu_hidden) if args["use_swiglu"] else (_gelu_hidden,) * 2
    hidden = ref_width(d, args["mlp_ratio"])
    cfg["mlp_ratio"] = _mlp_ratio(our_width, d, hidden, args["mlp_ratio"])
    if cfg["mlp_ratio"] is None:
        raise ReferenceCheckpointError(
            f"no transvae mlp_ratio gives the feed-forward width {hidden} at width {d}"
        )
    return LightningDiTConfig(**cfg)


def _table_kind(state: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> tuple[str, bool]:
    """(pos_embed_order, abs_pos_embed) of the checkpoint's ``pos_embed``, checked."""
    table = state["pos_embed"][0]
    grid = args["input_size"] // args["patch_size"]
    if not table.any():
        return "cols_first", False
    for order in ("cols_first", "rows_first"):
        if torch.allclose(
            table, sincos_pos_embed_2d(grid, grid, args["hidden_size"], order=order), atol=1e-5
        ):
            return order, True
    raise ReferenceCheckpointError(
        "pos_embed is not DiT's fixed sin-cos table (in either channel order) nor zero: a learned "
        "position table has no transvae equivalent"
    )


def _check_rope(state: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> None:
    if not args["use_rope"]:
        return
    grid = args["input_size"] // args["patch_size"]
    cos, sin = reference_rope_buffers(grid, args["hidden_size"] // args["num_heads"])
    for key, ours in (("feat_rope.freqs_cos", cos), ("feat_rope.freqs_sin", sin)):
        if not torch.allclose(state[key], ours, atol=1e-5):
            err = (state[key] - ours).abs().max().item()
            raise ReferenceCheckpointError(
                f"{key} differs from 2D RoPE with theta {REFERENCE_ROPE_THETA:g} (max abs {err:.2e})"
            )


def from_reference(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None
) -> LightningDiT:
    """Our ``LightningDiT`` with the weights of a reference state dict: equal outputs for the
    reference's grid (any grid for ours).

    Args:
        state_dict: the reference model's ``state_dict()`` (``read_reference_checkpoint``).
        config: reference constructor arguments, all or some (see ``reference_config``); the
            others are inferred from the shapes.
    Returns:
        the model in eval mode; ``model.reference_config`` holds the reference arguments.
    Raises:
        ReferenceCheckpointError: naming the tensor or the argument that does not fit.
    """
    state = {k: v.detach().to("cpu", torch.float32) for k, v in state_dict.items()}
    args = reference_config(state, **dict(config or {}))
    _check_rope(state, args)
    order, abs_pos = _table_kind(state, args)
    cfg = our_config(args, order, abs_pos)
    model = build_model(LightningDiT, cfg, _registered_name(cfg), device="meta")
    model.load_state_dict(_to_ours(state, args), strict=True, assign=True)
    model.reference_config = dict(args)
    return model.eval()


def _to_ours(state: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    d, c, p = args["hidden_size"], args["in_channels"], args["patch_size"]
    head_dim = d // args["num_heads"]
    out = {
        "x_embedder.weight": state["x_embedder.proj.weight"],
        "x_embedder.bias": state["x_embedder.proj.bias"],
        "y_embedder.table.weight": state["y_embedder.embedding_table.weight"],
    }
    out.update({k: v for k, v in state.items() if k.startswith("t_embedder.")})
    out.update({k: v for k, v in state.items() if k.startswith("final_layer.adaLN_modulation.")})
    if args["use_rmsnorm"]:
        out["final_layer.norm.weight"] = state["final_layer.norm_final.weight"]
    keep = torch.arange(p * p * 2 * c).view(p * p, 2 * c)[:, :c].flatten() if args["learn_sigma"] else None
    for k in ("weight", "bias"):  # learn_sigma: the forward keeps the first C of 2C channels
        w = state[f"final_layer.linear.{k}"]
        out[f"final_layer.linear.{k}"] = w[keep] if keep is not None else w
    qk = _qk_rows(d, head_dim) if args["use_rope"] else None
    perm = rope_permutation(head_dim) if args["use_rope"] else None
    for i in range(args["depth"]):
        src = {k[len(f"blocks.{i}.") :]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        out.update({f"blocks.{i}.{k}": v for k, v in _block_to_ours(src, args, qk, perm).items()})
    return {k: v.contiguous() for k, v in out.items()}


def _permuted_attention(src, qk, perm) -> dict[str, torch.Tensor]:
    """A block's ``attn.qkv`` weight and bias with their rows taken in the order ``qk`` and its
    ``q_norm`` / ``k_norm`` weights in the order ``perm`` (either None: as they are); the same
    code maps the reference's layout to ours and, given the inverse orders, back."""
    out = {}
    for k in ("weight", "bias"):
        w = src[f"attn.qkv.{k}"]
        out[f"attn.qkv.{k}"] = w[qk] if qk is not None else w
    for name in ("q_norm", "k_norm"):
        if f"attn.{name}.weight" in src:
            w = src[f"attn.{name}.weight"]
            out[f"attn.{name}.weight"] = w[perm] if perm is not None else w
    return out


def _block_to_ours(src, args, qk, perm) -> dict[str, torch.Tensor]:
    d = args["hidden_size"]
    out = {k: v for k, v in src.items() if k.startswith(("norm1.", "norm2.", "attn.proj.", "mlp.fc"))}
    out.update(_permuted_attention(src, qk, perm))
    if args["use_swiglu"]:
        for k in ("weight", "bias"):
            gate, value = src[f"mlp.w12.{k}"].chunk(2, dim=0)  # silu(x1) * x2: x1 is the gate
            out[f"mlp.fc1_g.{k}"], out[f"mlp.fc1_x.{k}"] = gate, value
            out[f"mlp.fc2.{k}"] = src[f"mlp.w3.{k}"]
    for k in ("weight", "bias"):
        w = src[f"adaLN_modulation.1.{k}"]
        if args["wo_shift"]:  # (scale, gate) x 2 -> (shift = 0, scale, gate) x 2
            z = torch.zeros_like(w[:d])
            w = torch.cat([z, w[: 2 * d], z, w[2 * d :]])
        out[f"adaLN_modulation.1.{k}"] = w
    return out


def _registered_name(cfg: LightningDiTConfig) -> str:
    """The registered variant with this size (e.g. ``lightningdit-xl-1``), else the family name."""
    keys = ("hidden_size", "depth", "num_heads", "patch_size")
    for name in list_models("lightningdit-*", kind="generator"):
        named = model_config(name)
        if all(getattr(named, k) == getattr(cfg, k) for k in keys):
            return name
    return "lightningdit"


# -- ours -> reference ----------------------------------------------------------------------------
def to_reference(
    model: LightningDiT, input_size: int | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A state dict the unchanged reference ``LightningDiT(**args)`` loads with ``strict=True``
    and computes our outputs with, and those constructor arguments.

    Args:
        model: our generator.
        input_size: the latent side the reference is built for (it fixes its grid); default:
            the model's ``metadata["latent_shape"]`` (square), or its ``reference_config``.
    Returns:
        (state_dict of float32 tensors, reference constructor arguments).
    Raises:
        ReferenceCheckpointError: what the reference cannot express (one line).
    """
    cfg = model.config
    size = input_size or _input_size(model)
    if size % cfg.patch_size:
        raise ReferenceCheckpointError(
            f"input_size {size} is not a multiple of the patch size {cfg.patch_size}"
        )
    if cfg.qk_norm and not cfg.rmsnorm:
        raise ReferenceCheckpointError(
            "QK-norm (RMSNorm) behind LayerNorm blocks: the reference's use_qknorm uses LayerNorm there"
        )
    args = {"input_size": size, **{ref: getattr(cfg, ours) for ref, ours in OUR_FIELDS.items()}}
    args.update(learn_sigma=False, wo_shift=False)  # our forward has neither
    args = {k: args[k] for k in REFERENCE_ARGS}  # in the constructor's order
    ours = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    args["mlp_ratio"] = _export_mlp_ratio(ours, args)
    state = _from_ours(ours, model, args)
    check_reference_state(state, args)
    return state, args


def _input_size(model: LightningDiT) -> int:
    shape = (getattr(model, "metadata", None) or {}).get("latent_shape")
    if isinstance(shape, list) and len(shape) == 3:
        if shape[1] != shape[2]:
            raise ReferenceCheckpointError(
                f"the reference runs on square grids only; this generator samples {shape[1]}x{shape[2]} latents"
            )
        return int(shape[1])
    ref = getattr(model, "reference_config", None)
    if ref:
        return int(ref["input_size"])
    raise ReferenceCheckpointError("the latent size is unknown (no latent_shape metadata): pass input_size")


def _export_mlp_ratio(ours: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> float:
    """An ``mlp_ratio`` with which the reference builds our feed-forward width."""
    d = args["hidden_size"]
    if args["use_swiglu"]:
        width, hidden = _swiglu_hidden, ours["blocks.0.mlp.fc2.weight"].shape[1]
    else:
        width, hidden = _gelu_hidden, ours["blocks.0.mlp.fc1.weight"].shape[0]
    ratio = _mlp_ratio(width, d, hidden, args["mlp_ratio"])
    if ratio is None:
        raise ReferenceCheckpointError(f"the reference builds no feed-forward of width {hidden} at width {d}")
    return ratio


def _from_ours(
    ours: Mapping[str, torch.Tensor], model: LightningDiT, args: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    cfg, d = model.config, args["hidden_size"]
    grid = args["input_size"] // args["patch_size"]
    table = (
        sincos_pos_embed_2d(grid, grid, d, order=cfg.pos_embed_order)
        if cfg.abs_pos_embed
        else torch.zeros(grid * grid, d)
    )
    state = {
        "pos_embed": table[None],
        "x_embedder.proj.weight": ours["x_embedder.weight"],
        "x_embedder.proj.bias": ours["x_embedder.bias"],
        "y_embedder.embedding_table.weight": ours["y_embedder.table.weight"],
    }
    state.update(
        {
            k: v
            for k, v in ours.items()
            if k.startswith(("t_embedder.", "final_layer.linear.", "final_layer.adaLN"))
        }
    )
    if cfg.rmsnorm:
        state["final_layer.norm_final.weight"] = ours["final_layer.norm.weight"]
    inv_qk = inv_perm = None
    if cfg.rope:
        state["feat_rope.freqs_cos"], state["feat_rope.freqs_sin"] = reference_rope_buffers(
            grid, cfg.head_dim, cfg.rope_theta
        )
        inv_qk = torch.argsort(_qk_rows(d, cfg.head_dim))
        inv_perm = torch.argsort(rope_permutation(cfg.head_dim))
    for i in range(cfg.depth):
        src = {k[len(f"blocks.{i}.") :]: v for k, v in ours.items() if k.startswith(f"blocks.{i}.")}
        state.update(
            {f"blocks.{i}.{k}": v for k, v in _block_to_reference(src, cfg, inv_qk, inv_perm).items()}
        )
    return {k: v.contiguous() for k, v in state.items()}


def _block_to_reference(src, cfg, inv_qk, inv_perm) -> dict[str, torch.Tensor]:
    out = {
        k: v for k, v in src.items() if k.startswith(("norm1.", "norm2.", "attn.proj.", "adaLN_modulation."))
    }
    out.update(_permuted_attention(src, inv_qk, inv_perm))
    for k in ("weight", "bias"):
        if cfg.swiglu:
            out[f"mlp.w12.{k}"] = torch.cat([src[f"mlp.fc1_g.{k}"], src[f"mlp.fc1_x.{k}"]])
            out[f"mlp.w3.{k}"] = src[f"mlp.fc2.{k}"]
        else:
            out[f"mlp.fc1.{k}"], out[f"mlp.fc2.{k}"] = src[f"mlp.fc1.{k}"], src[f"mlp.fc2.{k}"]
    return out


# -- files ------------------------------------------------------------------------------------------
def read_latent_stats(path: str | os.PathLike) -> LatentStats:
    """The reference's ``latents_stats.pt`` (``{"mean", "std"}`` tensors (1, C, 1, 1), as its
    ``ImgLatentDataset`` saves them), a folder holding it, or our ``latents_stats.json``.

    Raises:
        ReferenceCheckpointError: unreadable or not two tensors of channel statistics.
    """
    from ...data.latents import LatentDataError
    from ...utils.config import read_json

    p = Path(path)
    p = p / "latents_stats.pt" if p.is_dir() else p
    try:
        raw = (
            read_json(p, what="latent statistics")
            if p.suffix == ".json"
            else torch.load(p, map_location="cpu", weights_only=True)
        )
        if not isinstance(raw, dict):
            raise LatentDataError(f"expected a dict with 'mean' and 'std', got {type(raw).__name__}")
        return LatentStats.from_dict(raw)
    except Exception as e:  # a missing file, a pickle with objects, wrong contents
        raise ReferenceCheckpointError(f"{p}: no latent statistics ({type(e).__name__}: {e})") from e


def convert_lightningdit(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    latents_stats: str | os.PathLike | None = None,
    latent_multiplier: float = 1.0,
    cfg_scale: float = 1.0,
    cfg_interval_start: float = 0.11,
    **config: Any,
) -> Path:
    """Write a released LightningDiT checkpoint as a model folder ``transvae gen-sample`` samples.

    Args:
        path: the reference checkpoint (``.pt`` / ``.pth`` / ``.safetensors``).
        out_dir: the folder to write (``config.json`` + ``model.safetensors``).
        latents_stats: the ``latents_stats.pt`` the generator was trained with (LightningDiT
            publishes it beside its checkpoints); gen-sample needs it to denormalise samples.
        latent_multiplier: the reference's ``latent_multiplier`` (1.0 for VA-VAE; 0.18215 for
            SD-VAE configs).
        cfg_scale, cfg_interval_start: the guidance gen-sample uses by default (LightningDiT's
            reproductions: 6.7 from t = 0.125 for the 800-epoch XL/1, 10 from 0.10 for 64
            epochs; its main config 0.11; cfg_scale 1 = none). Guidance follows the reference
            otherwise: the first 3 channels, 249 Euler steps with shift 0.3.
        **config: reference constructor arguments the shapes cannot tell (``reference_config``).
    Returns:
        the written folder.
    """
    model = from_reference(read_reference_checkpoint(path), config)
    args = model.reference_config
    c, size = args["in_channels"], args["input_size"]
    meta: dict[str, Any] = {
        "latent_shape": [c, size, size],
        "latent_multiplier": float(latent_multiplier),
        "sample": {**REFERENCE_SAMPLING, "cfg_scale": cfg_scale, "cfg_interval_start": cfg_interval_start},
        "converted_from": {"code": REFERENCE, "checkpoint": str(Path(path).resolve()), "config": args},
    }
    if latents_stats is not None:
        stats = read_latent_stats(latents_stats)
        if stats.channels != c:
            raise ReferenceCheckpointError(
                f"{latents_stats} has {stats.channels} channels, the generator {c}"
            )
        meta["latent_stats"] = stats.to_dict()
    return model.save_pretrained(out_dir, **meta)


def export_lightningdit(
    run_or_model: str | os.PathLike | LightningDiT,
    out_path: str | os.PathLike,
    input_size: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write our generator as a checkpoint the reference code loads unchanged.

    Args:
        run_or_model: a ``gen-train`` run folder, a model folder or a ``LightningDiT``.
        out_path: ``*.safetensors`` (the state dict; the constructor arguments in its metadata
            as ``lightningdit_args``, JSON) or ``*.pt`` (``{"model", "ema", "lightningdit_args"}``:
            the reference's ``inference.py`` takes ``ema``; the weights are stored once).
        input_size: the latent side of the reference model (default: the generator's).
    Returns:
        (the written file, the reference constructor arguments).
    """
    import json

    from ...utils.files import atomic_path

    model = run_or_model if isinstance(run_or_model, LightningDiT) else load_model(run_or_model)
    if not isinstance(model, LightningDiT):
        raise ReferenceCheckpointError(f"{run_or_model} holds a {model.kind}, not a LightningDiT generator")
    state, args = to_reference(model, input_size)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if out.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"lightningdit_args": json.dumps(args), "format": "pt"})
        else:
            torch.save({"model": state, "ema": state, "lightningdit_args": args}, tmp)
    return out, args
