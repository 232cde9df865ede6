"""Reliability of training runs (issue 15): one process per run folder, resume from the
checkpoint's own config, exit statuses, limits and folder problems reported in one line before
any work, bf16 on CPUs without native bf16. Probes are named in docs/reliability.md."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import transvae.utils.device as device_module
import transvae.utils.files as files_module
from transvae.cli import main
from transvae.training import Trainer, build_config, load_checkpoint
from transvae.utils.runlock import RunLock, RunLockedError, lock_holder

NANO = "transvae-nano-f16d32"
QUIET = ["--workers", "0", "--log.progress=false", "--log.tensorboard=false"]
L1_ONLY = ["--loss.lpips_weight=0", "--loss.vf_weight=0", "--loss.gan_weight=0"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def train_args(images: Path, out: Path, *extra: str) -> list[str]:
    base = ["train", "--model", NANO, "--data", str(images), "--out", str(out), "--resolution", "32"]
    return [*base, "--batch-size", "2", "--max-steps", "1", *QUIET, *L1_ONLY, *extra]


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- one process per run folder ------------------------------------------------------------------
def _hold_lock(run: Path) -> subprocess.Popen:
    """A child process (no torch import: fast) that takes the run folder's lock and sleeps."""
    path = Path(__file__).resolve().parents[1] / "src" / "transvae" / "utils" / "runlock.py"
    code = (
        "import importlib.util, time\n"
        f"spec = importlib.util.spec_from_file_location('runlock', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"lock = m.RunLock({str(run)!r}).acquire(); print('locked', flush=True); time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_run_lock_names_the_holder_and_detects_stale_locks(tmp_path, images, capsys):
    run = tmp_path / "run"
    child = _hold_lock(run)
    try:
        holder = f"PID {child.pid} on {socket.gethostname()}"
        assert lock_holder(run) == holder
        with pytest.raises(RunLockedError, match=f"in use by another process \\({holder}\\)"):
            RunLock(run).acquire()
        assert main(train_args(images, run)) == 2  # refused in one line before any work
        assert f"PID {child.pid}" in one_line(capsys.readouterr().err)
        assert not (run / "checkpoints").exists()
    finally:
        child.kill()  # SIGKILL: the OS releases the lock, the file keeps the dead holder's PID
        child.wait()
    assert lock_holder(run) is None
    lock = RunLock(run).acquire()
    assert lock.stale == holder  # detected as stale and taken over
    with pytest.raises(RunLockedError, match="this process"):  # POSIX locks do not see their own process
        RunLock(run).acquire()
    lock.release()
    with RunLock(run) as again:
        assert again.stale is None  # a clean release leaves nothing stale


@pytest.mark.slow
def test_two_trains_in_one_folder_exactly_one_runs(tmp_path, images, capsys):
    """A live `transvae train`: a second one and a `--resume` are refused naming its PID; SIGTERM
    makes it save and exit 143; metrics.jsonl then holds every step once."""
    run = tmp_path / "run"
    args = train_args(images, run, "--train.checkpoint_every=1", "--log.every=1")
    args[args.index("--max-steps") + 1] = "100000"
    live = subprocess.Popen([sys.executable, "-m", "transvae.cli", *args], stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not (run / "checkpoints" / "last.pt").exists() and time.time() - t0 < 240:
            assert live.poll() is None, live.stderr.read()
            time.sleep(0.2)
        for extra in ([], ["--resume"]):
            assert main([*train_args(images, run), *extra]) == 2
            assert f"in use by another process (PID {live.pid}" in one_line(capsys.readouterr().err)
    finally:
        live.send_signal(signal.SIGTERM)
        _, err = live.communicate(timeout=240)
    assert live.returncode == 143, err
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps and steps == sorted(set(steps))  # one writer: every step once, never backwards
    assert main([*train_args(images, run), "--resume", "--max-steps", str(max(steps) + 1)]) == 0


# -- resume -------------------------------------------------------------------------------------------
def test_resume_uses_the_checkpoint_config_and_announces_changes(tmp_path, images, capsys, caplog):
    run = tmp_path / "run"
    assert main(train_args(images, run, "--optim.lr=3e-4")) == 0
    (run / "config.yaml").write_text("optim: {lr: [truncated")  # config.yaml is not what resume reads
    caplog.clear()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "2", *QUIET]) == 0
    notices = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume:")]
    assert notices == ["resume: train.max_steps changed from 1 to 2"]
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (
        ck["step"] == 2 and ck["config"]["optim"]["lr"] == 3e-4 and ck["config"]["loss"]["lpips_weight"] == 0
    )
    assert build_config(run / "config.yaml").optim.lr == 3e-4  # rewritten (atomically) from the real config
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--model", "transvae-mini-f16d32"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "cannot change model.name" in line and NANO in line and "transvae-mini-f16d32" in line
    # the checkpoint's optimizer state is AdamW's: switching to Muon on resume is refused, not half-loaded
    assert main(["train", "--out", str(run), "--resume", "--optim.optimizer=muon"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "cannot change optim.optimizer" in line and "'adamw' -> 'muon'" in line


# -- limits and folder problems before any work ------------------------------------------------------
@pytest.mark.parametrize(
    "extra, words",
    [
        (["--resolution", "100000"], ["data.resolution=100000", "free on cpu", "train.check_memory"]),
        (["--optim.lr=1e100"], ["optim.lr must be in (0, 1]", "1e+100"]),
        (["--optim.betas=[0.9,1.5]"], ["optim.betas"]),
        (["--loss.disc_lr_mult=1e6"], ["optim.lr x loss.disc_lr_mult"]),
        (["--optim.optimizer=sgd"], ["optim.optimizer must be one of adamw|muon", "'sgd'"]),
        (["--optim.muon_lr=0"], ["optim.muon_lr must be in (0, 1]"]),
    ],
)
def test_impossible_values_are_refused_in_one_line_before_work(tmp_path, images, capsys, extra, words):
    run = tmp_path / "run"
    args = train_args(images, run)
    if extra[0] == "--resolution":
        args[args.index("--resolution") + 1] = extra[1]
        extra = []
    assert main([*args, *extra]) == 2
    line = one_line(capsys.readouterr().err)
    for w in words:
        assert w in line, line
    assert not run.exists()


def test_output_folder_problems_are_one_line_before_work(tmp_path, images, capsys, monkeypatch):
    existing = tmp_path / "a-file"
    existing.write_text("keep me")
    assert main(train_args(images, existing)) == 2
    assert "is an existing file" in one_line(capsys.readouterr().err) and existing.read_text() == "keep me"

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files_module, "atomic_write_bytes", read_only)
    assert main(train_args(images, tmp_path / "ro")) == 2
    assert "not writable (Read-only file system)" in one_line(capsys.readouterr().err)
    monkeypatch.undo()

    monkeypatch.setattr(files_module.shutil, "disk_usage", lambda p: type("U", (), {"free": 1 << 20})())
    assert main(train_args(images, tmp_path / "full")) == 2
    assert "not enough free space" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "full" / "checkpoints").exists()


def test_disk_full_during_a_checkpoint_is_one_line(tmp_path, images, capsys, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    import transvae.training.checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    assert main(train_args(images, tmp_path / "run")) == 2
    line = one_line(capsys.readouterr().err)
    assert "disk full" in line and "last.pt" in line
    assert not list((tmp_path / "run" / "checkpoints").glob("*"))  # no half-written file left


# -- precision -------------------------------------------------------------------------------------------
def test_bf16_on_a_cpu_without_native_bf16_falls_back_to_fp32(tmp_path, images, monkeypatch, caplog):
    monkeypatch.setattr(device_module, "cpu_dtype_is_fast", lambda dtype: False)
    values = {
        "model.name": NANO,
        "data.train": [str(images)],
        "data.resolution": 32,
        "train.batch_size": 2,
        "train.precision": "bf16",
        "train.device": "cpu",
        "loss.lpips_weight": 0.0,
        "loss.vf_weight": 0.0,
        "loss.gan_weight": 0.0,
    }
    tr = Trainer(build_config(overrides=values), tmp_path / "a")
    warned = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert tr.autocast_dtype is None and len(warned) == 1 and "--force-bf16" in warned[0]
    tr.close()
    forced = Trainer(build_config(overrides={**values, "train.force_bf16": True}), tmp_path / "b")
    assert forced.autocast_dtype == torch.bfloat16
    forced.close()
