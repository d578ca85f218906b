"""The paper's checkerboard experiment in one script: a small fully connected network learns to reach
to the target of the board's dominant colour; usable information about the direction (the task),
the colour and the target configuration is tracked at both hidden layers, for the four cells of
a high and a low learning rate with a small and a large batch. Only the high learning rate with
the small batch discards colour at the last hidden layer (docs/RESULTS.md).

    python examples/checkerboard_experiment.py        # a few minutes on two CPU cores
"""
from uinfo_fast.experiments import RunConfig, run_sweep
from uinfo_fast.experiments.sweeps import format_summary

# 9,000 train trials (fresh noise each epoch), four inputs, FC 100-100, SGD with weight decay, 40 epochs
base = RunConfig.for_task("checkerboard")
summary = run_sweep(base, "runs/example_checkerboard", lrs=[0.2, 0.01], batch_sizes=[16, 256], seeds=[0])
print(format_summary(summary))
print("figure: runs/example_checkerboard/sweep.png")
