"""The run log: the one component the tracker, the CLI run and the Lightning callback resume with."""
import pytest
import torch
from torch import nn

from uinfo_fast.tracking import Schedule, UsableInfoTracker, read_log
from uinfo_fast.tracking.runlog import RunLog, empty_state

from .toy import separable


def _rows(step, n=2):
    return [{"step": step, "feature_set": "a", "label_set": str(k), "bits": 0.1 * step + k} for k in range(n)]


def test_a_state_taken_after_some_rows_cuts_the_file_back_to_them(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RunLog(path)
    log.append(_rows(0))
    log.append(_rows(5))
    state = log.state_dict()
    log.append(_rows(10))
    log.close()
    again = RunLog(path)
    assert again.last_step == 10
    again.load_state_dict(state)
    assert again.last_step == 5 and read_log(path) == _rows(0) + _rows(5) == again.rows
    assert again.state_dict() == state
    again.close()


def test_a_log_whose_rows_differ_from_the_state_is_refused(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RunLog(path)
    log.append(_rows(0))
    state = log.state_dict()
    log.close()
    path.write_text("")
    short = RunLog(path)
    with pytest.raises(ValueError, match="holds 0 rows, but the checkpoint was written after 2 rows"):
        short.load_state_dict(state)
    short.append([{**r, "bits": 9.0} for r in _rows(0)])
    with pytest.raises(ValueError, match="are not the ones"):
        short.load_state_dict(state)
    short.close()


def test_a_log_in_memory_carries_its_rows_in_its_state():
    log = RunLog()
    log.append(_rows(0))
    state = log.state_dict()
    assert state["rows"] == _rows(0) and log.path is None
    other = RunLog()
    other.load_state_dict(state)
    assert other.rows == _rows(0)
    other.load_state_dict(empty_state())
    assert other.rows == [] and other.last_step is None


def test_a_step_on_its_way_is_in_the_state_until_written():
    log = RunLog()
    log.expect(3)
    assert log.state_dict()["unwritten_steps"] == [3]
    log.append(_rows(3))
    assert log.state_dict(wait_before=4)["unwritten_steps"] == []


def _tracker(model, path, **kw):
    x, y = separable(300, 0)
    xt, yt = separable(200, 1)
    return UsableInfoTracker(model, ["1"], x, y, xt, yt, log_path=path, schedule=Schedule(every=2),
                             l2_grid=[1e-2, 1.0], n_bootstrap=0, **kw)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_users_loop_resumed_from_its_checkpoint_equals_the_whole_run(tmp_path, asynchronous):
    def train(tracker, model, steps, save_at=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = separable(64, 2)
        saved = None
        for step in steps:
            tracker.step(step)
            if step == save_at:
                saved = ({k: v.clone() for k, v in model.state_dict().items()}, tracker.state_dict(wait_before=step))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y["four"]).backward()
            opt.step()
        tracker.close()
        return saved

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))

    whole_model = model()
    train(_tracker(whole_model, tmp_path / "whole.jsonl", asynchronous=asynchronous), whole_model, range(9))
    net = model()
    weights, state = train(_tracker(net, tmp_path / "cut.jsonl", asynchronous=asynchronous), net, range(7), save_at=4)
    net.load_state_dict(weights)
    tracker = _tracker(net, tmp_path / "cut.jsonl", asynchronous=asynchronous)
    tracker.load_state_dict(state)
    # a step still on its way at the checkpoint is measured again
    assert [r["step"] for r in tracker.rows][-1] == (2 if 4 in state["unwritten_steps"] else 4)
    train(tracker, net, range(4, 9))
    whole, cut = read_log(tmp_path / "whole.jsonl"), read_log(tmp_path / "cut.jsonl")
    assert [(r["step"], r["label_set"]) for r in cut] == [(r["step"], r["label_set"]) for r in whole]
    assert [r["bits"] for r in cut] == pytest.approx([r["bits"] for r in whole], abs=1e-3)
