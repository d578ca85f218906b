"""What a newcomer reads and where runs go: run directories that never collide, a finished run
asked for again, the final table, the progress bar, and comparison plots."""
import json

import pytest

from uinfo_fast.experiments.cli import _print_final_rows, default_run_dir, main
from uinfo_fast.experiments.config import RunConfig


def _row(step, layer, label, bits, entropy, **extra):
    return {"step": step, "epoch": step / 10, "feature_set": layer, "label_set": label, "status": "ok", "bits": bits,
            "ci_low": None if bits is None else bits - 0.05, "ci_high": None if bits is None else bits + 0.05,
            "entropy_bits": entropy, **extra}


def test_run_directories_name_every_option_that_differs_from_the_defaults():
    main_job = default_run_dir(RunConfig.for_task())
    assert main_job == "runs/images_digits_lr0.1_bs32_s0"
    dirs = [default_run_dir(RunConfig.for_task(**kw)) for kw in
            (dict(shuffled_control=True), dict(track_every=10), dict(augment=True), dict(l2_grid=[0.1, 1.0]))]
    assert dirs == [main_job + "_shuffled-control", main_job + "_track-every10", main_job + "_augment",
                    main_job + "_l2-grid0.1-1"]
    # a dataset's own defaults are no difference
    assert default_run_dir(RunConfig.for_task(dataset="synthetic")) == "runs/images_synthetic_lr0.1_bs128_s0"


def test_the_final_table_has_intervals_entropy_beyond_and_names_every_file(tmp_path, capsys):
    rows = [_row(0, "layer4", "coarse", 0.1, 1.0), _row(8, "layer4", "coarse", 0.9, 1.0),
            _row(8, "layer4", "fine", 1.4, 3.3, beyond_bits=0.5, beyond_of="coarse"),
            {**_row(8, "layer3", "fine", None, None), "status": "constant_features"}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _print_final_rows(str(tmp_path))
    out = capsys.readouterr().out
    assert "step 8" in out and "95% interval" in out and "H(Y)" in out
    assert "layer4    fine        1.400  [1.350, 1.450]    3.300  0.500 beyond coarse" in out
    assert "none  (constant_features)" in out and "checkpoint.pt" in out


def test_the_progress_bar_names_the_layer_of_its_bits():
    from uinfo_fast.experiments.run import _TrainStats

    class Tracker:
        label_names = ["coarse", "fine"]

        def latest(self, layer, label):
            return _row(4, layer, label, 0.25, 1.0)

    assert _TrainStats().postfix(Tracker(), "layer4") == {"layer4/coarse": "0.25b", "layer4/fine": "0.25b"}


def test_a_comparison_plot_draws_each_runs_own_entropy():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uinfo_fast.experiments.plots import _curves

    runs = [[_row(s, "layer4", "fine", 0.5, h) for s in (0, 4)] for h in (3.3, 2.0)]
    fig, ax = plt.subplots()
    _curves(ax, runs, ["a", "b"], "layer4", "fine", "step", "C1")
    # axhline spans the axes: x from 0 to 1 in axes coordinates
    flat = {round(line.get_ydata()[0], 6) for line in ax.lines if list(line.get_xdata()) == [0, 1]}
    plt.close(fig)
    assert flat == {3.3, 2.0}


@pytest.mark.slow
def test_a_finished_run_asked_for_again_shows_its_results_and_writes_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    tiny = ["--dataset", "synthetic", "--n-train", "300", "--n-test", "200", "--width", "2", "--epochs", "0.5",
            "--probe-train", "100", "--probe-val", "40", "--probe-test", "60", "--track-every", "2",
            "--early-points", "0", "--layers", "layer4", "--n-bootstrap", "5", "--quiet", "--out", str(out)]
    assert main(["run", *tiny]) == 0
    log = (out / "log.jsonl").read_text()
    capsys.readouterr()
    assert main(["run", *tiny, "--tensorboard", str(tmp_path / "tb")]) == 0
    said = capsys.readouterr().out
    assert "already holds this run, finished" in said and "usable information at step" in said
    assert (out / "log.jsonl").read_text() == log and list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert main(["run", *tiny, "--lr", "0.05"]) == 2  # another config in the same directory is still refused


def test_the_run_figure_names_the_run_its_band_the_drops_and_fine_beyond_coarse(tmp_path):
    import matplotlib.pyplot as plt

    from uinfo_fast.experiments.plots import runs_figure

    run = tmp_path / "my_run"
    run.mkdir()
    rows = [r for s in (0, 4, 8) for r in (_row(s, "layer4", "coarse", 0.5, 1.0),
                                           _row(s, "layer4", "fine", 1.0, 3.3, beyond_bits=0.5, beyond_of="coarse"))]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"lr_drops": {"step": [4, 6], "epoch": [0.4, 0.6]}}))
    fig = runs_figure([str(run)])
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    drops = [line.get_xdata()[0] for line in fig.axes[0].lines if list(line.get_ydata()) == [0, 1]]
    plt.close(fig)
    assert "my_run" in fig._suptitle.get_text()
    assert {"coarse: 95% interval", "learning rate x0.1", "fine beyond coarse (fine bits - coarse bits)"} <= set(texts)
    assert drops == [4, 6]


def test_the_plan_names_the_steps_its_learning_rate_drops_at():
    from uinfo_fast.experiments import Plan

    plan = Plan(RunConfig(lr_schedule="step", warmup_epochs=0.0, epochs=1.0, batch_size=10), 1000)
    drops = plan.lr_drops()
    assert drops == [50, 75]
    assert all(plan.lr(s) == pytest.approx(0.1 * plan.lr(s - 1)) for s in drops)
    assert Plan(RunConfig(lr_schedule="cosine"), 1000).lr_drops() == []


def test_config_json_names_the_layers_and_label_sets_the_task_chose_and_a_resume_still_matches(tmp_path):
    from uinfo_fast.experiments import run_experiment

    from .test_experiment import _cfg

    cfg = _cfg(epochs=0.2, hidden=[20, 20, 20])
    assert cfg.layers is None and cfg.label_sets is None
    run_experiment(cfg, str(tmp_path / "run"), progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["layers"] == ["hidden1", "hidden2", "hidden3"]
    assert saved["label_sets"] == ["direction", "colour", "targets"]
    assert RunConfig.from_json(saved).same_run(cfg) and not RunConfig.from_json(saved).same_run(_cfg(epochs=0.2))
    run_experiment(cfg, str(tmp_path / "run"), resume=True, progress=False)  # the unresolved config resumes it
    images = RunConfig.for_task().resolved()
    assert images.layers == ["layer1", "layer2", "layer3", "layer4"] and images.label_sets == ["coarse", "fine"]


def test_a_run_figure_offers_a_log_step_axis(tmp_path):
    from uinfo_fast.experiments.plots import runs_figure

    rows = [_row(s, "layer4", "coarse", 0.1 * k, 1.0) for k, s in enumerate((0, 1, 5, 29, 100, 200))]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runs_figure([str(tmp_path)]).axes[0].get_xscale() == "linear"
    assert runs_figure([str(tmp_path)], log_x=True).axes[0].get_xscale() == "symlog"
    assert main(["plot", str(tmp_path), "--log-x", "--out", str(tmp_path / "log.png")]) == 0
