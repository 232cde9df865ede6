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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a whole module of tiny tensors (faster than two on a busy 2-core
    machine); the previous count is restored after it. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def scipy_fd():
    """``scipy_fd(a, b)``: the Frechet distance of two (N, D) float64 feature arrays with scipy's
    ``sqrtm``, the reference the FID and latent-FD metrics are checked against."""
    import numpy as np
    import scipy.linalg

    def fd(a, b) -> float:
        mu1, mu2 = a.mean(0), b.mean(0)
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))

    return fd


def _make_class_photos(root, n_per_class=8, size=64):
    """Two classes (folders ``a``, ``b``) of small crops of scikit-image's bundled photos."""
    from PIL import Image
    from skimage import data as skdata

    for cls, img in {"a": skdata.astronaut(), "b": skdata.chelsea()}.items():
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            crop = img[10 * i : 10 * i + 200, 13 * i : 13 * i + 200]
            Image.fromarray(crop).resize((size, size)).save(root / cls / f"{i}.png")
    return root


def _write_random_photos(folder, n=6, size=(32, 32), seed=0):
    """``n`` random RGB PNGs ``0.png``, ``1.png``, ... of ``size`` (H, W), drawn from
    ``np.random.default_rng(seed)`` one after another, in the new folder ``folder``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="session")
def random_photos():
    """``random_photos(folder, n=6, size=(32, 32), seed=0)`` writes a folder of random PNGs and returns it."""
    return _write_random_photos


@pytest.fixture(scope="session")
def class_photos():
    """``class_photos(root, n_per_class=8, size=64)`` writes a two-class photo folder and returns it."""
    return _make_class_photos


@pytest.fixture
def overfit():
    """``overfit(model, x, steps, lr) -> losses``: L1 reconstruction of one batch with AdamW (no weight
    decay), decoding the posterior mean; the per-step losses tell whether the model can learn."""

    def run(model, x, steps: int, lr: float = 2e-3) -> list[float]:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        losses = []
        for _ in range(steps):
            loss = (model(x, sample_posterior=False).sample - x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return run


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A saved ``transvae-nano-f16d32`` (seed 0) shared by the CLI tests; read it, never write it."""
    return _save_nano_tokenizer(tmp_path_factory.mktemp("model") / "nano")


def _save_nano_tokenizer(folder):
    """A ``transvae-nano-f16d32`` made right after ``torch.manual_seed(0)``, saved to ``folder``."""
    import transvae

    torch.manual_seed(0)
    transvae.create_model("transvae-nano-f16d32").save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def save_nano_tokenizer():
    """``save_nano_tokenizer(folder)``: a nano tokenizer made with seed 0, saved to ``folder`` (returned)."""
    return _save_nano_tokenizer


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory):
    """A random-weight InceptionV3 in the file format torch-fidelity, torchmetrics and transvae load."""
    from transvae.metrics.features import save_random_inception

    return save_random_inception(tmp_path_factory.mktemp("inception") / "random-inception.pth")


class _FeatureTable:
    """Prepared features for set metrics: ``images(lo, hi)`` makes uint8 images that carry their
    index in their pixels, ``network(**table)`` a "feature network" that hands out row i of each
    table for image i. Metrics can then be checked against a reference on chosen arrays."""

    class _Network(torch.nn.Module):
        def __init__(self, **table: torch.Tensor):
            super().__init__()
            self.table = table

        def forward(self, x, features):
            idx = x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()
            return {k: self.table[k][idx] for k in features}

    network = _Network

    @staticmethod
    def images(lo: int, hi: int) -> torch.Tensor:
        x = torch.zeros(hi - lo, 3, 4, 4, dtype=torch.uint8)
        i = torch.arange(lo, hi)
        x[:, 0, 0, 0], x[:, 0, 0, 1] = (i % 256).to(torch.uint8), (i // 256).to(torch.uint8)
        return x


@pytest.fixture
def feature_table():
    return _FeatureTable
