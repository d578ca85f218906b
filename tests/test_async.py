"""Measurement beside training: the asynchronous tracker, its bounded queue, errors, the budget
schedule, and runs resumed with measurements in flight."""
import os
import time

import pytest
import torch
from torch import nn

import uinfo_fast as uf
from uinfo_fast.tracking import read_log
from uinfo_fast.tracking.schedule import Schedule

from .toy import CHECKERBOARD_BEFORE_17, separable


_data = separable


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))


def _tracker(model, **kw):
    (x, y), (xt, yt) = _data(300, 0), _data(200, 1)
    return uf.UsableInfoTracker(model, ["1", "2"], x, y, xt, yt, l2_grid=[1e-3, 1e-1], n_bootstrap=20, **kw)


def _train(trackers, steps=41):
    model = trackers[0].capture.model
    x, y = _data(300, 0)
    x, y = x.to(next(model.parameters()).device), y["four"].to(next(model.parameters()).device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        for t in trackers:
            t.step(step, epoch=step / 10)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _numbers(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_asynchronous_rows_equal_synchronous_ones_in_step_order(tmp_path):
    model = _model()
    sync = _tracker(model, schedule=Schedule(every=10), log_path=tmp_path / "sync.jsonl")
    with _tracker(model, schedule=Schedule(every=10), log_path=tmp_path / "async.jsonl", asynchronous=True) as a:
        _train([sync, a])
    assert a.worker is None  # the with block drained and ended it
    rows = read_log(tmp_path / "async.jsonl")
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows) == [s for s in (0, 10, 20, 30, 40)
                                                                          for _ in range(4)]
    assert _numbers(rows) == _numbers(read_log(tmp_path / "sync.jsonl"))
    assert all(r["status"] == "ok" for r in rows)


def test_a_full_queue_skips_and_says_so_or_waits(tmp_path, monkeypatch):
    model = _model()
    slow = _tracker(model, schedule=Schedule(every=1), asynchronous=True, when_full="skip",
                    log_path=tmp_path / "skip.jsonl")
    real = slow.rows_for

    def sluggish(features):
        time.sleep(0.3)
        return real(features)

    monkeypatch.setattr(slow, "rows_for", sluggish)
    for step in range(6):
        slow.step(step)
    slow.close()
    rows = read_log(tmp_path / "skip.jsonl")
    statuses = {r["step"]: r["status"] for r in rows}
    assert sorted(statuses) == list(range(6)) and [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    assert "skipped" in statuses.values() and statuses[0] == "ok"
    assert all(r["bits"] is None for r in rows if r["status"] == "skipped")
    waiting = _tracker(model, schedule=Schedule(every=1), asynchronous=True, log_path=tmp_path / "wait.jsonl")
    monkeypatch.setattr(waiting, "rows_for", sluggish)
    for step in range(3):
        waiting.step(step)
    waiting.close()
    assert {r["status"] for r in read_log(tmp_path / "wait.jsonl")} == {"ok"}
    assert waiting.overhead() > 0  # the training thread waited for room


def test_an_error_in_the_worker_is_raised_at_the_next_step(monkeypatch):
    tracker = _tracker(_model(), schedule=Schedule(every=1), asynchronous=True)
    calls = {"n": 0}
    real = tracker.rows_for

    def failing(features):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ArithmeticError("boom")
        return real(features)

    monkeypatch.setattr(tracker, "rows_for", failing)
    tracker.step(0)
    tracker.step(1)
    with pytest.raises(RuntimeError, match="background measurement failed.*boom"):
        for step in range(2, 50):
            tracker.step(step)
            time.sleep(0.05)
    with pytest.raises(RuntimeError, match="boom"):
        tracker.close()


def test_a_budget_measures_more_often_than_the_floor_and_never_less():
    model = _model()
    floor = _tracker(model, schedule=Schedule(every=20))
    budget = _tracker(model, schedule=Schedule(every=20, budget=0.6))
    _train([floor, budget], steps=41)
    steps = sorted({r["step"] for r in budget.rows})
    assert {0, 20, 40} <= set(steps) and len(steps) > len({r["step"] for r in floor.rows})
    assert budget.overhead() < 0.75  # the budget, give or take the measurement that crossed it


@pytest.mark.slow
def test_an_asynchronous_run_resumes_without_lost_or_duplicated_rows(tmp_path, monkeypatch):
    from uinfo_fast.experiments import Plan, RunConfig, run_experiment

    cfg = RunConfig.for_task("checkerboard", **{**CHECKERBOARD_BEFORE_17, "epochs": 2.0}, n_train=640, n_test=200,
                             probe_train=300, probe_val=50, probe_test=150, track_every=10, early_until=4,
                             early_points=3, l2_grid=[1e-3, 1e-1], n_bootstrap=20, async_tracking=True)
    ref, out = str(tmp_path / "ref"), str(tmp_path / "killed")
    run_experiment(cfg, ref, progress=False)
    real_lr = Plan.lr

    class Killed(Exception):
        pass

    def dying_lr(self, step):  # dies right after the measurement of step 20 was handed over
        if step == 20:
            raise Killed()
        return real_lr(self, step)

    monkeypatch.setattr(Plan, "lr", dying_lr)
    with pytest.raises(Killed):
        run_experiment(cfg, out, progress=False)
    monkeypatch.undo()
    run_experiment(cfg, out, resume=True, progress=False)
    key = lambda rows: [(r["step"], r["feature_set"], r["label_set"]) for r in rows]  # noqa: E731
    assert key(read_log(os.path.join(out, "log.jsonl"))) == key(read_log(os.path.join(ref, "log.jsonl")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_side_stream_gives_the_rows_of_synchronous_tracking_on_cuda(tmp_path):
    from uinfo_fast.engine import cuda_kernels_built

    if not cuda_kernels_built():
        pytest.skip("the CUDA kernels are not built")
    model = _model().cuda()
    sync = _tracker(model, schedule=Schedule(every=10), log_path=tmp_path / "sync.jsonl")
    with _tracker(model, schedule=Schedule(every=10), log_path=tmp_path / "async.jsonl", asynchronous=True) as a:
        assert a.worker.stream is not None
        _train([sync, a])
    rows, want = read_log(tmp_path / "async.jsonl"), read_log(tmp_path / "sync.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in want]
    for r, w in zip(rows, want):  # the CUDA pass adds block partials atomically: last bits differ
        assert r["status"] == w["status"] == "ok" and abs(r["bits"] - w["bits"]) < 1e-3
