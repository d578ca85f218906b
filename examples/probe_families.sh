#!/usr/bin/env bash
# The digit set at its defaults, read by linear and by one-hidden-layer probes (docs/RESULTS.md,
# "Which read-out"): one run per (family, seed) at the default probe options of each family, then
# the table and figure of examples/probe_families.py. A run already finished is kept.
# Usage: bash examples/probe_families.sh [OUT (default runs/probe_families)] [SEEDS (default 41 42 43 44)]
set -euo pipefail
out=${1:-runs/probe_families}
read -r -a seeds <<< "${2:-41 42 43 44}"
for seed in "${seeds[@]}"; do
    for family in linear mlp; do
        [[ -f "$out/${family}_s$seed/summary.json" ]] && continue
        uinfo-fast run --seed "$seed" --quiet --out "$out/${family}_s$seed" --probe-family "$family"
    done
done
python "$(dirname "$0")/probe_families.py" "$out"
