"""Sweeps skip finished runs and resume partial ones; perturbation compares final representations."""
import importlib.util
import json
import os
import sys

import pytest

from uinfo_fast.experiments import RunConfig, sweeps
from uinfo_fast.experiments.sweeps import curve_stats, format_summary, run_perturbation, run_sweep

from .toy import CHECKERBOARD_BEFORE_17


def _base(**kw):
    base = dict(CHECKERBOARD_BEFORE_17, n_train=320, n_test=100, epochs=1.0, probe_train=160, probe_val=20, probe_test=80, track_every=5, early_points=0,
                l2_grid=[1e-2], n_bootstrap=0)
    return RunConfig.for_task("checkerboard", **{**base, **kw})


@pytest.mark.slow
def test_sweep_runs_each_cell_once_and_skips_finished_runs(tmp_path, monkeypatch):
    calls = []
    real = sweeps.run_experiment

    def counting(cfg, out, **kw):
        calls.append((os.path.basename(out), kw["resume"]))
        return real(cfg, out, **kw)

    monkeypatch.setattr(sweeps, "run_experiment", counting)
    out = str(tmp_path / "sweep")
    summary = run_sweep(_base(), out, [0.1, 0.01], [32], [0, 1], progress=False, log=lambda *_: None)
    assert sorted(c[0] for c in calls) == ["lr0.01_bs32_s0", "lr0.01_bs32_s1", "lr0.1_bs32_s0", "lr0.1_bs32_s1"]
    assert [c["seeds"] for c in summary["cells"]] == [2, 2]
    assert os.path.getsize(os.path.join(out, "sweep.png")) > 1000
    assert json.load(open(os.path.join(out, "sweep.json")))["irrelevant_label"] == "colour"
    assert "| 0.1 | 32 | 0 | 10 | 2 |" in format_summary(summary) and "training loss (nats)" in format_summary(summary)
    assert all(r["train_loss"] >= 0 for c in summary["cells"] for r in c["runs"])

    calls.clear()  # a second call: nothing to run
    run_sweep(_base(), out, [0.1, 0.01], [32], [0, 1], progress=False, log=lambda *_: None)
    assert calls == []

    # a run killed before its summary is resumed, not restarted
    os.remove(os.path.join(out, "lr0.1_bs32_s1", "summary.json"))
    run_sweep(_base(), out, [0.1, 0.01], [32], [0, 1], progress=False, log=lambda *_: None)
    assert calls == [("lr0.1_bs32_s1", True)]


@pytest.mark.slow
def test_sweep_refuses_a_finished_run_of_another_config(tmp_path):
    out = str(tmp_path / "sweep")
    run_sweep(_base(), out, [0.1], [32], [0], progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="another config"):
        run_sweep(_base(epochs=2.0), out, [0.1], [32], [0], progress=False, log=lambda *_: None)


def test_grid_cells_hold_decay_per_step_or_noise_scale_as_asked():
    from uinfo_fast.experiments.sweeps import grid_cells

    base = RunConfig(lr=0.1, batch_size=32, weight_decay=2e-3)
    assert grid_cells(base, [0.1, 0.01], [32]) == [(0.1, 32, 2e-3), (0.01, 32, 2e-3)]
    assert grid_cells(base, [0.1], [32], weight_decays=[0.0, 2e-3]) == [(0.1, 32, 0.0), (0.1, 32, 2e-3)]
    # lr x wd stays 2e-4: ten times the decay at a tenth of the rate, with no float noise in the name
    assert grid_cells(base, [0.1, 0.01], [32, 512], wd_scale_with_lr=True) == [
        (0.1, 32, 2e-3), (0.01, 32, 0.02), (0.1, 512, 2e-3), (0.01, 512, 0.02)]
    # lr / batch stays 0.1 / 32, and with both, lr x wd too
    assert grid_cells(base, None, [32, 128, 512], lr_scale_with_batch=True, wd_scale_with_lr=True) == [
        (0.1, 32, 2e-3), (0.4, 128, 5e-4), (1.6, 512, 1.25e-4)]
    for kw, match in [(dict(lrs=[0.1], lr_scale_with_batch=True), "lrs"), (dict(lrs=None), "lrs"),
                      (dict(lrs=[0.1], weight_decays=[0.0], wd_scale_with_lr=True), "weight_decays"),
                      (dict(lrs=[]), "lrs")]:
        with pytest.raises(ValueError, match=match):
            grid_cells(base, batch_sizes=[32], **kw)
    with pytest.raises(ValueError, match="weight_decay"):
        grid_cells(base.replace(weight_decay=0.0), [0.1], [32], wd_scale_with_lr=True)


@pytest.mark.slow
def test_a_diverging_cell_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = sweeps.run_experiment

    def diverging(cfg, out, **kw):
        if cfg.lr > 1:  # what a run leaves when its loss turns nan: its config, then the error
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "config.json"), "w") as fh:
                json.dump(cfg.to_json(), fh)
            raise FloatingPointError("training diverged at step 3 (loss nan); lower --lr")
        return real(cfg, out, **kw)

    monkeypatch.setattr(sweeps, "run_experiment", diverging)
    out = str(tmp_path / "sweep")
    summary = run_sweep(_base(), out, [0.1, 5.0], [32], [0], weight_decays=[0.0], progress=False,
                        log=lambda *_: None)
    assert [c["diverged"] for c in summary["cells"]] == [0, 1]
    assert os.path.exists(os.path.join(out, "lr5_bs32_wd0_s0", sweeps.DIVERGED))
    row = format_summary(summary).splitlines()[-1]
    assert row.startswith("| 5 | 32 | 0 | - | 1 (1 diverged) | diverged |")
    monkeypatch.setattr(sweeps, "run_experiment", lambda *a, **k: pytest.fail("a recorded cell ran again"))
    run_sweep(_base(), out, [0.1, 5.0], [32], [0], weight_decays=[0.0], progress=False, log=lambda *_: None)


def test_curve_stats_peak_final_and_drop():
    rows = [{"step": s, "epoch": s / 10, "feature_set": "h", "label_set": "c", "bits": b, "entropy_bits": 1.0}
            for s, b in [(0, 0.1), (10, 0.8), (20, 0.4)]]
    st = curve_stats(rows, "h", "c")
    assert st["peak_bits"] == 0.8 and st["final_bits"] == 0.4 and st["peak_epoch"] == 1.0
    assert st["drop_from_peak"] == pytest.approx(0.5)
    assert st["final_share_of_entropy"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no rows"):
        curve_stats(rows, "h", "other")


def test_curve_stats_smoothed_take_peak_and_final_from_a_running_mean():
    from uinfo_fast.experiments.sweeps import running_mean

    assert running_mean([0.0, 3.0, 0.0, 3.0], 3) == [1.5, 1.0, 2.0, 1.5]
    assert running_mean([1.0, 2.0], 1) == [1.0, 2.0]
    with pytest.raises(ValueError, match="smooth"):
        running_mean([1.0], 0)
    # one noisy high point: raw, a 75% drop; over three measurements, the peak is the smoothed one
    rows = [{"step": s, "epoch": float(s), "feature_set": "h", "label_set": "c", "bits": b, "entropy_bits": 1.0}
            for s, b in enumerate([0.2, 0.2, 0.8, 0.2, 0.2, 0.2])]
    assert curve_stats(rows, "h", "c")["drop_from_peak"] == pytest.approx(0.75)
    st = curve_stats(rows, "h", "c", smooth=3)
    assert st["peak_bits"] == pytest.approx(0.4) and st["final_bits"] == pytest.approx(0.2)
    assert st["drop_from_peak"] == pytest.approx(0.5)


@pytest.mark.slow
def test_perturbation_runs_baseline_and_perturbed_per_seed(tmp_path):
    out = str(tmp_path / "pert")
    summary = run_perturbation(_base(early_steps=3, early_lr=0.5), out, [0, 1], progress=False, log=lambda *_: None)
    assert sorted(os.listdir(out)) == ["baseline_s0", "baseline_s1", "perturbation.json", "perturbation.png",
                                       "perturbed_s0", "perturbed_s1"]
    base_cfg = json.load(open(os.path.join(out, "baseline_s0", "config.json")))
    pert_cfg = json.load(open(os.path.join(out, "perturbed_s1", "config.json")))
    assert base_cfg["early_steps"] == 0 and base_cfg["early_lr"] is None
    assert pert_cfg["early_steps"] == 3 and pert_cfg["early_lr"] == 0.5 and pert_cfg["seed"] == 1
    assert {(e["layer"], e["label_set"]) for e in summary["final"]} == {
        (h, lab) for h in ("hidden1", "hidden2") for lab in ("direction", "colour", "targets")}
    assert all(len(e["baseline"]["values"]) == 2 for e in summary["final"])
    with pytest.raises(ValueError, match="early_steps"):
        run_perturbation(_base(), out, [0], progress=False)


@pytest.mark.slow
def test_sweep_table_shows_the_task_labels_own_drop_and_the_shuffled_floor(tmp_path):
    out = str(tmp_path / "sweep")
    summary = run_sweep(_base(shuffled_control=True, input_coding="four", fresh_trials=True), out, [0.1], [32], [0],
                        progress=False, log=lambda *_: None)
    cell = summary["cells"][0]
    floor = cell["runs"][0]["floor_bits"]
    assert floor is not None and 0 <= floor < 0.2  # a permuted label holds next to nothing
    table = format_summary(summary)
    assert "direction: drop from peak" in table and "floor (bits)" in table and f"{floor:.3f}" in table
    plain = run_sweep(_base(), str(tmp_path / "plain"), [0.1], [32], [0], progress=False, log=lambda *_: None)
    assert plain["cells"][0]["floor_bits"] is None and "floor" not in format_summary(plain)


def _fake_run(root, name, curve):
    """A run directory whose log holds coarse and fine rows at layer4 with fine's ``beyond_bits``."""
    d = os.path.join(root, name)
    os.makedirs(d)
    json.dump(RunConfig().to_json(), open(os.path.join(d, "config.json"), "w"))
    rows = []
    for step, (coarse, fine) in enumerate(curve):
        base = {"step": step, "epoch": float(step), "feature_set": "layer4", "status": "ok", "entropy_bits": 3.3}
        rows += [{**base, "label_set": "coarse", "bits": coarse},
                 {**base, "label_set": "fine", "bits": fine, "beyond_bits": fine - coarse, "beyond_of": "coarse"}]
    with open(os.path.join(d, "log.jsonl"), "w") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_sweep_summary_and_table_carry_the_information_beyond_the_task_label(tmp_path):
    from uinfo_fast.experiments.sweeps import summarise

    runs = [_fake_run(str(tmp_path), "a", [(0.2, 0.2), (0.8, 1.4), (0.9, 1.1)]),
            _fake_run(str(tmp_path), "b", [(0.2, 0.2), (0.8, 1.2), (0.9, 1.2)])]
    summary = summarise("images", {(0.1, 32): runs})
    cell = summary["cells"][0]
    assert cell["beyond_peak_bits"]["mean"] == pytest.approx(0.5)        # 0.6 and 0.4
    assert cell["beyond_drop_from_peak"]["mean"] == pytest.approx((2 / 3 + 1 / 4) / 2)  # 0.6 -> 0.2, 0.4 -> 0.3
    table = format_summary(summary)
    assert "fine beyond coarse: drop from peak" in table and "46% ± " in table


def test_every_cell_of_a_sweep_measures_after_the_same_examples():
    from uinfo_fast.experiments.sweeps import cell_schedule

    base = RunConfig(batch_size=32, track_every=160, early_until=160)
    assert cell_schedule(base, 256) == {"batch_size": 256, "track_every": 20, "early_until": 20}
    assert cell_schedule(base, 32) == {"batch_size": 32, "track_every": 160, "early_until": 160}
    assert cell_schedule(RunConfig(batch_size=32, track_every=3, early_until=0, early_points=0), 1024) == {
        "batch_size": 1024, "track_every": 1, "early_until": 0}


def test_a_single_seed_has_no_spread_and_the_figure_says_seed_and_keeps_coinciding_cells_apart(tmp_path):
    import matplotlib.pyplot as plt

    from uinfo_fast.experiments import plots
    from uinfo_fast.experiments.sweeps import summarise

    one = [_fake_run(str(tmp_path), "a", [(0.2, 0.2), (0.999, 1.4), (0.998, 1.1)])]
    other = [_fake_run(str(tmp_path), "b", [(0.2, 0.2), (0.999, 1.4), (0.998, 1.1)])]
    cells = {(0.1, 32): one, (0.01, 32): other}
    summary = summarise("images", cells)
    table = format_summary(summary)
    assert "±" not in table.split("\n", 1)[1] and summary["cells"][0]["beyond_peak_bits"]["sd"] is None
    kept = {}
    real_close = plt.close
    try:
        plt.close = lambda fig=None: kept.setdefault("fig", fig)
        plots.plot_sweep(summary, cells, str(tmp_path / "sweep.png"))
    finally:
        plt.close = real_close
    fig = kept["fig"]
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    styles = {line.get_linestyle() for line in fig.axes[-1].lines}
    assert all(label.endswith("(1 seed)") for label in labels) and len(styles) == 2
    assert all(ax.get_ylim()[0] <= 0 and ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)


def test_the_decay_against_noise_tables_leave_out_and_name_a_run_that_has_not_finished(tmp_path, capsys, monkeypatch):
    path = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "decay_vs_noise.py")
    spec = importlib.util.spec_from_file_location("decay_vs_noise", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = str(tmp_path / "sweep")
    run_sweep(_base(), out, [0.1], [32], [0, 1], progress=False, log=lambda *_: None)
    os.remove(os.path.join(out, "lr0.1_bs32_s1", "summary.json"))  # killed, or still running
    monkeypatch.setattr(sys, "argv", ["decay_vs_noise.py", out, "--layers", "hidden2"])
    script.main()
    printed = capsys.readouterr().out
    assert "left out, not finished" in printed and "lr0.1_bs32_s1" in printed.split("\n")[0]
    row = next(line for line in printed.splitlines() if line.startswith("| 0.1 | 32 |"))
    assert row.split(" | ")[6].startswith("1 ("), row  # seeds (learned): the finished one alone
    os.remove(os.path.join(out, "lr0.1_bs32_s0", "summary.json"))
    with pytest.raises(SystemExit, match="no finished run.*not finished: .*lr0.1_bs32_s0.*lr0.1_bs32_s1"):
        script.main()
