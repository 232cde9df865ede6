"""Bad model names and configs fail before anything is built, with the valid choices listed."""

from __future__ import annotations

import json
import math

import pytest

import transvae
from transvae import ConfigError
from transvae.models import registry

NANO = "transvae-nano-f16d32"


@pytest.fixture
def no_build(monkeypatch):
    """Make any attempt to instantiate a model fail loudly: errors must come before building."""

    def boom(*args, **kwargs):
        raise AssertionError("a model was built although the config is invalid")

    monkeypatch.setattr(registry, "build_model", boom)


def one_name_per_family(kind: str | None = None) -> list[str]:
    names = transvae.list_models(kind=kind)
    fams = {}
    for n in names:
        fams.setdefault(registry.get_model_entry(n).cls.config_class.architecture, n)
    return sorted(fams.values())


def test_unknown_model_name_lists_registered_models(no_build):
    with pytest.raises(KeyError) as ei:
        transvae.create_model("nope")
    msg = str(ei.value)
    assert "unknown model 'nope'" in msg
    for name in transvae.list_models():
        assert name in msg


def test_close_model_names_are_suggested(no_build):
    with pytest.raises(KeyError) as ei:
        transvae.create_model("transvae-xl-f16d32")
    assert "transvae-t-f16d32" in str(ei.value) and "transvae-l-f16d32" in str(ei.value)


@pytest.mark.parametrize("name", one_name_per_family())
def test_unknown_override_lists_valid_keys(no_build, name):
    with pytest.raises(ConfigError) as ei:
        transvae.create_model(name, definitely_not_a_key=1, _target_="os.system")
    msg = str(ei.value)
    assert "unknown config key(s) ['_target_', 'definitely_not_a_key']" in msg
    cfg_cls = registry.get_model_entry(name).cls.config_class
    for key in cfg_cls.field_names():
        assert key in msg


def _assert_refused(override: dict, words: list[str]) -> None:
    """``create_model(NANO, **override)`` raises a ``ConfigError`` whose message holds every one of ``words``."""
    with pytest.raises(ConfigError) as ei:
        transvae.create_model(NANO, **override)
    for w in words:
        assert w in str(ei.value)


@pytest.mark.parametrize(
    "override, words",
    [
        ({"dims": "abc"}, ["'dims' must be a list", "'abc'"]),
        ({"dims": [64, 64, 128, 128, 1.5]}, ["'dims[4]' must be an int", "1.5"]),
        ({"depths": "3"}, ["'depths' must be a list"]),
        ({"head_dim": "64"}, ["'head_dim' must be an int"]),
        ({"head_dim": 16.0}, ["'head_dim' must be an int"]),
        ({"qkv_norm": "yes"}, ["qkv_norm must be one of ('rms', 'qk', 'none')", "'yes'"]),
        ({"qkv_norm": 1}, ["'qkv_norm' must be a string"]),
        ({"latent_channels": True}, ["'latent_channels' must be an int"]),
        ({"mlp_ratio": "2"}, ["'mlp_ratio' must be a number"]),
        ({"ffn_type": 3}, ["'ffn_type' must be a string"]),
    ],
)
def test_wrong_types(no_build, override, words):
    _assert_refused(override, words)


@pytest.mark.parametrize(
    "override, words",
    [
        ({"depths": [2, -1, 1, 1, 1]}, ["'depths' must be a non-negative"]),
        ({"dims": [-8, 16, 32, 32, 32]}, ["'dims' must be a positive"]),
        ({"head_dim": 0}, ["'head_dim' must be a positive"]),
        ({"latent_channels": 0}, ["'latent_channels' must be a positive"]),
        ({"in_channels": -3}, ["'in_channels' must be a positive"]),
        ({"mlp_ratio": 0.0}, ["'mlp_ratio' must be a positive"]),
        ({"mlp_ratio": math.nan}, ["'mlp_ratio' must be a finite number"]),
        ({"rope_theta": math.inf}, ["'rope_theta' must be a finite number"]),
        ({"depths": [2, 10**7, 1, 1, 1]}, ["'depths'", "out of range (at most 256"]),
        ({"mlp_ratio": 1e9}, ["'mlp_ratio'", "out of range"]),
        ({"dims": [16, 16, 32, 32, 2**20]}, ["'dims'", "out of range"]),
        ({"dims": [16] * 40, "depths": [1] * 40}, ["at most 16 stages"]),
        ({"sample_size": -256}, ["'sample_size' must be a positive"]),
        ({"dims": [16, 16, 32, 32, 40]}, ["width 40 is not a multiple of head_dim 16"]),
        ({"dims": [16, 16, 32]}, ["must be non-empty and equally long"]),
        ({"dims": [], "depths": []}, ["must be non-empty"]),
        ({"num_cnn_stages": 6}, ["num_cnn_stages must be in [0, 5]"]),
        ({"patch_size": 3}, ["patch_size must be a power of two"]),
        ({"ffn_type": "conv"}, ["ffn_type must be one of ('fullconv', 'dwconv', 'mlp')", "'conv'"]),
        ({"pos_embed": "sincos"}, ["pos_embed must be one of ('rope', 'learned', 'none')"]),
        ({"latent_kernel": 5}, ["latent_kernel must be 1 or 3"]),
    ],
)
def test_impossible_sizes_and_choices(no_build, override, words):
    _assert_refused(override, words)


# kind -> (key, bad value, what the message says), checked for one model of every family
SIZE_CHECKS = {
    "tokenizer": [
        ("latent_channels", 0, "'latent_channels' must be a positive"),
        ("in_channels", -1, "'in_channels' must be a positive"),
    ],
    "generator": [
        ("in_channels", 0, "'in_channels' must be >= 1"),
        ("num_classes", -1, "'num_classes' must be >= 1"),
    ],
}


@pytest.mark.parametrize("kind, name", [(k, n) for k in SIZE_CHECKS for n in one_name_per_family(k)])
def test_every_family_refuses_negative_and_zero_sizes(no_build, kind, name):
    for key, value, message in SIZE_CHECKS[kind]:
        with pytest.raises(ConfigError, match=message):
            transvae.create_model(name, **{key: value})


def test_valid_override_still_builds():
    # the checks must not refuse legitimate values (zero-depth stages, fractional mlp ratios)
    m = transvae.create_model(NANO, device="meta", mlp_ratio=0.5, depths=[0, 1, 1, 1, 0])
    assert m.config.mlp_ratio == 0.5 and m.config.depths == (0, 1, 1, 1, 0)


def test_config_errors_are_value_errors():
    # callers that catch ValueError (argparse type=, pydantic-style code) still catch these
    assert issubclass(ConfigError, ValueError)


def test_list_command_shows_the_valid_names(capsys):
    from transvae.cli import main

    # a pattern keeps it fast: the table builds each listed model on the meta device
    assert main(["list", "*nano*"]) == 0
    out = capsys.readouterr().out
    nanos = transvae.list_models("*nano*")
    assert len(nanos) >= 2 and all(n in out for n in nanos) and "transvae-t-f16d32" not in out
    assert main(["list", "--json", NANO]) == 0
    rows = json.loads(capsys.readouterr().out)
    m = transvae.create_model(NANO, device="meta")
    assert [r["name"] for r in rows] == [NANO]
    assert rows[0]["total_params"] == m.num_parameters() and rows[0]["ratio"] == 16
