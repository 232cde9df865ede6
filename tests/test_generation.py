"""LightningDiT, latent data, rectified flow, samplers, lFD and ADM batches (``transvae.generation``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import transvae
from transvae.data.latents import (
    STATS_NAME,
    LatentDataset,
    LatentFolder,
    LatentStats,
    load_latent_stats,
)
from transvae.data.npz import NpzFormatError, iter_npz_images, npz_info, read_npz_labels, write_npz
from transvae.generation.flow import RectifiedFlow
from transvae.generation.sampling import SamplerConfig, guided_velocity, initial_noise, sample_ode, time_grid
from transvae.inference import InferenceRunner, extract_latents
from transvae.inference.generate import load_generator
from transvae.metrics.latent_fd import LatentFrechetDistance, latent_patches
from transvae.models import GeneratorConfigError, LightningDiTConfig, create_model, list_models, model_table
from transvae.models.pos_embed import apply_rope_2d, sincos_pos_embed_2d


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def latents_dir(tmp_path_factory, class_photos):
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("gen")
    data = class_photos(base / "photos")
    runner = InferenceRunner(transvae.create_model("transvae-nano-f16d32"))
    out = base / "latents"
    extract_latents(data, runner, out, resolution=64, shard_size=5, batch_size=8, progress=False)
    return out


# -- model --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "published"), [("lightningdit-b-1", 130e6), ("lightningdit-xl-1", 675e6)])
def test_parameter_counts_match_the_published_ones(name, published):
    n = create_model(name, device="meta").num_parameters()
    assert abs(n / published - 1) < 0.02, n
    row = model_table(name)[0]
    assert row["family"] == "lightningdit" and row["total_params"] == n and row["kind"] == "generator"


def test_registry_names_and_config_errors():
    names = list_models(kind="generator")
    for size in ("b", "l", "xl"):
        for p in (1, 2):
            assert f"lightningdit-{size}-{p}" in names
    assert {"lightningdit-mini-1", "lightningdit-nano-1"} <= set(names)
    with pytest.raises(GeneratorConfigError, match="valid keys"):
        create_model("lightningdit-nano-1", depht=3)
    with pytest.raises(GeneratorConfigError, match="divisible"):
        create_model("lightningdit-nano-1", num_heads=3)
    with pytest.raises(GeneratorConfigError, match="integer"):
        LightningDiTConfig.from_dict({"depth": "two"})


@pytest.mark.parametrize("name", ["lightningdit-nano-1", "lightningdit-mini-1"])
def test_every_small_variant_runs_and_starts_as_zero(name):
    m = create_model(name, in_channels=8, num_classes=3)
    x = torch.randn(2, 8, 4, 6)
    v = m(x, torch.rand(2), torch.tensor([0, 3]))
    assert v.shape == x.shape and v.abs().max() == 0  # adaLN-zero: output layer starts at zero


def test_rope_is_relative_and_tells_rows_from_columns_on_a_non_square_grid():
    torch.manual_seed(0)
    m = create_model("lightningdit-nano-1", in_channels=4)
    h, w = 3, 5
    _, (cos, sin) = m._positions(h, w, torch.device("cpu"))
    assert cos.shape == (h * w, m.config.head_dim)
    q, k = (
        torch.randn(m.config.head_dim, dtype=torch.float64),
        torch.randn(m.config.head_dim, dtype=torch.float64),
    )
    qr = apply_rope_2d(q.expand(h * w, -1).clone(), cos, sin)  # (N, d) q at every position
    kr = apply_rope_2d(k.expand(h * w, -1).clone(), cos, sin)

    def score(a, b):
        return float(qr[a[0] * w + a[1]] @ kr[b[0] * w + b[1]])

    # the attention logit depends on the 2-D offset only ...
    assert score((0, 0), (1, 2)) == pytest.approx(score((1, 2), (2, 4)), abs=1e-5)  # float32 rotation
    assert score((2, 1), (0, 0)) == pytest.approx(score((2, 3), (0, 2)), abs=1e-5)
    # ... and a row offset is not a column offset
    assert abs(score((0, 0), (1, 0)) - score((0, 0), (0, 1))) > 1e-3
    # the model runs on grids it never saw, square or not, with no grid-sized state
    for hw in [(2, 7), (7, 2), (4, 4)]:
        assert m(torch.randn(1, 4, *hw), torch.rand(1), torch.tensor([0])).shape == (1, 4, *hw)
    assert all(t.numel() < 1e6 for t in m.state_dict().values())
    assert not any("cos" in k or "pos" in k for k in m.state_dict())


def test_sincos_embedding_values():
    e = sincos_pos_embed_2d(2, 3, 8, order="rows_first")  # quarter = 2 frequencies: 1, 1e-2
    assert e.shape == (6, 8)
    r, c = 1, 2
    row = e[r * 3 + c]
    expect = [math.sin(r), math.sin(r / 100), math.cos(r), math.cos(r / 100)]
    expect += [math.sin(c), math.sin(c / 100), math.cos(c), math.cos(c / 100)]
    assert row.tolist() == pytest.approx(expect, abs=1e-6)


def _reference_sincos(embed_dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """DiT's / LightningDiT's ``get_2d_sincos_pos_embed``, written out from its formula (for a
    square grid it is the reference line for line; the grid sizes are separate here):
    ``grid = np.meshgrid(grid_w, grid_h)`` puts the column coordinate first, and that half is
    encoded first, each half as [sin | cos] over ``omega = 1 / 10000 ** (arange(D/4) / (D/4))``."""
    gh = np.arange(grid_h, dtype=np.float32)
    gw = np.arange(grid_w, dtype=np.float32)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid_h, grid_w)

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


@pytest.mark.parametrize(("h", "w", "dim"), [(16, 16, 1152), (4, 4, 64), (3, 5, 32)])
def test_sincos_table_is_the_reference_one_in_cols_first_order(h, w, dim):
    ref = torch.from_numpy(_reference_sincos(dim, h, w)).float()
    assert torch.equal(sincos_pos_embed_2d(h, w, dim), ref)  # cols_first is the default
    assert torch.equal(sincos_pos_embed_2d(h, w, dim, order="cols_first"), ref)
    old = sincos_pos_embed_2d(h, w, dim, order="rows_first")  # the halves swapped
    assert torch.equal(old, torch.cat([ref[:, dim // 2 :], ref[:, : dim // 2]], 1))
    with pytest.raises(ValueError, match="order"):
        sincos_pos_embed_2d(h, w, dim, order="rows")


def test_new_generators_use_the_reference_order_and_saved_ones_keep_theirs(tmp_path):
    assert LightningDiTConfig().pos_embed_order == "cols_first"
    for name in list_models(kind="generator"):
        assert create_model(name, device="meta").config.pos_embed_order == "cols_first", name
    assert LightningDiTConfig.from_dict({}).pos_embed_order == "rows_first"  # a config.json of before
    with pytest.raises(GeneratorConfigError, match="pos_embed_order"):
        create_model("lightningdit-nano-1", pos_embed_order="diagonal")
    m = create_model("lightningdit-nano-1", in_channels=4, num_classes=3)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    m.save_pretrained(tmp_path / "new")
    assert transvae.from_pretrained(tmp_path / "new").config.pos_embed_order == "cols_first"
    x, t, y = torch.randn(2, 4, 3, 5), torch.rand(2), torch.tensor([1, 2])
    old = create_model("lightningdit-nano-1", in_channels=4, num_classes=3, pos_embed_order="rows_first")
    old.load_state_dict(m.state_dict())
    assert not torch.allclose(old(x, t, y), m(x, t, y), atol=1e-4)  # the order matters


def test_label_dropout_only_in_training():
    m = create_model("lightningdit-nano-1", in_channels=4, num_classes=5, class_dropout=0.5)
    y = torch.zeros(4000, dtype=torch.int64)
    torch.manual_seed(0)
    m.train()
    table = m.y_embedder.table.weight
    emb = m.y_embedder(y)
    dropped = (emb == table[5]).all(1).float().mean().item()
    assert 0.45 < dropped < 0.55 and m.null_label == 5
    m.eval()
    assert (m.y_embedder(y) == table[0]).all()
    assert create_model("lightningdit-nano-1", in_channels=4, class_dropout=0.0).null_label is None


def test_generator_save_load_roundtrip(tmp_path):
    m = create_model("lightningdit-nano-1", in_channels=4, num_classes=3)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    stats = LatentStats(torch.arange(4.0), torch.ones(4) * 2)
    m.save_pretrained(tmp_path / "model", latent_stats=stats.to_dict(), latent_multiplier=0.5)
    m2 = load_generator(tmp_path)  # a run folder: model/ inside
    x, t, y = torch.randn(2, 4, 3, 5), torch.rand(2), torch.tensor([1, 2])
    assert torch.equal(m(x, t, y), m2(x, t, y)) and m2.model_name == "lightningdit-nano-1"
    assert torch.equal(transvae.from_pretrained(tmp_path)(x, t, y), m(x, t, y))  # the one loader
    s, mult = LatentStats.from_metadata(m2.metadata)
    assert torch.equal(s.mean, stats.mean) and mult == 0.5
    transvae.create_model("transvae-nano-f16d32").save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="not a generator"):
        load_generator(tmp_path)


# -- latents ------------------------------------------------------------------------------------
def test_latent_folder_reads_extract_latents_output_unchanged(latents_dir):
    folder = LatentFolder(latents_dir)
    assert len(folder) == 16 and folder.has_flip and folder.shape == (32, 4, 4)
    assert folder.classes == ["a", "b"] and folder.num_classes() == 2
    assert len(folder.files) == 4  # shards of 5, 5, 5, 1
    assert folder.labels().tolist() == [0] * 8 + [1] * 8
    stats = folder.stats()
    d = torch.load(latents_dir / STATS_NAME, weights_only=True)
    assert torch.equal(stats.mean, d["mean"].flatten()) and torch.equal(stats.std, d["std"].flatten())


def test_missing_statistics_are_computed_once_and_saved(latents_dir, tmp_path):
    import shutil

    copy = tmp_path / "lat"
    shutil.copytree(latents_dir, copy)
    original = load_latent_stats(copy)
    (copy / STATS_NAME).unlink()
    (copy / "latents_stats.json").unlink()
    stats = LatentFolder(copy).stats()
    assert (copy / STATS_NAME).is_file()
    assert torch.allclose(stats.mean, original.mean, atol=1e-6) and torch.allclose(
        stats.std, original.std, atol=1e-6
    )
    # and they are the population statistics of every latent
    z = torch.cat(list(LatentFolder(copy).iter_batches(7)))  # (16, C, h, w)
    assert torch.allclose(stats.mean, z.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(stats.std, z.std((0, 2, 3), unbiased=False), atol=1e-5)
    # a statistics file that is not plain tensors is refused, not executed or overwritten
    (copy / STATS_NAME).write_bytes(b"just some text, not a tensor file")
    with pytest.raises(ValueError, match="not a statistics file"):
        LatentFolder(copy).stats()


@pytest.mark.parametrize("cache", [True, False])
def test_latent_dataset_normalises_flips_and_multiplies(latents_dir, cache):
    ds = LatentDataset(latents_dir, multiplier=0.5, cache_bytes=1 << 30 if cache else 0)
    assert len(ds) == 32  # 16 latents + their mirrors
    x = torch.stack([ds[i]["latent"] for i in range(16)])  # unflipped half
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(32), atol=1e-5)
    assert torch.allclose(x.std((0, 2, 3), unbiased=False), torch.full((32,), 0.5), atol=1e-5)
    folder = LatentFolder(latents_dir)
    flip = torch.cat(list(folder.iter_batches(16, "latents_flip")))
    assert torch.allclose(ds[16 + 3]["latent"], ds.stats.normalize(flip[3:4], 0.5)[0], atol=1e-6)
    assert ds[(19, 2, 5, 0, 0)]["label"] == ds[3]["label"] == 0 and ds[(19, 2, 5, 0, 0)]["epoch"] == 2
    z = torch.cat(list(folder.iter_batches(16)))
    assert torch.allclose(ds.stats.denormalize(ds.stats.normalize(z, 0.5), 0.5), z, atol=1e-5)


def test_bad_shard_is_skipped_not_fatal(latents_dir, tmp_path):
    import shutil

    copy = tmp_path / "lat"
    shutil.copytree(latents_dir, copy)
    (copy / "latents_shard00001.safetensors").write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="skipping latent shard"):
        folder = LatentFolder(copy)
    assert len(folder) == 11 and folder.skipped[0][0] == "latents_shard00001.safetensors"


# -- rectified flow -----------------------------------------------------------------------------
def test_flow_path_and_loss_value():
    flow = RectifiedFlow(cosine_loss=True)
    x1, x0 = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    xt, u = flow.interpolate(x1, x0, torch.tensor([0.0, 1.0, 0.25]))
    assert (
        torch.equal(xt[0], x0[0])
        and torch.equal(xt[1], x1[1])
        and torch.allclose(xt[2], 0.25 * x1[2] + 0.75 * x0[2])
    )
    assert torch.equal(u, x1 - x0)
    const = torch.randn(3, 4, 2, 2)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    loss, logs = flow.loss(lambda x, t, y: const, x1, torch.zeros(3, dtype=torch.long), generator=g1)
    x0 = torch.randn(x1.shape, generator=g2)
    torch.sigmoid(torch.randn(3, generator=g2))  # the same draws in the same order
    u = x1 - x0
    mse = (const - u).pow(2).mean()
    cos = (1 - torch.nn.functional.cosine_similarity(const, u, dim=1)).mean()
    assert loss.item() == pytest.approx((mse + cos).item(), rel=1e-6) and logs["mse"].item() == pytest.approx(
        mse.item()
    )


def test_logit_normal_timesteps():
    t = RectifiedFlow().sample_t(200_000, generator=torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1 and abs(t.mean().item() - 0.5) < 0.005
    inside = ((t > 1 / (1 + math.e)) & (t < 1 / (1 + math.exp(-1)))).float().mean().item()
    assert inside == pytest.approx(0.6827, abs=0.005)  # sigmoid(N(0,1)) within sigmoid(+-1)
    u = RectifiedFlow(logit_normal=False).sample_t(200_000, generator=torch.Generator().manual_seed(0))
    assert ((u > 0.2689) & (u < 0.7311)).float().mean().item() == pytest.approx(0.4621, abs=0.005)


# -- samplers -----------------------------------------------------------------------------------
def test_time_grid_shift():
    assert torch.allclose(time_grid(4), torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    g = time_grid(4, 0.3)
    t = 0.5
    assert g[2].item() == pytest.approx(0.3 * t / (1 - 0.7 * t)) and g[0] == 0 and g[-1] == 1
    assert (g[1:-1] < time_grid(4)[1:-1]).all()  # s < 1: more steps near the noise end


@pytest.mark.parametrize(
    ("solver", "factor"), [("euler", lambda h: 1 + h), ("heun", lambda h: 1 + h + h * h / 2)]
)
def test_solvers_on_a_linear_ode(solver, factor):
    # dx/dt = x: Euler multiplies by (1 + h) per step, Heun by (1 + h + h^2/2); exact is e
    x0 = torch.ones(1, 1, 1, 1)
    for steps in (1, 4, 50):
        x = sample_ode(
            lambda x, t, y: x, x0, torch.zeros(1, dtype=torch.long), SamplerConfig(steps=steps, solver=solver)
        )
        assert x.item() == pytest.approx(factor(1 / steps) ** steps, rel=1e-6)
    assert abs(x.item() - math.e) < (0.03 if solver == "euler" else 3e-4)  # O(h) vs O(h^2)


def test_cfg_interval():
    calls = []

    def model(x, t, y):  # the velocity is the label: v_c = y, v_u = null label
        calls.append((float(t[0]), x.shape[0]))
        return y.float().view(-1, 1, 1, 1).expand_as(x)

    x, y = torch.zeros(2, 1, 1, 1), torch.tensor([2, 3])
    v = guided_velocity(model, x, 0.5, y, null_label=7, cfg_scale=4.0, cfg_interval_start=0.3)
    assert torch.equal(v.flatten(), 7 + 4.0 * (y.float() - 7)) and calls[-1][1] == 4  # one doubled batch
    v = guided_velocity(model, x, 0.2, y, null_label=7, cfg_scale=4.0, cfg_interval_start=0.3)
    assert torch.equal(v.flatten(), y.float()) and calls[-1][1] == 2  # before the interval: conditional only
    assert torch.equal(guided_velocity(model, x, 0.9, y, 7, 1.0, 0.0).flatten(), y.float())
    with pytest.raises(ValueError, match="without label dropout"):
        guided_velocity(model, x, 0.5, y, None, 2.0, 0.0)
    calls.clear()
    sample_ode(model, x, y, SamplerConfig(steps=10, cfg_scale=3.0, cfg_interval_start=0.35), null_label=7)
    guided = [t for t, b in calls if b == 4]
    assert len(calls) == 10 and guided and min(guided) >= 0.35 and all(t < 0.35 for t, b in calls if b == 2)


def test_guidance_of_the_first_channels_only_is_the_reference_formula():
    # v(x, t, y) = a + y * b per channel: v_c and v_u differ in every channel
    a, b = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0]), torch.tensor([0.5, 1.5, -1.0, 2.0, 0.25])

    def model(x, t, y):
        return (a + y.float()[:, None] * b)[:, :, None, None].expand(-1, -1, *x.shape[2:]) + 0 * x

    x, y, null, w = torch.zeros(2, 5, 2, 3), torch.tensor([1, 2]), 4, 6.7
    v_c = (a + y.float()[:, None] * b)[:, :, None, None].expand(-1, -1, 2, 3)
    v_u = (a + null * b)[None, :, None, None].expand(2, -1, 2, 3)
    # by hand: LightningDiT's forward_with_cfg guides eps = out[:, :3], keeps rest = out[:, 3:]
    expect = v_c.clone()
    expect[:, :3] = v_u[:, :3] + w * (v_c[:, :3] - v_u[:, :3])
    v3 = guided_velocity(model, x, 0.5, y, null, w, 0.11, cfg_channels=3)
    assert torch.allclose(v3, expect, rtol=0, atol=1e-6)
    assert torch.equal(v3[:, 3:], v_c[:, 3:])
    v_all = guided_velocity(model, x, 0.5, y, null, w, 0.11)  # the default: every channel
    assert torch.allclose(v_all, v_u + w * (v_c - v_u), rtol=0, atol=1e-6)
    assert torch.equal(guided_velocity(model, x, 0.5, y, null, w, 0.11, cfg_channels=5), v_all)
    # before the interval: the conditional velocity, whatever the channels
    assert torch.equal(guided_velocity(model, x, 0.05, y, null, w, 0.11, cfg_channels=3), v_c)
    with pytest.raises(ValueError, match="more than the latents' 5 channels"):
        guided_velocity(model, x, 0.5, y, null, w, 0.11, cfg_channels=6)
    with pytest.raises(ValueError, match="more than"):  # refused before the first step
        sample_ode(model, x, y, SamplerConfig(steps=2, cfg_scale=2.0, cfg_channels=6), null)
    for bad in (0, -1, True, "first", 2.5):
        with pytest.raises(ValueError, match="cfg_channels"):
            SamplerConfig(cfg_channels=bad)


def test_sampling_is_reproducible_under_a_seed():
    torch.manual_seed(0)
    m = create_model("lightningdit-nano-1", in_channels=4, num_classes=3).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    cfg = SamplerConfig(steps=3, solver="heun", shift=0.5, cfg_scale=2.0)
    y = torch.tensor([0, 1, 2, 0])

    def run(seed, idx):
        return sample_ode(m, initial_noise((4, 3, 5), seed, idx), y[: len(idx)], cfg, m.null_label)

    a, b = run(7, [0, 1, 2, 3]), run(7, [0, 1, 2, 3])
    assert torch.equal(a, b)
    assert not torch.allclose(a, run(8, [0, 1, 2, 3]))
    # a sample depends on (seed, index), not on the batch it was drawn in
    part = sample_ode(m, initial_noise((4, 3, 5), 7, [2, 3]), y[2:], cfg, m.null_label)
    assert torch.allclose(part, a[2:], atol=1e-5)
    assert torch.equal(initial_noise((2, 2), 3, [5])[0], initial_noise((2, 2), 3, [1, 5])[1])


# -- latent Frechet distance ----------------------------------------------------------------------
def test_latent_fd_matches_scipy_and_ranks_distributions(scipy_fd):
    g = torch.Generator().manual_seed(0)
    real = torch.randn(24, 4, 5, 6, generator=g)
    near = torch.randn(30, 4, 5, 6, generator=g) * 1.1 + 0.05
    far = torch.randn(30, 4, 5, 6, generator=g) * 2.0 + 0.5
    m = LatentFrechetDistance(4, latent_fd_patch=2)
    for chunk in real.split(7):
        m.update_real(chunk)
    m.update_fake(near)
    fd_near = m.compute()["latent_fd"]
    assert fd_near == pytest.approx(
        scipy_fd(latent_patches(real).numpy(), latent_patches(near).numpy()), rel=1e-8
    )
    m.reset_fake()
    m.update_fake(far)
    assert m.compute()["latent_fd"] == pytest.approx(
        scipy_fd(latent_patches(real).numpy(), latent_patches(far).numpy()), rel=1e-8
    )
    assert m.compute()["latent_fd"] > 5 * fd_near
    # patches: 2x2 windows of a 3x3 grid are 4 rows of C*4 values, in unfold order
    z = torch.arange(18.0).view(1, 2, 3, 3)
    rows = latent_patches(z)
    assert rows.shape == (4, 8) and rows[0].tolist() == [0, 1, 3, 4, 9, 10, 12, 13]


def test_latent_fd_refuses_too_few_rows():
    m = LatentFrechetDistance(8, latent_fd_patch=2)  # 32 dimensions
    m.update_real(torch.randn(2, 8, 3, 3))  # 8 rows
    m.update_fake(torch.randn(2, 8, 3, 3))
    with pytest.raises(ValueError, match="more than 32"):
        m.compute()


# -- ADM npz ------------------------------------------------------------------------------------
def test_npz_stream_roundtrip_is_what_numpy_reads(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (10, 6, 4, 3), dtype=np.uint8)
    p = write_npz(tmp_path / "s.npz", (imgs[i : i + 3] for i in range(0, 10, 3)), 10, labels=np.arange(10))
    z = np.load(p, allow_pickle=False)
    assert (z["arr_0"] == imgs).all() and z["arr_1"].tolist() == list(range(10))
    assert npz_info(p) == (10, (6, 4, 3)) and read_npz_labels(p).tolist() == list(range(10))
    np.savez_compressed(tmp_path / "c.npz", imgs)  # a reference batch written by numpy itself
    assert (np.concatenate(list(iter_npz_images(tmp_path / "c.npz", 4))) == imgs).all()
    np.savez(tmp_path / "f.npz", imgs.astype(np.float32))
    with pytest.raises(NpzFormatError, match="uint8"):
        npz_info(tmp_path / "f.npz")
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(NpzFormatError, match="not a readable"):
        npz_info(tmp_path / "x.npz")
