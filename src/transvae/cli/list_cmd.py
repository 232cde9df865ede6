"""``transvae list``: every registered model (tokenizers and generators) with its parameter counts."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "list",
        help="list registered models (tokenizers and LightningDiT generators) with their parameter counts",
    )
    p.add_argument(
        "pattern", nargs="?", default=None, help="glob filter, e.g. 'transvae-*' or 'lightningdit-*'"
    )
    p.add_argument("--kind", choices=["tokenizer", "generator"], default=None, help="only this kind of model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _fmt(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}K"


def _shape(r: dict) -> str:
    """What a row's model maps: ``f16 d32`` for a tokenizer, ``p1 768x12`` for a generator."""
    if r["kind"] == "tokenizer":
        return f"f{r['ratio']} d{r['latent_channels']}"
    return f"p{r['patch_size']} {r['hidden_size']}x{r['depth']}"


def _paper(r: dict) -> str:
    if "paper_encoder_params" in r:
        return (
            f"{_fmt(r['paper_encoder_params'])}+{_fmt(r['paper_decoder_params'])} "
            f"({r['encoder_rel_diff']:+.1%} / {r['decoder_rel_diff']:+.1%})"
        )
    if "paper_params" in r:
        return f"{_fmt(r['paper_params'])} ({r['params_rel_diff']:+.1%})"
    return ""


def run(args) -> int:
    from transvae.models import model_table

    rows = model_table(args.pattern, args.kind)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = f"{'name':<28} {'kind':<9} {'shape':<11} {'encoder':>9} {'decoder':>9} {'total':>9}  paper"
    print(head)
    print("-" * len(head))
    for r in rows:
        enc = _fmt(r["encoder_params"]) if "encoder_params" in r else "-"
        dec = _fmt(r["decoder_params"]) if "decoder_params" in r else "-"
        print(
            f"{r['name']:<28} {r['kind']:<9} {_shape(r):<11} {enc:>9} {dec:>9} {_fmt(r['total_params']):>9}  "
            f"{_paper(r)}"
        )
    if any(r["kind"] == "generator" for r in rows):
        print("(generator counts for 1000 classes on 32-channel latents, as in the paper's f16d32 runs)")
    return 0
