"""``transvae evaluate``: reconstruction metrics, resolution sweeps and latent analysis.

    transvae evaluate --model runs/x/model --data imagenet/val --out eval/ --resolution 256 512 1024
    transvae evaluate --model runs/x --data photos/ --out eval/ --metrics psnr ssim --limit 100  # offline
    transvae evaluate --model runs/x/model --data imagenet/val --out eval/ --latent-stats --uniformity 10000 --linear-probe
    transvae evaluate --model runs/x/model --data imagenet/val --out eval/ --protocol va-vae  # LightningDiT's rFID
    transvae evaluate --model runs/x/model --model stabilityai/sd-vae-ft-mse --data val/ --out cmp/  # compare

Writes OUT/results.json, OUT/results.md, OUT/report.html (and OUT/latent_stats.json); with several
--model, each model's outputs go to OUT/<name>/ and the comparison to OUT/comparison.{json,md,html}.
See docs/evaluation.md for the protocols.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import torch

from .common import (
    DEVICE,
    DTYPES,
    OUT,
    UserError,
    add_command,
    add_options,
    add_precision_args,
    forced,
    load_model_or_exit,
    one_line_warnings,
    option,
    positive_int,
    prepare_out,
    resolve_device,
)

ORDER = ("psnr", "ssim", "lpips", "rfid", "ciede2000")  # table order; other reconstruction metrics follow


def reconstruction_metrics() -> list[str]:
    """Every registered metric that measures reconstructions (needs ``pairs``), in table order."""
    from transvae.metrics import list_metrics

    names = list_metrics({"pairs"})
    return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


def protocol_names() -> list[str]:
    from transvae.evaluation.protocol import ALIASES, PROTOCOLS

    return [*PROTOCOLS, *ALIASES]


def register(sub) -> None:
    metrics = reconstruction_metrics()
    p = add_command(
        sub,
        "evaluate",
        run,
        "PSNR / SSIM / LPIPS / rFID of a model on an image folder, with an HTML report",
        [
            option(
                "--model",
                required=True,
                action="append",
                help="save_pretrained folder, training run folder or Hub repo id; repeat to compare models",
            ),
            option("--data", required=True, help="image folder (searched recursively) or one image"),
            OUT,
            option(
                "--resolution",
                type=positive_int,
                nargs="+",
                default=[256],
                metavar="R",
                help="square size(s) (default 256)",
            ),
            option(
                "--metrics",
                nargs="+",
                choices=metrics,
                default=metrics,
                help="metrics to compute (default: all; psnr and ssim need no downloaded weights)",
            ),
            option(
                "--limit",
                type=positive_int,
                default=None,
                metavar="N",
                help="only the first N images (sorted by path)",
            ),
            option(
                "--protocol",
                choices=protocol_names(),
                default="transvae",
                help="whose pipeline to reproduce: transvae (default), adm (ADM/DiT center_crop_arr), va-vae "
                "(= lightningdit: torchvision resize, posterior sample, pytorch-fid), torch-fidelity (also rFID by "
                "torch-fidelity from PNG folders); docs/evaluation.md lists what each does",
            ),
            option(
                "--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)"
            ),
            DEVICE,
        ],
    )
    add_precision_args(p, default="auto", choices=("auto", *DTYPES))
    p.add_argument(
        "--num-workers", type=int, default=None, help="image decoding workers (default: min(8, CPUs))"
    )
    add_options(p.add_argument_group("feature-network weights"), _WEIGHTS)
    add_options(p.add_argument_group("report"), _REPORT)
    add_options(p.add_argument_group("latent analysis"), _LATENT)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


_WEIGHTS = [
    option("--lpips-net", choices=["vgg", "alex"], default="vgg", help="LPIPS backbone (default vgg)"),
    option(
        "--lpips-weights",
        default=None,
        metavar="PATH",
        help="local torchvision backbone checkpoint (vgg16-397923af.pth / alexnet-owt-7be5be79.pth) or LPIPS "
        "state dict; default: torch hub cache, downloading if missing",
    ),
    option(
        "--fid-weights",
        default=None,
        metavar="PATH",
        help="local FID InceptionV3 weights (weights-inception-2015-12-05-6726825d.pth or pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth); default: torch hub cache, downloading if missing",
    ),
]
_REPORT = [
    option("--report-images", type=int, default=8, help="lowest-PSNR examples per resolution in the report"),
    option(
        "--save-images",
        action="store_true",
        help="also write the uint8 inputs and reconstructions the metrics saw to OUT/images/<R>/ (PNG)",
    ),
]
_LATENT = [
    option(
        "--latent-stats", action="store_true", help="per-channel latent mean/std, scaling and shift factors"
    ),
    option(
        "--uniformity",
        type=int,
        default=0,
        metavar="N",
        help="VA-VAE uniformity metrics (t-SNE + KDE) on N latent vectors (VA-VAE: 10000; 0 = off)",
    ),
    option("--uniformity-repeats", type=positive_int, default=1, help="t-SNE runs averaged (VA-VAE: 10)"),
    option(
        "--linear-probe",
        action="store_true",
        help="logistic regression on pooled latents (class sub-folders)",
    ),
    option(
        "--latent-source",
        choices=["sample", "mode"],
        default="sample",
        help="latents analysed: a posterior sample (what diffusion trains on, default) or the mean",
    ),
    option("--seed", type=int, default=0, help="seed of posterior samples, t-SNE and the probe split"),
]


def run(args) -> int:
    """Evaluate reconstructions on a folder of images (recursive): shorter side resized to R
    (bicubic), center crop RxR, reconstruct from the posterior mean, metrics on uint8 images,
    averaged over the whole set. Several --resolution values give a resolution-extrapolation table.
    Writes OUT/results.json, OUT/results.md and OUT/report.html; several --model options compare
    tokenizers (OUT/<name>/ each, OUT/comparison.html with a row per model)."""
    with one_line_warnings("evaluate"):
        return _run(args)


def _run(args) -> int:
    from transvae.evaluation import run_evaluation
    from transvae.models.pretrained import WeightsUnavailableError

    device, dtype = _device_and_dtype(args)
    data = Path(args.data)
    if not data.exists():
        raise UserError(f"--data {data}: no such file or folder")
    prepare_out(args.out, [args.data])  # refuses an --out inside the data, probes it for writing
    if args.uniformity and args.uniformity < 4:
        raise UserError("--uniformity needs at least 4 latent vectors (VA-VAE uses 10000)")
    # every model is loaded (on the CPU when several) and checked before the first is evaluated
    models = [
        _load(path, device if len(args.model) == 1 else torch.device("cpu"), args) for path in args.model
    ]
    try:
        if len(models) > 1:
            return _compare(args, models, data, device, dtype)
        payload = run_evaluation(models[0], data, out_dir=args.out, **_options(args, device, dtype))
    except WeightsUnavailableError as e:
        raise UserError(f"{e} (or leave the metric out, e.g. --metrics psnr ssim)") from e
    except (
        MemoryError,
        FileNotFoundError,
    ) as e:  # check_memory: sizes that cannot fit, found before any work
        raise UserError(str(e)) from e
    except OSError as e:  # e.g. a disk that filled up while --save-images wrote
        raise UserError(e.strerror or str(e)) from e
    _print_summary(payload)
    return _exit_status(payload)


def _device_and_dtype(args):
    from transvae.utils.device import choose_dtype

    device = resolve_device(args.device)
    dtype_name = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype, warning = choose_dtype(dtype_name, device, forced(args, dtype_name))
    if warning:
        print(f"transvae evaluate: warning: {warning}", file=sys.stderr)
    return device, dtype


def _load(path: str, device, args):
    model = load_model_or_exit(path, device=device)
    f = model.spatial_compression_ratio
    bad = [r for r in args.resolution if r % f]
    if bad:
        raise UserError(
            f"--resolution {bad[0]} is not a multiple of the model's spatial compression ratio {f} ('{path}')"
        )
    return model


def _compare(args, models, data: Path, device, dtype) -> int:
    from transvae.evaluation.compare import compare_models, comparison_markdown, model_labels
    from transvae.utils.text import printable

    names = model_labels(args.model)
    comparison = compare_models(
        dict(zip(names, models, strict=True)), data, args.out, paths=dict(zip(names, args.model, strict=True)),
        **_options(args, device, dtype),
    )  # fmt: skip
    print(comparison_markdown(comparison))
    print(
        printable(
            f"wrote {args.out}/comparison.json, comparison.md, comparison.html and one folder per model"
        )
    )
    failed = [n for n, m in comparison["models"].items() if m.get("output_error")]
    for n in failed:
        print(
            printable(f"transvae evaluate: error: {n}: {comparison['models'][n]['output_error']}"),
            file=sys.stderr,
        )
    if not any(r.get("num_images") for r in comparison["rows"]):
        print("transvae evaluate: error: no image could be evaluated", file=sys.stderr)
        return 1
    return 1 if failed or any(m.get("skipped") for m in comparison["models"].values()) else 0


def _exit_status(payload: dict) -> int:
    import json

    from transvae.evaluation.report import json_safe
    from transvae.utils.text import printable

    if payload.get("output_error"):
        where = payload.get("output_dir")
        if where is None:  # not even the fallback folder could be written: the JSON goes to stdout
            print(json.dumps(json_safe(payload)))
        print(
            printable(
                f"transvae evaluate: error: {payload['output_error']}; "
                + (
                    f"the results were written to {where} instead"
                    if where
                    else "the results are printed above"
                )
            ),
            file=sys.stderr,
        )
        return 1
    print(printable(f"wrote {payload['output_dir']}/results.json, results.md, report.html"))
    if not any(r.get("num_images") for r in payload.get("results", [])):
        # every file was unreadable (or the folder had none): a run that measured nothing fails
        print(
            "transvae evaluate: error: no image could be evaluated (see the skipped files above)",
            file=sys.stderr,
        )
        return 1
    return 1 if any(payload.get("skipped", {}).values()) else 0


# run_evaluation's keyword arguments that have the name of their command-line option
_SAME_NAME = (
    "metrics", "batch_size", "limit", "lpips_net", "lpips_weights", "fid_weights", "report_images",
    "latent_stats", "uniformity_repeats", "latent_source", "seed", "save_images", "protocol",
)  # fmt: skip


def _options(args, device, dtype) -> dict:
    """``run_evaluation``'s keyword arguments (``EvaluationOptions``) from the command line."""
    workers = args.num_workers if args.num_workers is not None else min(8, os.cpu_count() or 1)
    command = shlex.join(["transvae", *sys.argv[1:]]) if sys.argv[1:2] == ["evaluate"] else None
    return {k: getattr(args, k) for k in _SAME_NAME} | dict(
        resolutions=args.resolution, device=device, dtype=dtype, num_workers=workers, probe=args.linear_probe,
        uniformity_samples=args.uniformity, model_path=str(args.model[0]), command=command, progress=not args.quiet,
    )  # fmt: skip


def _print_summary(payload: dict, max_listed: int = 20) -> None:
    from transvae.evaluation.report import markdown_table
    from transvae.utils.text import printable

    print(markdown_table(payload["results"], payload["metrics"]))
    for r in payload.get("latent") or []:
        s = r.get("statistics") or {}
        line = f"{r['resolution']}px latents: scaling_factor {s.get('scaling_factor', float('nan')):.4f}, shift_factor {s.get('shift_factor', float('nan')):.4f}"
        if r.get("uniformity"):
            u = r["uniformity"]
            line += f"; density CV {u['density_cv']:.4f}, Gini {u['gini_coefficient']:.4f}, norm. entropy {u['normalized_entropy']:.4f}"
        if r.get("linear_probe"):
            line += f"; linear probe top-1 {r['linear_probe']['top1']:.4f}"
        print(line)
    # each failed file once (they fail at every resolution), one line each
    failed = {s["path"]: s["reason"] for v in payload.get("skipped", {}).values() for s in v}
    for path, reason in list(failed.items())[:max_listed]:
        print(f"failed {printable(path)}: {printable(reason)}", file=sys.stderr)
    if failed:
        more = f", the first {max_listed} listed above" if len(failed) > max_listed else " (listed above)"
        print(f"skipped {len(failed)} file(s) that failed{more}; all are in results.json", file=sys.stderr)
