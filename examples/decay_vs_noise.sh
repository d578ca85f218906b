#!/usr/bin/env bash
# The decay-against-noise sweep of docs/RESULTS.md ("What makes a network discard"): three groups
# of cells per task, all in one directory per task (a cell two groups share runs once); then each
# cell with a seed that did not learn the task, again with as many steps as the task's default
# cell, measured at the same steps, in <dir>_long. Tables and figures: examples/decay_vs_noise.py.
# Usage: bash examples/decay_vs_noise.sh [OUT_ROOT (default runs)] [SEEDS (default 31,32,33)]
set -euo pipefail
root=${1:-runs}
seeds=${2:-31,32,33}
here=$(dirname "$0")
sweep() { uinfo-fast sweep --shuffled-control --seeds "$seeds" --smooth 3 --quiet "$@"; }

# longer TASK_ARGS... -- DIR BASE_EPOCHS BASE_BATCH: the cells of DIR that did not learn, at
# BASE_EPOCHS x batch / BASE_BATCH epochs (the default cell's steps), measured at its steps.
longer() {
    local args=() dir epochs batch
    while [[ $1 != -- ]]; do args+=("$1"); shift; done
    dir=$2 epochs=$3 batch=$4
    python "$here/decay_vs_noise.py" "$dir" --not-learned | while read -r lr bs wd; do
        sweep "${args[@]}" --out "${dir}_long" --lrs "$lr" --batch-sizes "$bs" --weight-decays "$wd" \
            --epochs "$(python -c "print($epochs * $bs / $batch)")" --unscaled-schedule
    done
}

cb=(--task checkerboard --hidden 100,8)
out="$root/decay_noise_checkerboard"
sweep "${cb[@]}" --out "$out" --lrs 0.2,0.01 --batch-sizes 16,256 --wd-scale-with-lr          # same decay
sweep "${cb[@]}" --out "$out" --lrs 0.2 --batch-sizes 16 --weight-decays 0                     # no decay
sweep "${cb[@]}" --out "$out" --lrs 0.01 --batch-sizes 256 --weight-decays 0
sweep "${cb[@]}" --out "$out" --lr-scale-with-batch --wd-scale-with-lr --batch-sizes 16,64,256 # same noise
sweep "${cb[@]}" --out "$out" --lrs 0.2 --batch-sizes 16 --weight-decays 0.1     # the penalty against the
sweep "${cb[@]}" --out "$out" --lrs 0.01 --batch-sizes 16 --weight-decays 5e-3   # shrinkage per step
longer "${cb[@]}" -- "$out" 40 16
# The 2 x 2 of weight decay and learning rate at batch 16 again, on seeds no run had used.
for cell in "0.2 0.005" "0.01 0.005" "0.2 0.1" "0.01 0.1"; do
    read -r lr wd <<< "$cell"
    uinfo-fast sweep "${cb[@]}" --shuffled-control --seeds 34,35,36 --smooth 3 --quiet \
        --out "$root/decay_noise_checkerboard_confirm" --lrs "$lr" --batch-sizes 16 --weight-decays "$wd"
done

out="$root/decay_noise_digits"
sweep --out "$out" --lrs 0.1,0.01 --batch-sizes 32,512 --wd-scale-with-lr
sweep --out "$out" --lrs 0.1 --batch-sizes 32 --weight-decays 0
sweep --out "$out" --lrs 0.01 --batch-sizes 512 --weight-decays 0
sweep --out "$out" --lr-scale-with-batch --wd-scale-with-lr --batch-sizes 32,128,512
sweep --out "$out" --lrs 0.1 --batch-sizes 32 --weight-decays 0.02
sweep --out "$out" --lrs 0.01 --batch-sizes 32 --weight-decays 0.002
longer -- "$out" 20 32
# The digit 2 x 2 at batch 32 again, on seeds no run had used; its lr 0.1, weight decay 2e-2 corner
# never learned on seeds 31-33, so it is not run again.
for cell in "0.1 0.002" "0.01 0.002" "0.01 0.02"; do
    read -r lr wd <<< "$cell"
    uinfo-fast sweep --shuffled-control --seeds 34,35,36 --smooth 3 --quiet \
        --out "$root/decay_noise_digits_confirm" --lrs "$lr" --batch-sizes 32 --weight-decays "$wd"
done
# Decay on and off at the same noise: the high-rate cells of the 2 x 2 without weight decay on
# seeds 34-36, and the checkerboard's pair on seeds 37-39, which no run had used before.
uinfo-fast sweep "${cb[@]}" --shuffled-control --seeds 34,35,36,37,38,39 --smooth 3 --quiet \
    --out "$root/decay_noise_checkerboard_confirm" --lrs 0.2 --batch-sizes 16 --weight-decays 0
uinfo-fast sweep "${cb[@]}" --shuffled-control --seeds 37,38,39 --smooth 3 --quiet \
    --out "$root/decay_noise_checkerboard_confirm" --lrs 0.2 --batch-sizes 16 --weight-decays 5e-3
uinfo-fast sweep --shuffled-control --seeds 34,35,36 --smooth 3 --quiet \
    --out "$root/decay_noise_digits_confirm" --lrs 0.1 --batch-sizes 32 --weight-decays 0
