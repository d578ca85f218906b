"""Programs the distributed tests start under torchrun (``python -m torch.distributed.run
--standalone --nproc_per_node 2 -m tests.ddp_scripts WHAT OUT``), each rank running one.

* ``killed-run OUT ARGS...``: ``uinfo-fast run ARGS... --out OUT`` whose rank 0 dies right after
  its second checkpoint, as a killed job would (``os._exit``: no clean-up, no exception).
* ``lightning OUT``: a Lightning fit with the DDP strategy on two CPU processes (gloo), the
  UsableInformationCallback measuring, its JSONL log and TensorBoard scalars in OUT.
"""
import os
import sys

import torch
from torch import nn

from tests.toy import separable


def killed_run(out: str, args: list[str]) -> None:
    from uinfo_fast.experiments import run as experiment
    from uinfo_fast.experiments.cli import main

    real_save, saves = experiment.save_checkpoint, []

    def dying_save(state, path):
        real_save(state, path)
        saves.append(path)
        if len(saves) == 2:
            os._exit(3)

    experiment.save_checkpoint = dying_save
    experiment.CHECKPOINT_SHARE = float("inf")  # a checkpoint at every measurement, as in tests/conftest.py
    sys.exit(main(["run", *args, "--out", out]))


class _Module:
    """Made on first use, so that importing this file needs no Lightning."""

    @staticmethod
    def make():
        import lightning.pytorch as pl

        class Net(pl.LightningModule):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))

            def forward(self, x):
                return self.net(x)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return nn.functional.cross_entropy(self(x), y)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Net()


data = separable


def lightning(out: str) -> None:
    import lightning.pytorch as pl

    import uinfo_fast as uf
    from uinfo_fast.experiments.distributed import leave_process_group
    from uinfo_fast.integrations import UsableInformationCallback

    x, y = data(320, 2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y["four"]), batch_size=32)
    callback = UsableInformationCallback(["net.1", "net.3"], {"train": data(301, 0), "test": data(199, 1)},
                                         schedule=uf.Schedule(every=4), l2_grid=[1e-3, 1e-1], n_bootstrap=10,
                                         log_path=os.path.join(out, "log.jsonl"), asynchronous=True)
    trainer = pl.Trainer(max_steps=8, accelerator="cpu", devices=2, strategy="ddp", callbacks=[callback],
                         logger=pl.loggers.TensorBoardLogger(out, name="tb", version=0), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(_Module.make(), loader)
    del trainer
    # As torch asks of every distributed script (Lightning leaves it to the user): without it,
    # gloo's threads are torn down with the interpreter and a rank can abort at exit.
    leave_process_group()


if __name__ == "__main__":
    what, out, *rest = sys.argv[1:]
    {"killed-run": lambda: killed_run(out, rest), "lightning": lambda: lightning(out)}[what]()
