"""Saving and loading every model: ``config.json`` + ``model.safetensors``, locally or on the Hub.

One format and one loader for tokenizers and generators alike: ``config.json`` names the
registered ``architecture`` and holds its config (plus ``model_name`` and free ``metadata``), the
weights are safetensors. ``PersistenceMixin`` gives every model ``save_pretrained`` /
``from_pretrained`` / ``push_to_hub`` (as diffusers' ``ModelMixin``); this module imports no
architecture (classes are looked up in the registry by name).

Nothing here unpickles: configs are JSON parsed as data, weights are safetensors, and both are
validated against the architecture (keys, shapes, dtypes) before any weight is materialised.
Loaded weights are scanned for NaN / Inf (a warning names the tensors). Loading also reads a
folder written by diffusers' ``save_pretrained`` of ``AutoencoderTransVAE`` (``config.json``
with ``_class_name`` + ``diffusion_pytorch_model.safetensors``): the plain model is rebuilt from
its ``model_config`` and its ``scaling_factor`` / ``shift_factor`` / latent statistics become the
model's ``metadata``, as ``save_pretrained(dir, **metadata)`` metadata does for a plain folder.

Published autoencoders load through the converters of ``transvae.models.convert``, which plug
into this loader (``register_converter``; this module never imports them): a diffusers
``AutoencoderKL`` / ``AutoencoderDC`` folder (chosen by its ``config.json``'s ``_class_name``),
or an LDM / SD / VA-VAE checkpoint file with a ``preset`` (or an LDM YAML). What a file says
selects the converter that parses it, never what is fetched, imported or executed.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from ..utils.config import ConfigError, read_json
from ..utils.files import atomic_path, atomic_write_bytes
from .registry import build_model, get_architecture

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
DIFFUSERS_CLASS = "AutoencoderTransVAE"
# diffusers config entries kept as metadata when a diffusers folder is loaded as a plain model
_DIFFUSERS_METADATA = ("scaling_factor", "shift_factor", "latents_mean", "latents_std")
# Weight formats based on pickle: never read, only named in the error message.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_SAFETENSORS_DTYPE = {torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


@dataclass(frozen=True)
class Converter:
    """A reader of formats this module does not own (``transvae.models.convert`` registers one).

    Attributes:
        claims: ``claims(raw_config_json) -> bool``: whether a folder's parsed ``config.json`` is
            one it converts.
        read_config: ``read_config(raw, path) -> (class, config, name, metadata)``, without weights.
        convert: ``convert(source, preset, ldm_config, subfolder=, revision=) -> model`` for a
            folder it claims or a checkpoint file.
    """

    claims: Callable[[Any], bool]
    read_config: Callable[[Any, Path], tuple[type, Any, str, dict[str, Any]]]
    convert: Callable[..., nn.Module]


_CONVERTERS: list[Converter] = []


def register_converter(converter: Converter) -> None:
    """Plug a converter into ``load_model`` / ``read_config`` (``transvae.models.convert`` does,
    when ``transvae.models`` is imported)."""
    _CONVERTERS.append(converter)


def _converter_for(raw: Any) -> Converter | None:
    return next((c for c in _CONVERTERS if c.claims(raw)), None)


class PersistenceMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for every model, tokenizer or
    generator (as diffusers' ``ModelMixin``): one place owns the on-disk format, and models never
    import their loader back. A model provides ``config`` and ``config_dict()``."""

    def save_pretrained(self, save_directory: str | os.PathLike, **metadata: Any) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (atomically) to ``save_directory``."""
        return save_model_folder(self, save_directory, **metadata)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike, **kwargs: Any):
        """Load a model saved with ``save_pretrained`` from a folder, a run folder or a Hub repo."""
        model = load_model(path_or_repo, **kwargs)
        if not isinstance(model, cls):
            raise ConfigError(f"{path_or_repo} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload ``config.json`` + ``model.safetensors`` to the Hugging Face Hub."""
        return push_to_hub(self, repo_id, **kwargs)


def save_model_folder(model: nn.Module, save_directory: str | os.PathLike, **metadata: Any) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for the plain (unwrapped) model.

    Extra ``metadata`` (e.g. training step, latent statistics) goes into ``config.json`` under
    ``"metadata"``; it is informational and never used to build the model.
    """
    model = unwrap_model(model)
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config_dict()
    if metadata:
        cfg["metadata"] = metadata
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "architecture": model.config.architecture})
    atomic_write_bytes(out / CONFIG_NAME, (json.dumps(cfg, indent=2) + "\n").encode())
    return out


def model_fingerprint(model: nn.Module) -> str:
    """A short hash that identifies a model's weights and architecture: the SHA-256 of its
    ``config_dict()`` (without free metadata) and of every state tensor's float32 bytes in key
    order. Two folders holding the same weights (in any dtype or device) get the same value; any
    retraining or edit of the config gives another. Used to tie latents to the tokenizer that
    made them (``extract-latents``, ``gen-train``, ``gen-sample``).

    Returns:
        16 hex digits.
    """
    import hashlib

    model = unwrap_model(model)
    h = hashlib.sha256(json.dumps(model.config_dict(), sort_keys=True).encode())
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_identity(model: nn.Module) -> dict[str, str]:
    """``{"name": ..., "fingerprint": ...}``: what latents record of the tokenizer that made them."""
    return {"name": unwrap_model(model).model_name, "fingerprint": model_fingerprint(model)}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP/FSDP ``.module`` and ``torch.compile`` ``._orig_mod`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        else:
            return model


def resolve_model_folder(
    path_or_repo: str | os.PathLike, revision: str | None = None, subfolder: str | None = None
) -> Path:
    """Find the folder holding ``config.json``: a model folder, a run folder (``RUN/model``) or a Hub repo.

    Args:
        path_or_repo: a local folder or an ``owner/name`` Hub repo id.
        revision: Hub revision.
        subfolder: the model's folder inside it (``"vae"`` in a diffusers pipeline repo); a
            relative path without ``..``.
    """
    if subfolder:
        parts = Path(subfolder).parts
        if Path(subfolder).is_absolute() or ".." in parts or "\\" in subfolder:
            raise FileNotFoundError(
                f"subfolder must be a relative path inside the model folder, got {subfolder!r}"
            )
        if Path(path_or_repo).is_dir():
            return resolve_model_folder(Path(path_or_repo) / subfolder)
    p = Path(path_or_repo)
    if p.is_dir():
        for cand in (p, p / "model"):
            if (cand / CONFIG_NAME).is_file():
                return cand
        raise FileNotFoundError(
            f"{p} has no {CONFIG_NAME}: expected a folder written by save_pretrained "
            f"or a training run folder with a model/ sub-folder"
        )
    if p.exists():
        raise FileNotFoundError(f"{p} is a file; pass the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    if str(path_or_repo).count("/") != 1 or str(path_or_repo).startswith((".", "/", "~")):
        raise FileNotFoundError(f"no such model folder: {path_or_repo}")
    try:
        from huggingface_hub import snapshot_download

        prefix = f"{Path(subfolder).as_posix()}/" if subfolder else ""
        local = snapshot_download(
            repo_id=str(path_or_repo),
            revision=revision,
            allow_patterns=[prefix + n for n in (CONFIG_NAME, WEIGHTS_NAME, DIFFUSERS_WEIGHTS_NAME)],
        )
    except Exception as e:  # offline, missing repo, auth...
        raise FileNotFoundError(_hub_error(str(path_or_repo), e)) from e
    folder = Path(local) / subfolder if subfolder else Path(local)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"the Hub repo '{path_or_repo}' has no {prefix}{CONFIG_NAME}")
    return folder


def _hub_error(repo: str, e: Exception) -> str:
    """One line that starts with what to do, then why (the Hub's own message is long and multi-line)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(e, GatedRepoError):
        return (
            f"log in with an account that has access (hf auth login), or pass a local folder: "
            f"the Hub repo '{repo}' is gated ({type(e).__name__})"
        )
    if isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError)):
        return (
            f"check the repo id (and hf auth login for a private repo), or pass a local folder: '{repo}' is "
            f"not a local folder and the Hub has no such repo or revision ({type(e).__name__})"
        )
    return (
        f"pass a local model folder (download it where the Hub is reachable: hf download {repo} "
        f"--local-dir DIR): '{repo}' is not a local folder and the Hub cannot be reached ({type(e).__name__})"
    )


def read_config(folder: Path) -> tuple[type, Any, str]:
    """Parse and validate ``config.json`` (a ``save_pretrained`` folder, or a diffusers folder of
    ``AutoencoderTransVAE``): returns (class, config, model name)."""
    return read_config_and_metadata(folder)[:3]


def read_config_and_metadata(folder: Path) -> tuple[type, Any, str, dict[str, Any]]:
    """``read_config`` plus the folder's metadata (``save_pretrained(dir, **metadata)``, or a
    diffusers config's ``scaling_factor`` / ``shift_factor`` / ``latents_mean`` / ``latents_std``)."""
    path = folder / CONFIG_NAME
    raw = read_json(path, what="model config")
    converter = _converter_for(raw)
    if converter is not None:
        return converter.read_config(raw, path)
    if not isinstance(raw, dict) or "architecture" not in raw:
        if isinstance(raw, dict) and "_class_name" in raw:
            raise ConfigError(
                f"{path} is a diffusers config of {raw['_class_name']!r}; transvae loads {DIFFUSERS_CLASS} "
                f"folders and converts AutoencoderKL and AutoencoderDC ones"
            )
        raise ConfigError(f"{path} must be a JSON object with an 'architecture' key")
    raw = dict(raw)
    if "_class_name" in raw:  # written by diffusers' save_pretrained of AutoencoderTransVAE
        if raw["_class_name"] != DIFFUSERS_CLASS:
            raise ConfigError(
                f"{path} is a diffusers config of {raw['_class_name']!r}; transvae loads {DIFFUSERS_CLASS} "
                f"folders and converts AutoencoderKL and AutoencoderDC ones"
            )
        meta = {k: raw[k] for k in _DIFFUSERS_METADATA if raw.get(k) is not None}
        model_config = raw.get("model_config") or {}
        if not isinstance(model_config, dict):
            raise ConfigError(f"{path}: 'model_config' must be a JSON object")
        raw = {
            "architecture": raw["architecture"],
            "model_name": raw.get("model_name") or raw["architecture"],
        }
        raw.update(model_config)
    else:
        meta = raw.pop("metadata", None) or {}
        if not isinstance(meta, dict):
            raise ConfigError(f"{path}: 'metadata' must be a JSON object")
    arch = raw.pop("architecture")
    name = raw.pop("model_name", arch)
    if not isinstance(arch, str) or not isinstance(name, str):
        raise ConfigError(
            f"{path}: 'architecture' and 'model_name' must be strings, got {arch!r} and {name!r}"
        )
    cls = get_architecture(arch)
    return cls, cls.config_class.from_dict(raw), name, meta


def check_weights(model: nn.Module, weights: Path) -> None:
    """Compare the safetensors header with the model's state dict; raise listing every mismatch."""
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {}
            for k in f.keys():
                sl = f.get_slice(k)
                found[k] = (tuple(sl.get_shape()), sl.get_dtype())
    except Exception as e:  # SafetensorError: truncated, not safetensors at all (e.g. a pickle), bad header
        raise ConfigError(f"{weights} is not a valid safetensors file ({type(e).__name__}: {e})") from e
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"missing tensors: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for k in sorted(set(expected) & set(found)):
        shape, dtype = expected[k]
        fshape, fdtype = found[k]
        if fshape != shape:
            problems.append(f"{k}: shape {list(fshape)} in file, {list(shape)} in the model")
        elif fdtype not in _FLOAT_DTYPES and (
            dtype.is_floating_point or fdtype != _SAFETENSORS_DTYPE.get(dtype)
        ):
            # integer buffers (BatchNorm's num_batches_tracked) must keep their exact dtype
            need = "a floating-point dtype" if dtype.is_floating_point else f"{_SAFETENSORS_DTYPE.get(dtype)}"
            problems.append(f"{k}: dtype {fdtype} in file is not {need}")
    if problems:
        more = f"; ... {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ConfigError(f"{weights} does not match the config: " + "; ".join(problems[:20]) + more)


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or Inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def warn_nonfinite(state: dict[str, torch.Tensor], source: Path | str, stacklevel: int = 3) -> None:
    """Warn (``RuntimeWarning``, one line naming up to five) when tensors of ``state`` hold NaN or Inf.

    Args:
        state: the tensors about to be loaded.
        source: the file they come from, for the message.
        stacklevel: as ``warnings.warn``'s, counted from the caller of this function.
    """
    bad = nonfinite_tensors(state)
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        warnings.warn(
            f"{source}: {len(bad)} tensor(s) hold NaN or Inf values ({listed}); the model will output NaN",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )


def load_model(
    path_or_repo: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    expected_config: Any = None,
    preset: str | None = None,
    ldm_config: str | os.PathLike | None = None,
    subfolder: str | None = None,
) -> nn.Module:
    """Load a model saved by ``save_pretrained`` (local folder, run folder, or Hub repo id), a
    diffusers folder of ``AutoencoderTransVAE``, or a published autoencoder, converted on the fly
    by a registered converter (``transvae.models.convert``): a diffusers ``AutoencoderKL`` /
    ``AutoencoderDC`` folder or repo, or an LDM-family checkpoint file with ``preset`` (or
    ``ldm_config``).

    Args:
        path_or_repo: a folder, a training run folder (``RUN/model``), an ``owner/name`` repo id
            (a local folder of that name wins; nothing else is ever sent to the Hub), or a
            checkpoint file (``.ckpt`` / ``.pt`` / ``.pth`` / ``.safetensors``, with ``preset``).
        device: where the weights are loaded (default CPU).
        dtype: convert the weights to this dtype (default: the model's, float32).
        revision: Hub revision.
        expected_config: refuse a folder whose config differs.
        preset: the architecture of a checkpoint file (``sd-vae``, ``sdxl-vae``, ``sd3-vae``,
            ``flux-vae``, ``vavae-f16d32``).
        ldm_config: an LDM YAML describing a checkpoint file's architecture instead.
        subfolder: the model's folder inside ``path_or_repo`` (``"vae"`` of a diffusers pipeline).
    Returns:
        the model in eval mode; ``model.metadata`` holds the folder's metadata (``{}`` if none;
        a converted model's ``scaling_factor`` / ``shift_factor``).
    Raises:
        FileNotFoundError: no such folder / repo (one line that starts with what to do), or no
            weights (pickles are never read).
        ConfigError: a bad ``config.json``, weights that do not match it, or a config that
            describes a model that cannot be built.
    Warns:
        RuntimeWarning: naming the tensors that hold NaN or Inf (the model would output NaN).
    """
    if Path(path_or_repo).is_file() or preset is not None or ldm_config is not None:
        if not _CONVERTERS:
            raise ConfigError(f"{path_or_repo}: checkpoint files load through transvae.models.convert")
        model = _CONVERTERS[0].convert(
            path_or_repo, preset, ldm_config, subfolder=subfolder, revision=revision
        )
        return _placed(model, expected_config, device, dtype, str(path_or_repo))
    folder = resolve_model_folder(path_or_repo, revision, subfolder)
    converter = _converter_for(read_json(folder / CONFIG_NAME, what="model config"))
    if converter is not None:
        return _placed(converter.convert(folder), expected_config, device, dtype, str(folder))
    cls, config, name, metadata = read_config_and_metadata(folder)
    if expected_config is not None and expected_config != config:
        raise ConfigError(
            f"{folder} holds config {config}, which differs from the requested {expected_config}"
        )
    model = _build_on_meta(cls, config, name, folder)
    _assign_weights(model, _weights_file(folder), device, dtype)
    model.metadata = dict(metadata)
    return model.eval()


def _weights_file(folder: Path) -> Path:
    """The safetensors weights of a model folder; pickled weights are named, never read."""
    weights = folder / WEIGHTS_NAME
    if not weights.is_file() and (folder / DIFFUSERS_WEIGHTS_NAME).is_file():
        weights = folder / DIFFUSERS_WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        hint = (
            f"; {', '.join(pickles)} {'is' if len(pickles) == 1 else 'are'} never loaded because pickle "
            f"files can execute code: convert to safetensors in a trusted environment"
            if pickles
            else ""
        )
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME}{hint}")
    return weights


def _build_on_meta(cls: type, config: Any, name: str, folder: Path) -> nn.Module:
    """The architecture on the meta device; a config that cannot be built is one ``ConfigError``."""
    try:
        return build_model(cls, config, name, device="meta")
    except ConfigError:
        raise
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as e:
        raise ConfigError(
            f"{folder / CONFIG_NAME} describes a model that cannot be built ({type(e).__name__}: {e})"
        ) from e


def _assign_weights(model: nn.Module, weights: Path, device, dtype: torch.dtype | None) -> None:
    """Check the file against ``model`` (header only), then load and assign its tensors on
    ``device`` (floating-point ones in ``dtype`` when given; integer buffers keep theirs)."""
    from safetensors.torch import load_file

    check_weights(model, weights)
    target = torch.device(device) if device is not None else torch.device("cpu")
    state = load_file(str(weights), device=str(target))
    warn_nonfinite(state, weights)
    ref = model.state_dict()
    state = {
        k: v.to(dtype if dtype is not None and ref[k].is_floating_point() else ref[k].dtype)
        for k, v in state.items()
    }
    model.load_state_dict(state, strict=True, assign=True)


def _placed(
    model: nn.Module, expected_config: Any, device, dtype: torch.dtype | None, source: str
) -> nn.Module:
    """A converted model checked against ``expected_config``, on ``device`` in ``dtype`` (floats only)."""
    if expected_config is not None and expected_config != model.config:
        raise ConfigError(
            f"{source} converts to config {model.config}, which differs from the requested {expected_config}"
        )
    model = model.to(device=device or "cpu")
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload TransVAE model",
    **metadata: Any,
) -> str:
    """Create ``repo_id`` if needed and upload the ``save_pretrained`` folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_model_folder(model, tmp, **metadata)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
    return str(info)
