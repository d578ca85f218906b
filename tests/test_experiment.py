"""The training run: outputs, determinism, and a run killed mid-way then resumed.

The checkerboard task keeps these runs to seconds; the image task shares the same loop and
is exercised in test_cli.py on a tiny configuration.
"""
import json
import os
import shutil
import time

import pytest
import torch

from uinfo_fast.experiments import run as experiment
from uinfo_fast.experiments import Plan, RunConfig, run_experiment
from uinfo_fast.tracking.log import read_log

from .toy import CHECKERBOARD_BEFORE_17


def _cfg(**kw):
    base = dict(CHECKERBOARD_BEFORE_17, n_train=640, n_test=200, epochs=2.0, batch_size=32, probe_train=300,
                probe_val=50, probe_test=150, track_every=10, early_until=4, early_points=3, l2_grid=[1e-3, 1e-1],
                n_bootstrap=20)
    return RunConfig.for_task("checkerboard", **{**base, **kw})


def _keys(rows):
    return [(r["step"], r["feature_set"], r["label_set"]) for r in rows]


@pytest.mark.slow
def test_run_writes_config_log_summary_and_plot(tmp_path):
    out = str(tmp_path / "run")
    summary = run_experiment(_cfg(), out, progress=False)
    for f in ("config.json", "log.jsonl", "summary.json", "checkpoint.pt", "usable_information.png"):
        assert os.path.exists(os.path.join(out, f)), f
    assert RunConfig.from_json(json.load(open(os.path.join(out, "config.json")))) == _cfg().resolved()
    rows = read_log(os.path.join(out, "log.jsonl"))
    steps = sorted({r["step"] for r in rows})
    assert steps == [0, 1, 2, 4, 10, 20, 30, 40]  # 40 steps: early points 1, 2, 4, every 10, and the end
    assert len(rows) == len(steps) * 2 * 3  # 2 hidden layers x 3 label sets
    assert summary["steps"] == 40 and 0 < summary["measure_share"] < 1
    assert all(r["bits"] <= r["entropy_bits"] + 0.05 and r["ci_low"] <= r["bits"] <= r["ci_high"] for r in rows)
    assert [r["epoch"] for r in rows if r["step"] == 40][0] == 2.0


class Killed(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before_checkpoint", "mid_training"])
def test_killed_run_resumes_without_lost_or_duplicated_rows(tmp_path, monkeypatch, where):
    ref_dir, out = str(tmp_path / "ref"), str(tmp_path / "killed")
    run_experiment(_cfg(), ref_dir, progress=False)
    ref_rows = read_log(os.path.join(ref_dir, "log.jsonl"))

    real_save, real_lr = experiment.save_checkpoint, Plan.lr
    calls = {"n": 0}

    def dying_save(obj, path):  # dies after the 5th measurement's rows are in the log
        calls["n"] += 1
        if calls["n"] == 5:
            raise Killed()
        real_save(obj, path)

    def dying_lr(self, step):  # dies in the middle of the steps between two measurements
        if step == 26:
            raise Killed()
        return real_lr(self, step)

    if where == "before_checkpoint":
        monkeypatch.setattr(experiment, "save_checkpoint", dying_save)
    else:
        monkeypatch.setattr(Plan, "lr", dying_lr)
    with pytest.raises(Killed):
        run_experiment(_cfg(), out, progress=False)
    monkeypatch.undo()
    partial = read_log(os.path.join(out, "log.jsonl"))
    assert 0 < len(partial) < len(ref_rows)
    with open(os.path.join(out, "log.jsonl"), "a") as fh:  # and a torn line for good measure
        fh.write('{"step": 99, "lay')

    run_experiment(_cfg(), out, resume=True, progress=False)
    rows = read_log(os.path.join(out, "log.jsonl"))
    assert _keys(rows) == _keys(ref_rows)
    # the batches after the resume are the ones the uninterrupted run saw: same final weights
    a = torch.load(os.path.join(ref_dir, "checkpoint.pt"), weights_only=False)["model"]
    b = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # rows written before the kill are kept as they were
    assert rows[:len(partial) - 6 * (where == "before_checkpoint")] == partial[:len(partial) - 6 * (where == "before_checkpoint")]


def _slow_saves(monkeypatch, seconds: float) -> list[int]:
    """Checkpoints that take at least ``seconds`` each; returns the list of the steps they save."""
    real_save, saved = experiment.save_checkpoint, []

    def slow_save(state, path):
        time.sleep(seconds)
        real_save(state, path)
        saved.append(state["step"])

    monkeypatch.setattr(experiment, "save_checkpoint", slow_save)
    return saved


def _killed_before(step: int, cfg, out: str, monkeypatch) -> None:
    """Runs ``cfg`` into ``out`` until it is killed before training step ``step``."""
    real_lr = Plan.lr

    def dying_lr(self, s):
        if s == step:
            raise Killed()
        return real_lr(self, s)

    monkeypatch.setattr(Plan, "lr", dying_lr)
    with pytest.raises(Killed):
        run_experiment(cfg, out, progress=False)
    monkeypatch.setattr(Plan, "lr", real_lr)


@pytest.mark.slow
def test_a_run_measured_at_every_step_checkpoints_sparsely_and_resumes_from_the_last(tmp_path, monkeypatch):
    cfg = _cfg(track_every=1)
    ref = run_experiment(cfg, str(tmp_path / "ref"), progress=False)
    monkeypatch.setattr(experiment, "CHECKPOINT_SHARE", 0.05)
    saved = _slow_saves(monkeypatch, 0.1)  # a checkpoint as dear as a large model's: the next waits for 20x its time
    out = str(tmp_path / "killed")
    _killed_before(26, cfg, out, monkeypatch)
    assert saved[0] == 0 and 1 <= len(saved) < 26 / 2  # measured at steps 0-25, checkpointed at few
    resumed = run_experiment(cfg, out, resume=True, progress=False)
    assert saved[-1] == 40 and resumed["measurements"] == ref["measurements"] == 41
    assert _keys(read_log(os.path.join(out, "log.jsonl"))) == _keys(read_log(os.path.join(tmp_path / "ref", "log.jsonl")))
    a = torch.load(os.path.join(tmp_path / "ref", "checkpoint.pt"), weights_only=False)["model"]
    b = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_the_summary_counts_the_seconds_of_every_checkpoint_resumed_or_not(tmp_path, monkeypatch):
    """Every checkpoint takes at least 0.05 s here and one is written at every measurement
    (tests/conftest.py): the summary of a run killed and resumed counts all of them but the one
    it resumed from, whose write its own state cannot hold."""
    saved = _slow_saves(monkeypatch, 0.05)
    out = str(tmp_path / "killed")
    _killed_before(26, _cfg(), out, monkeypatch)
    before = len(saved)
    summary = run_experiment(_cfg(), out, resume=True, progress=False)
    assert before >= 4 and len(saved) > before
    assert 0.05 * (len(saved) - 1) <= summary["checkpoint_seconds"] < 0.05 * len(saved) + 1.0


@pytest.mark.slow
def test_resume_refuses_another_config_and_a_fresh_run_refuses_an_old_dir(tmp_path):
    out = str(tmp_path / "run")
    run_experiment(_cfg(), out, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run_experiment(_cfg(), out, progress=False)
    with pytest.raises(ValueError, match="lr"):
        run_experiment(_cfg(lr=0.5), out, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="config.json"):
        run_experiment(_cfg(), str(tmp_path / "nothing"), resume=True, progress=False)


def test_plan_perturbed_early_steps_cover_the_same_examples():
    plain = Plan(_cfg(), 640)
    pert = Plan(_cfg(early_steps=5, early_batch_size=8, early_lr=0.5), 640)
    assert plain.total_steps == 40
    assert pert.total_steps == 5 + (1280 - 40 + 31) // 32
    assert [pert.batch_size(s) for s in (0, 4, 5)] == [8, 8, 32]
    assert [pert.lr(s) for s in (0, 4, 5)] == [0.5, 0.5, 0.05]
    assert pert.offset(5) == 40 and pert.offset(6) == 72
    # an epoch is a permutation: the first 640 examples seen are each example once
    seen = torch.cat([plain.indices(s) for s in range(20)])
    assert sorted(seen.tolist()) == list(range(640))
    assert not torch.equal(plain.indices(0), plain.indices(20))  # a new permutation each epoch


@pytest.mark.parametrize("kw,match", [(dict(lr_schedule="linear"), "lr_schedule"), (dict(batch_size=0), "batch_size"),
                                      (dict(task="audio"), "task"), (dict(epochs=0), "epochs")])
def test_bad_config_is_named(kw, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**kw)


def _killed_run(tmp_path, name="run", cfg=None, after=5, resume=False, **kw):
    """The directory of a run (``cfg``, else ``_cfg(**kw)``) killed right after its ``after``-th
    checkpoint (``resume``: of the run already there, resumed)."""
    out = str(tmp_path / name)
    real_save, calls = experiment.save_checkpoint, {"n": 0}

    def dying_save(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == after:
            raise Killed()

    experiment.save_checkpoint = dying_save
    try:
        with pytest.raises(Killed):
            run_experiment(cfg or _cfg(**kw), out, resume=resume, progress=False)
    finally:
        experiment.save_checkpoint = real_save
    return out


@pytest.mark.slow
def test_resume_refuses_a_missing_or_short_log(tmp_path):
    out = _killed_run(tmp_path)
    log = os.path.join(out, "log.jsonl")
    rows = read_log(log)
    with open(log, "w") as fh:  # the last measurement's rows gone
        fh.write("".join(json.dumps(r) + "\n" for r in rows[:-6]))
    with pytest.raises(ValueError, match="holds 24 rows, but .* was written after 30 rows"):
        run_experiment(_cfg(), out, resume=True, progress=False)
    os.remove(log)
    with pytest.raises(ValueError, match="log.jsonl is missing"):
        run_experiment(_cfg(), out, resume=True, progress=False)


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    out, other, twin = _killed_run(tmp_path), _killed_run(tmp_path, "other", lr=0.5), _killed_run(tmp_path, "twin")
    shutil.copy(os.path.join(other, "checkpoint.pt"), out)
    with pytest.raises(ValueError, match=r"belongs to another run \(its config differs in \['lr'\]\)"):
        run_experiment(_cfg(), out, resume=True, progress=False)
    # a run of the same config elsewhere: its checkpoint was written after other rows (timings differ)
    shutil.copy(os.path.join(twin, "checkpoint.pt"), out)
    with pytest.raises(ValueError, match="are not the ones"):
        run_experiment(_cfg(), out, resume=True, progress=False)


@pytest.mark.slow
def test_resume_refuses_a_truncated_checkpoint_in_one_line(tmp_path, capsys):
    from uinfo_fast.experiments.cli import main

    out = _killed_run(tmp_path)
    path = os.path.join(out, "checkpoint.pt")
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match="cannot be read .*damaged or truncated"):
        run_experiment(_cfg(), out, resume=True, progress=False)
    assert main(["run", "--resume", "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "damaged or truncated" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_resumed_run_measures_the_bits_of_the_uninterrupted_one(tmp_path):
    """Resumed, the tracker fits cold what the uninterrupted run fitted warm: near-separable fine
    labels (3 probe rows per class) on bit-identical weights must still give the same bits."""
    cfg = RunConfig(dataset="synthetic", epochs=2.0, n_train=1000, n_test=600, width=4, probe_train=300, probe_val=100, probe_test=200,
                    batch_size=50, track_every=4, seed=3, n_bootstrap=0)
    ref = str(tmp_path / "ref")
    run_experiment(cfg, ref, progress=False)
    out = _killed_run(tmp_path, "killed", cfg=cfg, after=6)
    run_experiment(cfg, out, resume=True, progress=False)
    a, b = read_log(os.path.join(ref, "log.jsonl")), read_log(os.path.join(out, "log.jsonl"))
    assert _keys(a) == _keys(b)
    worst = max(abs(r["bits"] - s["bits"]) for r, s in zip(a, b))
    assert worst <= 0.01, worst


@pytest.mark.slow
def test_resume_accepts_a_checkpoint_written_before_a_config_field_existed(tmp_path):
    # A field added to RunConfig later (coarse_groups, say) is absent from older checkpoints and
    # config files: it takes its default, and the run resumes.
    out = _killed_run(tmp_path)
    path = os.path.join(out, "checkpoint.pt")
    state = torch.load(path, weights_only=False)
    del state["config"]["coarse_groups"]
    torch.save(state, path)
    config = json.load(open(os.path.join(out, "config.json")))
    del config["coarse_groups"]
    json.dump(config, open(os.path.join(out, "config.json"), "w"))
    summary = run_experiment(_cfg(), out, resume=True, progress=False)
    assert summary["steps"] == Plan(_cfg(), _cfg().n_train).total_steps


def test_the_default_images_run_is_the_digit_set_and_each_dataset_brings_its_own_defaults():
    default = RunConfig.for_task()
    assert default.dataset == "digits" and default == RunConfig()
    synthetic = RunConfig.for_task(dataset="synthetic")
    assert synthetic.probe_train == 5_000 and synthetic.n_train == 10_000  # 50 per class of its 100
    assert RunConfig.for_task(dataset="synthetic", probe_train=7).probe_train == 7  # given beats the dataset's
    assert RunConfig(task="checkerboard").dataset == "synthetic"  # None: the task's first dataset


@pytest.mark.parametrize("probe_train,starved", [(100, True), (500, False)])
def test_a_probe_set_with_fewer_than_50_examples_per_class_is_warned_about(probe_train, starved):
    import warnings

    from uinfo_fast.tasks.registry import build_task

    cfg = RunConfig(n_train=600, n_test=100, width=2, probe_train=probe_train, probe_val=20, probe_test=50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_task(cfg)
    said = [str(w.message) for w in caught if "probe examples each" in str(w.message)]
    assert bool(said) == starved
    if starved:
        assert said == ["probe_train=100 gives the 10 'fine' classes 10 probe examples each; the estimate needs "
                        "about 50 per class (probe_train >= 500)"]


@pytest.mark.parametrize("batch_size", [32, 256])
def test_warmup_ramps_the_rate_over_the_same_examples_at_every_batch_size(batch_size):
    plan = Plan(RunConfig(warmup_epochs=2.0, batch_size=batch_size, lr=0.1, lr_schedule="constant"), 1000)
    halfway = 1000 // batch_size  # one epoch of the two
    assert plan.lr(0) == pytest.approx(0.1 * batch_size / 2000)
    assert plan.lr(halfway - 1) == pytest.approx(0.1 * halfway * batch_size / 2000)
    assert plan.lr(2000 // batch_size + 1) == 0.1 and plan.lr(plan.total_steps - 1) == 0.1
    rates = [plan.lr(s) for s in range(plan.total_steps)]
    assert rates == sorted(rates)  # never down during or after the ramp at a constant schedule
    assert Plan(RunConfig(lr_schedule="constant", warmup_epochs=0.0), 1000).lr(0) == RunConfig().lr


def test_a_config_written_before_the_warmup_existed_reads_back_without_one():
    saved = RunConfig(lr_schedule="constant").to_json()
    del saved["warmup_epochs"]
    assert RunConfig.from_json(saved).warmup_epochs == 0.0  # as the run was made, not today's default
    assert RunConfig.from_json(RunConfig().to_json()) == RunConfig()
