import json
import os
import re

import pytest

from uinfo_fast.experiments.cli import main


@pytest.mark.slow
def test_demo_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--n-train", "1500", "--n-test", "600", "--dim", "24", "--layers", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "usable_information.json").read_text())
    assert {(r["feature_set"], r["label_set"]) for r in rows} == {
        (f"layer{i}", lab) for i in (1, 2) for lab in ("coarse", "fine")}
    # Deeper synthetic layers carry more signal.
    bits = {(r["feature_set"], r["label_set"]): r["bits"] for r in rows}
    assert bits["layer2", "coarse"] > bits["layer1", "coarse"] > 0
    assert (out / "usable_information.png").stat().st_size > 1000
    assert "I_u (bits)" in capsys.readouterr().out


_TINY_IMAGES = ["--n-train", "512", "--n-test", "128", "--width", "4", "--epochs", "1", "--batch-size", "64",
                "--probe-train", "200", "--probe-val", "28", "--probe-test", "100", "--track-every", "4", "--early-points", "0",
                "--layers", "layer2,layer4", "--l2-grid", "1e-3,1e-1", "--n-bootstrap", "20", "--quiet"]


@pytest.mark.slow
def test_run_images_then_plot_two_runs(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", *_TINY_IMAGES, "--out", str(a)]) == 0
    assert main(["run", *_TINY_IMAGES, "--lr", "0.01", "--out", str(b)]) == 0
    out = capsys.readouterr().out
    assert "usable information at step 8" in out and "layer4    fine" in out
    rows = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [0, 4, 8]
    assert {(r["feature_set"], r["label_set"]) for r in rows} == {(l, s) for l in ("layer2", "layer4") for s in ("coarse", "fine")}
    assert json.loads((b / "config.json").read_text())["lr"] == 0.01
    assert (a / "usable_information.png").stat().st_size > 1000
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "both.png"), "--x", "epoch", "--log-x"]) == 0
    assert (tmp_path / "both.png").stat().st_size > 1000


@pytest.mark.slow
def test_resume_keeps_the_config_of_the_run(tmp_path, capsys):
    a = tmp_path / "a"
    assert main(["run", *_TINY_IMAGES, "--out", str(a)]) == 0
    assert main(["run", "--resume", "--out", str(a), "--lr", "0.5"]) == 2
    assert "differ" in capsys.readouterr().err
    assert main(["run", "--resume", "--out", str(a), "--quiet"]) == 0  # a finished run resumes to its end


@pytest.mark.slow
def test_errors_are_named_on_the_command_line(tmp_path, capsys):
    assert main(["run", *_TINY_IMAGES, "--layers", "layer2,block9", "--out", str(tmp_path / "x")]) == 2
    assert "'block9' is not a module" in capsys.readouterr().err
    missing = tmp_path / "no_cifar"
    assert main(["run", "--dataset", "cifar100", "--data-dir", str(missing), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--download" in err
    assert main(["run", *_TINY_IMAGES, "--label-sets", "coarse,species", "--out", str(tmp_path / "z")]) == 2
    assert "species" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "log.jsonl" in capsys.readouterr().err


def test_sweep_and_perturb_name_their_grid_options(tmp_path, capsys):
    assert main(["sweep", "--lrs", "0.1", "--batch-sizes", "32", "--lr", "0.2", "--out", str(tmp_path)]) == 2
    assert "--lrs" in capsys.readouterr().err
    assert main(["sweep", "--batch-sizes", "32", "--out", str(tmp_path / "s")]) == 2
    assert "lr_scale_with_batch" in capsys.readouterr().err
    assert main(["sweep", "--lrs", "0.1", "--batch-sizes", "32", "--weight-decay", "0", "--weight-decays", "0,1e-3",
                 "--out", str(tmp_path / "s")]) == 2
    assert "--weight-decays" in capsys.readouterr().err
    assert main(["sweep", "--lrs", "0.1", "--batch-sizes", "32", "--weight-decay", "0", "--wd-scale-with-lr",
                 "--out", str(tmp_path / "s")]) == 2
    assert "--weight-decay" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "s")  # refused before anything was written
    assert main(["perturb", "--task", "checkerboard", "--seed", "1", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["perturb", "--task", "checkerboard", "--out", str(tmp_path / "p")]) == 2
    assert "early_steps" in capsys.readouterr().err


# --- CIFAR-10 with coarse groups --------------------------------------------------------------

def _tiny_cifar10_loader(monkeypatch):
    """Runs verify the MD5 sums of the real archive; the tiny one is loaded without that check."""
    import functools

    from uinfo_fast.tasks.images import data

    monkeypatch.setattr(data, "load_cifar10", functools.partial(data.load_cifar10, verify=False))


@pytest.mark.slow
def test_run_cifar10_with_coarse_groups_end_to_end(tmp_path, capsys, monkeypatch):
    from uinfo_fast.experiments import RunConfig

    from .cifar_archive import write_tiny_cifar10

    root = write_tiny_cifar10(tmp_path / "data", n_per_batch=40, n_test=60)
    _tiny_cifar10_loader(monkeypatch)
    out = tmp_path / "run"
    assert main(["run", "--dataset", "cifar10", "--data-dir", str(root), "--coarse-groups", "0,9/1,2,3/4,5,6,7,8",
                 "--width", "2", "--epochs", "1", "--batch-size", "50", "--no-augment", "--probe-train", "100",
                 "--probe-val", "20", "--probe-test", "40", "--track-every", "4", "--early-points", "0",
                 "--layers", "layer4", "--l2-grid", "1e-2", "--n-bootstrap", "5", "--quiet", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["dataset"] == "cifar10" and saved["coarse_groups"] == [[0, 9], [1, 2, 3], [4, 5, 6, 7, 8]]
    assert RunConfig.from_json(saved).to_json() == saved
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {r["label_set"] for r in rows} == {"coarse", "fine"}
    entropy = {r["label_set"]: r["entropy_bits"] for r in rows}
    assert entropy["coarse"] < 2 < entropy["fine"]  # 3 groups against 10 classes
    assert "layer4    fine" in capsys.readouterr().out


def test_run_cifar10_without_the_files_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no_cifar10"
    assert main(["run", "--dataset", "cifar10", "--data-dir", str(missing), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(missing) in err and "--download" in err and "CIFAR-10" in err


@pytest.mark.parametrize("argv,match", [
    (["--dataset", "synthetic", "--coarse-groups", "0,1,2,3,4/5,6,7,8,9"], "coarse_groups applies to the datasets \\['cifar10', 'digits'\\] only"),
    (["--dataset", "cifar10", "--data-dir", "d", "--coarse-groups", "0,1,2,3,4/5,6,7,8"], r"missing: \[9\]"),
    (["--dataset", "cifar10", "--data-dir", "d", "--coarse-groups", "0,1,2,3,4,5,6,7,8,9"], "fewer than 2 groups"),
])
def test_coarse_groups_are_checked_on_the_command_line(tmp_path, capsys, argv, match):
    import re

    assert main(["run", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "coarse_groups" in err and re.search(match, err)


@pytest.mark.parametrize("value", ["0,1/2,x", "0,1//2", "0;1/2"])
def test_coarse_groups_syntax_errors_come_from_argparse(capsys, value):
    with pytest.raises(SystemExit) as info:
        main(["run", "--dataset", "cifar10", "--coarse-groups", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--coarse-groups" in err and "0,1,2,3,4/5,6,7,8,9" in err and repr(value) in err


def test_coarse_groups_parse_into_the_config_and_its_json():
    from uinfo_fast.experiments import RunConfig
    from uinfo_fast.experiments.cli import _given, build_parser, default_run_dir

    def config(*argv):
        return RunConfig.for_task(**_given(build_parser().parse_args(["run", "--dataset", "cifar10", "--data-dir", "d",
                                                                       *argv])))

    cfg = config("--coarse-groups", "0,9/1,2,3/4,5,6,7,8")
    assert cfg.coarse_groups == [[0, 9], [1, 2, 3], [4, 5, 6, 7, 8]]
    assert RunConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    # Default run directories tell groupings apart; the default grouping is plain "cifar10".
    dirs = {default_run_dir(c) for c in (cfg, config(), config("--coarse-groups", "0,1,2,3,4/5,6,7,8,9"),
                                         config("--coarse-groups", "5,6,7,8,9/0,1,2,3,4"))}
    assert len(dirs) == 3 and "runs/images_cifar10_lr0.1_bs128_s0" in dirs and any("cifar10_g09-123-45678" in d
                                                                                     for d in dirs)


def _run_parser():
    from uinfo_fast.experiments.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices


def test_every_option_of_a_run_is_on_the_command_line_with_its_real_default():
    from uinfo_fast.experiments.cli import _shown
    from uinfo_fast.experiments.config import FLAT, RunConfig

    run = {s[2:].replace("-", "_"): a for a in _run_parser()["run"]._actions for s in a.option_strings}
    defaults = RunConfig.for_task().flat()
    assert set(FLAT) <= set(run)
    for name in FLAT:
        assert f"(default: {_shown(defaults[name])}" in run[name].help, name


@pytest.mark.parametrize("argv,field,value", [
    (["--track-every", "7"], "schedule", 7), (["--l2-grid", "0.1,1"], "estimator", (0.1, 1.0)),
    (["--pool", "max"], "capture", "max"), (["--no-augment"], "augment", False), (["--augment"], "augment", True),
    (["--fixed-trials", "--task", "checkerboard"], "fresh_trials", False), (["--project-to", "none"], "capture", None)])
def test_options_reach_the_nested_config(argv, field, value):
    from uinfo_fast.experiments.cli import _given
    from uinfo_fast.experiments.config import RunConfig

    cfg = RunConfig.for_task(**_given(_run_parser()["run"].parse_args(argv)))
    got = {"schedule": lambda c: c.schedule.every, "estimator": lambda c: c.estimator.l2_grid,
           "capture": lambda c: c.capture.pool if value != None else c.capture.project_to}.get(  # noqa: E711
        field, lambda c: getattr(c, field))(cfg)
    assert got == value


def test_the_help_names_the_real_default_task_and_hides_what_a_grid_sets(capsys):
    from uinfo_fast.experiments.cli import build_parser

    assert "built-in digit set" in build_parser().format_help()
    parsers = _run_parser()
    flags = set(re.findall(r"--[a-z0-9-]+", parsers["sweep"].format_help()))
    assert not {"--lr", "--batch-size", "--seed"} & flags and {"--lrs", "--batch-sizes", "--seeds"} <= flags
    assert main(["sweep", "--lrs", "0.1", "--batch-sizes", "32", "--lr", "0.1"]) == 2
    assert "set by the grid" in capsys.readouterr().err
