"""Pretrained feature networks, and where their weights come from: one loader for all of them.

The losses (LPIPS, the VF loss's DINOv2) and the metrics (LPIPS, the FID InceptionV3) use
networks trained elsewhere. Every one is found the same way, first that applies:

1. a local file given by the user (a CLI option such as ``--fid-weights`` or a config key such
   as ``loss.lpips_weights``);
2. the torch hub cache, ``$TORCH_HOME/hub/checkpoints`` (DINOv2: timm's Hugging Face cache);
3. a download into that cache.

When none works, ``WeightsUnavailableError`` says so in one line naming the option or key that
points at a local copy (and, for a loss term, how to switch the term off), so an offline
machine gets one actionable line instead of a traceback. Files are read as plain tensors
(``torch.load(weights_only=True)`` or safetensors): a weights file never runs code.

| network | function | local file | default source |
|---|---|---|---|
| FID InceptionV3 (torch-fidelity port of the TF 2015-12-05 graph) | ``load_inception`` | ``weights-inception-2015-12-05-6726825d.pth`` or pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` | torch-fidelity's release |
| LPIPS trunk (VGG16 / AlexNet / SqueezeNet) + calibrated heads | ``load_lpips`` | torchvision ``vgg16-397923af.pth`` ... or a full ``lpips.LPIPS`` state dict | torchvision; heads ship in ``lpips`` |
| DINOv2 (VF loss) | ``load_dinov2`` | timm ``model.safetensors`` or Meta's ``dinov2_vitl14_pretrain.pth`` | Hugging Face ``timm/...`` |
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn

__all__ = [
    "INCEPTION_FILENAMES",
    "INCEPTION_URL",
    "WeightsUnavailableError",
    "hub_checkpoint_dir",
    "load_dinov2",
    "load_inception",
    "load_lpips",
    "load_state_dict_file",
    "weights_file",
]

# torch-fidelity's port of the TF FID Inception (pt_inception-2015-12-05); torchmetrics uses the same file.
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
# pytorch-fid's file holds the same converted TF weights under the same parameter names
INCEPTION_FILENAMES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
# torchvision classifier behind each LPIPS trunk
LPIPS_TRUNKS = {"vgg": "vgg16", "alex": "alexnet", "squeeze": "squeezenet1_1"}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in a local file nor in the cache, and cannot be downloaded.

    The message is one line naming the option (or config key) that points at a local copy.
    """


def hub_checkpoint_dir() -> Path:
    """Where torch.hub / torchvision cache downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def _point_at(option: str, filename: str) -> str:
    """How the user names a local file: a CLI option takes a PATH, a config key ``key=PATH``."""
    if option.startswith("-"):
        return f"pass {option} PATH"
    return f"set {option}=/path/to/{filename}"


def _given(option: str, value: object) -> str:
    """``--opt VALUE`` for a CLI option, ``key='VALUE'`` for a config key."""
    return f"{option} {value}" if option.startswith("-") else f"{option}={str(value)!r}"


def _with_hint(message: str, hint: str) -> str:
    return f"{message}; {hint}" if hint else message


def load_state_dict_file(path: str | os.PathLike, option: str) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors from a ``.safetensors`` or ``torch.save`` file, executing nothing.

    Args:
        path: the file.
        option: the option or config key that gave the path, for the error message.
    Returns:
        the tensors by name (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped).
    Raises:
        WeightsUnavailableError: no such file, or not a readable state dict.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsUnavailableError(f"{_given(option, path)}: no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise WeightsUnavailableError(f"cannot read weights file {p} ({_one_line(e)})") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{_given(option, path)} does not hold a state dict of tensors")
    return state


def weights_file(
    path: str | os.PathLike | None,
    url: str,
    option: str,
    what: str,
    filenames: tuple[str, ...] = (),
    hint: str = "",
    hash_prefix: str | None = None,
) -> Path:
    """The weights file to read: ``path`` if given, else the hub cache, else a download into it.

    Args:
        path: the user's local file (None: cache or download).
        url: where the file is downloaded from.
        option: the CLI option / config key that sets ``path`` (named in errors).
        what: the network, for messages ("FID InceptionV3").
        filenames: names the file may have in the cache (default: the URL's file name); a
            download is saved under the first.
        hint: appended to the offline error (e.g. how to switch a loss term off).
        hash_prefix: check a download against this SHA-256 prefix.
    Raises:
        WeightsUnavailableError: ``path`` missing, or not cached and not downloadable.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsUnavailableError(f"{_given(option, path)}: no such file")
        return p
    names = filenames or (url.rsplit("/", 1)[-1],)
    cache = hub_checkpoint_dir()
    for name in names:
        if (cache / name).is_file():
            return cache / name
    dest = cache / names[0]
    tmp = dest.with_name(dest.name + ".partial")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(tmp), hash_prefix=hash_prefix, progress=True)
        os.replace(tmp, dest)
    except Exception as e:  # noqa: BLE001 - URLError, HTTPError, timeouts, SSL, a read-only cache ...
        tmp.unlink(missing_ok=True)
        message = (
            f"the {what} weights ({names[0]}) are not in the torch hub cache ({cache}) and could not be "
            f"downloaded from {url} ({_one_line(e)}); download the file elsewhere and "
            f"{_point_at(option, names[0])} (or copy it to {dest})"
        )
        raise WeightsUnavailableError(_with_hint(message, hint)) from e
    return dest


# -- FID InceptionV3 ----------------------------------------------------------------------------
def inception_weights_buffer(
    weights: str | os.PathLike | None = None, option: str = "--fid-weights"
) -> tuple[io.BytesIO, Path]:
    """The FID InceptionV3 weights (local file, torch hub cache or download), read as tensors only
    and written back into a buffer: torch-fidelity reads its file with a full unpickler, so it is
    handed these tensors instead of the user's file. Returns (the buffer, the file read)."""
    path = weights_file(weights, INCEPTION_URL, option, "FID InceptionV3", INCEPTION_FILENAMES)
    buf = io.BytesIO()
    torch.save(load_state_dict_file(path, option), buf)
    buf.seek(0)
    return buf, Path(path)


def load_inception(
    weights: str | os.PathLike | None = None,
    option: str = "--fid-weights",
    features: tuple[str, ...] = ("2048", "logits_unbiased"),
) -> tuple[nn.Module, str]:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` (the FID network of torch-fidelity,
    torchmetrics and pytorch-fid) with the TF 2015-12-05 weights, in eval mode on the CPU.

    Its forward resizes uint8 images to 299x299 with TF1-compatible bilinear interpolation
    (no antialiasing), exactly as torch-fidelity and the TF/ADM evaluators do.

    Args:
        weights: a local copy of the weights (torch-fidelity's or pytorch-fid's file).
        option: how the caller names ``weights`` in errors.
        features: the outputs its forward returns, from ``("64", "192", "768", "2048",
            "logits_unbiased", "logits")``.
    Returns:
        (the network, the file its weights came from).
    Raises:
        WeightsUnavailableError: the file is missing, not downloadable or not an InceptionV3.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buf, path = inception_weights_buffer(weights, option)
    try:
        return FeatureExtractorInceptionV3("inception-v3-compat", list(features), buf), str(path)
    except (RuntimeError, KeyError, ValueError) as e:
        raise WeightsUnavailableError(
            f"{path} is not a usable FID InceptionV3 checkpoint ({_one_line(e)}); "
            f"{_point_at(option, INCEPTION_FILENAMES[0])} to {INCEPTION_FILENAMES[0]}"
        ) from e


# -- LPIPS --------------------------------------------------------------------------------------
def _lpips_skeleton(net: str) -> nn.Module:
    """``lpips.LPIPS`` with a randomly initialised trunk and the calibrated heads of the package.

    Built on the meta device and materialised afterwards: torchvision's VGG16 constructor would
    otherwise allocate and initialise its 120M-parameter classifier, which LPIPS throws away
    (seconds of CPU and 0.5 GB per construction).
    """
    import lpips

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" notice
        # pnet_rand=True: no download; use_dropout=True: the shipped heads are stored under the
        # dropout layout ("lin0.model.1.weight"); dropout is inactive in eval mode.
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, use_dropout=True, verbose=False)
    # lpips' constant buffers (input scaling) are created on the CPU even under the meta device.
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    if any(b.is_meta for b in buffers.values()):
        raise RuntimeError("unsupported lpips version: constant buffers were created on the meta device")
    model.to_empty(device="cpu")
    for name, b in buffers.items():
        model.get_buffer(name).copy_(b)
    for m in model.net.modules():  # a random trunk until the real one is copied in
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    heads_path = Path(lpips.__file__).parent / "weights" / f"v{model.version}" / f"{net}.pth"
    if not heads_path.is_file():
        raise WeightsUnavailableError(f"the lpips package has no calibrated heads at {heads_path}")
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    result = model.load_state_dict(heads, strict=False)
    if result.unexpected_keys or len(heads) != len(model.lins):
        raise WeightsUnavailableError(
            f"{heads_path} does not match lpips' {net} heads: {result.unexpected_keys}"
        )
    return model


def _copy_lpips_trunk(model: nn.Module, state: dict[str, torch.Tensor], source: str, net: str) -> None:
    """Copy a torchvision classifier's ``features.<i>.*`` tensors (or a full LPIPS state dict's
    ``net.slice<k>.<i>.*``) into ``lpips``' sliced trunk.

    ``lpips`` keeps torchvision's layer index as each layer's name inside its slices
    (``net.slice2.5`` is ``features.5``), so the mapping is read off the module names.
    """
    full = any(k.startswith("net.slice") for k in state)
    bad = []
    with torch.no_grad():
        for slice_name, slice_mod in model.net.named_children():
            for idx, layer in slice_mod.named_children():
                for pname, param in layer.named_parameters():
                    key = f"net.{slice_name}.{idx}.{pname}" if full else f"features.{idx}.{pname}"
                    src = state.get(key)
                    if src is None or src.shape != param.shape:
                        bad.append(key)
                        continue
                    param.copy_(src)
        if full:  # a full LPIPS state dict also carries its heads
            model.load_state_dict({k: v for k, v in state.items() if k.startswith("lin")}, strict=False)
    if bad:
        raise WeightsUnavailableError(
            f"{source} is not a torchvision checkpoint of the LPIPS {net} trunk (a torchvision state dict "
            f"with features.<i> tensors, or an lpips.LPIPS state dict): missing or mis-shaped "
            f"{bad[:4]}{' ...' if len(bad) > 4 else ''}"
        )


def load_lpips(
    net: str = "vgg",
    weights: str | os.PathLike | None = None,
    pretrained: bool = True,
    option: str = "--lpips-weights",
    hint: str = "",
) -> tuple[nn.Module, str]:
    """``lpips.LPIPS`` (v0.1) with its ImageNet trunk, frozen, in eval mode on the CPU.

    The small linear heads ship inside the ``lpips`` package; the trunk is torchvision's ImageNet
    classifier (``weights``: a torchvision checkpoint such as ``vgg16-397923af.pth`` or a full
    ``lpips.LPIPS`` state dict; else the hub cache or a download). The weights are found before
    the network is built, so an offline machine fails at once.

    Args:
        net: trunk, "vgg" (VGG16), "alex" or "squeeze".
        weights: local trunk weights.
        pretrained: False gives a random trunk (test stand-in; the heads are still the package's):
            nothing is read from a cache or the network.
        option: how the caller names ``weights`` in errors (``loss.lpips_weights`` for the loss).
        hint: appended to the offline error.
    Returns:
        (the network, where its trunk came from).
    Raises:
        WeightsUnavailableError: the trunk's weights are missing, not downloadable or do not fit.
    """
    if net not in LPIPS_TRUNKS:
        raise ValueError(f"unknown LPIPS network {net!r}, choose from {sorted(LPIPS_TRUNKS)}")
    state, source = None, "random trunk (test stand-in)"
    if pretrained:
        from torchvision.models import get_model_weights

        url = get_model_weights(LPIPS_TRUNKS[net]).IMAGENET1K_V1.url
        found = re.search(r"-([a-f0-9]+)\.", url.rsplit("/", 1)[-1])  # torchvision's hash convention
        what = f"LPIPS trunk (torchvision ImageNet {LPIPS_TRUNKS[net]})"
        path = weights_file(weights, url, option, what, hint=hint, hash_prefix=found and found.group(1))
        state, source = load_state_dict_file(path, option), str(path)
    model = _lpips_skeleton(net)
    if state is not None:
        _copy_lpips_trunk(model, state, source, net)
    return model.eval().requires_grad_(False), source


# -- DINOv2 -------------------------------------------------------------------------------------
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout`` seconds
    (False at once when ``HF_HUB_OFFLINE`` is set)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout
        ).close()
    except OSError:
        return False
    return True


def _hub_reachable_or_cached(model_name: str, option: str, hint: str) -> None:
    """Raise ``WeightsUnavailableError`` at once when timm's weights for ``model_name`` are neither
    in the local Hugging Face cache nor downloadable (the Hub's own retries take about a minute)."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        return  # not a Hub model: timm downloads from its URL (urllib fails fast offline)
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
    names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
    if any(isinstance(try_to_load_from_cache(repo, n), str) for n in names) or hub_reachable():
        return
    message = (
        f"cannot load DINOv2 weights for {model_name}: not in the local Hugging Face cache and "
        f"{_hub_endpoint()} cannot be reached (offline?); {_point_at(option, 'model.safetensors')} "
        f"(timm's {repo})"
    )
    raise WeightsUnavailableError(_with_hint(message, hint))


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def load_dinov2(
    model_name: str,
    weights: str | os.PathLike | None = None,
    pretrained: bool = True,
    option: str = "loss.dino_weights",
    hint: str = "",
) -> nn.Module:
    """A timm DINOv2 (``dynamic_img_size=True``: any input size), eval mode, on the CPU.

    Args:
        model_name: timm model name (the VF loss: ``vit_large_patch14_dinov2``; tests use a small one).
        weights: local weights, timm's ``model.safetensors`` or Meta's ``dinov2_vitl14_pretrain.pth``
            (timm converts it); else timm's Hugging Face source and its cache.
        pretrained: False gives a randomly initialised stand-in (tests only).
        option, hint: named in the error messages.
    Raises:
        ValueError: ``model_name`` is not a timm model.
        WeightsUnavailableError: the weights are neither local nor downloadable.
    """
    import timm

    if not timm.is_model(model_name):
        raise ValueError(f"{model_name!r} is not a timm model name")
    kwargs: dict = {"pretrained": pretrained, "dynamic_img_size": True}
    if pretrained and weights:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise WeightsUnavailableError(f"{_given(option, weights)}: no such file")
        kwargs["pretrained_cfg_overlay"] = {"file": str(p)}
    if pretrained and not weights:
        _hub_reachable_or_cached(model_name, option, hint)  # offline fails in seconds, not after retries
    try:
        model = timm.create_model(model_name, **kwargs)
    except Exception as e:
        if not pretrained:
            raise
        source = f"file {weights}" if weights else "the Hugging Face Hub / its local cache"
        message = (
            f"cannot load DINOv2 weights for {model_name} from {source} ({_one_line(e)}); "
            f"{_point_at(option, 'model.safetensors')} (timm's timm/{model_name}.lvd142m)"
        )
        raise WeightsUnavailableError(_with_hint(message, hint)) from e
    return model.eval().requires_grad_(False)
