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
import shutil
import sys
import tempfile
from pathlib import Path

import bench_utils as bu
import torch

from transvae.inference import benchmarking as B
from transvae.inference.peers import autoencoder_handle_flops, build_autoencoder
from transvae.utils.markdown import markdown_table
from transvae.utils.provenance import Provenance, write_result

DEFAULT_MODELS = (
    "transvae-t-f16d32",
    "cnn-vae-t-f16d32",
    "vit-vae-t-f16d32",
    "flux-vae-config",
    "sd-vae-config",
)
QUICK_MODELS = ("transvae-t-f16d32", "flux-vae-config")
COLUMNS = ["model", "resolution", "dtype", "params_M", "encode_img_s", "decode_img_s", "reconstruct_img_s",
           "reconstruct_vs_flux", "peak_mem_mb", "gflop_per_img", "achieved_gflops", "fraction_of_matmul_peak"]  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", default=None, help=f"default: {' '.join(DEFAULT_MODELS)}")
    p.add_argument("--resolutions", nargs="+", type=int, default=None, help="default 256 512 1024")
    p.add_argument("--dtypes", nargs="+", choices=list(B.DTYPES), default=["fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=None, help="default 1 on CPU, 8 on CUDA")
    p.add_argument("--iters", type=int, default=None, help="timed passes per model (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes (the first measures memory)")
    p.add_argument("--force-bf16", action="store_true", help="measure bf16 on a CPU without native bf16 too")
    p.add_argument(
        "--channels-last", action="store_true", help="channels-last weights and inputs for every model"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="wall-clock, or this thread's CPU time (CPU, --threads 1): robust to other jobs on the cores")  # fmt: skip
    p.add_argument("--device", default="auto")
    p.add_argument("--train-step", action=argparse.BooleanOptionalAction, default=None,
                   help="training-step benchmark (default: on, off with --quick)")  # fmt: skip
    p.add_argument("--train-models", nargs="+", default=["transvae-t-f16d32", "cnn-vae-t-f16d32"])
    p.add_argument("--train-res", type=int, default=256)
    p.add_argument(
        "--compile", action="store_true", help="also measure torch.compile speed-ups of encode/decode"
    )
    p.add_argument(
        "--profile", action="store_true", help="a torch.profiler table per model (first resolution, fp32)"
    )
    p.add_argument(
        "--breakdown", action="store_true", help="time and FLOPs of every stage (first resolution, fp32)"
    )
    p.add_argument(
        "--quick", action="store_true", help="256 only, TransVAE-T and flux-vae-config, 2 timed passes"
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNG written next to it)")
    p.add_argument("--replot", type=Path, default=None, help="redraw the PNG of an existing JSON and exit")
    return p.parse_args(argv)


def plot(records: list[dict], path: Path) -> None:
    """Bars of reconstruct throughput relative to flux-vae-config (or the first model) per setting."""
    groups = sorted({(r["resolution"], r["dtype"]) for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    ref = "flux-vae-config" if "flux-vae-config" in models else models[0]
    at = {(r["model"], r["resolution"], r["dtype"]): r["reconstruct_img_s"] for r in records}
    fig, ax = bu.subplots(figsize=(max(6, 0.6 * len(groups) * len(models)), 4), dpi=80)
    width = 0.8 / len(models)
    for j, m in enumerate(models):
        for i, g in enumerate(groups):
            if (m, *g) in at and (ref, *g) in at:
                y = at[(m, *g)] / at[(ref, *g)]
                ax.bar(i + j * width, y, width, color=f"C{j}", label=m if i == 0 else None)
                ax.text(
                    i + j * width, y, f"{y:.2f}x\n{at[(m, *g)]:.3g}/s", ha="center", va="bottom", fontsize=7
                )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], [f"{r}px {d}" for r, d in groups])
    ax.set(ylabel=f"reconstruct throughput / {ref}", ylim=(0, ax.get_ylim()[1] * 1.15))
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(
        "encode + decode throughput, models interleaved in one run (labels: ratio, img/s)", fontsize=9
    )
    bu.save_figure(fig, path)


def inference_records(a, handles, device, dtypes, batch, tick) -> tuple[list[dict], dict]:
    """One record per (model, resolution, dtype), with FLOPs and the fraction of the matmul peak."""
    n = 8192 if device.type == "cuda" else 1024
    peaks = {d: B.matmul_peak_gflops(device, B.DTYPES[d], n, tick=tick) for d in dtypes}
    records = []
    for res in a.resolutions:
        for d in dtypes:
            print(f"measuring {res}px {d} ...", flush=True)
            m = B.measure_inference(
                handles, res, B.DTYPES[d], device, batch, a.iters, a.warmup, a.channels_last, tick
            )
            for h in handles:
                enc, dec = autoencoder_handle_flops(h.name, res)
                r = dict(
                    model=h.name,
                    resolution=res,
                    dtype=d,
                    batch_size=batch,
                    params_M=h.params / 1e6,
                    **m[h.name],
                )
                r.update(encode_gflop_per_img=enc, decode_gflop_per_img=dec, gflop_per_img=enc + dec)
                records.append(
                    dict(r, kind="inference", achieved_gflops=r["gflop_per_img"] * r["reconstruct_img_s"])
                )
    # the matmul again at the end: the better of the two is the machine's rate during this run
    peaks = {d: max(peaks[d], B.matmul_peak_gflops(device, B.DTYPES[d], n, tick=tick)) for d in dtypes}
    flux = {
        (r["resolution"], r["dtype"]): r["reconstruct_img_s"]
        for r in records
        if r["model"] == "flux-vae-config"
    }
    for r in records:
        r.update(
            matmul_peak_gflops=peaks[r["dtype"]],
            fraction_of_matmul_peak=r["achieved_gflops"] / peaks[r["dtype"]],
        )
        ref = flux.get((r["resolution"], r["dtype"]))
        r["reconstruct_vs_flux"] = r["reconstruct_img_s"] / ref if ref else None
    return records, peaks


def extra_records(a, handles, device, dtypes, batch, tick, out: Path) -> list[dict]:
    """The optional parts: training step, torch.compile, profiler tables, stage breakdown."""
    from transvae.training.benchmark import measure_training, synthetic_images

    extra = []
    if a.train_step:
        tmp = Path(tempfile.mkdtemp(prefix="speed_train_"))
        data = synthetic_images(tmp / "images", 2 * batch, a.train_res)
        for name in a.train_models:
            print(f"training steps of {name} at {a.train_res}px ...", flush=True)
            r = measure_training({"model.name": name, "data.train": [str(data)], "data.resolution": a.train_res, "data.num_workers": 0,
                                  "loss.lpips_weight": 0.0, "loss.vf_weight": 0.0, "loss.gan_weight": 0.0, "optim.warmup_steps": 0,
                                  "train.batch_size": batch, "train.max_steps": max(2, a.iters // 2) + 1, "train.ema": False, "log.every": 1},
                                 tmp / "run", device)  # fmt: skip
            extra.append(
                dict(
                    kind="train_step",
                    model=name,
                    resolution=a.train_res,
                    dtype="fp32",
                    batch_size=batch,
                    train_step_s_per_img=r["s_per_img"],
                )
            )
        shutil.rmtree(tmp, ignore_errors=True)
    for h in handles if a.compile else []:
        for res in a.resolutions:
            extra += [
                dict(
                    kind="compile",
                    **B.measure_compile(h, res, B.DTYPES[d], device, batch, a.iters),
                    batch_size=batch,
                )
                for d in dtypes
            ]
    if a.profile:
        text = [
            f"## {h.name}, {a.resolutions[0]}px, fp32, batch 1\n{B.profile_table(h, a.resolutions[0], device)}"
            for h in handles
        ]
        out.with_name(out.stem + "_profile.txt").write_text(f"{a.command}\n\n" + "\n\n".join(text) + "\n")
    for h in handles if a.breakdown else []:
        rows = B.stage_breakdown(h, a.resolutions[0], device, a.iters, tick)
        extra.append(
            dict(
                kind="breakdown",
                model=h.name,
                resolution=a.resolutions[0],
                dtype="fp32",
                batch_size=1,
                stages=rows,
            )
        )
        print(
            f"\n{h.name}:\n" + markdown_table(rows, ["part", "module", "seconds", "share", "gflop", "gflops"])
        )
    return extra


def main(argv: list[str] | None = None) -> None:
    from transvae.utils.device import cpu_dtype_is_fast, resolve_device

    a = parse(argv)
    if a.replot:
        recs = [r for r in json.loads(a.replot.read_text())["records"] if r.get("kind") == "inference"]
        return plot(recs, a.replot.with_suffix(".png"))
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    if a.clock == "thread" and (device.type != "cpu" or torch.get_num_threads() != 1):
        sys.exit("error: --clock thread measures one CPU thread's time: use it with --threads 1 on a CPU")
    tick = B.clock(a.clock)
    a.models = a.models or list(QUICK_MODELS if a.quick else DEFAULT_MODELS)
    a.resolutions, a.iters = (
        a.resolutions or ([256] if a.quick else [256, 512, 1024]),
        a.iters or (2 if a.quick else 5),
    )
    a.train_step = a.train_step if a.train_step is not None else not a.quick
    batch = a.batch_size or (8 if device.type == "cuda" else 1)
    out = a.out or bu.DOCS_DIR / ("speed_quick.json" if a.quick else "speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    prov = Provenance.start(device=device)
    a.command = prov.command
    settings = dict(batch_size=batch, channels_last=a.channels_last, clock=a.clock, dtypes=a.dtypes)
    dtypes = list(a.dtypes)
    if device.type == "cpu" and "bf16" in dtypes:
        settings.update(
            bf16_native=cpu_dtype_is_fast(torch.bfloat16), bf16_conv_slowdown=B.bf16_conv_slowdown(device)
        )
        if not settings["bf16_native"] and not a.force_bf16:
            dtypes.remove("bf16")
            print(f"note: bf16 skipped: no native bf16 here (a bf16 conv runs {settings['bf16_conv_slowdown']:.0f}x slower "
                  "than fp32); --force-bf16 measures it anyway", file=sys.stderr)  # fmt: skip
    handles = []
    for n in a.models:
        try:
            handles.append(build_autoencoder(n, device))
        except KeyError as e:
            print(f"note: skipping {n}: {e}", file=sys.stderr)
    if a.channels_last:
        for h in handles:
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
            f"HEADLINE {r['resolution']}px {r['dtype']}: TransVAE-T / FLUX-VAE-config reconstruct = {r['reconstruct_vs_flux']:.2f}x"
        )
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
