"""Reading the weights of a model to convert, and loading them under the transvae names.

Only data is read: ``.safetensors`` (its header first, so names and shapes are checked before
any tensor is materialised) and PyTorch checkpoints through ``torch.load(weights_only=True)``,
which refuses any pickled object other than tensors and plain containers. A checkpoint's
``["state_dict"]`` is used when present; the autoencoder's tensors are those under
``encoder.`` / ``decoder.`` / ``quant_conv.`` / ``post_quant_conv.`` (a full Stable Diffusion
checkpoint keeps them under ``first_stage_model.``); the rest (LPIPS and discriminator ``loss.*``,
VA-VAE's ``foundation_model.*`` / ``linear_proj.*``, a diffusion model) is left out and counted.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from ..base import AutoencoderBase, ConfigError
from ..persistence import warn_nonfinite

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"
AUTOENCODER_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
PIPELINE_VAE_PREFIX = "first_stage_model."  # the VAE inside a full SD 1.x / 2.x / SD3 checkpoint
_FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}
_TORCH_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
}


@dataclass
class TensorFile:
    """The autoencoder tensors of a weights file, by name: shapes now, values on ``load()``.

    Attributes:
        path: the file.
        shapes: name -> shape of every autoencoder tensor.
        dtypes: name -> safetensors dtype string (``F32``, ``BF16``, ``I64``, ...).
        ignored: left-out tensors counted by their first name component (``{"loss": 122}``).
        prefix: the prefix stripped from the names in the file (``first_stage_model.`` or "").
    """

    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    ignored: dict[str, int] = field(default_factory=dict)
    prefix: str = ""
    _tensors: dict[str, torch.Tensor] | None = None

    def load(self) -> dict[str, torch.Tensor]:
        """All autoencoder tensors (CPU), read now for a safetensors file."""
        if self._tensors is None:  # only the autoencoder's tensors (a full SD file also holds a UNet)
            with safe_open(str(self.path), framework="pt") as f:
                self._tensors = {k: f.get_tensor(self.prefix + k) for k in self.shapes}
        return self._tensors


def _select(names: list[str]) -> tuple[str, list[str], dict[str, int]]:
    """(prefix, autoencoder names without it, {left-out group: count})."""
    prefix = PIPELINE_VAE_PREFIX if any(n.startswith(PIPELINE_VAE_PREFIX) for n in names) else ""
    keep, ignored = [], Counter()
    for n in names:
        inner = n[len(prefix) :] if n.startswith(prefix) else None
        if inner is not None and inner.startswith(AUTOENCODER_PREFIXES):
            keep.append(inner)
        else:
            ignored[n.split(".")[0] + ".*"] += 1
    return prefix, keep, dict(ignored)


def open_safetensors(path: Path) -> TensorFile:
    """Read a ``.safetensors`` header (names, shapes, dtypes); a damaged file is a one-line ``ConfigError``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as e:  # SafetensorError: truncated, a pickle, an HTML page saved as weights ...
        raise ConfigError(f"{path} is not a valid safetensors file ({type(e).__name__}: {e})") from e
    prefix, keep, ignored = _select(sorted(header))
    return TensorFile(
        path,
        {k: header[prefix + k][0] for k in keep},
        {k: header[prefix + k][1] for k in keep},
        ignored,
        prefix,
    )


def _first_useful_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln:
            return ln
    return lines[0] if lines else type(e).__name__


def open_torch_checkpoint(path: Path) -> TensorFile:
    """Load a PyTorch checkpoint with ``weights_only=True`` (mmap when the format allows it).

    Raises:
        ConfigError: a file holding Python objects other than tensors (never executed), a damaged
            file, or one without tensors; one line naming the file.
    """
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as e:
        raise ConfigError(
            f"{path} was refused: it holds pickled Python objects besides tensors, which are never executed "
            f"({_first_useful_line(e)}); convert it to .safetensors in a trusted environment"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable PyTorch checkpoint ({_first_useful_line(e)})") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConfigError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    prefix, keep, ignored = _select(sorted(state))
    tensors = {k: state[prefix + k] for k in keep}
    dtypes = {k: _TORCH_DTYPES.get(v.dtype, str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()}
    return TensorFile(path, {k: tuple(v.shape) for k, v in tensors.items()}, dtypes, ignored, prefix, tensors)


def open_weights(path: Path) -> TensorFile:
    """``open_safetensors`` or ``open_torch_checkpoint`` by suffix; anything else is refused."""
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        tf = open_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        tf = open_torch_checkpoint(path)
    else:
        raise ConfigError(
            f"{path}: unknown weights format '{suffix}'; expected {SAFETENSORS_SUFFIX} or one of {', '.join(TORCH_SUFFIXES)}"
        )
    if not tf.shapes:
        raise ConfigError(
            f"{path} holds no autoencoder tensors (names starting with {', '.join(AUTOENCODER_PREFIXES)}"
            f" or {PIPELINE_VAE_PREFIX}encoder.)"
        )
    return tf


# ``names(model_key)``: the key's possible names in a file, preferred first.
KeyNames = Callable[[str], tuple[str, ...]]
# A suffix for mismatch messages, computed only when one is raised.
Hint = Callable[[], str]


def no_hint() -> str:
    """The ``Hint`` that adds nothing."""
    return ""


def plan_converted(
    model: AutoencoderBase, source: TensorFile, names: KeyNames, what: str, hint: Hint = no_hint
) -> dict[str, str]:
    """Match every tensor of ``model`` (built on the meta device) with one tensor of ``source``.

    Each model tensor must come from exactly one file tensor of the same shape (a Linear weight
    (O, I) may fill a 1x1 conv weight (O, I, 1, 1)) and a floating-point dtype (integer buffers:
    the same dtype), and every tensor of the file must be used. Nothing is materialised.

    Args:
        model: the architecture, on the meta device.
        source: the file's tensors.
        names: ``names(model_key)`` -> the key's possible names in the file, preferred first.
        what: what describes the architecture, for messages (``"preset 'sd-vae'"``).
        hint: called for a suffix to mismatch messages (e.g. the presets that fit the file).
    Returns:
        ``{model key: file key}``.
    Raises:
        ConfigError: one line naming the first missing, unexpected or differently shaped tensor.
    """
    plan: dict[str, str] = {}
    for key, ref in model.state_dict().items():
        cands = names(key)
        src = next((c for c in cands if c in source.shapes), None)
        if src is None:
            raise ConfigError(
                f"{source.path} has no tensor {source.prefix}{cands[0]} of shape {list(ref.shape)}, which {what} "
                f"has{hint()}"
            )
        shape, want = source.shapes[src], tuple(ref.shape)
        if shape != want and shape + (1, 1) != want:
            raise ConfigError(
                f"{source.path}: tensor {source.prefix}{src} has shape {list(shape)}, {what} expects "
                f"{list(want)}{hint()}"
            )
        dtype = source.dtypes[src]
        if dtype not in _FLOAT_DTYPES if ref.is_floating_point() else dtype != _TORCH_DTYPES.get(ref.dtype):
            raise ConfigError(
                f"{source.path}: tensor {source.prefix}{src} has dtype {dtype}, {what} expects {ref.dtype}"
            )
        plan[key] = src
    unused = sorted(set(source.shapes) - set(plan.values()))
    if unused:
        listed = ", ".join(source.prefix + u for u in unused[:4]) + (" ..." if len(unused) > 4 else "")
        raise ConfigError(
            f"{source.path}: {len(unused)} tensor(s) are not part of the architecture {what} describes "
            f"({listed}){hint()}"
        )
    return plan


def fits(model: AutoencoderBase, source: TensorFile, names: KeyNames) -> bool:
    """Whether ``plan_converted`` accepts ``source`` for ``model`` (for hints; nothing is read)."""
    try:
        plan_converted(model, source, names, "")
    except ConfigError:
        return False
    return True


def load_converted(
    model: AutoencoderBase, source: TensorFile, names: KeyNames, what: str, hint: Hint = no_hint
) -> None:
    """``plan_converted``, then read the tensors and load them into ``model`` under its names
    (``assign``: the meta parameters are replaced; float tensors become the model's dtype).

    Warns:
        RuntimeWarning: naming the tensors that hold NaN or Inf.
    """
    plan = plan_converted(model, source, names, what, hint)
    expected = model.state_dict()
    tensors = source.load()
    state = {k: tensors[s].reshape(expected[k].shape).to(expected[k].dtype) for k, s in plan.items()}
    warn_nonfinite(state, source.path)
    model.load_state_dict(state, strict=True, assign=True)
