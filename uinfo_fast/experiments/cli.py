"""Command line (the ``uinfo-fast`` script).

    uinfo-fast run   [options]             train a network and track usable information (the main job)
    uinfo-fast plot  RUN_DIR [RUN_DIR ...]  overlay runs in one figure
    uinfo-fast sweep [options]             a grid of learning rates x batch sizes x seeds, one figure
    uinfo-fast perturb [options]           perturbed early training against the baseline, over seeds
    uinfo-fast demo                         the probe engine alone, on built-in synthetic features
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..engine.params import Boolean, Choice, Integer, ListOf, NoneOr, Real
from ..tracking.log import LogBusy


def _plot(result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({r.feature_set for r in result.results})
    labels = sorted({r.label_set for r in result.results})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        rs = [result[layer, lab] for layer in layers]
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(layers))]
        err = [[r.bits - r.ci_low for r in rs], [r.ci_high - r.bits for r in rs]]
        ax.bar(xs, [r.bits for r in rs], width, yerr=err, capsize=3, label=f"{lab} (H = {rs[0].entropy_bits:.2f} bits)")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("usable information (bits)")
    ax.set_title("Usable information per layer (95% bootstrap CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def demo(args) -> int:
    import torch

    from ..engine.estimator import estimate_usable_information
    from ..tasks.features import layered_features

    device = torch.device(args.device)
    xtr, ytr, xte, yte = layered_features(args.n_train, args.n_test, args.dim, args.layers, seed=args.seed)
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    print(f"uinfo-fast demo: {args.layers} synthetic layers, {args.n_train} train / {args.n_test} test rows, "
          f"D={args.dim}, labels coarse (20) and fine (100), on {device}")
    t0 = time.perf_counter()
    res = estimate_usable_information(move(xtr), move(ytr), move(xte), move(yte), seed=args.seed, progress=True)
    print(res)
    print(f"{len(res.results)} (layer, label set) pairs, {sum(f.n_probes for f in res.fits.values())} probes, "
          f"{time.perf_counter() - t0:.1f} s")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "usable_information.json"), "w") as fh:
        json.dump(res.rows(), fh, indent=1)
    _plot(res, os.path.join(args.out, "usable_information.png"))
    print(f"wrote {args.out}/usable_information.json and usable_information.png")
    return 0


def _floats(v: str) -> list[float]:
    return [float(t) for t in v.split(",") if t]


def _ints(v: str) -> list[int]:
    return [int(t) for t in v.split(",") if t]


def _names(v: str) -> list[str]:
    return [t for t in v.split(",") if t]


def _groups(v: str) -> list[list[int]]:
    """``0,1,2,3,4/5,6,7,8,9`` -> [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]: groups split by '/', classes
    by ','. Only the syntax is checked here; RunConfig checks that the groups partition the classes."""
    try:
        return [[int(t) for t in g.split(",")] for g in v.split("/")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected groups of class indices, classes separated by ',' and groups by '/' "
            f"(e.g. 0,1,2,3,4/5,6,7,8,9), got {v!r}") from None


def _parser_of(check):
    """The argument parser of a field's constraint: comma-separated lists, 'none' for None."""
    inner = check.inner if isinstance(check, NoneOr) else check
    if isinstance(inner, ListOf):
        item = inner.item
        parse = _groups if isinstance(item, ListOf) else {Integer: _ints, Real: _floats}.get(type(item), _names)
    else:
        parse = {Integer: int, Real: float}.get(type(inner), str)
    if not isinstance(check, NoneOr):
        return parse
    return lambda v: None if v.lower() == "none" else parse(v)


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(_shown(v) for v in value) if not any(isinstance(v, (list, tuple)) for v in value) else \
            "/".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def option_help(name: str, f, default) -> str:
    """A run option's help: its own text, then its ``default``, and where a task or dataset sets
    another default, that one too."""
    from ..tasks.registry import get_task, task_names

    others = []
    for t in task_names():
        task = get_task(t)
        own = task.defaults.get(name, default)
        if own != default:
            others.append(f"{t}: {_shown(own)}")
        datasets: dict[str, list[str]] = {}
        for d, values in task.dataset_defaults.items():
            if values.get(name, own) != own:
                datasets.setdefault(_shown(values[name]), []).append(d)
        others += [f"{t} {'/'.join(ds)}: {v}" for v, ds in datasets.items()]
    text = f"{f.metadata['help']} (default: {_shown(default)}" + ("; " + ", ".join(others) if others else "") + ")"
    return text.replace("%", "%%")


def _add_run_options(p, hidden=()) -> None:
    """Every option of a run (:data:`config.FLAT`), made from its field's declaration; those
    ``hidden`` are parsed (to be refused with a reason) but not shown. Every default is None,
    so that --resume can tell the options given from the ones left out. Only the command that
    runs gets them (:func:`build_parser`): the declarations load torch, which ``plot`` must not."""
    if not getattr(p, "with_run_options", True):
        return
    from .config import FLAT, RunConfig

    defaults = RunConfig.for_task().flat()
    for name, (_, f) in FLAT.items():
        help_ = argparse.SUPPRESS if name in hidden else option_help(name, f, defaults[name])
        flag = "--" + name.replace("_", "-")
        if isinstance(f.metadata["check"], Boolean):
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_)
            if f.metadata.get("negative"):
                p.add_argument("--" + f.metadata["negative"].replace("_", "-"), dest=name, action="store_const",
                               const=False, help=f"the same as --no-{name.replace('_', '-')}")
            continue
        check = f.metadata["check"]
        choices = check.values if isinstance(check, Choice) else None
        p.add_argument(flag, dest=name, type=_parser_of(check), default=None, choices=choices,
                       metavar=name.upper() if choices is None else None, help=help_)


def _given(args) -> dict:
    from .config import FLAT

    return {k: getattr(args, k) for k in FLAT if getattr(args, k, None) is not None}


# Options a default run directory names in its first part (or that change where data comes
# from, not what is run).
_IN_THE_NAME = ("task", "dataset", "lr", "batch_size", "seed", "coarse_groups", "data_dir", "download")


def default_run_dir(cfg) -> str:
    """``runs/<task>_<data>_lr<lr>_bs<batch>_s<seed>``, then every other option that differs from
    the task's and dataset's defaults (``_shuffled-control``, ``_track-every10``): runs of
    different configs never share a directory."""
    from ..tasks.registry import get_task
    from .config import RunConfig

    tag = get_task(cfg.task).data_tag(cfg)
    parts = []
    for k, (v, _) in cfg.differences(RunConfig.for_task(cfg.task, dataset=cfg.dataset)).items():
        if k in _IN_THE_NAME:
            continue
        name = k.replace("_", "-")
        parts.append((name if v else f"no-{name}") if isinstance(v, bool) else
                     name + _shown(v).replace(",", "-").replace("/", "_"))
    name = f"{cfg.task}_{tag}_lr{cfg.lr:g}_bs{cfg.batch_size}_s{cfg.seed}" + "".join("_" + p for p in parts)
    return os.path.join("runs", name)


def _resumed_config(args, given: dict):
    """The config of the run in ``--out``, which options given on the command line must not
    contradict; None (after printing why) when it cannot be resumed."""
    from .config import RunConfig

    if args.out is None:
        print("uinfo-fast run: --resume needs --out RUN_DIR", file=sys.stderr)
        return None
    path = os.path.join(args.out, "config.json")
    if not os.path.exists(path):
        print(f"uinfo-fast run: {args.out} has no config.json to resume", file=sys.stderr)
        return None
    saved = RunConfig.from_json(json.load(open(path)))
    flat = saved.flat()
    clash = {k: (flat[k], v) for k, v in given.items() if flat[k] != v}
    if clash:
        print(f"uinfo-fast run: --resume keeps the run's config; these options differ (run, given): {clash}",
              file=sys.stderr)
        return None
    return saved


def run(args) -> int:
    from .config import RunConfig
    from .run import run_experiment

    given = _given(args)
    cfg = _resumed_config(args, given) if args.resume else RunConfig.for_task(**given)
    if cfg is None:
        return 2
    import torch

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        print("uinfo-fast run: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    out = args.out or default_run_dir(cfg)
    if not args.resume and _finished(out, cfg):
        return _show_finished(out, cfg, args.tensorboard)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 reports
    if main_rank:
        print(f"uinfo-fast run -> {out}" + (f" ({os.environ['WORLD_SIZE']} processes)"
                                            if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""))
    summary = run_experiment(cfg, out, resume=args.resume, progress=not args.quiet, tensorboard=args.tensorboard)
    if summary is None:
        return 0
    print(f"{summary['steps']} steps in {summary['wall_seconds']:.0f} s; measuring took "
          f"{100 * summary['measure_share']:.1f}% of it; {summary['task_label']} accuracy "
          f"train {summary['train_accuracy']:.3f}, test {summary['test_accuracy']:.3f}; training loss "
          f"{summary['train_loss']:.4f} nats")
    if cfg.track:
        _print_final_rows(out)
    return 0


def _finished(out: str, cfg) -> bool:
    """Whether ``out`` holds a finished run (its summary written) of exactly ``cfg``."""
    from .config import RunConfig

    paths = [os.path.join(out, f) for f in ("config.json", "summary.json")]
    if not all(os.path.isfile(p) for p in paths):
        return False
    with open(paths[0]) as fh:
        return RunConfig.from_json(json.load(fh)).same_run(cfg)


def _show_finished(out: str, cfg, tensorboard: str | None) -> int:
    """A run asked for again: its results, and its rows as TensorBoard scalars if asked."""
    print(f"uinfo-fast run: {out} already holds this run, finished; its results follow (pass --out elsewhere "
          "to train it again)")
    if tensorboard and cfg.track:
        from ..integrations.tensorboard_sink import TensorBoardSink
        from ..tracking.log import read_log

        sink = TensorBoardSink(tensorboard)
        sink(read_log(os.path.join(out, "log.jsonl")))
        sink.close()
        print(f"wrote its rows as TensorBoard scalars to {tensorboard}")
    if cfg.track:
        _print_final_rows(out)
    return 0


def _print_final_rows(out: str) -> None:
    from ..tracking.log import read_log

    rows = read_log(os.path.join(out, "log.jsonl"))
    last = max(r["step"] for r in rows)
    print(f"usable information at step {last}, in bits (the 95% bootstrap interval; H(Y), the most there is to "
          "know; beyond: what a label adds to its reference at the same layer):")
    print(f"  {'layer':<10}{'label':<10}{'bits':>7}  {'95% interval':<17}{'H(Y)':>6}  beyond")
    for r in rows:
        if r["step"] == last:
            print("  " + _final_row(r))
    print(f"wrote {out}/log.jsonl, config.json, summary.json, checkpoint.pt, usable_information.png")


def _final_row(r: dict) -> str:
    """One line of the final table; a row with no measurement says why."""
    head = f"{r['feature_set']:<10}{r['label_set']:<10}"
    if r["bits"] is None:
        return f"{head}{'none':>7}  ({r['status']})"
    interval = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else "(no bootstrap)"
    beyond = f"{r['beyond_bits']:.3f} beyond {r['beyond_of']}" if r.get("beyond_bits") is not None else ""
    flag = "" if r["status"] == "ok" else f"  ({r['status']}: not a measurement)"
    return f"{head}{r['bits']:7.3f}  {interval:<17}{r['entropy_bits']:6.3f}  {beyond}{flag}".rstrip()


def sweep(args) -> int:
    from .config import RunConfig
    from .sweeps import format_summary, run_sweep

    given = _given(args)
    for k in ("lr", "batch_size", "seed"):
        if k in given:
            print(f"uinfo-fast sweep: --{k.replace('_', '-')} is set by the grid; use --lrs, --batch-sizes, --seeds",
                  file=sys.stderr)
            return 2
    if "weight_decay" in given and args.weight_decays is not None:
        print("uinfo-fast sweep: --weight-decay and --weight-decays: give one", file=sys.stderr)
        return 2
    base = RunConfig.for_task(**given)
    out = args.out or os.path.join("runs", f"sweep_{base.task}")
    summary = run_sweep(base, out, args.lrs, args.batch_sizes, args.seeds, weight_decays=args.weight_decays,
                        wd_scale_with_lr=args.wd_scale_with_lr, lr_scale_with_batch=args.lr_scale_with_batch,
                        layer=args.layer, progress=not args.quiet, scale_schedule=not args.unscaled_schedule,
                        smooth=args.smooth)
    print(format_summary(summary))
    print(f"wrote {out}/sweep.png and sweep.json")
    return 0


def perturb(args) -> int:
    from .config import RunConfig
    from .sweeps import format_perturbation, run_perturbation

    given = _given(args)
    if "seed" in given:
        print("uinfo-fast perturb: use --seeds", file=sys.stderr)
        return 2
    base = RunConfig.for_task(**given)
    out = args.out or os.path.join("runs", f"perturb_{base.task}")
    summary = run_perturbation(base, out, args.seeds, progress=not args.quiet)
    print(format_perturbation(summary))
    print(f"wrote {out}/perturbation.png and perturbation.json")
    return 0


def plot(args) -> int:
    from .plots import plot_runs

    out = args.out or os.path.join(args.run_dirs[0], "comparison.png")
    plot_runs(args.run_dirs, out, x=args.x, log_x=args.log_x)
    print(f"wrote {out}")
    return 0


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="train a network and track usable information (default: a ResNet-18 on the "
                                   "built-in digit set, a few minutes on a CPU)")
    _add_run_options(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<task>_<data>_lr<lr>_bs<batch>_s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the killed run in --out from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also write the rows as TensorBoard scalars to DIR (usable_information/<layer>/<label set>)")
    p.set_defaults(handler=run)


def _add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="overlay the usable information of runs in one figure")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/comparison.png of the first run)")
    p.add_argument("--x", choices=("step", "epoch"), default="step")
    p.add_argument("--log-x", action="store_true", help="symlog time axis (stretches early training)")
    p.set_defaults(handler=plot)


def _add_grid_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="learning rate x batch size (x weight decay) x seed grid, one run each "
                                     "(finished runs are skipped), then one figure and a table")
    _add_run_options(p, hidden=("lr", "batch_size", "seed"))
    p.add_argument("--lrs", type=_floats, default=None,
                   help="comma-separated learning rates (required unless --lr-scale-with-batch)")
    p.add_argument("--batch-sizes", type=_ints, required=True, help="comma-separated batch sizes")
    p.add_argument("--weight-decays", type=_floats, default=None,
                   help="comma-separated weight decays, a third factor of the grid (default: --weight-decay alone)")
    p.add_argument("--wd-scale-with-lr", action="store_true",
                   help="each learning rate's weight decay keeps lr x weight decay (the shrinkage per step) at "
                        "the task's default lr times --weight-decay")
    p.add_argument("--lr-scale-with-batch", action="store_true",
                   help="each batch size's learning rate keeps lr / batch (the scale of SGD's noise) at "
                        "the task's default lr / batch size, instead of --lrs")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--layer", default=None, help="layer of the figure and table (default: the last tracked)")
    p.add_argument("--unscaled-schedule", action="store_true",
                   help="measure every cell at the steps --track-every and --early-until name (default: those "
                        "steps scaled by the run's default batch size over the cell's, so that every cell measures "
                        "after the same number of examples)")
    p.add_argument("--smooth", type=int, default=1, metavar="K",
                   help="take the table's peaks and finals from a running mean over K measurements (default 1)")
    p.add_argument("--out", default=None, help="sweep directory (default: runs/sweep_<task>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=sweep)
    p = sub.add_parser("perturb", help="perturbed early training (--early-steps with --early-lr and/or "
                                       "--early-batch-size) against the baseline, over seeds")
    _add_run_options(p, hidden=("seed",))
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", default=None, help="directory (default: runs/perturb_<task>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=perturb)


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="estimate usable information on built-in synthetic layer features")
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--n-test", type=int, default=5_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/demo", help="output directory for the JSON and the plot")
    p.set_defaults(handler=demo)


class _Commands(argparse._SubParsersAction):
    """Subcommands whose run options are made only for the one named on the command line (all
    of them when none is known), so that ``uinfo-fast plot`` never loads torch."""

    chosen: str | None = None

    def add_parser(self, name, **kwargs):
        p = super().add_parser(name, **kwargs)
        p.with_run_options = self.chosen in (None, name)
        return p


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The command line; given ``argv``, only its command gets the run options."""
    parser = argparse.ArgumentParser(prog="uinfo-fast", description="Usable information from fast softmax probes.")
    parser.register("action", "parsers", _Commands)
    words = [a for a in (argv or []) if not a.startswith("-")]
    _Commands.chosen = words[0] if words and argv is not None else None
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run_parser, _add_plot_parser, _add_grid_parsers, _add_demo_parser):
        add(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, LogBusy) as e:
        print(f"uinfo-fast {args.command}: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # the run's own verdict on a diverging network
        print(f"uinfo-fast {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
