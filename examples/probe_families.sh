#!/usr/bin/env bash
# The digit set at its defaults, read by linear and by one-hidden-layer probes (docs/RESULTS.md,
# "Which read-out"): one run per (family, seed), then the table and figure of
# examples/probe_families.py.
# Usage: bash examples/probe_families.sh [OUT (default runs/probe_families)] [SEEDS (default 41 42 43)]
set -euo pipefail
out=${1:-runs/probe_families}
read -r -a seeds <<< "${2:-41 42 43}"
for seed in "${seeds[@]}"; do
    uinfo-fast run --seed "$seed" --quiet --out "$out/linear_s$seed"
    # 300 L-BFGS iterations per probe at most: the weakly penalised probes of a network read-out
    # rarely reach the tolerance, and a chosen probe that stops short says so in its row.
    uinfo-fast run --seed "$seed" --quiet --out "$out/mlp_s$seed" --probe-family mlp --max-iter 300
done
python "$(dirname "$0")/probe_families.py" "$out"
