"""The GPU check in one command: memory, speed, training and extraction, side by side (issue 14).

This script holds the order of the parts and the time budget; every measurement is the library's
(``transvae.inference.benchmarking``, ``transvae.training.benchmark``, ``transvae.models.flops``).
Parts, in order: ``memory`` (inference memory of the paper's 21 variants, Tables 3-6), ``speed``
(TransVAE-T/B/L vs the FLUX / SD VAE configs and DC-AE at 256-1024 px) and ``sdpa`` (which attention
kernel ran), ``train`` (Trainer steps with / without gradient checkpointing, and a 300-step run:
does the loss fall?), ``extract`` (``transvae extract-latents`` throughput), ``compile`` (last: the
slowest). Each result goes into ``OUT/gpu_suite.json`` as soon as it exists (``gpu_suite.log``
too); an error is recorded and the suite goes on. ``--budget-s`` bounds the whole run: an item
whose estimate does not fit its part's share is skipped with the reason, one that overruns is
interrupted. ``--dry-run`` runs every part at tiny sizes anywhere (it proves the suite works).

    python benchmarks/gpu_suite.py --out runs/gpu --data /path/to/bsds500/train      # on a GPU
    python benchmarks/gpu_suite.py --dry-run --out /tmp/g                             # anywhere
    python tools/prepare_gpu.py .gpu --data /path/to/bsds500/train                    # for the device tool
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import bench_utils as bu
import torch

from transvae.inference import benchmarking as B
from transvae.inference.peers import autoencoder_handle_flops, build_autoencoder
from transvae.utils.budget import BudgetedRun, one_line
from transvae.utils.provenance import Provenance, write_result

log = logging.getLogger("gpu_suite")
GIB = 2**30
# "Infer. GPU Mem" of the paper (Tables 3-6): an H20, inference at 256 x 256, batch 16, bf16
PAPER_MEM_SOURCE = (
    "paper Tables 3-6, Infer. GPU Mem: an H20, 256x256, batch 16, bf16; what it counts is not stated"
)
PAPER_MEM_GIB = {
    "transvae-l-f8d16": 6.3, "transvae-t-f16d32": 7.4, "transvae-b-f16d32": 7.6, "transvae-l-f16d32": 12.0,
    "transvae-h-f16d32": 17.0, "transvae-g-f16d32": 21.5, "cnn-vae-t-f16d32": 7.3, "cnn-vae-b-f16d32": 7.4,
    "cnn-vae-l-f16d32": 14.2, "cnn-vae-h-f16d32": 18.4, "cnn-vae-g-f16d32": 31.1, "vit-vae-t-f16d32": 7.2,
    "vit-vae-b-f16d32": 7.9, "vit-vae-l-f16d32": 10.4, "vit-vae-h-f16d32": 14.4, "vit-vae-g-f16d32": 21.3,
    "swin-vae-t-f16d32": 7.4, "swin-vae-b-f16d32": 7.6, "swin-vae-l-f16d32": 12.0, "swin-vae-h-f16d32": 17.0,
    "swin-vae-g-f16d32": 21.5,
}  # fmt: skip
PAPER_FAMILIES = ("transvae", "cnn-vae", "vit-vae", "swin-vae")
SPEED_MODELS = ("transvae-t-f16d32", "transvae-b-f16d32", "transvae-l-f16d32", "transvae-t-f16d32+channels-last",
                "flux-vae-config", "sd-vae-config", "dc-ae-f32c32-config")  # fmt: skip
# A part may use its share of the time left when it starts, divided by the shares of the parts
# still to run (a part's unused time passes on; a rerun of one part gets the whole budget).
PART_SHARES = {"memory": 0.22, "speed": 0.24, "sdpa": 0.03, "train": 0.28, "extract": 0.07, "compile": 0.16}
PARTS = tuple(PART_SHARES)


def sizes(dry: bool, bf16: torch.dtype) -> argparse.Namespace:
    """What differs between the real run and ``--dry-run`` (tiny models, few steps, eager compile)."""
    f32 = torch.float32
    full = dict(
        memory_models=None, memory_res=256, memory_batch=16, speed_models=SPEED_MODELS, tiny_peers=False,
        speed_settings=[(256, bf16, 16), (512, bf16, 8), (1024, bf16, 4), (256, f32, 16)], speed_iters=3,
        speed_warmup=2, compile_models=("transvae-t-f16d32", "flux-vae-config"), compile_res=256, compile_batch=16,
        compile_backend="inductor", train_models=("transvae-t-f16d32", "cnn-vae-t-f16d32"), train_res=256,
        train_batch=16, train_steps=12, train_log_every=3, run_model="transvae-t-f16d32", run_steps=300,
        run_batch=16, run_log_every=10, run_lr=1e-4, run_warmup=50, paper_loss=True, extract_res=256,
        extract_images=(64, 1024), extract_batch=32, matmul_n=8192, matmul_reps=10,
    )  # fmt: skip
    dry_run = dict(
        memory_models=[f"{f}-nano-f16d32" for f in PAPER_FAMILIES], memory_res=64, memory_batch=1,
        speed_models=("transvae-nano-f16d32", "transvae-nano-f16d32+channels-last", *SPEED_MODELS[4:]),
        tiny_peers=True, speed_settings=[(32, bf16, 1), (32, f32, 1)], speed_iters=1, speed_warmup=1,
        compile_models=("transvae-nano-f16d32",), compile_res=32, compile_batch=1, compile_backend="eager",
        train_models=("transvae-nano-f16d32", "cnn-vae-nano-f16d32"), train_res=32, train_batch=2, train_steps=4,
        train_log_every=2, run_model="transvae-nano-f16d32", run_steps=16, run_batch=4, run_log_every=2,
        run_lr=1e-3, run_warmup=2, paper_loss=False, extract_res=32, extract_images=(4, 12), extract_batch=4,
        matmul_n=512, matmul_reps=3,
    )  # fmt: skip
    sz = argparse.Namespace(dry=dry, **(dry_run if dry else full))
    sz.speed_settings = list(dict.fromkeys(sz.speed_settings))  # bf16 is fp32 on a CPU without native bf16
    sz.memory_models = sz.memory_models or paper_variants()
    return sz


def paper_variants() -> list[str]:
    """The registered variants of the paper's Tables 3-6, smallest first (a budget cut drops the largest)."""
    from transvae.models import create_model, get_model_entry, list_models

    entries = {n: get_model_entry(n) for n in list_models()}
    names = [n for n, e in entries.items() if e.paper_params is not None and e.family in PAPER_FAMILIES]
    return sorted(names, key=lambda n: create_model(n, device="meta").num_parameters("total"))


def gflop(name: str, res: int, tiny: bool = False, part: slice = slice(None)) -> float:
    return sum(autoencoder_handle_flops(name, res, tiny)[part])


def Suite(out: Path, budget_s: float, device: torch.device, parts: tuple[str, ...] = PARTS) -> BudgetedRun:  # noqa: N802
    """The suite's budget (``PART_SHARES``), writing ``OUT/gpu_suite.json`` with provenance after every item."""
    prov = Provenance.start(device=device)
    write = lambda r: write_result(out / "gpu_suite.json", r, prov)  # noqa: E731
    run = BudgetedRun(budget_s, PART_SHARES, write, parts, log)
    run.device, run.gpu = device, device.type == "cuda"
    return run


# --- the parts (each a loop of library calls under the budget) ----------------------------------


def part_memory(suite: BudgetedRun, sz, dtype: torch.dtype, rate: float) -> None:
    from transvae.models import create_model

    suite.begin_part("memory", method=B.MEMORY_METHOD, paper_source=PAPER_MEM_SOURCE, resolution=sz.memory_res,
                     batch_size=sz.memory_batch, dtype=B.dtype_name(dtype))  # fmt: skip
    for name in sz.memory_models:
        params, g = create_model(name, device="meta").num_parameters("total"), gflop(name, sz.memory_res)
        build = 1.0 + params / 1e9 if suite.gpu else 0.2 + 20 * params / 1e9
        est = build + 4 * g * sz.memory_batch / rate + (2.0 if suite.gpu else 0.1)
        go = lambda n=name: B.model_memory(n, sz.memory_res, sz.memory_batch, dtype, suite.device)  # noqa: E731
        row = suite.run("memory", {"model": name}, est, go)
        row.update(paper_infer_mem_gib=PAPER_MEM_GIB.get(name), gflop_per_img=g)
    suite.end_part("memory")


def part_speed(suite: BudgetedRun, sz, peaks: dict, rates: dict) -> list:
    method = "inference.benchmarking.speed_records (models interleaved pass by pass, medians; FLOPs on meta)"
    part = suite.begin_part("speed", method=method, warmup=sz.speed_warmup, iters=sz.speed_iters)
    handles = []
    for name in sz.speed_models:
        try:
            handles.append(build_autoencoder(name, suite.device, sz.tiny_peers))
        except Exception as e:  # noqa: BLE001 -- e.g. a diffusers without AutoencoderDC
            part.setdefault("build_errors", {})[name] = one_line(e)
    for res, dtype, batch in sz.speed_settings:
        g = sum(gflop(h.name, res, sz.tiny_peers) for h in handles)
        passes, overhead = sz.speed_warmup + sz.speed_iters, 3.0 * len(handles) if suite.gpu else 0.5
        est = passes * g * batch / rates[dtype] + overhead

        def go(res=res, dtype=dtype, batch=batch):
            it, warm = sz.speed_iters, sz.speed_warmup
            m = B.speed_records(handles, res, dtype, suite.device, batch, it, warm, tiny=sz.tiny_peers)
            ref = m.get("flux-vae-config")
            for r in m.values():
                gf = r.pop("achieved_gflops")
                r.update(achieved_tflops=gf / 1e3, fraction_of_matmul_peak=gf / peaks[dtype])
                r["reconstruct_vs_flux"] = r["reconstruct_img_s"] / ref["reconstruct_img_s"] if ref else None
            return {"models": m}

        suite.run("speed", {"resolution": res, "dtype": B.dtype_name(dtype), "batch_size": batch}, est, go)
    suite.end_part("speed")
    return handles


def part_sdpa(suite: BudgetedRun, sz, handles: list, dtype: torch.dtype, rates: dict) -> None:
    res, _, batch = sz.speed_settings[0]
    method = "inference.benchmarking.sdpa_backends (profiler op names; the pass again without MATH)"
    suite.begin_part("sdpa", method=method, resolution=res, batch_size=batch, dtype=B.dtype_name(dtype))
    x = torch.rand(batch, 3, res, res, device=suite.device) * 2 - 1
    for h in handles:
        est = 4 * gflop(h.name, res, sz.tiny_peers) * batch / rates[dtype] + (2.0 if suite.gpu else 0.3)
        suite.run("sdpa", {"model": h.name}, est, lambda h=h: B.sdpa_backends(h, x, suite.device, dtype))
    suite.end_part("sdpa")


def part_compile(suite: BudgetedRun, sz, dtype: torch.dtype, rates: dict) -> None:
    res, batch, backend = sz.compile_res, sz.compile_batch, sz.compile_backend
    method = "inference.benchmarking.measure_compile"
    suite.begin_part("compile", method=method, backend=backend, resolution=res, batch_size=batch)
    for name in sz.compile_models:
        g = gflop(name, res, sz.tiny_peers)
        est = (60.0 if backend == "inductor" else 5.0) + 12 * g * batch / rates[dtype]

        def go(n=name):
            h = build_autoencoder(n, suite.device, sz.tiny_peers)
            return B.measure_compile(h, res, dtype, suite.device, batch, sz.speed_iters, backend=backend)

        suite.run("compile", {"model": name}, est, go)
    suite.end_part("compile")


def train_once(suite: BudgetedRun, sz, name: str, data: Path, run: Path, steps: int, batch: int, every: int,
               precision: str, ckpt: bool, lr: float = 1e-4, warmup: int = 1000) -> dict:  # fmt: skip
    """``training.benchmark.measure_stage1`` at the suite's size (a dry run: L1 + KL only)."""
    from transvae.training.benchmark import measure_stage1

    workers = 0 if sz.dry else min(8, max(1, (os.cpu_count() or 2) // 2))
    return measure_stage1(name, data, run, suite.device, sz.train_res, steps, batch, every, precision, ckpt, lr,
                          warmup, paper_loss=sz.paper_loss, workers=workers)  # fmt: skip


def part_train(suite: BudgetedRun, sz, data: Path, work: Path, dtype, rate: float) -> Path | None:
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    method = "training.benchmark.measure_training (the Trainer's own img/s and loss windows; peak memory of the fit)"
    suite.begin_part("train", method=method, data=str(data), resolution=sz.train_res, precision=precision)

    def est(name: str, steps: int, batch: int) -> float:
        return 2.5 + 15 * suite.gpu + steps * 3 * gflop(name, sz.train_res) * batch / rate

    for name, ckpt in ((n, c) for n in sz.train_models for c in (False, True)):
        run = work / f"train_{name}_{int(ckpt)}"
        label = {"model": name, "kind": "steps", "gradient_checkpointing": ckpt}
        args = (sz.train_steps, sz.train_batch, sz.train_log_every, precision, ckpt)
        go = lambda n=name, r=run, a=args: train_once(suite, sz, n, data, r, *a)  # noqa: E731
        cost = est(name, sz.train_steps, sz.train_batch) * (1.3 if ckpt else 1)
        suite.run("train", {**label, "batch_size": sz.train_batch}, cost, go)
        shutil.rmtree(run, ignore_errors=True)
    args = (sz.run_steps, sz.run_batch, sz.run_log_every, precision, False, sz.run_lr, sz.run_warmup)
    go = lambda: dict(train_once(suite, sz, sz.run_model, data, work / "train_run", *args), lr=sz.run_lr)  # noqa: E731
    label = {"model": sz.run_model, "kind": "run", "steps": sz.run_steps, "batch_size": sz.run_batch}
    row = suite.run("train", label, est(sz.run_model, sz.run_steps, sz.run_batch), go)
    suite.end_part("train")
    return work / "train_run" / "model" if row["status"] == "ok" else None


def part_extract(suite: BudgetedRun, sz, data: Path, model_dir: Path | None, work: Path, dtype, rate) -> None:
    from transvae.data import list_images

    suite.begin_part("extract", method=B.EXTRACT_METHOD, resolution=sz.extract_res, dtype=B.dtype_name(dtype))

    def go() -> dict:
        model, note = model_dir, "the 300-step training run's exported model"
        if model is None or not (model / "config.json").is_file():
            from transvae.models import create_model

            model, note = work / "extract_model", "random weights (the training run did not finish)"
            create_model(sz.run_model).save_pretrained(model)
        workers = 0 if sz.dry else min(8, max(1, (os.cpu_count() or 2) // 2))
        r = B.extract_throughput(model, list_images(data), sz.extract_images, work, sz.extract_res, dtype,
                                 sz.extract_batch, suite.device, workers, max(suite.left(), 1.0))  # fmt: skip
        return dict(model=sz.run_model, model_weights=note, **r)

    n = sum(sz.extract_images)
    encode = gflop(sz.run_model, sz.extract_res, part=slice(0, 1))
    est = 2 * (12.0 if suite.gpu else 3.0) + 2 * n * encode / rate + 0.01 * n
    suite.run("extract", {"model": sz.run_model}, est, go)
    suite.end_part("extract")


# --- checks against the targets, data, preparation, main ------------------------------------


def checks(results: dict) -> dict:
    """The issue's performance targets, evaluated on what was measured (``met: None``: not measured)."""
    parts, out = results["parts"], {}
    rows = lambda part: [r for r in parts.get(part, {}).get("rows", []) if r["status"] == "ok"]  # noqa: E731
    first = next(iter(rows("speed")), None)
    t = first and (first["models"].get("transvae-t-f16d32") or next(iter(first["models"].values())))
    ratio = t.get("reconstruct_vs_flux") if t else None
    setting = first and {k: first[k] for k in ("resolution", "dtype", "batch_size")}
    met = None if ratio is None else ratio >= 2
    out["transvae_t_reconstruct_vs_flux"] = dict(setting=setting, value=ratio, target=">= 2", met=met)
    mem: dict = {}
    for r in rows("memory"):
        judged = r["model"].startswith("transvae") and r["paper_infer_mem_gib"]
        for v in ("fp32_weights", "bf16_weights") if judged else ():
            if (total := r.get(v, {}).get("process_total_gib")) is not None:
                paper = r["paper_infer_mem_gib"]
                mem.setdefault(v, {})[r["model"]] = {"measured": total, "paper": paper, "met": total <= paper}
    out["transvae_memory_within_paper"] = {
        "measure": "process_total_gib (allocator peak reserved + context) <= the paper's column",
        **{v: {"rows": x, "met": all(y["met"] for y in x.values())} for v, x in mem.items()},
        "met": None if "fp32_weights" not in mem else all(x["met"] for x in mem["fp32_weights"].values()),
    }
    attn = {r["model"]: r["backends"] for r in rows("sdpa") if r["model"].startswith("transvae")}
    fused = all(b and "math" not in b for b in attn.values())
    out["transvae_attention_fused"] = {"backends": attn, "met": fused if attn else None}
    run = next((r for r in rows("train") if r.get("kind") == "run"), None)
    ok = None if run is None else bool(run["loss_falls"] and run["nonfinite_steps"] == 0)
    out["train_run_loss_falls_no_nonfinite"] = {"met": ok}
    return out


def photo_folder(data: Path | None, work: Path) -> tuple[Path, str]:
    """``--data`` if it holds images, else the quick start's bundled photos (nothing downloaded)."""
    from transvae.cli.quickstart import prepare_data
    from transvae.data import list_images

    if data is not None and data.is_dir() and list_images(data):
        return data, f"--data {data}"
    note = "the quick start's bundled photos (transvae quickstart's prepare_data, 256 px)"
    return prepare_data(work / "photos", 256)[0], note


def run_suite(args: argparse.Namespace, device: torch.device, work: Path) -> dict:
    from transvae.utils.device import cpu_dtype_is_fast

    parts = args.parts
    suite = Suite(args.out, args.budget_s, device, tuple(p for p in PARTS if p in parts))
    bf16 = torch.bfloat16 if device.type == "cuda" or cpu_dtype_is_fast(torch.bfloat16) else torch.float32
    sz, dtypes = sizes(args.dry_run, bf16), list(dict.fromkeys([bf16, torch.float32]))
    peaks = {d: B.matmul_peak_gflops(device, d, sz.matmul_n, sz.matmul_reps) for d in dtypes}
    # estimates assume a quarter of the matmul rate (a CPU's bf16 convolutions: the fp32 rate)
    rates = {d: 0.25 * peaks[d if device.type == "cuda" else torch.float32] for d in dtypes}
    data, suite.results["data"] = photo_folder(args.data, work)
    sub = None if bf16 == torch.bfloat16 else "bf16 -> fp32 (no native bf16 on this CPU)"
    suite.results.update(suite="gpu_suite", dry_run=args.dry_run, budget_s=args.budget_s, device=str(device))
    suite.results["dtype_substituted"] = sub
    log.info("device %s, matmul peak %s GFLOP/s", device, {B.dtype_name(d): round(v) for d, v in peaks.items()})
    if "memory" in parts:
        part_memory(suite, sz, bf16, rates[bf16])
    handles = part_speed(suite, sz, peaks, rates) if "speed" in parts else []
    if "sdpa" in parts:
        handles = handles or [build_autoencoder(n, device, sz.tiny_peers) for n in sz.speed_models]
        part_sdpa(suite, sz, handles, bf16, rates)
    handles.clear()
    model_dir = part_train(suite, sz, data, work, bf16, rates[bf16] * 2 / 3) if "train" in parts else None
    if "extract" in parts:
        part_extract(suite, sz, data, model_dir, work, bf16, rates[bf16])
    if "compile" in parts:
        part_compile(suite, sz, bf16, rates)
    peaks = {d: max(peaks[d], B.matmul_peak_gflops(device, d, sz.matmul_n, sz.matmul_reps)) for d in dtypes}
    suite.results["matmul_peak_gflops"] = {B.dtype_name(d): v for d, v in peaks.items()}
    for row in suite.results["parts"].get("speed", {}).get("rows", []):
        for r in row.get("models", {}).values():
            r["fraction_of_matmul_peak"] = r["achieved_tflops"] * 1e3 / peaks[B.DTYPES[row["dtype"]]]
    suite.results["checks"] = checks(suite.results)
    suite.write()
    log.info("checks: %s", json.dumps(suite.results["checks"], default=str))
    return suite.results


def main(argv: list[str] | None = None) -> int:
    from transvae.utils.device import resolve_device

    p = bu.parser(__doc__)
    add = p.add_argument
    add("--out", type=Path, help="output folder: gpu_suite.json and gpu_suite.log")
    add("--data", type=Path, default=None, help="photo folder for training and extraction")
    add("--budget-s", type=float, default=None, help="seconds for the whole run (default 420; dry run 1800)")
    add("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default all)")
    add("--dry-run", action="store_true", help="every part at tiny sizes (CI; a CPU is enough)")
    add("--device", default="auto", help="auto (CUDA when available) | cuda | cpu")
    add("--threads", type=int, default=None, help="torch CPU threads (dry run on a CPU: 1)")
    add("--work-dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    add("--keep-work", action="store_true", help="keep the scratch folder")
    args = p.parse_args(argv)
    if args.out is None:
        p.error("--out is required")
    args.budget_s = args.budget_s or (1800.0 if args.dry_run else 420.0)
    args.out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(args.out / "gpu_suite.log", mode="w"), logging.StreamHandler(sys.stdout)]
    for h, level in zip(handlers, (logging.DEBUG, logging.INFO), strict=True):
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        h.setLevel(level)
    log.handlers[:], log.propagate = handlers, False
    log.setLevel(logging.DEBUG)
    device = resolve_device(args.device)
    if args.threads or (args.dry_run and device.type == "cpu"):
        torch.set_num_threads(args.threads or 1)  # a shared CPU: no OpenMP spin-waiting on busy cores
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_suite_"))
    try:
        run_suite(args, device, work)
    finally:
        if args.work_dir is None and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
