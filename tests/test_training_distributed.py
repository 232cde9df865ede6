"""Two processes on CPU (gloo DDP): identical weights after steps, disjoint data per rank."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
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
    from transvae.training import Trainer, build_config
    from transvae.training import distributed as D

    root = Path(root)
    cfg = build_config(
        overrides={
            "model.name": "transvae-nano-f16d32",
            "data.train": [str(root / "images")],
            "data.resolution": 32,
            "data.num_workers": 0,
            "train.batch_size": 4,
            "train.max_steps": 2,
            "train.checkpoint_every": 10,
            "train.seed": 0,
            "optim.warmup_steps": 1,
            "optim.lr": 1e-3,
            "log.progress": False,
            "log.tensorboard": False,
            "loss.lpips_weight": 0.0,
            "loss.vf_weight": 0.0,
            "loss.gan_weight": 0.0,
        }
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
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{i}.png"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    w0, w1 = (torch.load(tmp_path / f"w{r}.pt", weights_only=True) for r in range(2))
    assert w0["moved"] and w1["moved"]
    assert all(torch.equal(w0["final"][k], w1["final"][k]) for k in w0["final"])
    seen = [[int(v) for v in (tmp_path / f"seen{r}.txt").read_text().split()] for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 4  # 2 steps x micro-batch 2 (no grids: not a plain folder dataset)
    assert not set(seen[0]) & set(seen[1])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 2
