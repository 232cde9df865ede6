"""A CNN-VAE saved before the conversion options existed loads and gives the same outputs.

``tests/data/cnn_vae_nano_compat/`` holds what the code of commit 5e68e38 (before
``CNNVAEConfig`` gained ``norm_groups``, ``attn_stages``, ``quant_conv``, ``post_quant_conv``)
wrote for ``cnn-vae-nano-f16d32``: its ``config.json``, the name and shape of every tensor, and
the encoder moments and the decoded image for a fixed input. The weights themselves are not
stored: they are a closed-form function of the tensor's name and index (``formula_tensor``), so
the fixture is a few kB and needs no random generator. Regenerate (only with that old code) with
``python tests/test_cnn_vae_compat.py --write``.
"""

from __future__ import annotations

import json
import shutil
import sys
import zlib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import transvae

FIXTURE = Path(__file__).parent / "data" / "cnn_vae_nano_compat"
NAME = "cnn-vae-nano-f16d32"


def formula_tensor(name: str, shape: list[int]) -> torch.Tensor:
    """Deterministic weights: a sine of the flat index, phase from the name's CRC32, amplitude 0.2
    (norm weights around 1). The same on every machine, independent of any RNG."""
    n = 1
    for s in shape:
        n *= s
    phase = zlib.crc32(name.encode()) % 1000 / 100.0
    v = 0.2 * torch.sin(torch.arange(n, dtype=torch.float64) * 0.7071 + phase)
    if "norm" in name and name.endswith("weight"):
        v = v + 1.0
    return v.float().reshape(shape)


def formula_input() -> torch.Tensor:
    """A (1, 3, 32, 48) image in [-1, 1]: a non-square size, so H and W cannot be swapped silently."""
    i = torch.arange(3 * 32 * 48, dtype=torch.float64)
    return (0.9 * torch.sin(i * 0.05) * torch.cos(i * 0.013)).float().reshape(1, 3, 32, 48)


def write_model(folder: Path) -> Path:
    """The fixture's model folder: the stored config.json plus the formula weights."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE / "config.json", folder / "config.json")
    shapes = json.loads((FIXTURE / "tensors.json").read_text())
    save_file({k: formula_tensor(k, s) for k, s in shapes.items()}, str(folder / "model.safetensors"))
    return folder


def outputs(model) -> dict[str, torch.Tensor]:
    x = formula_input()
    with torch.no_grad():
        moments = model.encoder(x)  # (1, 64, 2, 3)
        image = model.decode(model.encode(x).mode())  # (1, 3, 32, 48)
    return {"moments": moments.contiguous(), "image": image.contiguous()}


def machine() -> dict[str, str]:
    """Recorded with the fixture (torch build and CPU capability), for reference: the comparison
    does not rely on it, since CPUs that report the same capability may still round differently."""
    return {"torch": torch.__version__, "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}


def test_saved_cnn_vae_loads_and_gives_identical_outputs(tmp_path):
    model = transvae.from_pretrained(write_model(tmp_path / "m"))
    got = outputs(model)
    with safe_open(str(FIXTURE / "expected.safetensors"), framework="pt") as f:
        expected = {k: f.get_tensor(k) for k in f.keys()}
    assert set(got) == set(expected)
    assert model.config.to_dict()["base_dim"] == 8 and model.model_name == NAME
    for k, v in expected.items():
        assert got[k].shape == v.shape
        assert v.abs().max() > 1e-2, f"{k}: the fixture's output is degenerate"
        # equal up to float rounding: the torch build and CPU capability recorded with the fixture do
        # not pin the kernels. On an Intel Xeon (AMX) the decoded image of this AMD-written fixture
        # (max 6.5) differs by up to 3e-4 and the moments by 2e-6; a wrong weight moves them by ~0.1-1
        torch.testing.assert_close(got[k], v, rtol=2e-4, atol=2e-4 * v.abs().max().item())


def _write_fixture() -> None:  # pragma: no cover - run by hand, with the code the fixture records
    torch.manual_seed(0)
    model = transvae.create_model(NAME)
    FIXTURE.mkdir(parents=True, exist_ok=True)
    tmp = FIXTURE / "_tmp"
    model.save_pretrained(tmp)
    shutil.move(tmp / "config.json", FIXTURE / "config.json")
    shutil.rmtree(tmp)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    (FIXTURE / "tensors.json").write_text(json.dumps(shapes, indent=0) + "\n")
    model = transvae.from_pretrained(write_model(FIXTURE / "_model"))
    shutil.rmtree(FIXTURE / "_model")
    save_file(outputs(model), str(FIXTURE / "expected.safetensors"), metadata=machine())


if __name__ == "__main__" and "--write" in sys.argv:
    _write_fixture()
