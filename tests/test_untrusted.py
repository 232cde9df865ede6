"""Untrusted files: pickles are never executed, configs are data, weights are validated first.

A crafted pickle whose ``__reduce__`` runs ``touch MARKER`` is dropped where a model or a
checkpoint is expected; the marker file must never appear. A control test proves that the same
payload does create the marker when unpickled unsafely, so these tests can fail.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from safetensors.torch import save_file

import transvae
from transvae import ConfigError
from transvae.models import registry

NANO = "transvae-nano-f16d32"
SRC = Path(transvae.__file__).parent


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "the pickle payload was executed"


def write_payload(path: Path, marker: Path, wrap: bool = True) -> Path:
    obj = (
        {"format_version": 1, "model": {"w": torch.zeros(2)}, "evil": Payload(marker)}
        if wrap
        else Payload(marker)
    )
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ok") / "model"
    transvae.create_model(NANO).save_pretrained(d)
    return d


@pytest.fixture
def model_dir(saved, tmp_path) -> Path:
    """A private copy: these tests tamper with the files."""
    d = tmp_path / "model"
    shutil.copytree(saved, d)
    return d


# -- pickles ------------------------------------------------------------------------------------
def test_control_payload_executes_when_unpickled_unsafely(tmp_path):
    m = tmp_path / "PWNED"
    p = write_payload(tmp_path / "x.pt", m)
    torch.load(p, weights_only=False)  # what must never happen in the package
    assert m.exists()


def test_torch_load_weights_only_refuses_payload(tmp_path, marker):
    p = write_payload(tmp_path / "x.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(p, weights_only=True)


@pytest.mark.parametrize("wrap", [True, False])
def test_trainer_checkpoint_loader_refuses_payload(tmp_path, marker, wrap):
    from transvae.training import CheckpointError, load_checkpoint

    p = write_payload(tmp_path / "last.ckpt", marker, wrap=wrap)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p)
    assert str(p) in str(ei.value) and "UnpicklingError" in str(ei.value)


def test_trainer_checkpoint_loader_accepts_plain_data(tmp_path):
    from transvae.training import load_checkpoint, save_checkpoint

    p = save_checkpoint(tmp_path / "ok.ckpt", {"step": 7, "model": {"w": torch.arange(3.0)}})
    state = load_checkpoint(p)
    assert state["step"] == 7 and torch.equal(state["model"]["w"], torch.arange(3.0))


@pytest.mark.parametrize(
    "name", ["pytorch_model.bin", "model.pt", "diffusion_pytorch_model.bin", "model.ckpt"]
)
def test_from_pretrained_never_reads_pickles(model_dir, marker, name):
    (model_dir / "model.safetensors").unlink()
    write_payload(model_dir / name, marker, wrap=False)
    with pytest.raises(FileNotFoundError) as ei:
        transvae.from_pretrained(model_dir)
    msg = str(ei.value)
    assert "has no model.safetensors" in msg and f"{name} is never loaded" in msg


def test_pickle_disguised_as_safetensors_is_refused(model_dir, marker):
    write_payload(model_dir / "model.safetensors", marker, wrap=False)
    with pytest.raises(ConfigError, match="is not a valid safetensors file"):
        transvae.from_pretrained(model_dir)


def test_hub_download_fetches_only_json_and_safetensors(saved, tmp_path, marker, monkeypatch):
    repo = tmp_path / "snapshot"
    shutil.copytree(saved, repo)
    (repo / "model.safetensors").unlink()
    write_payload(repo / "pytorch_model.bin", marker, wrap=False)
    seen = {}

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        seen.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(repo)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin is never loaded"):
        transvae.from_pretrained("someone/evil-vae")
    assert seen == {
        "repo_id": "someone/evil-vae",
        "allow_patterns": ["config.json", "model.safetensors", "diffusion_pytorch_model.safetensors"],
    }


# -- configs are data ---------------------------------------------------------------------------
def test_yaml_python_tags_refused(tmp_path, marker):
    from transvae.training import TrainConfigError, build_config

    evil = f"model: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load(evil)
    p = tmp_path / "evil.yaml"
    p.write_text(evil)
    with pytest.raises(TrainConfigError, match="is not valid YAML"):
        build_config(p)


@pytest.mark.parametrize(
    "text, words",
    [
        ("_target_: os.system\n", ["unknown config section '_target_'", "'model'"]),
        ("model:\n  _target_: os.system\n", ["unknown config key 'model._target_'", "model.name"]),
    ],
)
def test_yaml_target_keys_rejected_as_unknown(tmp_path, text, words):
    from transvae.training import TrainConfigError, build_config

    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises(TrainConfigError) as ei:
        build_config(p)
    for w in words:
        assert w in str(ei.value)


def test_model_config_target_key_rejected(model_dir, monkeypatch):
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["_target_"] = "os.system"
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['_target_'\]"):
        transvae.from_pretrained(model_dir)


_UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("yaml", "load_all"),
    ("marshal", "loads"),
    ("dill", "load"),
    ("hydra", "instantiate"),
    ("utils", "instantiate"),
    ("np", "load"),
    ("numpy", "load"),
}


def _unsafe_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("eval", "exec", "__import__", "instantiate"):
            found.append(f.id)
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            pair = (f.value.id, f.attr)
            kw = {k.arg: k.value for k in node.keywords}
            if pair == ("torch", "load"):
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    found.append("torch.load without weights_only=True")
            elif pair in (("np", "load"), ("numpy", "load")):
                ap = kw.get("allow_pickle")
                if isinstance(ap, ast.Constant) and ap.value is True:
                    found.append("np.load(allow_pickle=True)")
            elif pair in _UNSAFE_CALLS:
                found.append(".".join(pair))
    return found


def test_package_source_has_no_unsafe_deserialisation():
    """Static guard: no eval/exec, no pickle/yaml.load, every torch.load has weights_only=True."""
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        for what in _unsafe_calls(ast.parse(path.read_text(), str(path))):
            problems.append(f"{path.relative_to(SRC)}: {what}")
    assert not problems, "\n".join(problems)


def test_static_guard_detects_unsafe_code():
    bad = "import torch, yaml, pickle\ntorch.load(p)\nyaml.load(s)\npickle.loads(b)\neval('1')\n"
    good = "torch.load(p, map_location='cpu', weights_only=True)\nyaml.safe_load(s)\n"
    assert _unsafe_calls(ast.parse(bad)) == [
        "torch.load without weights_only=True",
        "yaml.load",
        "pickle.loads",
        "eval",
    ]
    assert _unsafe_calls(ast.parse(good)) == []


# -- from_pretrained validates before building --------------------------------------------------
@pytest.fixture
def no_build(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was built from an invalid config")

    monkeypatch.setattr(registry, "build_model", boom)


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            lambda c: {**c, "ffn_kind": "mlp"},
            ["unknown config key(s) ['ffn_kind']", "valid keys", "ffn_type"],
        ),
        (lambda c: {**c, "dims": "wide"}, ["'dims' must be a list", "'wide'"]),
        (lambda c: {**c, "head_dim": 16.5}, ["'head_dim' must be an int"]),
        (lambda c: {**c, "depths": [1, -1, 1, 1, 1]}, ["'depths' must be a non-negative"]),
        (
            lambda c: {k: v for k, v in c.items() if k != "architecture"},
            ["must be a JSON object with an 'architecture'"],
        ),
        (lambda c: {**c, "architecture": "resnet"}, ["unknown architecture 'resnet'", "transvae", "cnn-vae"]),
        (lambda c: {**c, "architecture": ["transvae"]}, ["'architecture' and 'model_name' must be strings"]),
        (lambda c: [c], ["must be a JSON object"]),
        (lambda c: "{not json", ["is not valid JSON"]),
        (lambda c: b"\xff\xfe\x00\x01", ["is not valid JSON"]),
    ],
)
def test_bad_config_json(model_dir, no_build, edit, words):
    cfg = json.loads((model_dir / "config.json").read_text())
    new = edit(cfg)
    data = (
        new if isinstance(new, bytes) else new.encode() if isinstance(new, str) else json.dumps(new).encode()
    )
    (model_dir / "config.json").write_bytes(data)
    with pytest.raises(ConfigError) as ei:
        transvae.from_pretrained(model_dir)
    msg = str(ei.value)
    assert str(model_dir) in msg or "config key" in msg or "architecture" in msg
    for w in words:
        assert w in msg, msg


def test_missing_config_or_folder(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        transvae.from_pretrained(tmp_path / "nope")
    (model_dir / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        transvae.from_pretrained(model_dir)


@pytest.fixture
def reference(saved):
    from safetensors.torch import load_file

    return load_file(str(saved / "model.safetensors"))


@pytest.fixture
def no_materialise(monkeypatch):
    """Weights must be validated from the safetensors header before any tensor is read."""
    import safetensors.torch

    def boom(*a, **k):
        raise AssertionError("weights were read before validation")

    monkeypatch.setattr(safetensors.torch, "load_file", boom)


def _first_key(sd: dict) -> str:
    return "encoder.conv_in.weight" if "encoder.conv_in.weight" in sd else sorted(sd)[0]


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda sd, k: {**sd, k: torch.zeros(3, 3)}, ["shape [3, 3] in file", "in the model"]),
        (lambda sd, k: {n: v for n, v in sd.items() if n != k}, ["missing tensors:", "conv_in"]),
        (lambda sd, k: {**sd, "extra.weight": torch.zeros(1)}, ["unexpected tensors: ['extra.weight']"]),
        (lambda sd, k: {**sd, k: sd[k].to(torch.int32)}, ["dtype I32 in file is not a floating-point dtype"]),
        (lambda sd, k: {**sd, k: sd[k].to(torch.uint8)}, ["dtype U8 in file is not a floating-point dtype"]),
        (lambda sd, k: {**sd, k: sd[k] > 0}, ["dtype BOOL in file is not a floating-point dtype"]),
    ],
)
def test_bad_safetensors_contents(model_dir, reference, no_materialise, mutate, words):
    k = _first_key(reference)
    save_file(mutate(dict(reference), k), str(model_dir / "model.safetensors"))
    with pytest.raises(ConfigError) as ei:
        transvae.from_pretrained(model_dir)
    msg = str(ei.value)
    assert "model.safetensors does not match the config" in msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[: len(b) // 2],  # truncated data
        lambda b: b[:20],  # truncated header
        lambda b: b"",  # empty
        lambda b: struct.pack("<Q", 2**62) + b"{}",  # header length bomb
        lambda b: b"<html>404</html>" * 4,  # an error page saved as weights
    ],
)
def test_corrupt_safetensors_file(model_dir, no_materialise, mangle):
    w = model_dir / "model.safetensors"
    w.write_bytes(mangle(w.read_bytes()))
    with pytest.raises(ConfigError, match="is not a valid safetensors file"):
        transvae.from_pretrained(model_dir)


def test_half_precision_weights_are_accepted_and_exact(model_dir, reference):
    # float dtypes other than the model's are allowed and converted (lossless here)
    half = {k: v.half() for k, v in reference.items()}
    save_file(half, str(model_dir / "model.safetensors"))
    m = transvae.from_pretrained(model_dir)
    k = _first_key(reference)
    assert m.state_dict()[k].dtype == torch.float32
    torch.testing.assert_close(m.state_dict()[k], half[k].float(), rtol=0, atol=0)


# -- interrupted writes -------------------------------------------------------------------------
def test_interrupted_save_pretrained_keeps_previous_model(model_dir, reference, monkeypatch):
    import transvae.models.persistence as hub

    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    other = transvae.create_model(NANO)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)

    def dies_halfway(state, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1000)  # part of the new file is on disk...
        raise OSError(28, "No space left on device")  # ...when the disk fills up (or the process dies)

    monkeypatch.setattr(hub, "save_file", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        other.save_pretrained(model_dir)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before  # no temp file left either
    loaded = transvae.from_pretrained(model_dir)
    k = _first_key(reference)
    assert torch.equal(loaded.state_dict()[k], reference[k])
