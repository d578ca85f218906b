"""Tasks own their data: each declares its datasets and checks the config fields it reads; the
run configuration reaches them through the registry alone, and a user's task with its own
dataset runs like a built-in one."""
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from uinfo_fast.experiments import RunConfig, run_experiment
from uinfo_fast.tasks import Dataset, Task, TaskData, build_task, get_task, probe_sets, register_task, registry
from uinfo_fast.tasks.images import CIFAR10_STATS, CIFAR100_STATS, DIGITS_STATS, ChannelStats, normalize

PACKAGE = Path(__file__).resolve().parents[1] / "uinfo_fast"


def _imported_modules(path: Path) -> set[str]:
    """The modules a file imports, relative ones resolved within uinfo_fast.experiments."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ["uinfo_fast", "experiments"][: 2 - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            out |= {target} | {f"{target}.{a.name}" for a in node.names}
    return out


def test_the_run_config_imports_no_task_but_the_registry():
    imported = _imported_modules(PACKAGE / "experiments" / "config.py")
    tasks = {m for m in imported if m.startswith("uinfo_fast.tasks")}
    assert tasks and all(m.startswith("uinfo_fast.tasks.registry") for m in tasks), tasks
    code = ("import sys, uinfo_fast.experiments.config; print([m for m in sys.modules "
            "if m.startswith(('uinfo_fast.tasks.images', 'uinfo_fast.tasks.checkerboard'))])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent).stdout.strip()
    assert loaded == "[]"


def test_the_registry_holds_tasks_and_their_lookup_only():
    public = {n for n, obj in vars(registry).items()
              if not n.startswith("_") and getattr(obj, "__module__", None) == registry.__name__}
    assert public == {"Dataset", "Task", "TaskData", "build_task", "get_task", "register_task", "task_names"}


_STATS = {"digits": DIGITS_STATS, "synthetic": CIFAR100_STATS, "cifar100": CIFAR100_STATS, "cifar10": CIFAR10_STATS}


def test_the_built_in_tasks_declare_their_datasets():
    images, checkerboard = get_task("images"), get_task("checkerboard")
    assert images.dataset_names == ("digits", "synthetic", "cifar100", "cifar10")
    for d in images.datasets:
        assert isinstance(d, Dataset) and callable(d.load) and d.stats == _STATS[d.name]
        assert isinstance(d.stats, ChannelStats)
    assert {d.name for d in images.datasets if d.grouped} == {"cifar10", "digits"}
    assert {d.name: d.folder for d in images.datasets if d.folder} == {"cifar100": "cifar-100-python",
                                                                       "cifar10": "cifar-10-batches-py"}
    (trials,) = checkerboard.datasets
    assert trials.name == "synthetic" and trials.stats is None and not trials.grouped and callable(trials.load)
    for task in (images, checkerboard):
        for d in task.datasets:
            cfg = RunConfig.for_task(task.name, dataset=d.name)
            assert all(cfg.flat()[k] == v for k, v in {**task.defaults, **d.defaults}.items()), (task.name, d.name)


@pytest.mark.filterwarnings("ignore:probe_train=")  # probe sets this small are what the test wants
def test_a_dataset_loads_its_splits_and_is_normalised_with_its_own_stats():
    cfg = RunConfig.for_task(n_train=60, n_test=40, coarse_groups=[[0, 9], [1, 2, 3, 4, 5, 6, 7, 8]])
    train, test = get_task("images").dataset("digits").splits(cfg)
    assert (len(train), len(test)) == (60, 40) and int(train.coarse.max()) == 1
    built = build_task(RunConfig.for_task(n_train=60, n_test=40, probe_train=20, probe_val=5, probe_test=10))
    assert torch.equal(built.preprocess(built.train_x[:3], None), normalize(built.train_x[:3], DIGITS_STATS))
    with pytest.raises(ValueError, match=r"dataset 'cifar100' needs data_dir.*cifar-100-python/"):
        get_task("images").dataset("cifar100").splits(RunConfig(dataset="cifar100"))
    with pytest.raises(ValueError, match=r"dataset must be one of \('synthetic',\) for the checkerboard task"):
        get_task("checkerboard").dataset("digits")


def test_the_checkerboard_defaults_are_the_one_place_that_says_four():
    assert get_task("checkerboard").defaults["input_coding"] == "four"
    assert RunConfig.for_task("checkerboard").input_coding == "four"
    said = re.compile(r"""input_coding["']?\s*[=:]\s*["']four["']""")
    places = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if said.search(p.read_text())]
    assert places == [os.path.join("tasks", "checkerboard", "task.py")]


@pytest.mark.parametrize("task, kw, match", [
    ("images", {"coherences": [0.5]},
     r"coherences is not an option of the images task \(its options: \['coarse_groups'\]\)"),
    ("checkerboard", {"coarse_groups": [[0], [1]]}, r"its options: \['coherences', 'hidden', 'input_coding'"),
    ("images", {"dataset": "cifar100", "coarse_groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]},
     r"coarse_groups applies to the datasets \['cifar10', 'digits'\] only, got it with dataset 'cifar100'"),
    ("images", {"coarse_groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8]]},
     r"coarse_groups must be a partition.*missing: \[9\]"),
])
def test_each_task_checks_the_fields_it_reads(task, kw, match):
    with pytest.raises(ValueError, match=match):
        RunConfig.for_task(task, **kw)


def test_coarse_groups_are_kept_as_the_lists_config_json_gives_back():
    cfg = RunConfig.for_task(coarse_groups=((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)))
    assert cfg.coarse_groups == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert RunConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


def test_a_task_takes_declared_datasets_only():
    with pytest.raises(TypeError, match="datasets must be a non-empty tuple of uinfo_fast.tasks.Dataset"):
        Task(name="x", label_sets=("a",), task_label="a", irrelevant_label="a", datasets=("synthetic",),
             build=lambda cfg: None, data_tag=lambda cfg: "x")
    with pytest.raises(TypeError, match="load must be a callable"):
        Dataset("blobs", load=None)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        Dataset("", load=lambda cfg: None)


def test_probe_sets_are_the_same_for_a_seed():
    from uinfo_fast.tasks.probes import probe_indices

    cfg, other = RunConfig(probe_train=30, probe_val=10, probe_test=20), RunConfig(probe_train=30, probe_val=10,
                                                                                   probe_test=20, seed=1)
    first, again = probe_indices(cfg, 100, 50), probe_indices(cfg, 100, 50)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], probe_indices(other, 100, 50)[0])
    _, test, val = first
    assert not set(test.tolist()) & set(val.tolist())


# --- a user's task with its own dataset ----------------------------------------------------------

def _blobs(cfg):
    """Gaussian blobs around 4 centres in 6 dimensions: (train, test) as (inputs, labels)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    centres = 3 * torch.randn(4, 6, generator=gen)

    def split(n):
        y = torch.arange(n) % 4
        return centres[y] + torch.randn(n, 6, generator=gen), {"quadrant": y, "parity": y % 2}

    return split(cfg.n_train), split(cfg.n_test)


def _build_blobs(cfg) -> TaskData:
    (train_x, train_y), (test_x, test_y) = get_task(cfg.task).dataset(cfg.dataset).splits(cfg)
    probes = probe_sets(cfg, get_task(cfg.task), train_x, train_y, test_x, test_y)
    torch.manual_seed(cfg.seed)
    width = (cfg.hidden or [16])[0]
    model = nn.Sequential()
    model.add_module("hidden", nn.Sequential(nn.Linear(6, width), nn.ReLU()))
    model.add_module("out", nn.Linear(width, 2))
    return TaskData(train_x, train_y["parity"], test_x, test_y["parity"], *probes, model=model,
                    layers=cfg.layers or ["hidden"], preprocess=lambda x, _gen: x.to(cfg.device))


def _one_hidden_layer(cfg) -> None:
    if cfg.hidden is not None and len(cfg.hidden) != 1:
        raise ValueError(f"hidden must be one layer size for the blobs task, got {cfg.hidden!r}")


@pytest.fixture
def blobs_task(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))  # registered for this test only
    return register_task(Task(
        name="blobs", label_sets=("parity", "quadrant"), task_label="parity", irrelevant_label="quadrant",
        datasets=(Dataset("gaussian", _blobs, defaults=dict(n_train=256, n_test=160)),), build=_build_blobs,
        data_tag=lambda cfg: cfg.dataset, defaults=dict(lr=0.05, augment=False), options=("hidden",),
        check=_one_hidden_layer))


def test_a_registered_task_checks_its_config_through_the_registry(blobs_task):
    cfg = RunConfig.for_task("blobs", hidden=[8])
    assert (cfg.dataset, cfg.n_train, cfg.lr, cfg.hidden) == ("gaussian", 256, 0.05, [8])
    with pytest.raises(ValueError, match=r"coarse_groups is not an option of the blobs task \(its options: \['hidden'\]"):
        RunConfig.for_task("blobs", coarse_groups=[[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="input_coding is not an option of the blobs task"):
        RunConfig.for_task("blobs", input_coding="four")
    with pytest.raises(ValueError, match="hidden must be one layer size for the blobs task"):
        RunConfig.for_task("blobs", hidden=[8, 8])
    with pytest.raises(ValueError, match=r"dataset must be one of \('gaussian',\)"):
        RunConfig.for_task("blobs", dataset="digits")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:usable information of")  # a short run on a small grid; not what is tested
def test_a_registered_task_with_its_own_dataset_runs_end_to_end(blobs_task, tmp_path):
    cfg = RunConfig.for_task("blobs", epochs=1.0, batch_size=32, probe_train=200, probe_val=40, probe_test=80,
                             track_every=4, early_until=0, early_points=0, l2_grid=[1e-3, 1e-1], n_bootstrap=0)
    summary = run_experiment(cfg, str(tmp_path / "run"), progress=False)
    saved = json.load(open(tmp_path / "run" / "config.json"))
    assert RunConfig.from_json(saved) == cfg.resolved() and saved["dataset"] == "gaussian"
    assert summary["task_label"] == "parity"
    rows = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert {(r["feature_set"], r["label_set"]) for r in rows} >= {("hidden", "parity"), ("hidden", "quadrant")}
