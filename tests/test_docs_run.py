"""Every shell and Python block of README.md and docs/*.md runs as written, or says why not.

The blocks are run as a new user would run them: in a scratch folder that holds what the docs
call ``photos/``, ``imagenet/``, ``runs/my-run/model`` ... (small synthetic images, a nano
model), with ``transvae`` / ``python`` on the PATH, no network and no cached weights. Long
commands are shrunk only through their documented flags, appended to the command (the last
occurrence of a flag wins): ``--max-steps``, ``--num``, ``--limit``, a smaller ``--model`` ...

Every block is either in ``RUN`` (how it runs), in ``NOT_RUN`` (why not: a GPU, a download,
hours, or not code), or annotated in the doc with ``<!-- not run: REASON -->`` right before it.
A new block in neither fails ``test_every_block_is_run_or_says_why``, and so does a table entry
whose block is gone. The default suite runs the ``quick`` blocks (the Python snippets and the
fast commands, about a minute); ``-m slow`` runs every ``RUN`` block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
FENCE = re.compile(
    r"(?:<!-- not run: (?P<why>[^>]*?) -->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.S | re.M
)

GPU = "needs a GPU (CUDA) or several"
DOWNLOAD = "downloads weights or packages (no network in the tests)"
HOURS = "a full-scale run: hours (the CPU-sized versions of these commands run in other blocks)"
NOT_CODE = "not a command: a diagram, a synopsis or a folder listing"


@dataclass
class Run:
    """How a block runs: ``quick`` (default suite) or slow; ``append[i]`` flags appended to
    command i (shrinking it through documented flags); ``skip[i]`` a command not run, why."""

    quick: bool = False
    append: dict[int, str] = field(default_factory=dict)
    skip: dict[int, str] = field(default_factory=dict)


# (doc, first line of the block) -> Run
RUN = {
    ("README.md", "import torch, transvae"): Run(quick=True),
    ("README.md", "import transvae"): Run(quick=True),
    ("README.md", "transvae evaluate --model runs/my-run/model --data imagenet/val --out eval/ --resolution 256 512 1024"):
        Run(quick=True, skip={0: "LPIPS and rFID (the default metrics) download VGG16 / Inception"},
            append={1: "--num-workers 0", 2: "--uniformity 64 --num-workers 0"}),
    ("README.md", "transvae reconstruct photos/ --model runs/my-run/model --out rec/ --dtype bf16 --compare   # any size and aspect ratio"):
        Run(append={3: "--batch-size 4 --num-workers 0"}, skip={4: GPU}),
    ("README.md", "transvae extract-latents imagenet/train --model runs/vae/model --out lat/train --resolution 256"):
        Run(skip={1: GPU, 2: "samples a run the GPU command above trains", 3: "FID / IS download Inception"},
            append={0: "--num-workers 0"}),
    ("docs/architecture.md", "transvae list                     # table; `transvae list --json` for machines"):
        Run(quick=True, append={2: "--models transvae-nano-f16d32 --resolution 64"}),
    ("docs/benchmarks.md", "export TRANSVAE_BENCH_DATA=/path/to/bsds500"):
        Run(skip={0: "the test's environment names the scratch BSDS500", 6: "tests/test_gpu_suite.py runs the dry run"},
            append={1: "--out out/le.json --runs-dir runs/leq --workers 1", 2: "--out out/ex.json --runs-dir runs/leq",
                    3: "--out out/sc.json --runs-dir runs/scq --workers 1",
                    4: "--out out/gen.json --le-runs runs/leq --runs-dir runs/genq",
                    5: "--out out/speed.json --models transvae-nano-f16d32 flux-vae-config --resolutions 64 --threads 1"}),
    ("docs/evaluation.md", "# the paper's metrics at 256 px (needs the LPIPS VGG and FID Inception weights, see \"Weights\")"):
        Run(skip={0: "LPIPS and rFID download VGG16 / Inception", 2: "LPIPS and rFID download VGG16 / Inception"},
            append={1: "--num-workers 0", 3: "--uniformity 64 --uniformity-repeats 2 --num-workers 0"}),
    ("docs/evaluation.md", "import torch, transvae"): Run(quick=True),
    ("docs/evaluation.md", "transvae quickstart --out runs/probe --steps 600 --minutes 0 --val-every 200 --train.diffusability_steps=100"):
        Run(append={0: "--steps 2 --val-every 1 --train.diffusability_steps=2 --model transvae-nano-f16d32 --resolution 32"}),
    ("docs/generation.md", "# 1. the tokenizer (L1 + KL: LPIPS / DINOv2 weights are not available offline), 450 steps x 16 crops"):
        Run(append={0: "--max-steps 2 --batch-size 2", 3: "--model lightningdit-nano-1 --max-steps 4 --batch-size 4 "
                    "--train.checkpoint_every=2 --log.val_every=2 --sample.val_num=16 --sample.val_steps=2",
                    4: "--step 2 --num 16 --steps 2", 5: "--num 16 --steps 2"}),
    ("docs/inference.md", "# images of any size -> PNGs with the same relative names (+ side-by-side input|reconstruction)"):
        Run(skip={1: "a Hub model (download) on a GPU", 5: GPU}, append={4: "--batch-size 4 --num-workers 0"}),
    ("docs/generation.md", "import torch#2"): Run(quick=True),  # precision / recall, worked
    ("docs/inference.md", "import torch, transvae"): Run(quick=True),
    ("docs/inference.md", "import torch, transvae#2"): Run(quick=True),  # the diffusers wrapper
    ("docs/inference.md", "transvae reconstruct p512 --model runs/bsds-mini/model --out untiled"): Run(),
    ("docs/training.md", "transvae quickstart --out runs/quickstart          # --minutes 5 (the steps fitted to it) by default"):
        Run(append={0: "--minutes 0.05 --steps 2 --threads 1"}),
}  # fmt: skip

NOT_RUN = {
    ("README.md", "python3 dev.py quickstart   # trains a mini TransVAE on CPU (~5 min) on photos bundled with its dependencies, then reconstructs"):
        "sets up its own .venv with pip (downloads) and runs for minutes: tests/test_quickstart.py and the suite itself",
    ("README.md", "python3 -m venv .venv && . .venv/bin/activate"): "installs packages from PyPI (download)",
    ("README.md", "transvae train --config configs/transvae-t-f16d32-stage1.yaml --data /data/imagenet/train \\"):
        f"{HOURS}; the recipes' LPIPS and DINOv2 weights: {DOWNLOAD}",
    ("docs/architecture.md", "encoder: conv_in 3x3 -> [ResBlock x d1] -> down -> [ResBlock x d2] -> down"): NOT_CODE,
    ("docs/architecture.md", "encoder: conv_in 3x3 -> per stage: [ResBlock (+ attention)] x num_res_blocks, then a 3x3 stride-2"): NOT_CODE,
    ("docs/architecture.md", "encoder: Conv(k=s=2) patch embedding + LayerNorm -> Swin stage 1 -> [PatchMerging -> Swin stage] x 3"): NOT_CODE,
    ("docs/evaluation.md", "transvae evaluate --model runs/bsds-mini/model --data /work/shared/data/bsds500/val --out runs/bsds-mini/eval \\"):
        "the measurement of this section on BSDS500 (the data set is not in the repository); the same commands run on "
        "the scratch photos in the blocks above",
    ("docs/generation.md", "transvae extract-latents imagenet/train --model runs/vae/model --out lat/train --resolution 256"):
        f"{GPU} (torchrun on 8 GPUs) and FID / IS: {DOWNLOAD}",
    ("docs/generation.md", "transvae gen-train --latents DIR --model NAME --out RUN [--val-latents DIR] [--max-steps N]"): NOT_CODE,
    ("docs/generation.md", "transvae gen-sample --run RUN --vae VAE --num N --out DIR [--cfg-scale S] [--steps K]"): NOT_CODE,
    ("docs/inference.md", "model = transvae.from_pretrained(\"user/transvae-t-f16d32\")         # snapshot_download of config.json + model.safetensors"):
        "the Hugging Face Hub (download, and an account to push)",
    ("docs/losses.md", "import torch, transvae"): f"VAELoss with the paper's defaults builds LPIPS-VGG16 and DINOv2: {DOWNLOAD}",
    ("docs/losses.md", "python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\""): DOWNLOAD,
    ("docs/reliability.md", "pytest tests/test_io_robustness.py tests/test_fuzz.py tests/test_untrusted.py \\"):
        "runs parts of this test suite (minutes): the suite runs them itself",
    ("docs/training.md", "# stage 1"): f"{HOURS}; LPIPS and DINOv2: {DOWNLOAD}",
    ("docs/training.md", "transvae train --model NAME --data DIR [--data DIR2 ...] --out RUN_DIR [--config YAML]"): NOT_CODE,
    ("docs/training.md", "torchrun --nproc_per_node 8 --no-python transvae train --config configs/transvae-l-f16d32-stage1.yaml \\"): GPU,
    ("docs/training.md", "RUN_DIR/"): NOT_CODE,
    ("docs/training.md", "transvae train --out RUN_DIR --resume                   # the configuration stored in the checkpoint"):
        "RUN_DIR stands for a run of your own (resuming runs is tested in tests/test_training*.py)",
    ("docs/evaluation.md", "python -m transvae.utils.screenshot OUT/report.html --out OUT/report.png --height 2400"):
        "needs Chromium (apt-get install chromium); the slow test in tests/test_evaluation_cli.py runs it when present",
    ("docs/training.md", "src/transvae/training/"): NOT_CODE,
    ("README.md", "transvae convert stabilityai/sd-vae-ft-mse --out models/sd-vae              # diffusers folder / Hub id"):
        f"Hub ids and released checkpoints: {DOWNLOAD}; tests/test_convert.py converts random-weight stand-ins of each format",
    ("docs/evaluation.md", "transvae convert stabilityai/sd-vae-ft-mse --out models/sd-vae          # or a local folder"):
        f"a Hub id: {DOWNLOAD}; tests/test_eval_compare.py runs evaluate with several --model",
    ("docs/evaluation.md", "transvae evaluate --model runs/my-run/model --data imagenet/val --out eval/vavae --protocol va-vae \\"):
        f"rfid and lpips load Inception / VGG16: {DOWNLOAD}; tests/test_eval_protocols.py runs every --protocol",
    ("docs/evaluation.md", "from transvae.metrics import build_metrics, check_inputs, feature_networks, MetricCollection"):
        f"a sketch over the reader's own batches, with the Inception weights: {DOWNLOAD}; tests/test_metrics.py runs the collection",
    ("docs/evaluation.md", "# src/transvae/metrics/mean_brightness.py"):
        "a module to add to the package: tests/test_metrics.py::test_a_new_metric_is_one_class registers exactly this class",
    ("docs/generation.md", "transvae gen-eval --samples DIR_OR_NPZ [--reference DIR_OR_NPZ] [--reference-latents DIR] --out DIR"): NOT_CODE,
    ("docs/generation.md", "import torch"):
        f"the Inception weights file: {DOWNLOAD}; tests/test_metric_sfid.py checks the same feature on a random-weight Inception",
    ("docs/generation.md", "from transvae.models.convert.lightningdit import convert_lightningdit, export_lightningdit"):
        f"a released LightningDiT checkpoint: {DOWNLOAD}; tests/test_lightningdit_convert.py round-trips random weights",
    ("docs/inference.md", "transvae convert stabilityai/sd-vae-ft-mse --out sd-vae/                  # diffusers AutoencoderKL: Hub id or folder"):
        f"Hub ids and released checkpoints: {DOWNLOAD}; tests/test_convert.py converts random-weight stand-ins of each format",
    ("docs/inference.md", "vae = transvae.from_pretrained(\"stabilityai/sd-vae-ft-mse\")                   # -> CNNVAE"):
        f"Hub ids and released checkpoints: {DOWNLOAD}",
    ("docs/training.md", "transvae convert stabilityai/sd-vae-ft-mse --out models/sd-vae      # or any tokenizer transvae loads"):
        f"a Hub id and LPIPS: {DOWNLOAD}; benchmarks/finetune.py runs both recipes on a converted model (docs/benchmarks/finetune.json)",
}  # fmt: skip


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    body: str
    why: str | None  # the doc's <!-- not run: ... --> annotation
    suffix: str = ""  # "#2" for the second block of a doc with the same first line

    @property
    def key(self) -> tuple[str, str]:
        first = self.body.strip().splitlines()[0] if self.body.strip() else ""
        return self.doc, first + self.suffix


def blocks() -> list[Block]:
    out, seen = [], {}
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for m in FENCE.finditer(text):
            b = Block(doc, text[: m.start("lang")].count("\n") + 1, m["lang"], m["body"], m["why"])
            n = seen[b.key] = seen.get(b.key, 0) + 1
            b.suffix = f"#{n}" if n > 1 else ""
            out.append(b)
    return out


def commands(body: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comment lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [c for c in (line.strip() for line in joined.splitlines()) if c and not c.startswith("#")]


def test_every_block_is_run_or_says_why():
    found = {b.key: b for b in blocks()}
    unclassified = [
        f"{b.doc}:{b.line} {k[1]!r}"
        for k, b in found.items()
        if k not in RUN and k not in NOT_RUN and not b.why
    ]
    assert not unclassified, (
        "blocks neither run nor listed with a reason (RUN / NOT_RUN here, or <!-- not run: -->):\n"
        + "\n".join(unclassified)
    )
    stale = [k for k in (*RUN, *NOT_RUN) if k not in found]
    assert not stale, f"table entries whose block is gone or changed: {stale}"
    both = [k for k in RUN if k in NOT_RUN or found[k].why]
    assert not both, f"blocks both run and listed: {both}"
    for k, r in RUN.items():
        n = len(commands(found[k].body)) if found[k].lang != "python" else 1
        assert all(i < n for i in (*r.append, *r.skip)), (k, n)


# --- the scratch folder a new user would have ----------------------------------------------------


def _images(folder: Path, n: int, size: tuple[int, int], seed: int, ext: str = "png") -> None:
    from transvae.training.benchmark import synthetic_images

    synthetic_images(folder, n, size, seed)
    if ext != "png":
        from PIL import Image

        for p in sorted(folder.glob("*.png")):
            Image.open(p).convert("RGB").save(p.with_suffix(f".{ext}"))
            p.unlink()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    import transvae

    sb = tmp_path_factory.mktemp("docs")
    for name, n, size in (("photos", 3, (40, 56)), ("coco/val2017", 3, (48, 64)), ("p512", 2, (512, 512))):
        _images(sb / name, n, size, seed=len(name))
    (sb / "photos" / "00000.png").rename(sb / "photos" / "0.png")
    _images(sb / "more", 1, (50, 60), seed=5, ext="jpg")
    (sb / "more" / "00000.jpg").rename(sb / "more" / "one.jpg")
    for split in ("train", "val"):
        for c in ("a", "b"):
            _images(sb / "imagenet" / split / c, 5, (72, 64), seed=hash((split, c)) % 1000)
    bsds = sb / "bsds"
    for split, n, size in (("train", 16, (80, 96)), ("val", 12, (321, 481)), ("test", 16, (80, 96))):
        _images(bsds / split, n, size, seed=n)  # lFD needs > 128 vectors (16 x 9); native crops up to 256
    model = transvae.create_model("transvae-nano-f16d32")
    for run in ("my-run", "vae", "bsds-mini"):
        model.save_pretrained(sb / "runs" / run / "model")
    (sb / "configs").symlink_to(REPO / "configs")  # the commands run from a clone's root
    (sb / "benchmarks").symlink_to(REPO / "benchmarks")
    bin_dir = sb / "bin"
    bin_dir.mkdir()
    for name, target in (("transvae", "-m transvae.cli"), ("python", ""), ("python3", "")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {sys.executable} {target} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO / "src"),
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TORCH_HOME=str(sb / "torch-home"), B=str(bsds),
               R="runs/gen_bench", MPLBACKEND="Agg", TRANSVAE_BENCH_DATA=str(bsds))  # fmt: skip
    return sb, env


def _run_block(k: tuple[str, str], sandbox) -> None:
    sb, env = sandbox
    b = {x.key: x for x in blocks()}[k]
    r = RUN[k]
    if b.lang == "python":
        (sb / "snippet.py").write_text(b.body)
        p = subprocess.run(
            [sys.executable, "snippet.py"], cwd=sb, env=env, capture_output=True, text=True, timeout=600
        )
        assert p.returncode == 0, f"{b.doc}:{b.line}\n{p.stderr[-3000:]}"
        return
    script = [re.sub(r"\s+#.*$", "", c) + (" " + r.append[i] if i in r.append else "")
              for i, c in enumerate(commands(b.body)) if i not in r.skip]  # fmt: skip
    p = subprocess.run(["bash", "-euxo", "pipefail", "-c", "\n".join(script)], cwd=sb, env=env,
                       capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert p.returncode == 0, f"{b.doc}:{b.line}\n{p.stdout[-1500:]}\n{p.stderr[-4000:]}"


QUICK = [k for k, r in RUN.items() if r.quick]
SLOW = [k for k, r in RUN.items() if not r.quick]


@pytest.mark.parametrize("k", QUICK, ids=[f"{d}:{line[:40]}" for d, line in QUICK])
def test_quick_blocks_run_as_written(k, sandbox):
    _run_block(k, sandbox)


@pytest.mark.slow
@pytest.mark.parametrize("k", SLOW, ids=[f"{d}:{line[:40]}" for d, line in SLOW])
def test_every_runnable_block_runs_as_written(k, sandbox):
    _run_block(k, sandbox)


def test_a_documented_recipe_is_found_from_any_folder(tmp_path, monkeypatch):
    from transvae.training.config import TrainConfigError, build_config, find_recipe

    monkeypatch.chdir(tmp_path)  # no configs/ here: an installed package, a folder of one's own
    assert find_recipe("configs/lightningdit-cpu-quick.yaml").parent == REPO / "configs"
    assert find_recipe("transvae-t-f16d32-stage1").name == "transvae-t-f16d32-stage1.yaml"
    assert build_config("configs/transvae-t-f16d32-stage1.yaml").model.name == "transvae-t-f16d32"
    with pytest.raises(
        TrainConfigError, match="config file not found: configs/nope.yaml; shipped recipes: finetune"
    ):
        build_config("configs/nope.yaml")
    with pytest.raises(TrainConfigError, match="config file not found: /elsewhere/x.yaml"):
        build_config("/elsewhere/x.yaml")  # an explicit other folder is never replaced by a shipped recipe
