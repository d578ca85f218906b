"""Measuring every step: the rolling capture's bookkeeping, the local penalty search and its way
back to the whole grid, and the amortised measurement against the exact one on a small model."""
import pytest
import torch
from torch import nn

import uinfo_fast as uf
from uinfo_fast.engine.estimator import EstimatorOptions
from uinfo_fast.engine import grid
from uinfo_fast.engine.fit import fit_further, overlaid
from uinfo_fast.engine.grid import nearby, spanning
from uinfo_fast.tracking import batches
from uinfo_fast.tracking.capture import RollingFeatures

from .toy import separable as data


class _Stepped(nn.Module):
    """A layer whose every output equals the value last set: features that say when they were
    captured."""

    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()))
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(torch.zeros(x.shape[0], 2) + self.value)


def test_a_rolling_capture_refreshes_one_part_per_measurement_and_names_the_oldest_step():
    model, x = _Stepped(), torch.arange(7.0)[:, None]
    capture, rolling = uf.FeatureCapture(model, ["out"]), RollingFeatures(3)
    seen = []
    for step in (0, 5, 10, 15, 20):
        model.value.data.fill_(step)
        parts = rolling.begin(step)
        feats = rolling.capture("train", x, parts, capture)["out"][:, 0]
        seen.append((parts, rolling.oldest, feats.tolist()))
    assert seen[0] == ([0, 1, 2], 0, [0.0] * 7)  # the first captures every row
    assert seen[1] == ([0], 0, [5.0, 0, 0, 5, 0, 0, 5])  # rows 0, 3, 6: part 0
    assert seen[2] == ([1], 0, [5.0, 10, 0, 5, 10, 0, 5])
    assert seen[3] == ([2], 5, [5.0, 10, 15, 5, 10, 15, 5])  # every part captured since step 5
    assert seen[4] == ([0], 10, [20.0, 10, 15, 20, 10, 15, 20])
    rolling.forget()
    assert rolling.begin(25) == [0, 1, 2] and rolling.oldest == 25


def test_the_splits_due_run_forward_as_one_stream_of_full_batches():
    xs = [torch.randn(n, 3, 4, 4).contiguous(memory_format=torch.channels_last) for n in (5, 2, 6)]
    got = list(batches.spanning(xs, 4))
    assert [b.shape[0] for b in got] == [4, 4, 4, 1]  # not 4+1, 2, 4+2 as three streams
    assert torch.equal(torch.cat(got), torch.cat(xs))
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b in got)
    assert not batches.joinable([xs[0], xs[1].contiguous()])  # another layout
    assert not batches.joinable([xs[0], torch.randn(2, 3, 5, 4)]) and not batches.joinable([{"a": xs[0]}])
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    capture, splits = uf.FeatureCapture(model, ["2"], batch_size=4), dict(zip(("train", "val", "test"), xs))
    together, alone = RollingFeatures(2), RollingFeatures(2)
    for step in (0, 1, 2):  # every part, then one part in turn, as a measurement takes them
        parts, _ = together.begin(step), alone.begin(step)
        one = together.capture_splits({**splits, "none": None}, parts, capture)
        assert one["none"] is None
        for k, x in splits.items():
            torch.testing.assert_close(one[k]["2"], alone.capture(k, x, parts, capture)["2"])


def test_where_the_features_moved_the_parts_kept_longest_are_captured_again_until_the_error_holds():
    rolling = RollingFeatures(4)
    rolling.kept["test"] = {}
    for step in (0, 10, 20, 30, 40):
        rolling.begin(step)
    assert rolling.part_steps == [10, 20, 30, 40] and rolling.age == 40  # part 3, kept since step 0
    # kept 30, 20 and 10 steps: the error is shift x (30 + 20 + 10) / 40 / 4, (k - 1) / 2k of it
    assert rolling.stale_error(0.1) == pytest.approx(0.1 * 3 / 8)
    assert rolling.stalest(0.04, drift=0.02) == []
    assert rolling.stalest(0.1, drift=0.02) == [0]  # then 0.1 x 30 / 160 = 0.019
    assert rolling.stalest(0.2, drift=0.02) == [0, 1]
    assert rolling.stalest(float("nan"), drift=0.02) == [0, 1, 2]
    rolling.again([0])
    assert rolling.begin(50) == [1] and rolling.age == 30  # the one kept longest, not the next in turn


def test_features_handed_out_are_never_changed_by_a_later_measurement():
    model, x = _Stepped(), torch.arange(4.0)[:, None]
    capture, rolling = uf.FeatureCapture(model, ["out"]), RollingFeatures(2)
    first = rolling.capture("test", x, rolling.begin(0), capture)["out"]
    model.value.data.fill_(1.0)
    rolling.capture("test", x, rolling.begin(1), capture)
    assert first.sum() == 0  # a background worker may still be fitting on it


def _tracker(tmp_path=None, model=None, **kw):
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = data(400, 0), data(300, 1)
    model = model or nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    kw.setdefault("n_bootstrap", 100)
    tracker = uf.UsableInfoTracker(model, ["1", "3"], xtr, ytr, xte, yte,
                                   log_path=None if tmp_path is None else tmp_path / "log.jsonl", **kw)
    return model, tracker, xtr, ytr


def test_tracker_rows_record_how_stale_their_features_are_and_their_mode():
    model, tracker, *_ = _tracker(schedule=uf.Schedule(every=2), refresh=2, full_grid_every=1)
    for step in range(7):
        tracker.step(step)
    by_step = {r["step"]: (r["features_from"], r["mode"]) for r in tracker.rows}
    # measured at 0, 2, 4, 6: two parts, the first measurement captures both
    assert by_step == {0: (0, "exact"), 2: (0, "amortised"), 4: (2, "amortised"), 6: (4, "amortised")}
    exact = _tracker()[1]
    exact.measure(3)
    assert {(r["features_from"], r["mode"], r["search"]) for r in exact.rows} == {(3, "exact", "full")}


def test_loading_a_state_captures_every_input_again(tmp_path):
    model, tracker, *_ = _tracker(tmp_path, refresh=3)
    tracker.measure(0)
    state = tracker.state_dict()
    tracker.measure(1)
    tracker.close()
    model, again, *_ = _tracker(tmp_path, refresh=3)
    again.load_state_dict(state)
    again.measure(1)
    assert {r["features_from"] for r in again.rows if r["step"] == 1} == {1}


def test_the_neighbours_of_the_last_choices_and_the_grid_a_warm_start_resumes():
    grid = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert nearby(grid, [1e-2]) == [1e-3, 1e-2, 1e-1]
    assert nearby(grid, [1e-4, 1.0]) == [1e-4, 1e-3, 1e-1, 1.0]
    assert nearby(grid, [0.5]) == grid  # not on the grid: search it all
    opts = EstimatorOptions(l2_grid=(1e-2, 1e-1, 1.0), grid_extension=3)
    # an earlier local fit that held only the top decades widened to: no decade left out between
    assert spanning([1e-2, 1e-1, 1.0], [100.0, 1000.0], opts) == [1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]
    assert spanning([1e-2, 1e-1, 1.0], [1e-9], opts) == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # within the bounds


def _noise(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)


def _overfitting(n, seed):
    """The toy label in 2 weak coordinates among 60 of noise: weak penalties overfit, strong ones
    underfit, and the validation minimum lies inside the grid."""
    x, y = data(n, seed)
    noise = torch.randn(n, 60, generator=torch.Generator().manual_seed(seed + 10))
    return torch.cat([x * 0.5, noise], 1), y["four"]


def test_a_local_search_whose_neighbours_hold_the_choice_stands_and_agrees_with_the_whole_grid():
    (x, y), (xt, yt) = _overfitting(300, 0), _overfitting(300, 1)
    first = uf.estimate_usable_information(x, y, xt, yt, n_bootstrap=0)
    full = first.results[0]
    assert full.l2_grid[0] < full.l2 < full.l2_grid[-1]
    local = uf.estimate_usable_information(x, y, xt, yt, n_bootstrap=0, warm_start=first, local=True).results[0]
    assert local.search == "local" and len(local.l2_grid) < len(full.l2_grid)
    assert set(local.l2_grid) <= set(full.l2_grid) and full.l2 in local.l2_grid
    assert local.l2 == full.l2 and local.bits == pytest.approx(full.bits, abs=1e-3)


def test_a_choice_at_an_end_of_the_neighbours_brings_the_whole_grid_back():
    (x, y), (xt, yt) = data(400, 0), data(300, 1)
    informative = uf.estimate_usable_information(x, y["four"], xt, yt["four"], n_bootstrap=0)
    assert informative.results[0].l2 < 1.0  # a weak penalty reads these features best
    (xn, yn), (xnt, ynt) = _noise(400, 2), _noise(300, 3)
    whole = uf.estimate_usable_information(xn, yn, xnt, ynt, n_bootstrap=0).results[0]
    local = uf.estimate_usable_information(xn, yn, xnt, ynt, n_bootstrap=0, warm_start=informative,
                                           local=True).results[0]
    # noise is read best by the largest penalties, far above the last choice's neighbours
    assert local.search == "full" and local.l2 == whole.l2 >= 10.0
    assert local.bits == pytest.approx(whole.bits, abs=0.01)


def test_where_the_last_curve_was_flat_around_its_choice_the_whole_grid_is_searched_at_once(monkeypatch):
    (x, y), (xt, yt) = _overfitting(300, 0), _overfitting(300, 1)
    sharp = uf.estimate_usable_information(x, y, xt, yt, n_bootstrap=0)
    (xn, yn), (xnt, ynt) = _noise(400, 2), _noise(300, 3)
    flat = uf.estimate_usable_information(xn, yn, xnt, ynt, n_bootstrap=0)  # every strong penalty ties
    assert sharp.local_holds == {"features": True} and flat.local_holds == {"features": False}
    calls = []
    monkeypatch.setattr(grid, "fit_further", lambda *a, **k: calls.append(1) or fit_further(*a, **k))
    again = uf.estimate_usable_information(xn, yn, xnt, ynt, n_bootstrap=0, warm_start=flat, local=True)
    assert again.results[0].search == "full" and len(again.results[0].l2_grid) == len(flat.results[0].l2_grid)
    assert calls == []  # no second call for the whole grid: it was the first


def test_a_grid_brought_back_keeps_the_neighbours_new_fits_and_starts_the_rest_from_their_own():
    x, y = data(300, 0)
    base = uf.fit_probes(x, y, l2=[1e-3, 1e-2, 1e-1, 1.0])  # the last measurement, whole grid
    part = uf.fit_probes(x * 1.5, y, l2=[1e-2, 1e-1])        # this one's neighbours
    both, rest = overlaid(base, part)
    assert [(both.label_col[k], both.l2[k]) for k in rest] == [
        (j, l2) for j in range(2) for l2 in (1e-3, 1.0)]
    for k in range(both.n_probes):
        src, i = (base, base.index(base.label_names[both.label_col[k]], both.l2[k])) if k in rest else \
            (part, part.index(part.label_names[both.label_col[k]], both.l2[k]))
        assert torch.equal(both.probe(k)[0], src.probe(i)[0]) and torch.equal(both.probe(k)[1], src.probe(i)[1])
        assert both.objective[k] == src.objective[i] and both.status[k] == src.status[i]


def test_the_tracker_searches_the_whole_grid_every_full_grid_every_measurements():
    model, tracker, *_ = _tracker(full_grid_every=3)
    for step in range(7):
        tracker.measure(step)
    searches = [r["search"] for r in tracker.rows if r["feature_set"] == "3" and r["label_set"] == "four"]
    assert searches[0] == searches[3] == searches[6] == "full"
    assert "local" in searches[1:3] + searches[4:6]  # the neighbours hold a trained layer's choice


def _exact_and_amortised(**amortised):
    """Rows of an exact (every input, cold fits) and an amortised tracker on one training run of a
    fast-learning network, measured at every step, at one penalty: what the rolling capture
    costs, apart from which of two tied penalties the one-standard-error rule takes (a choice
    that flips moves the exact estimate itself by more than its interval)."""
    one = dict(l2_grid=[0.01], grid_extension=0)
    model, exact, xtr, ytr = _tracker(warm_start=False, **one)
    _, rolling, *_ = _tracker(model=model, **one, **amortised)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for step in range(25):
        exact.measure(step)
        rolling.measure(step)
        loss = nn.functional.cross_entropy(model(xtr), ytr["four"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return exact.rows, rolling.rows


def _beyond_tolerance(exact: list[dict], amortised: list[dict]) -> list[tuple]:
    ex = {(r["step"], r["feature_set"], r["label_set"]): r for r in exact}
    out = []
    for r in amortised:
        e = ex[r["step"], r["feature_set"], r["label_set"]]
        if abs(r["bits"] - e["bits"]) > max(0.02, (e["ci_high"] - e["ci_low"]) / 2):
            out.append((r["step"], r["feature_set"], r["label_set"], e["bits"], r["bits"]))
    return out


def test_amortised_rows_stay_within_the_exact_rows_interval_on_a_small_model():
    exact, amortised = _exact_and_amortised(refresh=3)
    assert max(r["bits"] for r in exact) > 1.0  # the network learns while it is watched
    assert {r["mode"] for r in amortised} == {"exact", "amortised"}
    assert _beyond_tolerance(exact, amortised) == []
    # the drift check is what keeps them there: features kept regardless fall behind
    exact, unchecked = _exact_and_amortised(refresh=3, refresh_drift=1e9)
    assert _beyond_tolerance(exact, unchecked)
    fresh = lambda rows: sum(r["features_from"] == r["step"] for r in rows)  # noqa: E731
    assert fresh(amortised) > fresh(unchecked)


@pytest.mark.slow
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_run_measured_at_every_step_logs_plots_and_resumes(tmp_path, asynchronous):
    from uinfo_fast.experiments import run_experiment
    from uinfo_fast.tracking import read_log

    from .test_experiment import _cfg, _keys, _killed_run

    cfg = _cfg(epochs=1.0, track_every=1, early_points=0, capture_refresh=2, full_grid_every=3, async_tracking=asynchronous)
    ref = str(tmp_path / "ref")
    summary = run_experiment(cfg, ref, progress=False)
    rows = read_log(tmp_path / "ref" / "log.jsonl")
    assert summary["measurements"] == summary["steps"] + 1 == len({r["step"] for r in rows})
    assert {r["mode"] for r in rows} == {"exact", "amortised"} and (tmp_path / "ref" / "usable_information.png").exists()
    assert all(r["step"] - r["features_from"] <= 1 or r["features_from"] == 0 for r in rows)
    out = _killed_run(tmp_path, "killed", cfg=cfg, after=8)
    run_experiment(cfg, out, resume=True, progress=False)
    again = read_log(tmp_path / "killed" / "log.jsonl")
    assert _keys(again) == _keys(rows)
    # the first measurement after the resume captures every input: it may differ from the
    # uninterrupted run's amortised one by what amortising costs, no more
    assert max(abs(a["bits"] - b["bits"]) for a, b in zip(rows, again) if a["bits"] is not None) < 0.1


def test_a_dense_curve_is_drawn_as_measured_with_its_running_mean_on_top(tmp_path):
    import json

    from uinfo_fast.experiments.plots import DENSE_POINTS, runs_figure

    def rows(n):
        return [{"step": s, "epoch": None, "feature_set": "h", "label_set": "c", "status": "ok", "bits": (s % 2) * 0.2,
                 "ci_low": 0.0, "ci_high": 0.3, "entropy_bits": 1.0} for s in range(n)]

    for name, n in (("sparse", DENSE_POINTS), ("dense", 400)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(n)))
    sparse = runs_figure([str(tmp_path / "sparse")]).axes[0]
    assert sparse.get_legend_handles_labels()[1][0] == "c"
    dense = runs_figure([str(tmp_path / "dense")]).axes[0]
    assert dense.get_legend_handles_labels()[1][0] == "c, running mean of 9"
    faint, mean = dense.lines[0], dense.lines[1]
    assert len(faint.get_ydata()) == len(mean.get_ydata()) == 400
    assert max(mean.get_ydata()[10:-10]) - min(mean.get_ydata()[10:-10]) < 0.03  # the step-to-step noise averaged out
