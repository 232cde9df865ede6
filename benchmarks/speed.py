"""Speed, memory and FLOPs of TransVAE and its peers, side by side in one run.

Models: registered names and the diffusers peers of ``transvae.inference.peers`` with random
weights (``flux-vae-config``, ``sd-vae-config``, ``dc-ae-f32c32-config``); ``NAME+channels-last``
runs NAME with channels-last weights and inputs. Per (resolution, dtype) the models run
interleaved pass by pass and the medians are reported (``transvae.inference.benchmarking.
measure_inference``); FLOPs are counted on the meta device (``transvae.models.flops``) and the
achieved rate is compared with a matmul measured at the start and the end of the same run. bf16
runs under ``torch.autocast``. Peak memory: ``transvae.utils.peak_memory``.

    python benchmarks/speed.py --quick
    python benchmarks/speed.py                      # all models, 256/512/1024, fp32 + bf16
    python benchmarks/speed.py --compile --models transvae-t-f16d32 --resolutions 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import bench_utils as bu
import torch

from transvae.inference import benchmarking as B
from transvae.inference.peers import build_autoencoder
from transvae.utils.markdown import markdown_table
from transvae.utils.provenance import Provenance, write_result

DEFAULT_MODELS = (
    "transvae-t-f16d32",
    "cnn-vae-t-f16d32",
    "vit-vae-t-f16d32",
    "flux-vae-config",
    "sd-vae-config",
)
QUICK_MODELS, REF = ("transvae-t-f16d32", "flux-vae-config"), "flux-vae-config"
COLUMNS = ["model", "resolution", "dtype", "params_M", "encode_img_s", "decode_img_s", "reconstruct_img_s",
           "reconstruct_vs_flux", "peak_mem_mb", "gflop_per_img", "achieved_gflops", "fraction_of_matmul_peak"]  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = bu.parser(__doc__)
    add = p.add_argument
    add("--models", nargs="+", default=None, help=f"default: {' '.join(DEFAULT_MODELS)}")
    add("--resolutions", nargs="+", type=int, default=None, help="default 256 512 1024")
    add("--dtypes", nargs="+", choices=list(B.DTYPES), default=["fp32", "bf16"])
    add("--batch-size", type=int, default=None, help="default 1 on CPU, 8 on CUDA")
    add("--iters", type=int, default=None, help="timed passes per model (default 5, quick 2)")
    add("--warmup", type=int, default=1, help="untimed passes (the first measures memory)")
    add("--force-bf16", action="store_true", help="measure bf16 on a CPU without native bf16 too")
    add("--channels-last", action="store_true", help="channels-last weights and inputs for every model")
    add("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="thread: the thread's CPU time (--threads 1)",
    )
    add("--device", default="auto")
    add(
        "--train-step",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: on, off with --quick",
    )
    add("--train-models", nargs="+", default=["transvae-t-f16d32", "cnn-vae-t-f16d32"])
    add("--train-res", type=int, default=256)
    add("--compile", action="store_true", help="also measure torch.compile speed-ups of encode/decode")
    add("--profile", action="store_true", help="a torch.profiler table per model (first resolution, fp32)")
    add("--breakdown", action="store_true", help="time and FLOPs of every stage (first resolution, fp32)")
    add("--quick", action="store_true", help="256 only, TransVAE-T and flux-vae-config, 2 timed passes")
    add("--out", type=Path, default=None, help="JSON path (PNG written next to it)")
    add("--replot", type=Path, default=None, help="redraw the PNG of an existing JSON and exit")
    return p.parse_args(argv)


def plot(records: list[dict], path: Path) -> None:
    """Bars of reconstruct throughput relative to flux-vae-config (or the first model) per setting."""
    groups = sorted({(r["resolution"], r["dtype"]) for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    ref = "flux-vae-config" if "flux-vae-config" in models else models[0]
    at = {(r["model"], r["resolution"], r["dtype"]): r["reconstruct_img_s"] for r in records}
    fig, ax = bu.subplots(figsize=(max(6, 0.6 * len(groups) * len(models)), 4), dpi=80)
    w = 0.8 / len(models)
    for j, m in enumerate(models):
        for i, g in enumerate(groups):
            if (m, *g) in at and (ref, *g) in at:
                y = at[(m, *g)] / at[(ref, *g)]
                ax.bar(i + j * w, y, w, color=f"C{j}", label=m if i == 0 else None)
                ax.text(i + j * w, y, f"{y:.2f}x\n{at[(m, *g)]:.3g}/s", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(groups))], [f"{r}px {d}" for r, d in groups])
    ax.set(ylabel=f"reconstruct throughput / {ref}", ylim=(0, ax.get_ylim()[1] * 1.15))
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("encode + decode throughput, models interleaved (labels: ratio, img/s)", fontsize=9)
    bu.save_figure(fig, path)


def inference_records(a, handles, device, dtypes, batch, tick) -> tuple[list[dict], dict]:
    """One record per (model, resolution, dtype), with FLOPs and the fraction of the matmul peak."""
    n = 8192 if device.type == "cuda" else 1024
    peaks = {d: B.matmul_peak_gflops(device, B.DTYPES[d], n, tick=tick) for d in dtypes}
    records = []
    for res, d in ((res, d) for res in a.resolutions for d in dtypes):
        print(f"measuring {res}px {d} ...", flush=True)
        m = B.speed_records(
            handles, res, B.DTYPES[d], device, batch, a.iters, a.warmup, a.channels_last, tick
        )
        setting = dict(resolution=res, dtype=d, batch_size=batch, kind="inference")
        records += [dict(model=k, **setting, **r) for k, r in m.items()]
    # the matmul again at the end: the better of the two is the machine's rate during this run
    peaks = {d: max(peaks[d], B.matmul_peak_gflops(device, B.DTYPES[d], n, tick=tick)) for d in dtypes}
    flux = {(r["resolution"], r["dtype"]): r["reconstruct_img_s"] for r in records if r["model"] == REF}
    for r in records:
        ref, peak = flux.get((r["resolution"], r["dtype"])), peaks[r["dtype"]]
        r.update(matmul_peak_gflops=peak, fraction_of_matmul_peak=r["achieved_gflops"] / peak)
        r["reconstruct_vs_flux"] = r["reconstruct_img_s"] / ref if ref else None
    return records, peaks


def extra_records(a, handles, device, dtypes, batch, tick, out: Path) -> list[dict]:
    """The optional parts: training step, torch.compile, profiler tables, stage breakdown."""
    from transvae.training.benchmark import measure_training, synthetic_images

    extra, res0 = [], a.resolutions[0]
    with tempfile.TemporaryDirectory(prefix="speed_train_") as tmp:
        data = synthetic_images(Path(tmp) / "images", 2 * batch, a.train_res)
        off = {f"loss.{k}_weight": 0.0 for k in ("lpips", "vf", "gan")}
        for name in a.train_models if a.train_step else []:
            print(f"training steps of {name} at {a.train_res}px ...", flush=True)
            over = {"model.name": name, "data.train": [str(data)], "data.resolution": a.train_res, **off,
                    "data.num_workers": 0, "optim.warmup_steps": 0, "train.batch_size": batch,
                    "train.max_steps": max(2, a.iters // 2) + 1, "train.ema": False, "log.every": 1}  # fmt: skip
            r = measure_training(over, Path(tmp) / "run", device)
            extra.append(dict(kind="train_step", model=name, resolution=a.train_res, dtype="fp32", batch_size=batch,
                              train_step_s_per_img=r["s_per_img"]))  # fmt: skip
    for h, res, d in ((h, r, d) for h in handles for r in a.resolutions for d in dtypes) if a.compile else ():
        c = B.measure_compile(h, res, B.DTYPES[d], device, batch, a.iters)
        extra.append(dict(kind="compile", **c, batch_size=batch))
    if a.profile:
        text = [f"## {h.name}, {res0}px, fp32, batch 1\n{B.profile_table(h, res0, device)}" for h in handles]
        out.with_name(out.stem + "_profile.txt").write_text(f"{a.command}\n\n" + "\n\n".join(text) + "\n")
    for h in handles if a.breakdown else ():
        rows = B.stage_breakdown(h, res0, device, a.iters, tick)
        extra.append(
            dict(kind="breakdown", model=h.name, resolution=res0, dtype="fp32", batch_size=1, stages=rows)
        )
        print(
            f"\n{h.name}:\n" + markdown_table(rows, ["part", "module", "seconds", "share", "gflop", "gflops"])
        )
    return extra


def main(argv: list[str] | None = None) -> None:
    from transvae.utils.device import cpu_dtype_is_fast, resolve_device

    a = parse(argv)
    if a.replot:
        recs = json.loads(a.replot.read_text())["records"]
        return plot([r for r in recs if r.get("kind") == "inference"], a.replot.with_suffix(".png"))
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    if a.clock == "thread" and (device.type != "cpu" or torch.get_num_threads() != 1):
        sys.exit("error: --clock thread measures one CPU thread's time: use it with --threads 1 on a CPU")
    tick, quick = B.clock(a.clock), a.quick
    a.models = a.models or list(QUICK_MODELS if quick else DEFAULT_MODELS)
    a.resolutions = a.resolutions or ([256] if quick else [256, 512, 1024])
    a.iters = a.iters or (2 if quick else 5)
    a.train_step = a.train_step if a.train_step is not None else not quick
    batch = a.batch_size or (8 if device.type == "cuda" else 1)
    out = a.out or bu.DOCS_DIR / ("speed_quick.json" if quick else "speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    prov = Provenance.start(device=device)
    a.command, dtypes = prov.command, list(a.dtypes)
    settings = dict(batch_size=batch, channels_last=a.channels_last, clock=a.clock, dtypes=a.dtypes)
    if device.type == "cpu" and "bf16" in dtypes:
        slow = B.bf16_conv_slowdown(device)
        settings.update(bf16_native=cpu_dtype_is_fast(torch.bfloat16), bf16_conv_slowdown=slow)
        if not settings["bf16_native"] and not a.force_bf16:
            dtypes.remove("bf16")
            print(
                f"note: bf16 skipped: no native bf16 (a conv is {slow:.0f}x slower); --force-bf16",
                file=sys.stderr,
            )
    handles = []
    for n in a.models:
        try:
            handles.append(build_autoencoder(n, device))
        except KeyError as e:
            print(f"note: skipping {n}: {e}", file=sys.stderr)
    for h in handles if a.channels_last else ():
        h.module.to(memory_format=torch.channels_last)
    records, peaks = inference_records(a, handles, device, dtypes, batch, tick)
    extra = extra_records(a, handles, device, dtypes, batch, tick, out)
    write_result(
        out, dict(benchmark="speed", settings=settings, records=records + extra), prov, steps=a.iters
    )
    plot(records, out.with_suffix(".png"))
    print("\n" + markdown_table(records, COLUMNS))
    print("\nmatmul peak GFLOP/s: " + ", ".join(f"{d} {v:.1f}" for d, v in peaks.items()))
    for r in (r for r in records if r["model"] == "transvae-t-f16d32" and r["reconstruct_vs_flux"]):
        print(
            f"HEADLINE {r['resolution']}px {r['dtype']}: TransVAE-T / FLUX config {r['reconstruct_vs_flux']:.2f}x"
        )
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
