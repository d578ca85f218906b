"""Usable information in a PyTorch Lightning run: one callback, scalars in TensorBoard.

A small CNN (a LightningModule) learns the 20 coarse labels of the built-in CIFAR-100-shaped
images for one epoch on the CPU; UsableInformationCallback measures usable information about the
coarse and the fine labels at two layers on a schedule, on a background worker, and logs it through
the trainer's TensorBoard logger as usable_information/<layer>/<label set> (bits) at the step the
features were captured at. The JSONL log beside it is the source of truth.

    pip install -e ".[lightning]"
    python examples/lightning_callback.py            # under a minute on two CPU cores
    tensorboard --logdir runs/example_lightning
"""
import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from uinfo_fast import Schedule
from uinfo_fast.integrations import UsableInformationCallback
from uinfo_fast.tasks.images import normalize, synthetic_cifar


class CoarseCNN(pl.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.lr = lr
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 20))

    def forward(self, x):
        return self.head(self.conv2(self.conv1(x)))

    def training_step(self, batch, batch_idx):
        x, coarse = batch
        loss = nn.functional.cross_entropy(self(x), coarse)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/example_lightning")
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--every", type=int, default=20)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    train, test = synthetic_cifar(n_train=args.n_train, n_test=1000, seed=0)
    images = normalize(train.images)
    loader = DataLoader(TensorDataset(images, train.coarse), batch_size=64, shuffle=True)
    # Fixed probe inputs: probe-train images from the training set, probe-test images from the test set.
    n = min(1500, args.n_train)
    probes = {"train": (images[:n], {"coarse": train.coarse[:n], "fine": train.fine[:n]}),
              "test": (normalize(test.images[:500]), {"coarse": test.coarse[:500], "fine": test.fine[:500]})}
    callback = UsableInformationCallback(["conv1", "conv2"], probes, log_path=f"{args.out}/log.jsonl",
                                         schedule=Schedule(every=args.every, early_until=10, early_points=3),
                                         asynchronous=False)  # trained on the CPU: a worker would take a core
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=TensorBoardLogger(args.out, name="tb"),
                         callbacks=[callback], enable_checkpointing=False, log_every_n_steps=10)
    trainer.fit(CoarseCNN(), loader)
    last = {(r["feature_set"], r["label_set"]): r["bits"] for r in callback.rows}
    print("usable information at the last step (bits):", {f"{k[0]}/{k[1]}": round(v, 3) for k, v in last.items()})
    print(f"TensorBoard: tensorboard --logdir {args.out}   log: {args.out}/log.jsonl")
    return callback.rows


if __name__ == "__main__":
    main()
