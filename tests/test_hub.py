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
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 {repo_id}")
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
                "allow_patterns": ["config.json", "model.safetensors"],
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
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a reachable"):
        transvae.from_pretrained("user/does-not-exist")
    assert calls[-1][1]["repo_id"] == "user/does-not-exist"


def test_local_folder_wins_over_hub(nano, fake_hub, tmp_path, monkeypatch):
    repos, calls = fake_hub
    monkeypatch.chdir(tmp_path)
    nano.save_pretrained(tmp_path / "user" / "repo")  # a local folder that looks like a repo id
    loaded = transvae.from_pretrained("user/repo")
    assert calls == [] and loaded.config == nano.config
