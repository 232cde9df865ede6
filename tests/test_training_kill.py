"""SIGKILL a real ``transvae train`` process at random moments (also while it writes a
checkpoint) and check that the previous checkpoint always loads and ``--resume`` finishes.

Slow (several process starts): run with ``pytest -m slow tests/test_training_kill.py``.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

import transvae
from transvae.training import load_checkpoint

pytestmark = pytest.mark.slow

ARGS = [
    "--model",
    "transvae-nano-f16d32",
    "--resolution",
    "32",
    "--batch-size",
    "2",
    "--max-steps",
    "12",
    "--workers",
    "0",
    "--train.checkpoint_every=1",
    "--log.progress=false",
    "--log.tensorboard=false",
    "--loss.lpips_weight=0",
    "--loss.vf_weight=0",
    "--loss.gan_weight=0",
]


def _cmd(data, out, resume):
    return [sys.executable, "-m", "transvae.cli", "train", "--data", str(data), "--out", str(out), *ARGS] + (
        ["--resume"] if resume else []
    )


def test_sigkill_at_random_points_then_resume(tmp_path, random_photos):
    data = random_photos(tmp_path / "images", size=(36, 40), seed=0)
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "last.pt"
    rnd = random.Random(0)
    last_step = -1
    for _ in range(4):
        proc = subprocess.Popen(
            _cmd(data, out, resume=ckpt.exists()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        # wait for a checkpoint newer than the last one seen, then kill after a random delay
        t0 = time.time()
        while proc.poll() is None and time.time() - t0 < 240:
            if ckpt.exists() and load_checkpoint(ckpt)["step"] > last_step:
                break
            time.sleep(0.2)
        time.sleep(rnd.uniform(0.0, 2.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_checkpoint(ckpt)  # the previous (or new) checkpoint is always loadable
        assert state["step"] >= last_step
        last_step = state["step"]
        if last_step >= 12:
            break
    done = subprocess.run(_cmd(data, out, resume=True), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_checkpoint(ckpt)["step"] == 12
    assert not list((out / "checkpoints").glob(".*.tmp"))  # temp files of killed writes were cleaned up
    transvae.from_pretrained(out / "model")


def test_sigterm_to_the_process_group_with_workers_saves_and_resumes(tmp_path, random_photos):
    """Cluster preemption signals every process of the job, DataLoader workers included."""
    import os

    data = random_photos(tmp_path / "images", size=(36, 40), seed=1)
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "last.pt"
    cmd = [a if a != "0" else "1" for a in _cmd(data, out, resume=False)]  # --workers 1
    cmd[cmd.index("--max-steps") + 1] = "400"
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    t0 = time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < 240:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 143, output  # non-zero after preemption: schedulers requeue the job
    assert "stopped by SIGTERM" in output and "--resume" in output
    step = load_checkpoint(ckpt)["step"]
    assert 1 <= step < 400
    resumed = _cmd(data, out, resume=True)
    resumed[resumed.index("--max-steps") + 1] = str(step + 1)
    done = subprocess.run(resumed, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_checkpoint(ckpt)["step"] == step + 1
