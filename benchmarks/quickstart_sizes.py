"""The quick start's model size against its time budget (issue 24): one ``transvae quickstart`` per
architecture, each the default recipe with transvae-mini-f8d16's widths or depths changed.

    python benchmarks/quickstart_sizes.py                                   # every variant, ~5.5 min each
    python benchmarks/quickstart_sizes.py --variants default depths-1111 --threads 2

Each variant is registered (``register_variant(NAME, "transvae-mini-f8d16", **overrides)``) and
trained by ``transvae quickstart --out RUNS/NAME --threads T --minutes M --model NAME`` in this
process, so it fits as many steps as its speed allows in the same budget. The JSON (``--out``;
default docs/benchmarks/quickstart_sizes.json for the full run, else in ``--runs-dir``) holds each
run's ``metrics.json`` and parameter count, with the provenance. Runs are timed: run nothing else
on the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import bench_utils as bu

import transvae
from transvae.cli import main as cli
from transvae.models.registry import register_variant
from transvae.utils.markdown import markdown_table
from transvae.utils.provenance import Provenance, write_result

BASE = "transvae-mini-f8d16"  # (16, 32, 64, 128) wide, depths (1, 1, 2, 2)
VARIANTS = {
    "default": {},
    "depths-1111": dict(depths=(1, 1, 1, 1)),
    "depths-2111": dict(depths=(2, 1, 1, 1)),
    "dims-8-16-32-64-depths-1111": dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)),
    "dims-32-32-64-128": dict(dims=(32, 32, 64, 128)),
    "dims-24-48-96-192": dict(dims=(24, 48, 96, 192)),
}
COLUMNS = ["variant", "params_M", "steps", "held_out_psnr", "held_out_ciede2000_mean", "held_out_ciede2000_p95",
           "contrast", "chart_ciede2000_mean", "train_seconds"]  # fmt: skip


def default_out(variants: list[str], minutes: float, runs_dir: Path) -> Path:
    """The published JSON for the full run (every variant, 5 minutes); any other run's in ``runs_dir``."""
    full = minutes == 5.0 and set(variants) == set(VARIANTS)
    return bu.DOCS_DIR / "quickstart_sizes.json" if full else runs_dir / "quickstart_sizes.json"


def main(argv: list[str] | None = None) -> int:
    p = bu.parser(__doc__)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--threads", type=int, default=0, help="quickstart --threads (0: the free cores)")
    p.add_argument("--minutes", type=float, default=5.0, help="quickstart --minutes (default 5)")
    p.add_argument("--runs-dir", type=Path, default=bu.RUNS / "quickstart_sizes")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON (default: docs/benchmarks/quickstart_sizes.json for all variants at 5 minutes, "
                   "else RUNS_DIR/quickstart_sizes.json: a partial run never replaces the published one)")  # fmt: skip
    a = p.parse_args(argv)
    a.out = a.out or default_out(a.variants, a.minutes, a.runs_dir)
    prov = Provenance.start(seeds=[0])
    results = []
    for v in a.variants:
        name = BASE if not VARIANTS[v] else register_variant(f"bench-quickstart-{v}", BASE, **VARIANTS[v])
        out = a.runs_dir / v
        args = ["quickstart", "--out", str(out), "--threads", str(a.threads), "--minutes", f"{a.minutes:g}"]
        if cli([*args, "--model", name]) != 0:
            raise SystemExit(f"quickstart of {v} failed")
        m = json.loads((out / "metrics.json").read_text())
        params = transvae.create_model(name, device="meta").num_parameters()
        results.append(dict(variant=v, model=name, overrides=VARIANTS[v], params=params, metrics=m))
    write_result(a.out, dict(benchmark="quickstart_sizes", base=BASE, minutes=a.minutes, results=results), prov,
                 steps={r["variant"]: r["metrics"]["steps"] for r in results})  # fmt: skip
    rows = [dict(variant=r["variant"], params_M=r["params"] / 1e6, contrast="/".join(f"{c:.2f}" for c in
                 r["metrics"]["held_out_contrast_ratio"]), **r["metrics"]) for r in results]  # fmt: skip
    print("\n" + markdown_table(rows, COLUMNS))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
