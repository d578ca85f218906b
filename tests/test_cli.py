import json

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
    assert main(["perturb", "--task", "checkerboard", "--seed", "1", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["perturb", "--task", "checkerboard", "--out", str(tmp_path / "p")]) == 2
    assert "early_steps" in capsys.readouterr().err
