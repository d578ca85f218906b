"""Nothing lost, nothing silently wrong: the log survives exits, torn lines and a second writer;
numbers that are not measurements say so; summaries of resumed runs cover the whole run."""
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import uinfo_fast as uf
from uinfo_fast.engine.estimator import EstimatorOptions
from uinfo_fast.engine.grid import extension_bounds
from uinfo_fast.experiments import run_experiment
from uinfo_fast.experiments.sweeps import _final_entry, format_perturbation, final_values
from uinfo_fast.tracking import FeatureCapture, read_log
from uinfo_fast.tracking.log import LogBusy, WriterLock, lock_path, repair_tail

from .test_experiment import _cfg, _killed_run
from .toy import separable as data

ROOT = Path(__file__).resolve().parents[1]

# A script whose asynchronous tracker measures at steps 0 and 5 and is never closed; with an
# argument, the script then raises.
_UNCLOSED = textwrap.dedent("""
    import sys, torch
    from torch import nn
    import uinfo_fast as uf
    torch.manual_seed(0)
    x = torch.randn(400, 6)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    tracker = uf.UsableInfoTracker(model, ["0", "2"], x[:300], {"a": y[:300]}, x[300:], {"a": y[300:]},
                                   log_path=sys.argv[1], asynchronous=True, schedule=uf.Schedule(every=5),
                                   n_bootstrap=10)
    for step in range(6):
        tracker.step(step)
    if len(sys.argv) > 2:
        raise RuntimeError("the script fails")
""")


def _python(code: str, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, **kw)


@pytest.mark.parametrize("fails", [False, True], ids=["ends", "raises"])
def test_an_unclosed_asynchronous_tracker_is_drained_at_exit_and_keeps_the_exit_code(tmp_path, fails):
    log = tmp_path / "log.jsonl"
    done = _python(_UNCLOSED, log, *(["fail"] if fails else []))
    assert "terminate called" not in done.stderr
    assert done.returncode == (1 if fails else 0), done.stderr[-2000:]
    assert sorted({r["step"] for r in read_log(log)}) == [0, 5]


# --- torn lines --------------------------------------------------------------------------------

def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))


def _tracker(model, log, **kw):
    return uf.UsableInfoTracker(model, ["0", "2"], *data(300, 0), *data(200, 1), log_path=log, l2_grid=[1e-3, 1e-1],
                                n_bootstrap=10, **kw)


def test_a_torn_last_line_is_cut_before_appending_and_its_step_is_measured_again(tmp_path):
    log, model = tmp_path / "log.jsonl", _model()
    tracker = _tracker(model, log, schedule=uf.Schedule(every=1))
    for step in range(3):
        tracker.step(step)
    tracker.close()
    text = log.read_text()
    assert text.count("\n") == 12  # 3 steps x 2 layers x 2 label sets
    log.write_text(text[:-len(text.splitlines()[-1]) // 2 - 1])  # the last row cut in half, no newline

    with pytest.warns(RuntimeWarning, match="torn.*step 2"):
        again = _tracker(model, log, schedule=uf.Schedule(every=1))
    assert again.last_step == 1  # step 2 lost one row of four: it counts as not measured
    for step in range(2, 5):
        again.step(step)
    again.close()
    rows = read_log(log)
    assert [r["step"] for r in rows] == [s for s in range(5) for _ in range(4)]


def test_a_last_line_that_is_no_json_is_cut_and_a_whole_row_without_newline_is_kept(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 0, "a": 1}\n{"step": 1, "a": 2}\n\0\0\0\0\n')
    with pytest.warns(RuntimeWarning, match="torn"):
        assert repair_tail(log) is None
    assert log.read_text() == '{"step": 0, "a": 1}\n{"step": 1, "a": 2}\n'
    log.write_text('{"step": 0, "a": 1}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repair_tail(log)
    assert log.read_text() == '{"step": 0, "a": 1}\n'


# --- one writer ---------------------------------------------------------------------------------

_HOLD = textwrap.dedent("""
    import sys, time
    from uinfo_fast.tracking.log import WriterLock
    lock = WriterLock(sys.argv[1], "test")
    print("held", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def held(tmp_path):
    """A second process holding the lock of tmp_path/run/log.jsonl; killed (-9) at the end."""
    path = lock_path(tmp_path / "run" / "log.jsonl")
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, path], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_with_the_holder_named_and_a_killed_holder_lets_go(tmp_path, held):
    log = tmp_path / "run" / "log.jsonl"
    with pytest.raises(LogBusy, match=f"process {held.pid} "):
        _tracker(_model(), log)
    with pytest.raises(LogBusy, match=f"run directory .*run is being written by process {held.pid}"):
        run_experiment(_cfg(), str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run" / "config.json").exists()  # refused before anything was written
    held.send_signal(signal.SIGKILL)
    held.wait()
    tracker = _tracker(_model(), log)  # the OS let go of a killed writer's lock
    tracker.close()


def test_the_lock_is_shared_within_a_process_and_released_by_its_last_holder(tmp_path):
    path = lock_path(tmp_path / "log.jsonl")
    a, b = WriterLock(path, "a"), WriterLock(path, "b")
    a.release()
    assert _python(_HOLD, path).returncode != 0  # b still holds it
    b.release()
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, path], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
    finally:
        proc.kill()
        proc.wait()


def test_two_runs_started_together_into_one_directory_one_is_refused(tmp_path):
    out = tmp_path / "same"
    code = ("import sys; from tests.test_nothing_lost import _cfg; from uinfo_fast.experiments import run_experiment;"
            "run_experiment(_cfg(epochs=4.0), sys.argv[1], progress=False)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, errs
    # refused by the lock when the two overlap, or as a finished run when the first was quicker
    # (the holder's name can be missing when the second asks in the instant between the first's
    # lock and its writing its name: "another process")
    assert any("is being written by" in e or "already holds a run" in e for e in errs), errs
    rows = read_log(out / "log.jsonl")
    keys = [(r["step"], r["feature_set"], r["label_set"]) for r in rows]
    assert len(keys) == len(set(keys))


# --- numbers that are not measurements ----------------------------------------------------------

def _blobs(n, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    centres = torch.eye(4, 8) * 6
    return (centres[y] + torch.randn(n, 8, generator=g)) * scale, y


@pytest.mark.parametrize("case", [dict(scale=1e18, standardize=False), dict(max_iter=0)],
                         ids=["scaled_1e18", "max_iter_0"])
def test_a_chosen_probe_that_did_not_converge_is_no_measurement(case):
    scale = case.pop("scale", 1.0)
    (x, y), (xt, yt) = _blobs(400, 0, scale), _blobs(200, 1, scale)
    with pytest.warns(UserWarning, match="of features/label: .*did not converge"):
        res = uf.estimate_usable_information(x, y, xt, yt, n_bootstrap=0, **case)
    r = res.results[0]
    assert not r.converged and r.status == "not_converged" and "did not converge" in r.warning
    assert r.row()["status"] == "not_converged"


def test_tracker_rows_of_a_probe_that_did_not_converge_say_so_and_warn_once(tmp_path):
    tracker = _tracker(_model(), tmp_path / "log.jsonl", max_iter=0, schedule=uf.Schedule(every=1))
    with pytest.warns(RuntimeWarning, match="usable information of 0/four at step 0 \\(not_converged\\)"):
        tracker.step(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.step(1)  # the same warning again: in the rows only
    tracker.close()
    rows = read_log(tmp_path / "log.jsonl")
    assert {r["status"] for r in rows} == {"not_converged"} and all("did not converge" in r["warning"] for r in rows)


def test_feature_sets_with_different_row_counts_are_named():
    x, y = _blobs(200, 0)
    with pytest.raises(ValueError, match=r"features\['b'\] has 150 rows but features\['a'\] has 200"):
        uf.estimate_usable_information({"a": x, "b": x[:150]}, y, {"a": x, "b": x}, y)
    with pytest.raises(ValueError, match=r"test_features\['b'\] has 100 rows but test_features\['a'\] has 200"):
        uf.estimate_usable_information({"a": x, "b": x}, y, {"a": x, "b": x[:100]}, y)


# --- the edge of the grid -----------------------------------------------------------------------

def _uninformative(seed=0):
    """Features of random images through a random convolutional network (about 600 dimensions),
    and labels drawn independently of them: 10 classes and their parity."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 64, 3, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(3), nn.Flatten())
    with torch.no_grad():
        x = net(torch.randn(768, 3, 16, 16))
    y = torch.randint(0, 10, (768,))
    labels = {"ten": y, "parity": y % 2}
    return x[:512], {k: v[:512] for k, v in labels.items()}, x[512:], {k: v[512:] for k, v in labels.items()}


def test_a_grid_too_short_for_uninformative_features_is_widened_until_the_minimum_is_inside():
    x, y, xt, yt = _uninformative()
    short = uf.estimate_usable_information(x, y, xt, yt, l2_grid=[1e-4, 1e-3, 1e-2, 1e-1], grid_extension=0,
                                           n_bootstrap=200)
    assert short[("features", "ten")].bits < -0.1  # the old failure: far below 0, said nothing
    assert "whole 95% interval lies below 0" in short[("features", "ten")].warning
    assert "still falls past l2=0.1" in short[("features", "ten")].warning
    wide = uf.estimate_usable_information(x, y, xt, yt, l2_grid=[1e-4, 1e-3, 1e-2, 1e-1], n_bootstrap=200)
    for r in wide.results:
        assert r.ci_low <= 0.0 <= r.ci_high + 0.01 and abs(r.bits) < 0.05, r
        assert r.l2_grid[-1] > 0.1 and r.l2 <= r.l2_grid[-1] and r.row()["l2_grid"] == list(r.l2_grid)


def test_a_choice_still_at_a_bound_of_the_widened_search_warns():
    x, y, xt, yt = _uninformative()
    with pytest.warns(UserWarning, match="still falls past l2=0.01, the largest penalty searched"):
        res = uf.estimate_usable_information(x, y, xt, yt, l2_grid=[1e-4, 1e-3], grid_extension=1, n_bootstrap=0)
    assert res[("features", "ten")].l2_grid == (1e-4, 1e-3, 1e-2)
    assert extension_bounds(EstimatorOptions(l2_grid=(1e-4, 1e-3), grid_extension=1)) == pytest.approx((1e-5, 1e-2))


def test_a_widened_grid_reads_at_least_what_the_short_one_did_and_says_nothing_once_inside():
    (x, y), (xt, yt) = _blobs(400, 0), _blobs(200, 1)  # well separated: the weakest penalty wins
    grid = [1e-3, 1e-2, 1e-1, 1.0]
    with pytest.warns(UserWarning, match="still falls past l2=0.001, the smallest penalty searched"):
        short = uf.estimate_usable_information(x, y, xt, yt, l2_grid=grid, n_bootstrap=0, grid_extension=0).results[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = uf.estimate_usable_information(x, y, xt, yt, l2_grid=grid, n_bootstrap=0).results[0]
    assert short.l2 == 1e-3 and wide.l2 < 1e-3 and wide.l2_grid[0] == 1e-6 and wide.warning is None
    assert wide.bits >= short.bits - 1e-3


# --- summaries, perturbation tables, projections --------------------------------------------------

@pytest.mark.slow
def test_the_summary_of_a_run_killed_three_times_covers_the_whole_run(tmp_path):
    whole = run_experiment(_cfg(), str(tmp_path / "whole"), progress=False)
    for i, after in enumerate((3, 2, 2)):
        out = _killed_run(tmp_path, "killed", after=after, resume=i > 0)
    resumed = run_experiment(_cfg(), out, resume=True, progress=False)
    assert json.load(open(os.path.join(out, "summary.json"))) == resumed
    assert resumed["segments"] == 4 and whole["segments"] == 1
    for key in ("steps", "measurements", "train_accuracy", "test_accuracy", "train_loss", "test_loss"):
        assert resumed[key] == whole[key], key
    assert resumed["measurements"] == len({r["step"] for r in read_log(os.path.join(out, "log.jsonl"))})
    assert 0 < resumed["measure_seconds"] < resumed["wall_seconds"]
    assert resumed["measure_share"] == pytest.approx(resumed["measure_seconds"] / resumed["wall_seconds"])


def test_a_perturbation_table_names_cells_with_no_measurement():
    rows = [{"step": 9, "feature_set": "h", "label_set": "colour", "bits": None, "status": "constant_features"},
            {"step": 9, "feature_set": "h", "label_set": "direction", "bits": 0.5, "status": "ok"}]
    finals = {"baseline": [final_values(rows), {("h", "direction"): 0.7}],
              "perturbed": [final_values(rows), final_values(rows)]}
    entry = _final_entry(("h", "colour"), finals, [1, 2])
    assert entry["baseline"]["mean"] is None and entry["baseline"]["missing_seeds"] == [1, 2]
    entry2 = _final_entry(("h", "direction"), finals, [1, 2])
    assert entry2["baseline"]["mean"] == pytest.approx(0.6) and entry2["baseline"]["missing_seeds"] == []
    text = format_perturbation({"perturbation": {"early_steps": 5, "early_lr": 0.5, "early_batch_size": None},
                                "seeds": [1, 2], "final": [entry, entry2]})
    assert "| h | colour | missing (no measurement in seeds 1, 2) |" in text and "+0.000" not in text


def test_a_layers_projection_does_not_depend_on_the_layer_list():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 40), nn.ReLU(), nn.Linear(40, 30))
    x = torch.randn(20, 6)
    one = FeatureCapture(model, ["2"], project_to=8)(x)["2"]
    both = FeatureCapture(model, ["0", "2"], project_to=8)(x)["2"]
    torch.testing.assert_close(one, both, rtol=0, atol=0)


def _rare_unit(n, seed, fire_value):
    """20 Gaussian features and a unit that is 0 but on the first 5 rows; binary labels drawn
    independently of everything (a shuffled control)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    unit = torch.zeros(n, 1)
    unit[:5] = fire_value
    return torch.cat([x, unit], 1), torch.randint(0, 2, (n,), generator=g)


def test_a_probe_is_scored_within_the_range_its_features_had_on_the_fit_rows():
    # The mechanism of the shuffled control's -0.96 bits: a unit that fires on a handful of fit
    # rows has a small deviation; a test row where it fires harder lies far outside anything the
    # weakly penalised probe saw, and its logit there is a confident error.
    (x, y), (xv, yv), (xt, yt) = _rare_unit(2000, 0, 1.0), _rare_unit(500, 1, 0.0), _rare_unit(1000, 2, 300.0)
    res = uf.estimate_usable_information(x, y, xt, yt, val_features=xv, val_labels=yv, l2_grid=[1e-4],
                                         grid_extension=0, n_bootstrap=0)
    fit, r = res.fits["features"], res.results[0]
    unclipped = dataclasses.replace(fit, standardize=fit.standardize[:2])
    worst = unclipped.log_likelihood(xt, {"label": yt}).min().item() / math.log(2)
    assert worst < -100  # what scoring without the fit range gave
    assert r.pointwise_bits.min() > -3 and r.bits > -0.05


def _shuffled_control_features():
    """The measurement that read -0.96 bits about a shuffled label (docs/RESULTS.md, four-input
    coding): the checkerboard run of seed 3 (100-100, no weight decay, lr 0.01, batch 16) at
    step 8,000, its `hidden2` features on the probe-train, validation and test inputs (the 88
    units that fire on any of them, stored as float16) and the shuffled colour labels."""
    import numpy as np

    a = np.load(ROOT / "tests" / "data" / "shuffled_control_features.npz")
    x = {k: torch.from_numpy(a[f"x_{k}"].astype(np.float32)) for k in ("train", "val", "test")}
    y = {k: torch.from_numpy(a[f"y_{k}"].astype(np.int64)) for k in ("train", "val", "test")}
    return x, y


def test_the_shuffled_control_that_read_minus_096_bits_stays_within_its_interval_of_0():
    x, y = _shuffled_control_features()
    kw = dict(val_features=x["val"], val_labels=y["val"])
    # What the estimator chose then (the weakest penalty), scored without the fit range:
    old = uf.estimate_usable_information(x["train"], y["train"], x["test"], y["test"], l2_grid=[1e-4], grid_extension=0,
                                         n_bootstrap=0, **kw)
    fit = old.fits["features"]
    unclipped = dataclasses.replace(fit, standardize=fit.standardize[:2]).log_likelihood(x["test"], {"label": y["test"]})
    assert old.results[0].entropy_bits + unclipped.double().mean().item() / math.log(2) < -0.5
    # Now, with the default grid:
    r = uf.estimate_usable_information(x["train"], y["train"], x["test"], y["test"], n_bootstrap=1000, **kw).results[0]
    assert r.ci_low <= 0.0 <= r.ci_high and abs(r.bits) < 0.01, r


def test_the_command_line_names_a_held_directory_and_an_out_that_is_a_file(tmp_path, held, capsys):
    from uinfo_fast.experiments.cli import main

    from .test_cli import _TINY_IMAGES

    assert main(["run", *_TINY_IMAGES, "--out", str(tmp_path / "run")]) == 2
    assert f"is being written by process {held.pid}" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert main(["run", *_TINY_IMAGES, "--out", str(tmp_path / "afile")]) == 2
    assert "--out must name a run directory" in capsys.readouterr().err


def test_a_run_that_failed_before_measuring_leaves_no_run_to_refuse(tmp_path, capsys):
    from uinfo_fast.experiments.cli import main

    from .test_cli import _TINY_IMAGES

    out = str(tmp_path / "typo")

    def with_layers(layers):
        return [layers if a == "layer2,layer4" else a for a in _TINY_IMAGES] + ["--out", out]

    assert main(["run", *with_layers("layer5")]) == 2
    assert "layer5" in capsys.readouterr().err
    assert main(["run", *with_layers("layer4")]) == 0
    assert {r["feature_set"] for r in read_log(os.path.join(out, "log.jsonl"))} == {"layer4"}


def test_a_tracker_refused_for_a_bad_argument_leaves_its_log_unlocked(tmp_path):
    log = tmp_path / "log.jsonl"
    with pytest.raises(ValueError, match="when_full"):
        _tracker(_model(), log, asynchronous=True, when_full="later")
    assert os.path.realpath(lock_path(log)) not in WriterLock._held


def test_a_validation_loss_that_is_not_a_number_is_never_chosen():
    from types import SimpleNamespace

    from uinfo_fast.engine.scoring import Validation, choose

    fit = SimpleNamespace(l2=[1e-4, 1e-2, 1.0], label_names=["y"], probes_of=lambda j: [0, 1, 2])
    nll = torch.tensor([float("nan"), 0.5, 0.9], dtype=torch.float64).expand(40, 3).clone()
    assert choose(fit, Validation(nll, torch.ones(40, 3, dtype=torch.float64))).tolist() == [1]


def test_a_warm_start_of_another_dtype_fits_these_features():
    (x, y), (xt, yt) = _blobs(300, 0), _blobs(200, 1)
    first = uf.estimate_usable_information(x, y, xt, yt, n_bootstrap=0)
    again = uf.estimate_usable_information(x.double(), y, xt.double(), yt, n_bootstrap=0, warm_start=first)
    assert again.fits["features"].weight.dtype == torch.float64
    assert again.results[0].bits == pytest.approx(first.results[0].bits, abs=1e-3)


def test_the_finalists_to_polish_name_each_probe_once():
    from uinfo_fast.engine.estimator import EstimatorOptions
    from uinfo_fast.engine.scoring import Validation, unfinished_finalists

    (x, y), (xt, yt) = _blobs(300, 0), _blobs(200, 1)
    fit = uf.estimate_usable_information(x, y, xt, yt, n_bootstrap=0, l2_grid=[1e-4, 1e-2, 1.0],
                                         grid_extension=0).fits["features"]
    fit = dataclasses.replace(fit, grad_max=torch.ones_like(fit.grad_max))  # none polished yet
    nll = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64).expand(40, 3).clone()  # the best is the chosen
    polishing = EstimatorOptions().finalist_fit
    got = unfinished_finalists({"f": fit}, {"f": Validation(nll, torch.ones(40, 3, dtype=torch.float64))}, 2,
                               polishing)["f"]
    assert got == sorted(set(got)) and len(got) == 2


def test_latest_names_the_choices_for_a_misspelt_layer_or_label_set(tmp_path):
    tracker = _tracker(_model(), None)
    assert tracker.latest("0", "four") is None  # nothing measured yet
    tracker.measure(0)
    assert tracker.latest("0", "four")["step"] == 0
    with pytest.raises(ValueError, match=r"feature_set 'conv1' is not one the tracker measures; it measures \['0', '2'\]"):
        tracker.latest("conv1", "four")
    with pytest.raises(ValueError, match=r"label_set 'Four'.*\['four', 'parity'\]"):
        tracker.latest("0", "Four")
