"""Two processes on CPU (gloo DDP): identical weights after steps, disjoint data per rank."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image


class _Recording:
    """Wraps a dataset and appends every index it serves to a file (one per rank)."""

    def __init__(self, ds, path: Path):
        self.ds, self.path = ds, path

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        with open(self.path, "a") as f:
            f.write(f"{key[0]}\n")
        return self.ds[key]


def _nano_config(root: Path, **kw):
    """The two-process tests' training config: the nano model on ``root/images``, L1 + KL."""
    from transvae.training import build_config

    values = {
        "model.name": "transvae-nano-f16d32",
        "data.train": [str(root / "images")],
        "data.resolution": 32,
        "data.num_workers": 0,
        "train.batch_size": 4,
        "log.progress": False,
        "log.tensorboard": False,
        "loss.lpips_weight": 0.0,
        "loss.vf_weight": 0.0,
        "loss.gan_weight": 0.0,
    }
    return build_config(overrides={**values, **kw})


def _images_and_port(root: Path) -> int:
    """Eight random 36 x 40 images under ``root/images``; returns a free TCP port for the ranks."""
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from transvae.data.datasets import ImageFolderDataset
    from transvae.data.transforms import TrainTransform
    from transvae.training import Trainer
    from transvae.training import distributed as D

    root = Path(root)
    cfg = _nano_config(
        root,
        **{"train.max_steps": 2, "train.checkpoint_every": 10, "train.seed": 0},
        **{"optim.warmup_steps": 1, "optim.lr": 1e-3},
    )
    ds = _Recording(ImageFolderDataset(cfg.data.train, TrainTransform(32)), root / f"seen{rank}.txt")
    tr = Trainer(cfg, root / "run", train_dataset=ds)
    assert tr.dist.world_size == world and tr.micro_batch == 2
    init = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.fit()
    state = tr.model.state_dict()
    torch.save(
        {"final": state, "moved": any(not torch.equal(init[k], state[k]) for k in state)},
        root / f"w{rank}.pt",
    )
    D.cleanup()


def test_two_process_ddp_identical_weights_disjoint_data(tmp_path):
    port = _images_and_port(tmp_path)
    mp.start_processes(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    w0, w1 = (torch.load(tmp_path / f"w{r}.pt", weights_only=True) for r in range(2))
    assert w0["moved"] and w1["moved"]
    assert all(torch.equal(w0["final"][k], w1["final"][k]) for k in w0["final"])
    seen = [[int(v) for v in (tmp_path / f"seen{r}.txt").read_text().split()] for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 4  # 2 steps x micro-batch 2 (no grids: not a plain folder dataset)
    assert not set(seen[0]) & set(seen[1])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 2


def _budget_worker(rank: int, world: int, port: int, root: str) -> None:
    """``train.fit_to_budget`` under DDP, with a clock per rank that only moves inside training
    steps: 1 s a step on rank 0, 6 s on rank 1 (``tests/test_training.py::StepClock``)."""
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    import transvae.training.engine as engine_module
    from transvae.training import Trainer
    from transvae.training import distributed as D

    class Clock:
        now, half = 1000.0, (0.5, 3.0)[rank]

        def time(self):
            return self.now

        perf_counter = time

        def process_time(self):
            self.now += self.half
            return self.now

    engine_module.time = Clock()
    root = Path(root)
    cfg = _nano_config(
        root,
        **{"train.max_steps": 40, "train.max_minutes": 1.0, "train.fit_to_budget": True},
        **{"train.checkpoint_every": 100, "optim.warmup_steps": 0, "optim.decay": "linear"},
    )
    tr = Trainer(cfg, root / "run")
    summary = tr.fit()
    torch.save({"final": tr.model.state_dict(), "summary": summary}, root / f"b{rank}.pt")
    D.cleanup()


def test_two_process_fit_to_budget_takes_the_slowest_ranks_plan(tmp_path):
    """Alone, rank 0 (1 s a step) would plan 40 steps in the minute and rank 1 (6 s) 9: both train
    9, their LR schedules end there together and their weights stay identical."""
    port = _images_and_port(tmp_path)
    ranks = mp.start_processes(_budget_worker, args=(2, port, str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.time() + 180
    while not ranks.join(timeout=5):  # ranks that planned different step counts would wait for each other forever
        if time.time() > deadline:
            for p in ranks.processes:
                p.kill()
            pytest.fail("the two ranks did not finish within 180 s: did they plan different step counts?")
    b0, b1 = (torch.load(tmp_path / f"b{r}.pt", weights_only=False) for r in range(2))
    for b in (b0, b1):
        assert b["summary"]["status"] == "finished" and b["summary"]["step"] == b["summary"]["planned_steps"] == 9
    assert all(torch.equal(b0["final"][k], b1["final"][k]) for k in b0["final"])
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["train/lr"] / 1e-4 for r in rows if "train/lr" in r]  # optim.lr's default, 1e-4
    assert abs(lrs[-1] - (1 - 8 / 9)) < 1e-9  # the LR of step 9 of a linear decay that ends at 9


def _fsdp_vs_ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import os
    import warnings

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    import transvae
    from transvae.training.distributed import shard_fsdp, wrap_ddp
    from transvae.utils.distributed import DistInfo

    info = DistInfo(rank=rank, world_size=world)
    report = {}
    for name in ("transvae-nano-f16d32", "cnn-vae-nano-f16d32", "swin-vae-mini-f16d32"):
        torch.manual_seed(0)
        ref = transvae.create_model(name).train()
        sharded = transvae.create_model(name).train()
        sharded.load_state_dict(ref.state_dict())
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(10 + rank)) * 2 - 1

        def loss_of(model, x=x):  # as training: a posterior sample (the same noise for both wrappers)
            out = model(x, sample_posterior=True, generator=torch.Generator().manual_seed(rank))
            return (out.sample - x).abs().mean() + 1e-3 * out.posterior.kl().mean()

        ddp = wrap_ddp(ref, info, [])
        loss_of(ddp).backward()
        shard_fsdp(sharded, info)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss_of(sharded).backward()
        grads = {n: p.grad.full_tensor() for n, p in sharded.named_parameters() if p.grad is not None}
        diff = max(float((grads[n] - p.grad).abs().max()) for n, p in ref.named_parameters() if p.grad is not None)
        scale = max(float(p.grad.abs().max()) for p in ref.parameters() if p.grad is not None)
        views = sorted({str(w.message).split(")")[0] for w in caught if "view tensor" in str(w.message)})
        report[name] = {"max_abs_diff": diff, "max_abs_grad": scale, "params": len(grads), "view_warnings": views}
    if rank == 0:
        Path(out).write_text(json.dumps(report, indent=2))
    torch.distributed.destroy_process_group()


def test_fsdp_gradients_equal_ddp_and_no_view_warning_for_our_blocks(tmp_path):
    """Issue 21 #22: FSDP warned that a view tensor "can cause ... wrong gradients". The units are
    now the residual blocks (fresh outputs): no warning for TransVAE / CNN-VAE, and the gradients
    of one step on two ranks equal DDP's (timm's Swin stages still return views, and still give
    DDP's gradients)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "report.json"
    mp.spawn(_fsdp_vs_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    report = json.loads(out.read_text())
    for name, r in report.items():
        assert r["params"] > 10 and r["max_abs_diff"] <= 1e-5 * max(r["max_abs_grad"], 1.0), (name, r)
    assert report["transvae-nano-f16d32"]["view_warnings"] == []
    assert report["cnn-vae-nano-f16d32"]["view_warnings"] == []
