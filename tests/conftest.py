import os

# One thread per test process (and per CLI subprocess, which inherits the variable): the tests run
# many tiny ops, where OpenMP threads only add spin-waiting, and on a loaded 2-core machine that
# makes a 10 ms op take a second.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Tests never touch the network: make any accidental hub/torch-hub download fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
