"""``transvae list``: the registered variants with their parameter counts."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("list", help="list registered models with encoder/decoder parameter counts")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'transvae-*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _fmt(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}K"


def run(args) -> int:
    from transvae.models import model_table

    rows = model_table(args.pattern)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = (
        f"{'name':<28} {'ratio':>5} {'latent':>6} {'encoder':>9} {'decoder':>9} {'total':>9}  paper (enc+dec)"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        paper = ""
        if "paper_encoder_params" in r:
            paper = (
                f"{_fmt(r['paper_encoder_params'])}+{_fmt(r['paper_decoder_params'])} "
                f"({r['encoder_rel_diff']:+.1%} / {r['decoder_rel_diff']:+.1%})"
            )
        print(
            f"{r['name']:<28} f{r['ratio']:<4} {r['latent_channels']:>6} {_fmt(r['encoder_params']):>9} "
            f"{_fmt(r['decoder_params']):>9} {_fmt(r['total_params']):>9}  {paper}"
        )
    return 0
