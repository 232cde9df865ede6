"""Hugging Face Hub loading and pushing, offline: ``huggingface_hub`` is monkeypatched."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch

import transvae


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return transvae.create_model("transvae-nano-f16d32").eval()


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A dict repo_id -> folder standing in for the Hub, with recorded calls."""
    repos: dict[str, Path] = {}
    calls: list[tuple[str, dict]] = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.append(
            ("snapshot_download", dict(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns))
        )
        if repo_id not in repos:
            import requests

            response = requests.Response()
            response.status_code = 404
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 {repo_id}", response=response)
        return str(repos[repo_id])

    class FakeApi:
        def __init__(self, token=None, **kw):
            calls.append(("HfApi", dict(token=token)))

        def create_repo(self, repo_id, private=False, exist_ok=False, **kw):
            calls.append(("create_repo", dict(repo_id=repo_id, private=private, exist_ok=exist_ok)))
            repos.setdefault(repo_id, tmp_path / "hub" / repo_id.replace("/", "--"))
            repos[repo_id].mkdir(parents=True, exist_ok=True)

        def upload_folder(self, repo_id, folder_path, commit_message=None, **kw):
            files = sorted(p.name for p in Path(folder_path).iterdir())
            calls.append(("upload_folder", dict(repo_id=repo_id, files=files, commit_message=commit_message)))
            for name in files:
                shutil.copy(Path(folder_path) / name, repos[repo_id] / name)
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return repos, calls


def test_push_to_hub_uploads_config_and_weights(nano, fake_hub):
    repos, calls = fake_hub
    url = nano.push_to_hub("user/tiny-vae", private=True, token="hf_x")
    assert url.endswith("/commit/0")
    names = [c[0] for c in calls]
    assert names == ["HfApi", "create_repo", "upload_folder"]
    assert calls[0][1]["token"] == "hf_x"
    assert calls[1][1] == {"repo_id": "user/tiny-vae", "private": True, "exist_ok": True}
    assert calls[2][1]["files"] == ["config.json", "model.safetensors"]


def test_from_pretrained_repo_id_round_trip(nano, fake_hub):
    repos, calls = fake_hub
    nano.push_to_hub("user/tiny-vae")
    calls.clear()
    loaded = transvae.from_pretrained("user/tiny-vae", revision="v1")
    assert calls == [
        (
            "snapshot_download",
            {
                "repo_id": "user/tiny-vae",
                "revision": "v1",
                "allow_patterns": ["config.json", "model.safetensors", "diffusion_pytorch_model.safetensors"],
            },
        )
    ]
    assert loaded.model_name == "transvae-nano-f16d32" and loaded.config == nano.config
    for k, v in nano.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_repo_id_resolution_and_offline_errors(fake_hub, tmp_path):
    repos, calls = fake_hub
    for bad in ("a/b/c", "./x/y", str(tmp_path / "missing")):  # not repo ids: never sent to the Hub
        with pytest.raises(FileNotFoundError):
            transvae.from_pretrained(bad)
    assert calls == []
    with pytest.raises(FileNotFoundError) as e:
        transvae.from_pretrained("user/does-not-exist")
    assert calls[-1][1]["repo_id"] == "user/does-not-exist"
    msg = str(e.value)  # one line that starts with what to do
    assert "\n" not in msg and msg.startswith("check the repo id") and "RepositoryNotFoundError" in msg


def test_offline_repo_id_is_one_line_that_starts_with_the_remedy(monkeypatch, capsys, tmp_path):
    """The real huggingface_hub with HF_HUB_OFFLINE=1 (set by conftest): no network is touched."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError) as e:
        transvae.from_pretrained("user/repo")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 250
    assert msg.startswith(
        "pass a local model folder (download it where the Hub is reachable: hf download user/repo"
    )
    from transvae.cli import main

    out = tmp_path / "o"
    img = tmp_path / "x.png"
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    assert main(["reconstruct", str(img), "--model", "user/repo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "transvae reconstruct: error: cannot load model 'user/repo': pass a local"
    )


def test_local_folder_wins_over_hub(nano, fake_hub, tmp_path, monkeypatch):
    repos, calls = fake_hub
    monkeypatch.chdir(tmp_path)
    nano.save_pretrained(tmp_path / "user" / "repo")  # a local folder that looks like a repo id
    loaded = transvae.from_pretrained("user/repo")
    assert calls == [] and loaded.config == nano.config


def test_diffusers_folder_opens_with_transvae_from_pretrained(nano, tmp_path):
    """A folder saved by diffusers' save_pretrained of AutoencoderTransVAE (config.json with
    _class_name, _diffusers_version, model_config ...; diffusion_pytorch_model.safetensors)."""
    import json

    from transvae.integrations.diffusers import AutoencoderTransVAE

    vae = AutoencoderTransVAE.from_transvae(nano, scaling_factor=0.75, shift_factor=0.125)
    vae.save_pretrained(tmp_path / "vae")
    raw = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert raw["_class_name"] == "AutoencoderTransVAE" and "_diffusers_version" in raw
    loaded = transvae.from_pretrained(tmp_path / "vae")
    assert (
        type(loaded) is type(nano) and loaded.config == nano.config and loaded.model_name == nano.model_name
    )
    for k, v in nano.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert loaded.metadata == {"scaling_factor": 0.75, "shift_factor": 0.125}


def test_metadata_survives_save_and_load(nano, tmp_path):
    nano.save_pretrained(tmp_path / "m", scaling_factor=0.5, shift_factor=0.1, step=7)
    assert transvae.from_pretrained(tmp_path / "m").metadata == {
        "scaling_factor": 0.5,
        "shift_factor": 0.1,
        "step": 7,
    }
    nano.save_pretrained(tmp_path / "plain")
    assert transvae.from_pretrained(tmp_path / "plain").metadata == {}


def test_nonfinite_weights_warn_naming_the_tensor(nano, tmp_path):
    from safetensors.torch import load_file, save_file

    nano.save_pretrained(tmp_path / "m")
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    state["decoder.conv_out.bias"][0] = float("nan")
    state["encoder.conv_out.weight"][0, 0, 0, 0] = float("inf")
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    with pytest.warns(RuntimeWarning, match=r"2 tensor\(s\) hold NaN or Inf values") as rec:
        transvae.from_pretrained(tmp_path / "m")
    msg = str(rec[0].message)
    assert "decoder.conv_out.bias" in msg and "encoder.conv_out.weight" in msg
