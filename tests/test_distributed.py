"""Tracking and runs under torch.distributed: two gloo processes on the CPU. The tracker's rows on
the same weights and probe inputs equal one process's; ``uinfo-fast run`` under torchrun writes
the run directory once and resumes exactly; the Lightning callback works with the DDP strategy."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import uinfo_fast as uf
from uinfo_fast.experiments.distributed import leave_process_group
from uinfo_fast.tracking import read_log
from uinfo_fast.tracking.distributed import Ranks

from .toy import separable as data
from .test_cli import _TINY_IMAGES

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
TIMEOUT = 240  # seconds: a deadlock fails the test instead of hanging CI

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


# Ragged probe splits (301 and 199 rows over 2 ranks) and a validation split: the padding is tested.
def _tracker(model, log_path=None, **kw):
    return uf.UsableInfoTracker(model, ["1", "3"], *data(301, 0), *data(199, 1), val_inputs=data(51, 3)[0],
                                val_labels=data(51, 3)[1], l2_grid=[1e-3, 1e-1], n_bootstrap=20, log_path=log_path,
                                **kw)


def _train(model, tracker, steps, rank, world, weights):
    x, y = data(256, 2)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(steps):
        if tracker.schedule.due(step) and rank == 0:
            weights[step] = {k: v.clone() for k, v in model.state_dict().items()}
        tracker.step(step)
        share = slice(rank, None, world)
        loss = nn.functional.cross_entropy(net(x[share]), y["four"][share])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tracker.close()


def _rank_main(rank, world, init, out, options):
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        model, weights = _model(), {}
        tracker = _tracker(nn.parallel.DistributedDataParallel(model), log_path=os.path.join(out, "log.jsonl"),
                           **options)
        _train(model, tracker, 11, rank, world, weights)
        if rank == 0:
            torch.save(weights, os.path.join(out, "weights.pt"))
        else:
            assert tracker.rows == [] and tracker.log.path is None  # rank 0 alone writes
    finally:
        leave_process_group()


def _spawn(tmp_path, options):
    ctx = mp.start_processes(_rank_main, args=(WORLD, str(tmp_path / "init"), str(tmp_path), options),
                             nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {WORLD} ranks did not finish within {TIMEOUT} s (a deadlock?)")


def _numbers(row):
    return {k: v for k, v in row.items() if k not in ("seconds",)}


@pytest.mark.parametrize("options", [{}, {"asynchronous": True}, {"asynchronous": True, "when_full": "skip"}],
                         ids=["sync", "async", "async-skip"])
def test_tracker_rows_on_two_ranks_equal_one_process_on_the_same_weights(tmp_path, options):
    _spawn(tmp_path, {"schedule": uf.Schedule(every=5), **options})
    rows = read_log(tmp_path / "log.jsonl")
    weights = torch.load(tmp_path / "weights.pt")
    assert sorted(weights) == [0, 5, 10]
    measured = [r for r in rows if r["status"] != "skipped"]
    assert {r["step"] for r in measured} <= {0, 5, 10} and [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    model = _model()
    single = _tracker(model, schedule=uf.Schedule(every=5))
    for step in sorted({r["step"] for r in measured}):
        model.load_state_dict(weights[step])
        expected = [_numbers(r) for r in single.measure(step)]
        got = [_numbers(r) for r in measured if r["step"] == step]
        assert [(r["feature_set"], r["label_set"]) for r in got] == [(r["feature_set"], r["label_set"]) for r in expected]
        for g, e in zip(got, expected):
            assert g["bits"] == pytest.approx(e["bits"], abs=2e-4) and g["l2"] == e["l2"]


def test_a_budget_schedule_does_not_split_the_ranks(tmp_path):
    # Each rank's clock would say something else; rank 0's decision is every rank's.
    _spawn(tmp_path, {"schedule": uf.Schedule(every=100, budget=0.9)})
    steps = sorted({r["step"] for r in read_log(tmp_path / "log.jsonl")})
    assert steps[0] == 0 and len(steps) >= 2


def test_shards_cover_every_row_once_with_equal_lengths():
    for n in (1, 2, 5, 301):
        for world in (2, 3, 4):
            bounds = [Ranks(r, world).bounds(n) for r in range(world)]
            assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))
            x = torch.arange(n)
            assert len({Ranks(r, world).shard(x).shape[0] for r in range(world)}) == 1


# --- uinfo-fast run and Lightning under torchrun ----------------------------------------------------

def _torchrun(*args, check=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _keys(rows):
    return [(r["step"], r["feature_set"], r["label_set"]) for r in rows]


@pytest.mark.slow
def test_run_under_torchrun_writes_one_run_directory_and_resumes_exactly(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = _torchrun("-m", "uinfo_fast.experiments.cli", "run", *_TINY_IMAGES, "--out", str(whole))
    assert done.stdout.count("uinfo-fast run ->") == 1 and "(2 processes)" in done.stdout
    rows = read_log(whole / "log.jsonl")
    assert sorted({r["step"] for r in rows}) == [0, 4, 8] and len(rows) == 12
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["steps"] == 8 and (whole / "usable_information.png").stat().st_size > 1000
    assert json.loads((whole / "config.json").read_text())["batch_size"] == 64

    assert _torchrun("-m", "tests.ddp_scripts", "killed-run", str(killed), *_TINY_IMAGES, check=False).returncode != 0
    assert sorted({r["step"] for r in read_log(killed / "log.jsonl")}) == [0, 4]  # died after step 4's checkpoint
    _torchrun("-m", "uinfo_fast.experiments.cli", "run", "--resume", "--quiet", "--out", str(killed))
    resumed = read_log(killed / "log.jsonl")
    assert _keys(resumed) == _keys(rows)
    assert [r["bits"] for r in resumed] == pytest.approx([r["bits"] for r in rows], abs=0.02)


@pytest.mark.slow
def test_lightning_callback_with_the_ddp_strategy(tmp_path):
    pytest.importorskip("lightning")
    _torchrun("-m", "tests.ddp_scripts", "lightning", str(tmp_path))
    rows = read_log(tmp_path / "log.jsonl")
    assert _keys(rows) == [(s, f, k) for s in (0, 4, 8) for f in ("net.1", "net.3") for k in ("four", "parity")]
    assert all(r["status"] == "ok" and r["bits"] > 0 for r in rows)
    assert list((tmp_path / "tb" / "version_0").glob("events.out.tfevents.*"))
