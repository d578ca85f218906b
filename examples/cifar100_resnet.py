"""ResNet-18 on the 20 coarse classes of CIFAR-100, tracking usable information about the coarse and
the 100 fine labels at every stage: the paper's main experiment.

    python examples/cifar100_resnet.py --data-dir ~/data --download --device cuda
    python examples/cifar100_resnet.py                # no CIFAR-100: the built-in synthetic stand-in

The same as `uinfo-fast run --dataset cifar100 ...`; this script shows the Python entry points.
"""
import argparse

from uinfo_fast.experiments import RunConfig, run_experiment

p = argparse.ArgumentParser()
p.add_argument("--data-dir", default=None, help="directory holding (or to receive) cifar-100-python/")
p.add_argument("--download", action="store_true")
p.add_argument("--device", default="cpu")
p.add_argument("--epochs", type=float, default=None)
p.add_argument("--out", default="runs/example_cifar100")
args = p.parse_args()

if args.data_dir:  # the real thing: standard-width ResNet-18, high learning rate, batch 128
    cfg = RunConfig(dataset="cifar100", data_dir=args.data_dir, download=args.download, width=64,
                    epochs=args.epochs or 60, lr=0.1, batch_size=128, lr_schedule="cosine", probe_train=10_000,
                    probe_test=5_000, track_every=200, early_until=200, device=args.device)
else:
    cfg = RunConfig.for_task(dataset="synthetic", epochs=args.epochs or 5, device=args.device)  # CIFAR-100-shaped
summary = run_experiment(cfg, args.out)
print(f"{summary['steps']} steps in {summary['wall_seconds']:.0f} s, {100 * summary['measure_share']:.1f}% of it "
      f"measuring; coarse accuracy train {summary['train_accuracy']:.3f}, test {summary['test_accuracy']:.3f}; "
      f"training loss {summary['train_loss']:.4f} nats")
print(f"log: {args.out}/log.jsonl, figure: {args.out}/usable_information.png")
