#!/usr/bin/env bash
# The main job on several processes: torchrun starts one per GPU (or, without GPUs, per CPU
# share, on gloo), each trains on its share of every batch in DistributedDataParallel, every
# rank captures its shard of the probe inputs, and rank 0 fits, logs and writes the run directory.
#
#   bash examples/ddp_torchrun.sh                 # 2 processes on the CPU, the embedded default
#   NPROC=4 DEVICE=cuda bash examples/ddp_torchrun.sh --dataset cifar100 --data-dir ~/data --width 64
#
# Resume a killed run with the same command and --resume --out RUN_DIR.
set -euo pipefail
NPROC="${NPROC:-2}"
DEVICE="${DEVICE:-cpu}"
exec torchrun --standalone --nproc_per_node "$NPROC" -m uinfo_fast.experiments.cli run --device "$DEVICE" "$@"
