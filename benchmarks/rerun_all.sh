#!/usr/bin/env bash
# Every CPU result of docs/benchmarks.md, rerun on the current code (~11 CPU-hours; docs/benchmarks.md,
# "Rerunning everything"). Resumable: run it again after any interruption; finished work is skipped.
#   nohup benchmarks/rerun_all.sh /path/to/bsds500 > rerun.log 2>&1 &
# Then: python tools/render_docs.py (tables), git diff docs/benchmarks/ (the JSONs).
# Not rerun: fid_torch_fidelity.json (its script was removed after f8d5ae0; now: transvae evaluate --protocol torch-fidelity).
set -euo pipefail
export TRANSVAE_BENCH_DATA=${1:?usage: benchmarks/rerun_all.sh BSDS500_ROOT [WORKERS]} OMP_NUM_THREADS=1
W=${2:-2}  # single-threaded runs at a time: the free cores
cd "$(dirname "$0")/.."
run() { echo "== $(date -u +%FT%TZ) $*"; python "$@"; }
LADDER="cnn-vae-no-attention vit-vae-learned-abs-pe vit-no-pe vit-rope seqconv-encoder seqconv-decoder
 multi-stage-cnn-front-stages dwconv-ffn-x4-alternative fullconv-ffn-x1 rmsnorm-before-qkv dc-shortcut-transvae"
F8="cnn-vae-no-attention vit-vae-learned-abs-pe transvae transvae-without-rmsnorm transvae-with-qk-norm-instead"
# learning efficiency: f16-128 11 models x 3 seeds x 300 steps (~4.3 CPU-h), f8-64 5 x 3 x 600 (~0.9 CPU-h)
run benchmarks/learning_efficiency.py --regime f16-128 --models $LADDER --seeds 0 1 2 --steps 300 --workers "$W" --resume
run benchmarks/learning_efficiency.py --regime f8-64 --models $F8 --seeds 0 1 2 --steps 600 --workers "$W" --resume
# extrapolation on native crops of the val photos, 3 seeds (f16-128: the first 40 photos at 1x-2.5x, ~0.5 CPU-h; f8-64: all 100 at 1x-5x, ~1.4)
run benchmarks/extrapolation.py --regime f16-128 --seeds 0 1 2 --limit 40 \
  --models cnn-vae-no-attention vit-vae-learned-abs-pe seqconv-decoder dc-shortcut-transvae
run benchmarks/extrapolation.py --regime f8-64 --seeds 0 1 2 --models $F8
# scaling: nano / mini / wide x 3 seeds x 250 steps (~0.8 CPU-h)
run benchmarks/scaling.py --seeds 0 1 2 --workers "$W" --resume
# downstream generation on the f16-128 tokenizers above: 3 tokenizers x 3 seeds (~2.1 CPU-h)
run benchmarks/generation.py --seeds 0 1 2
# speed: three thread-clock runs of TransVAE-T vs the FLUX config, 256 px (~0.3 CPU-h)
for k in 1 2 3; do
  run benchmarks/speed.py --quick --threads 1 --dtypes fp32 --iters 4 --clock thread --out "docs/benchmarks/speed_cpu_thread_run$k.json"
done
run benchmarks/speed.py --quick --threads 1 --dtypes fp32 --iters 4 --clock thread --breakdown --profile
# the quick start per model size (docs/training.md): 6 x 5 minutes on 2 threads, one at a time (~1 CPU-h)
run benchmarks/quickstart_sizes.py --threads 2
run tools/render_docs.py --plots
