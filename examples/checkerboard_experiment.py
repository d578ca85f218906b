"""The paper's checkerboard experiment in one script: a small fully connected network learns to reach
to the target of the board's dominant colour; usable information about the direction (the task),
the colour and the target configuration is tracked at both hidden layers, for a high learning rate
with a small batch and a low one with a large batch.

    python examples/checkerboard_experiment.py        # a few minutes on two CPU cores
"""
from uinfo_fast.experiments import RunConfig, run_sweep
from uinfo_fast.experiments.sweeps import format_summary

base = RunConfig.for_task("checkerboard")  # 9,000 train trials, 20 epochs, FC 100-100, SGD
summary = run_sweep(base, "runs/example_checkerboard", lrs=[0.2, 0.01], batch_sizes=[16, 256], seeds=[0])
print(format_summary(summary))
print("figure: runs/example_checkerboard/sweep.png")
