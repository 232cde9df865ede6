"""``transvae list``: the registered autoencoders and generators with their parameter counts."""

from __future__ import annotations

import fnmatch
import json


def register(sub) -> None:
    p = sub.add_parser(
        "list", help="list registered autoencoders and LightningDiT generators with their parameter counts"
    )
    p.add_argument(
        "pattern", nargs="?", default=None, help="glob filter, e.g. 'transvae-*' or 'lightningdit-*'"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _fmt(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}K"


def run(args) -> int:
    from transvae.generation.registry import generator_table, list_generators
    from transvae.models import list_models, model_table

    pattern = args.pattern
    rows = model_table(pattern) if not pattern or fnmatch.filter(list_models(), pattern) else []
    gen_rows = generator_table(pattern) if not pattern or fnmatch.filter(list_generators(), pattern) else []
    if args.json:
        print(json.dumps(rows + gen_rows, indent=2))
        return 0
    if rows:
        head = f"{'name':<28} {'ratio':>5} {'latent':>6} {'encoder':>9} {'decoder':>9} {'total':>9}  paper (enc+dec)"
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
    if gen_rows:
        if rows:
            print()
        head = f"{'generator':<28} {'patch':>5} {'width':>6} {'depth':>5} {'heads':>5} {'total':>9}  paper"
        print(head)
        print("-" * len(head))
    for r in gen_rows:
        paper = f"{_fmt(r['paper_params'])} ({r['params_rel_diff']:+.1%})" if "paper_params" in r else ""
        print(
            f"{r['name']:<28} {r['patch_size']:>5} {r['hidden_size']:>6} {r['depth']:>5} {r['num_heads']:>5} "
            f"{_fmt(r['total_params']):>9}  {paper}"
        )
    if gen_rows:
        print("(generator counts for 1000 classes on 32-channel latents, as in the paper's f16d32 runs)")
    return 0
