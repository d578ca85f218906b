"""The tracker inside a hand-written training loop: a small CNN on the built-in CIFAR-100-shaped
images, trained on the 20 coarse labels, with usable information about the coarse and the fine
labels measured at two layers on a schedule and logged to runs/example_loop/log.jsonl.

The model trains on the CPU, so the tracker measures synchronously: a background worker would
take a core from training (bench/RESULTS.md). With the model on a GPU, ``asynchronous=True``
hands the probe fits to a worker and training goes on at once; leaving the ``with`` block then
waits for the measurements still in flight.

    python examples/track_training_loop.py          # about a minute on two CPU cores
"""
import torch
from torch import nn

from uinfo_fast import Schedule, UsableInfoTracker
from uinfo_fast.experiments import plot_runs
from uinfo_fast.tasks.images import augment_batch, normalize, synthetic_cifar

torch.manual_seed(0)
train, test = synthetic_cifar(n_train=6000, n_test=1000, seed=0)

# Any nn.Module works; the tracker hooks modules by their names in model.named_modules().
model = nn.Sequential()
model.add_module("conv1", nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2)))
model.add_module("conv2", nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2)))
model.add_module("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 20)))

# Fixed probe inputs, chosen once: probe-train images (a validation share is carved inside) and test images.
tracker = UsableInfoTracker(
    model, ["conv1", "conv2"],
    normalize(train.images[:1500]), {"coarse": train.coarse[:1500], "fine": train.fine[:1500]},
    normalize(test.images[:500]), {"coarse": test.coarse[:500], "fine": test.fine[:500]},
    log_path="runs/example_loop/log.jsonl", schedule=Schedule(every=50, early_until=20, early_points=4),
    asynchronous=False)

opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
gen = torch.Generator().manual_seed(0)
step = 0
with tracker:
    for epoch in range(2):
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train) - 63, 64):
            tracker.step(step, epoch=epoch + i / len(train))  # captures when the schedule says so
            idx = order[i:i + 64]
            loss = nn.functional.cross_entropy(model(normalize(augment_batch(train.images[idx], gen))),
                                               train.coarse[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    tracker.measure(step, epoch=2.0)

for layer in tracker.layers:
    c, f = tracker.latest(layer, "coarse"), tracker.latest(layer, "fine")
    print(f"{layer}: coarse {c['bits']:.2f} / {c['entropy_bits']:.2f} bits, fine {f['bits']:.2f} / {f['entropy_bits']:.2f} bits")
print(f"training lost {100 * tracker.overhead():.0f}% of its wall time to tracking (the captures)")
print("plot:", plot_runs(["runs/example_loop"], "runs/example_loop/usable_information.png"))
