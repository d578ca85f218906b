"""The README's commands, run as written, in order, in one directory: the main job of "Two
commands", then every line of "The command line" that works offline on a CPU. Each task runs
at a tiny size (its defaults shrunk here, so that the directories the commands name stay the
ones a user gets). A README that drifts from the code fails here."""
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from uinfo_fast.experiments.cli import main
from uinfo_fast.tasks import registry

README = Path(__file__).resolve().parents[1] / "README.md"
# What needs the network, a GPU or torchrun is left out.
OFFLINE = re.compile(r"--download|--data-dir|--device cuda")
TINY = dict(n_train=300, n_test=260, probe_train=100, probe_val=40, probe_test=60, n_bootstrap=10, early_points=2)
# The checkerboard's runs are long enough for the README's 500 perturbed early steps at batch 16.
TINY_TASK = {"images": dict(TINY, epochs=0.4, width=2, layers=["layer3", "layer4"], track_every=4, early_until=4),
             "checkerboard": dict(TINY, epochs=30.0, hidden=[8, 8], track_every=200, early_until=200)}


def _section(title: str) -> str:
    text = README.read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def readme_commands() -> list[list[str]]:
    """The main job (the last part of command 1), then the command-line section's commands."""
    first = re.search(r"```bash\n(.*?)```", _section("Two commands"), re.S).group(1)
    main_job = next(line for line in first.splitlines() if not line.startswith("#")).split("&&")[-1]
    block = re.search(r"```bash\n(.*?)```", _section("The command line"), re.S).group(1)
    lines = [main_job] + [line.split(" #")[0] for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.strip().startswith("uinfo-fast") and not OFFLINE.search(line)]


@pytest.fixture
def tiny_tasks(monkeypatch):
    for name, tiny in TINY_TASK.items():
        task = registry.get_task(name)
        datasets = tuple(dataclasses.replace(d, defaults={**d.defaults, **tiny}) for d in task.datasets)
        monkeypatch.setitem(registry._REGISTERED, name, dataclasses.replace(task, defaults={**task.defaults, **tiny},
                                                                             datasets=datasets))


@pytest.mark.slow
def test_the_readmes_commands_run_in_order_in_one_directory(tmp_path, monkeypatch, tiny_tasks, capsys):
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert len(commands) >= 12, commands
    for argv in commands:
        argv = argv + (["--quiet"] if argv[0] in ("run", "sweep", "perturb") else [])
        if argv[0] == "demo":
            argv += ["--n-train", "400", "--n-test", "200", "--dim", "8"]
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    assert (tmp_path / "runs" / "tb").is_dir() and (tmp_path / "runs" / "compare.png").is_file()
