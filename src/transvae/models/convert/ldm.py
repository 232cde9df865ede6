"""LDM / Stable Diffusion / FLUX.1 / VA-VAE checkpoints -> the CNN-VAE.

A checkpoint (``.ckpt`` / ``.pt`` / ``.pth`` read with ``torch.load(weights_only=True)``, or
``.safetensors``) is a bare state dict: its architecture comes from a preset (``presets.py``) or
an LDM YAML, and is checked against the tensor shapes before any weight is read (one line names
the first tensor that differs, and which presets the file does fit). The names may follow LDM
(``encoder.down.0.block.0``) or diffusers (``encoder.down_blocks.0.resnets.0``); both are read.

The LDM YAML is parsed with ``yaml.safe_load`` as data. Accepted: an autoencoder config
(``model.params.{embed_dim, ddconfig}``, as LDM's ``configs/autoencoder/*.yaml`` and LightningDiT's
``tokenizer/configs/vavae_f16d32.yaml``), the same without the ``model.params`` levels, or a full
latent-diffusion config whose ``first_stage_config`` is read (its ``scale_factor`` becomes the
``scaling_factor``). Paths in the YAML (``ckpt_path``) are never opened; ``target`` is only
compared with ``AutoencoderKL``, never imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ...utils.config import from_dict
from ..base import ConfigError
from ..cnn_vae import CNNVAE, CNNVAEConfig
from ..registry import build_model
from .cnn_names import Naming, source_names
from .presets import PRESETS, get_preset
from .weights import TensorFile, fits, load_converted, open_weights

MODEL_NAME = "ldm-autoencoder-kl"
_MAX_YAML_BYTES = 1 << 20


@dataclass
class DDConfig:
    """LDM's ``ddconfig`` (the ``Encoder`` / ``Decoder`` arguments), with LDM's defaults."""

    double_z: bool = True
    z_channels: int = 4
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    resamp_with_conv: bool = True
    use_linear_attn: bool = False
    attn_type: str = "vanilla"
    give_pre_end: bool = False
    tanh_out: bool = False


def _mapping(node: Any, where: str) -> dict:
    if not isinstance(node, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(node).__name__}")
    return node


def _params(node: Any, where: str, allow_pipeline: bool) -> dict:
    """``node["params"]`` (or ``node`` itself), after checking ``node["target"]`` as a string."""
    node = _mapping(node, where)
    params = _mapping(node.get("params", node), f"{where}: 'params'")
    target = node.get("target")
    pipeline = allow_pipeline and "first_stage_config" in params
    if (
        target is not None
        and not pipeline
        and not (isinstance(target, str) and target.endswith("AutoencoderKL"))
    ):
        raise ConfigError(
            f"{where}: target {target!r} is not supported; transvae converts KL autoencoders (AutoencoderKL)"
        )
    return params


def _autoencoder_params(root: Any, path: Path) -> tuple[dict, dict[str, Any]]:
    """The mapping that holds ``ddconfig`` and ``embed_dim``, and metadata found on the way."""
    root = _mapping(root, f"{path}: the YAML document")
    params = _params(root.get("model", root), f"{path}: 'model'", allow_pipeline=True)
    meta: dict[str, Any] = {}
    if "first_stage_config" in params:  # a full latent-diffusion config: its autoencoder and scale
        scale = params.get("scale_factor")
        if isinstance(scale, (int, float)) and not isinstance(scale, bool):
            meta["scaling_factor"] = float(scale)
        params = _params(params["first_stage_config"], f"{path}: 'first_stage_config'", allow_pipeline=False)
    if "ddconfig" not in params or "embed_dim" not in params:
        raise ConfigError(
            f"{path}: no 'ddconfig' and 'embed_dim' (expected model.params.ddconfig, as in LDM)"
        )
    return params, meta


def read_ldm_yaml(path: str | Path) -> tuple[CNNVAEConfig, dict[str, Any]]:
    """An LDM autoencoder YAML -> (``CNNVAEConfig``, metadata).

    Raises:
        ConfigError: not YAML, too large, no ``ddconfig``, unknown ``ddconfig`` keys, or options
            the CNN-VAE cannot represent (all named in one line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such LDM config file: {path}")
    if path.stat().st_size > _MAX_YAML_BYTES:
        raise ConfigError(
            f"{path} is {path.stat().st_size} bytes; an LDM config is at most {_MAX_YAML_BYTES}"
        )
    try:
        root = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid YAML ({' '.join(str(e).split())})") from e
    params, meta = _autoencoder_params(root, path)
    dd = from_dict(
        DDConfig, _mapping(params["ddconfig"], f"{path}: 'ddconfig'"), what=f"LDM ddconfig of {path}"
    )
    if "z_channels" not in params["ddconfig"]:
        raise ConfigError(f"{path}: ddconfig has no 'z_channels'")
    embed_dim = params["embed_dim"]
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int):
        raise ConfigError(f"{path}: embed_dim must be an integer, got {embed_dim!r}")
    return to_cnn_vae(dd, embed_dim, path), meta


def to_cnn_vae(dd: DDConfig, embed_dim: int, path: Path | str) -> CNNVAEConfig:
    """Map LDM's ``ddconfig`` + ``embed_dim`` onto ``CNNVAEConfig`` (32 GroupNorm groups, quant convs)."""
    n = len(dd.ch_mult)
    levels = {dd.resolution // 2**i: i for i in range(n)}
    bad = []
    for key, value, ok in (
        ("double_z", dd.double_z, True),
        ("resamp_with_conv", dd.resamp_with_conv, True),
        ("use_linear_attn", dd.use_linear_attn, False),
        ("give_pre_end", dd.give_pre_end, False),
        ("tanh_out", dd.tanh_out, False),
        ("dropout", dd.dropout, 0.0),
    ):
        if value != ok:
            bad.append(f"{key}={value!r} (only {ok!r})")
    if dd.attn_type not in ("vanilla", "vanilla-xformers"):
        bad.append(f"attn_type={dd.attn_type!r} (only 'vanilla')")
    if dd.out_ch != dd.in_channels:
        bad.append(f"out_ch={dd.out_ch} != in_channels={dd.in_channels}")
    if embed_dim != dd.z_channels:
        bad.append(f"embed_dim={embed_dim} != z_channels={dd.z_channels}")
    stray = [r for r in dd.attn_resolutions if r not in levels]
    if stray:
        bad.append(f"attn_resolutions {stray} match no level (resolution {dd.resolution}, {n} levels)")
    if bad:
        raise ConfigError(f"{path}: LDM option(s) the CNN-VAE cannot represent: " + "; ".join(bad))
    attn = sorted(levels[r] for r in set(dd.attn_resolutions))
    return CNNVAEConfig.from_dict(
        {
            "channels_last": False,  # the source's NCHW layout: fp32 outputs equal to 1e-5
            "in_channels": dd.in_channels,
            "latent_channels": embed_dim,
            "base_dim": dd.ch,
            "ch_mult": list(dd.ch_mult),
            "num_res_blocks": dd.num_res_blocks,
            "decoder_num_res_blocks": dd.num_res_blocks + 1,
            "mid_block": True,
            "mid_attn": True,
            "norm_groups": 32,
            "quant_conv": True,
            "post_quant_conv": True,
            **({"stage_attn": bool(attn)} if attn in ([], [n - 1]) else {"attn_stages": attn}),
        }
    )


def naming_of(source: TensorFile) -> Naming:
    """``"diffusers"`` if the file uses diffusers' block names, else ``"ldm"``."""
    diffusers = any(".down_blocks." in k or ".mid_block." in k or ".up_blocks." in k for k in source.shapes)
    return "diffusers" if diffusers else "ldm"


def matching_presets(source: TensorFile, naming: Naming) -> list[str]:
    """The presets whose architecture fits the file's names and shapes (nothing is read)."""
    found = []
    for p in PRESETS.values():
        cfg = CNNVAEConfig.from_dict({**p.config, "channels_last": False})
        model = build_model(CNNVAE, cfg, p.name, device="meta")
        if fits(model, source, lambda k, c=cfg: source_names(k, c, naming)):
            found.append(p.name)
    return found


def convert_checkpoint(
    path: str | Path,
    preset: str | None = None,
    ldm_config: str | Path | None = None,
    name: str | None = None,
) -> CNNVAE:
    """Convert an LDM-family checkpoint with a preset or an LDM YAML.

    Args:
        path: ``.ckpt`` / ``.pt`` / ``.pth`` / ``.safetensors``.
        preset: a name from ``PRESETS`` (``sd-vae``, ``sdxl-vae``, ``sd3-vae``, ``flux-vae``,
            ``vavae-f16d32``); exclusive with ``ldm_config``.
        ldm_config: an LDM YAML describing the architecture.
        name: the model's ``model_name`` (default: the preset's name, else ``ldm-autoencoder-kl``).
    Returns:
        the CNN-VAE (float32, CPU, eval mode); ``metadata`` holds the preset's (or YAML's)
        scaling and ``ignored`` counts of the left-out tensors (``{"loss.*": 122}``).
    Raises:
        ConfigError: no or two architecture sources, a refused or damaged file, or tensors that do
            not fit the architecture (one line).
    """
    path = Path(path)
    if preset is not None and ldm_config is not None:
        raise ConfigError("pass either a preset or an LDM YAML config, not both")
    if preset is None and ldm_config is None:
        folder = (path.parent / "config.json").is_file()
        raise ConfigError(
            f"{path} carries no architecture: pass a preset ({', '.join(PRESETS)}) or an LDM YAML config "
            f"(transvae convert {path.name} --preset NAME --out DIR)"
            + (f", or the model folder {path.parent} that holds config.json" if folder else "")
        )
    if preset is not None:
        p = get_preset(preset)
        cfg, meta, what = (
            CNNVAEConfig.from_dict({**p.config, "channels_last": False}),
            dict(p.metadata),
            f"preset '{preset}'",
        )
    else:
        cfg, meta = read_ldm_yaml(ldm_config)
        what = f"the LDM config {ldm_config}"
    source = open_weights(path)
    naming = naming_of(source)

    def hint() -> str:
        fitting = [n for n in matching_presets(source, naming) if n != preset]
        return f"; the file fits preset(s) {', '.join(fitting)}" if fitting else ""

    model = build_model(CNNVAE, cfg, name or preset or MODEL_NAME, device="meta")
    load_converted(model, source, lambda k: source_names(k, cfg, naming), what, hint)
    model.metadata = {**meta, "converted_from": f"{naming} checkpoint ({what})"}
    if source.ignored:
        model.metadata["ignored_tensors"] = source.ignored
    return model.eval()
