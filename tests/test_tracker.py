"""Schedule, JSONL log (kills, torn lines, truncation) and the tracker inside a training loop."""
import json

import pytest
import torch
from torch import nn

from uinfo_fast.tracking import Schedule, UsableInfoTracker, read_log

from uinfo_fast.tracking.log import JsonlLog

from .toy import separable


def test_schedule_every_and_log_spaced_early_steps():
    s = Schedule(every=50, early_until=40, early_points=5)
    # 40 ** (i / 4) for i = 0..4 rounds to 1, 3, 6, 16, 40
    assert s.steps(120) == [0, 1, 3, 6, 16, 40, 50, 100]
    assert Schedule(every=10, at_start=False).steps(30) == [10, 20, 30]
    assert Schedule(every=7).due(14) and not Schedule(every=7).due(15)


@pytest.mark.parametrize("kwargs", [dict(every=0), dict(every=1.5), dict(early_points=3), dict(early_until=-1)])
def test_schedule_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="Schedule"):
        Schedule(**kwargs)


def test_log_appends_reads_and_ignores_a_torn_last_line(tmp_path):
    log = JsonlLog(tmp_path / "sub" / "log.jsonl")
    log.append([{"step": 0, "bits": 0.1}, {"step": 0, "bits": 0.2}])
    log.append([{"step": 10, "bits": 0.3}])
    with open(log.path, "a") as fh:  # a kill in the middle of a write
        fh.write('{"step": 20, "bi')
    assert [r["step"] for r in read_log(log.path)] == [0, 0, 10]
    assert log.truncate_after(0) == 2
    assert [r["bits"] for r in log.read()] == [0.1, 0.2]
    assert open(log.path).read().endswith("\n")


def test_log_rejects_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_log(path)


_task = separable


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))


def test_tracker_in_a_training_loop_writes_rows_on_schedule(tmp_path):
    model = _model()
    xtr, ytr = _task(400, 0)
    xte, yte = _task(200, 1)
    tracker = UsableInfoTracker(model, ["1", "2"], xtr, ytr, xte, yte, log_path=tmp_path / "log.jsonl",
                                schedule=Schedule(every=20), l2_grid=[1e-3, 1e-1], n_bootstrap=50)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(41):
        tracker.step(step, epoch=step / 20)
        loss = nn.functional.cross_entropy(model(xtr), ytr["four"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in rows] == [0] * 4 + [20] * 4 + [40] * 4
    assert {(r["feature_set"], r["label_set"]) for r in rows} == {("1", "four"), ("1", "parity"), ("2", "four"),
                                                           ("2", "parity")}
    keys = {"step", "epoch", "mode", "features_from", "feature_set", "label_set", "status", "bits", "ci_low", "ci_high",
            "test_ce_nats", "entropy_bits", "l2", "l2_grid", "search", "probe_family", "probe_hidden",
            "probe_restarts", "num_classes", "converged", "unseen_test_rows",
            "warning", "seconds"}
    assert all(set(r) == keys for r in rows)
    assert all(r["mode"] == "exact" and r["features_from"] == r["step"] and r["search"] == "full" for r in rows)
    last = tracker.latest("2", "four")
    assert last["step"] == 40 and last["epoch"] == 2.0
    assert last["ci_low"] <= last["bits"] <= last["ci_high"]
    assert last["bits"] <= last["entropy_bits"] + 0.05
    # the labels are decodable from the inputs, so a trained layer holds most of H(four) = 2 bits
    assert last["bits"] > 1.0
    assert rows == tracker.rows
    assert 0.0 < tracker.overhead() < 1.0
    assert json.loads(open(tmp_path / "log.jsonl").readline())["step"] == 0


def test_tracker_leaves_training_state_alone():
    model = _model()
    model.train()
    xtr, ytr = _task(100, 0)
    xte, yte = _task(50, 1)
    tracker = UsableInfoTracker(model, ["1"], xtr, ytr, xte, yte, l2_grid=[1e-2], n_bootstrap=0)
    before = [p.detach().clone() for p in model.parameters()]
    tracker.measure(0)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_tracker_errors_name_the_problem():
    model = _model()
    xtr, ytr = _task(100, 0)
    xte, yte = _task(50, 1)
    with pytest.raises(ValueError, match=r"train_labels\['four'\] has 99 labels but the inputs have 100"):
        UsableInfoTracker(model, ["1"], xtr, {"four": ytr["four"][:99]}, xte, {"four": yte["four"]})
    with pytest.raises(ValueError, match="different label sets"):
        UsableInfoTracker(model, ["1"], xtr, ytr, xte, {"four": yte["four"]})
    with pytest.raises(ValueError, match="'hidden' is not a module"):
        UsableInfoTracker(model, ["hidden"], xtr, ytr, xte, yte)
    with pytest.raises(TypeError, match="int64"):
        UsableInfoTracker(model, ["1"], xtr, {"four": ytr["four"].float()}, xte, {"four": yte["four"]})


def test_tracker_chooses_the_penalty_on_explicit_validation_inputs(tmp_path):
    model = _model()
    xtr, ytr = _task(300, 0)
    xval, yval = _task(120, 2)
    xte, yte = _task(200, 1)
    tracker = UsableInfoTracker(model, ["2"], xtr, ytr, xte, yte, val_inputs=xval, val_labels=yval,
                                l2_grid=[1e-4, 1e-1], n_bootstrap=0)
    tracker.measure(0)
    fit = tracker.last.fits["2"]
    first = tracker.last.results[0]
    assert fit.weight.shape[0] == 4 and first.val_ce_nats.keys() == set(first.l2_grid) >= {1e-4, 1e-1}
    # every train row went into the fit: its label counts are the train set's
    with pytest.raises(ValueError, match="go together"):
        UsableInfoTracker(model, ["2"], xtr, ytr, xte, yte, val_inputs=xval)
    with pytest.raises(ValueError, match=r"val_labels\['four'\] has 119 labels"):
        UsableInfoTracker(model, ["2"], xtr, ytr, xte, yte, val_inputs=xval,
                          val_labels={"four": yval["four"][:119], "parity": yval["parity"][:119]})


def test_rows_of_a_refining_label_carry_its_information_beyond_the_reference():
    x, y = _task(400, 0)
    xt, yt = _task(200, 1)
    tracker = UsableInfoTracker(_model(), ["0", "2"], x, y, xt, yt, l2_grid=[1e-2], n_bootstrap=0,
                                beyond={"four": "parity"})
    rows = tracker.measure(0)
    bits = {(r["feature_set"], r["label_set"]): r["bits"] for r in rows}
    for r in rows:
        if r["label_set"] == "four":
            assert r["beyond_of"] == "parity"
            assert r["beyond_bits"] == pytest.approx(r["bits"] - bits[r["feature_set"], "parity"], abs=1e-12)
        else:
            assert "beyond_bits" not in r
    single = UsableInfoTracker(_model(), ["2"], x, {"four": y["four"], "one": torch.zeros_like(y["four"])}, xt,
                               {"four": yt["four"], "one": torch.zeros_like(yt["four"])}, l2_grid=[1e-2],
                               n_bootstrap=0, beyond={"four": "one"})
    assert single.measure(0)[0]["beyond_bits"] is None  # the reference has a single class: no number


@pytest.mark.parametrize("beyond, error, match", [
    ({"four": "four"}, ValueError, "two different label sets"),
    ({"four": "colour"}, ValueError, "two different label sets"),
    (["four"], TypeError, "beyond must be a dict"),
])
def test_beyond_names_two_label_sets(beyond, error, match):
    x, y = _task(100, 0)
    with pytest.raises(error, match=match):
        UsableInfoTracker(_model(), ["2"], x, y, x, y, beyond=beyond)
