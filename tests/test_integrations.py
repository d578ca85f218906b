"""Where researchers train: the tracker's sinks, TensorBoard and W&B scalars read back from their
files, and the Lightning callback (loggers at capture steps, modes and batch-norm statistics kept,
checkpoints that lose and duplicate no row)."""
import glob
import json
import os
import struct
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import uinfo_fast as uf
from uinfo_fast.integrations import TensorBoardSink, WandbSink, row_scalars
from uinfo_fast.integrations.scalars import require, scalars_by_step
from uinfo_fast.tracking import read_log

from .toy import separable

pl = pytest.importorskip("lightning.pytorch")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
ROOT = Path(__file__).resolve().parents[1]


_data = separable


def _tracker(model, **kw):
    (x, y), (xt, yt) = _data(300, 0), _data(200, 1)
    return uf.UsableInfoTracker(model, ["1", "2"], x, y, xt, yt, l2_grid=[1e-3, 1e-1], n_bootstrap=20, **kw)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``log_dir``: tag -> [(step, value)]."""
    out = {}
    for events in sorted(glob.glob(os.path.join(str(log_dir), "**", "events.out.tfevents.*"), recursive=True)):
        acc = event_accumulator.EventAccumulator(events, size_guidance={event_accumulator.SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def _expected(rows, prefix="usable_information"):
    """What a logger should hold for ``rows``: tag -> [(step, value)]."""
    out = {}
    for step, scalars in scalars_by_step(rows, prefix):
        for tag, v in scalars.items():
            out.setdefault(tag, []).append((step, v))
    return out


def _same_scalars(got, expected):
    got = {k: v for k, v in got.items() if k.startswith("usable_information/")}
    assert sorted(got) == sorted(expected)
    for tag, points in expected.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


# --- scalars and sinks -------------------------------------------------------------------------

def test_row_scalars_name_layer_label_set_and_bounds():
    row = {"step": 3, "feature_set": "net.layer4", "label_set": "fine", "bits": 1.25, "ci_low": 1.0, "ci_high": 1.5,
           "l2": 1e-3, "status": "ok"}
    assert row_scalars(row) == {"usable_information/net.layer4/fine": 1.25,
                                "usable_information/net.layer4/fine/ci_low": 1.0,
                                "usable_information/net.layer4/fine/ci_high": 1.5,
                                "usable_information/net.layer4/fine/l2": 1e-3}
    assert row_scalars({**row, "bits": None, "status": "nonfinite_features"}) == {}
    assert next(iter(row_scalars(row, prefix="ui"))) == "ui/net.layer4/fine"
    assert [s for s, _ in scalars_by_step([row, {**row, "label_set": "coarse"}, {**row, "step": 7}])] == [3, 7]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_sinks_get_every_row_once_in_step_order_on_the_training_thread(asynchronous):
    got, threads = [], set()

    def sink(rows):
        threads.add(threading.get_ident())
        got.extend(rows)

    model = _model()
    tracker = _tracker(model, schedule=uf.Schedule(every=5), asynchronous=asynchronous, sinks=[sink])
    for step in range(16):
        tracker.step(step)
    tracker.close()
    assert got == tracker.rows and [r["step"] for r in got] == [s for s in (0, 5, 10, 15) for _ in range(4)]
    assert threads == {threading.get_ident()}


def test_a_failing_sink_is_dropped_with_a_warning_and_the_run_goes_on(tmp_path):
    def broken(rows):
        raise OSError("disk full")

    tracker = _tracker(_model(), schedule=uf.Schedule(every=2), log_path=tmp_path / "log.jsonl", sinks=[broken])
    with pytest.warns(RuntimeWarning, match="disk full"):
        tracker.step(0)
    tracker.step(2)
    assert tracker.sinks == [] and [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [0] * 4 + [2] * 4


@pytest.mark.parametrize("sinks, match", [(print, "pass \\[sink\\]"), (["not callable"], "callables"), ("log", "callables")])
def test_sinks_must_be_a_list_of_callables(sinks, match):
    with pytest.raises(TypeError, match=match):
        _tracker(_model(), sinks=sinks)


def test_missing_optional_package_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'uinfo-fast\[lightning\]'"):
        require("uinfo_fast_no_such_package", "lightning", "UsableInformationCallback")


def test_tensorboard_sink_writes_scalars_a_reader_gets_back(tmp_path):
    tb = TensorBoardSink(tmp_path / "tb")
    tracker = _tracker(_model(), schedule=uf.Schedule(every=5), asynchronous=True, sinks=[tb])
    for step in range(11):
        tracker.step(step)
    tracker.close()
    tb.close()
    _same_scalars(_scalars(tmp_path / "tb"), _expected(tracker.rows))
    assert "usable_information/2/four/ci_high" in _scalars(tmp_path / "tb")


def _parse_wandb_log(data: bytes) -> list:
    """The records of a .wandb file's bytes (a LevelDB-style log of protobuf records in 32 KiB
    blocks, after a 7-byte header), up to a torn or half-written last record."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    assert data[:4] == b":W&B"
    pos, chunks, block, records = 7, b"", 32768, []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):
            break
        chunks = data[pos + 7:pos + 7 + length] if kind in (1, 2) else chunks + data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            try:
                record.ParseFromString(chunks)
            except DecodeError:
                break
            records.append(record)
    return records


def _wandb_records(run_dir, timeout=20.0):
    """The records of an offline W&B run, read once its writer (a separate process, which may
    still be flushing after ``finish()``) has written the run's exit record."""
    path = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))[0]
    deadline = time.monotonic() + timeout
    while True:
        records = _parse_wandb_log(Path(path).read_bytes())
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _wandb_history(run_dir):
    for r in _wandb_records(run_dir):
        if r.WhichOneof("record_type") == "history":
            yield {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}


def test_wandb_sink_puts_late_rows_at_their_capture_step(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="uinfo-test", dir=str(tmp_path))
    sink = WandbSink(run)
    tracker = _tracker(_model(), schedule=uf.Schedule(every=5), asynchronous=True, sinks=[sink])
    for step in range(11):
        tracker.step(step)
    tracker.close()
    run.finish()
    metrics = {(r.metric.name, r.metric.glob_name, r.metric.step_metric) for r in _wandb_records(str(tmp_path))
               if r.WhichOneof("record_type") == "metric"}
    assert ("", "usable_information/*", "usable_information/step") in metrics
    logged = [h for h in _wandb_history(str(tmp_path)) if "usable_information/step" in h]
    assert [h["usable_information/step"] for h in logged] == [0, 5, 10]
    expected = dict(scalars_by_step(tracker.rows))
    for h in logged:
        assert {k: v for k, v in h.items() if k in expected[h["usable_information/step"]]} == \
            pytest.approx(expected[h["usable_information/step"]])


def test_wandb_sink_needs_a_run(monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setattr(wandb, "run", None)
    with pytest.raises(ValueError, match="wandb.init"):
        WandbSink()


# --- the Lightning callback --------------------------------------------------------------------

class _Module(pl.LightningModule):
    """A small network with batch norm, and a frozen submodule kept in eval mode."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
        self.frozen = nn.Dropout(0.5)

    def forward(self, x):
        return self.net(self.frozen(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_train_start(self):
        self.frozen.eval()


def _loader():
    x, y = _data(320, 2)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y["four"]), batch_size=32)


def _probes():
    return {"train": _data(300, 0), "test": _data(200, 1)}


def _callback(**kw):
    kw = {"schedule": uf.Schedule(every=4), "l2_grid": [1e-3, 1e-1], "n_bootstrap": 10, **kw}
    return uf.integrations.UsableInformationCallback(["net.1", "net.3"], kw.pop("probes", _probes()), **kw)


def _fit(callback, root, max_steps=10, ckpt_path=None, checkpoint=None, logger=True):
    logger = pl.loggers.TensorBoardLogger(str(root), name="tb", version=0) if logger is True else logger
    trainer = pl.Trainer(max_steps=max_steps, max_epochs=-1, accelerator="cpu", logger=logger,
                         callbacks=[callback] + ([checkpoint] if checkpoint else []),
                         enable_checkpointing=checkpoint is not None, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=1, num_sanity_val_steps=0)
    trainer.fit(_Module(), _loader(), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("asynchronous", [False, True])
def test_callback_logs_every_row_through_the_trainers_logger_at_its_capture_step(tmp_path, asynchronous):
    callback = _callback(asynchronous=asynchronous, log_path=tmp_path / "log.jsonl")
    _fit(callback, tmp_path, max_steps=10)
    steps = [r["step"] for r in callback.rows]
    assert steps == [s for s in (0, 4, 8, 10) for _ in range(4)]  # the schedule, then the trained network
    assert read_log(tmp_path / "log.jsonl") == callback.rows
    _same_scalars(_scalars(tmp_path / "tb"), _expected(callback.rows))


def test_callback_leaves_modes_and_batchnorm_statistics_as_they_were(monkeypatch, tmp_path):
    seen = []
    measure = uf.UsableInfoTracker.measure

    def snapshot(model):
        stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        return [m.training for m in model.modules()], stats

    def spy(tracker, step, epoch=None):
        before = snapshot(tracker.capture.model)
        rows = measure(tracker, step, epoch)
        after = snapshot(tracker.capture.model)
        seen.append((before[0] == after[0], all(torch.equal(before[1][k], after[1][k]) for k in before[1]),
                     before[0]))
        return rows

    monkeypatch.setattr(uf.UsableInfoTracker, "measure", spy)
    _fit(_callback(), tmp_path, max_steps=6)
    assert len(seen) == 3 and all(modes and stats for modes, stats, _ in seen)
    training = seen[1][2]  # module order: root, net, its four layers, frozen
    assert training[0] and training[2] and not training[-1]  # mixed modes, each one kept


def test_callback_resumed_from_a_checkpoint_loses_and_duplicates_no_row(tmp_path):
    whole = _callback(log_path=tmp_path / "whole.jsonl")
    _fit(whole, tmp_path / "a", max_steps=12)
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=6, save_top_k=-1)
    first = _callback(log_path=tmp_path / "log.jsonl", asynchronous=True)
    _fit(first, tmp_path / "b", max_steps=12, checkpoint=checkpoints)  # the log then runs past the checkpoint
    at_6 = glob.glob(str(tmp_path / "ckpt" / "*step=6*.ckpt"))
    assert len(at_6) == 1
    resumed = _callback(log_path=tmp_path / "log.jsonl", asynchronous=True)
    _fit(resumed, tmp_path / "c", max_steps=12, ckpt_path=at_6[0])
    keys = lambda rows: [(r["step"], r["feature_set"], r["label_set"]) for r in rows]  # noqa: E731
    assert keys(read_log(tmp_path / "log.jsonl")) == keys(resumed.rows) == keys(whole.rows)
    assert [r["bits"] for r in resumed.rows] == pytest.approx([r["bits"] for r in whole.rows], abs=0.02)
    logged = _scalars(tmp_path / "c")  # the resumed run logs only the steps after its checkpoint
    assert sorted({s for points in logged.values() for s, _ in points if s is not None}
                  & {r["step"] for r in whole.rows}) >= [8, 12]
    assert all(s > 6 for tag, points in logged.items() if tag.startswith("usable_information/") for s, _ in points)


def test_callback_reads_probe_sets_from_loaders(tmp_path):
    (x, y), test = _data(300, 0), _data(200, 1)
    batches = [(x[i:i + 64], {k: v[i:i + 64] for k, v in y.items()}) for i in range(0, 300, 64)]
    from_loader = _callback(probes={"train": batches, "test": test}, schedule=uf.Schedule(every=100))
    from_tensors = _callback(probes={"train": (x, y), "test": test}, schedule=uf.Schedule(every=100))
    _fit(from_loader, tmp_path / "a", max_steps=2)
    _fit(from_tensors, tmp_path / "b", max_steps=2)
    assert [r["bits"] for r in from_loader.rows] == pytest.approx([r["bits"] for r in from_tensors.rows], abs=1e-9)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"layers": "net.1"}, TypeError, "list of module names"),
    ({"probe_sets": {"train": None}}, ValueError, "'train', 'test'"),
    ({"probe_sets": {"train": 1, "test": 2, "holdout": 3}}, ValueError, "holdout"),
    ({"lr": 0.1}, TypeError, "unknown tracker options \\['lr'\\]"),
    ({"schedule": 5}, TypeError, "Schedule"),
])
def test_callback_arguments_are_checked_when_made(kwargs, error, match):
    args = {"layers": ["net.1"], "probe_sets": _probes(), **kwargs}
    with pytest.raises(error, match=match):
        uf.integrations.UsableInformationCallback(args.pop("layers"), args.pop("probe_sets"), **args)


def test_callback_refuses_the_log_of_another_run(tmp_path):
    _fit(_callback(log_path=tmp_path / "log.jsonl"), tmp_path, max_steps=2)
    with pytest.raises(FileExistsError, match="already holds rows"):
        _fit(_callback(log_path=tmp_path / "log.jsonl"), tmp_path, max_steps=2)


def test_callback_with_wandb_logger_plots_against_the_global_step(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    callback = _callback(asynchronous=True)
    logger = pl.loggers.WandbLogger(project="uinfo-test", save_dir=str(tmp_path), offline=True)
    _fit(callback, tmp_path, max_steps=8, logger=logger)
    logger.experiment.finish()
    metrics = {(r.metric.glob_name, r.metric.step_metric) for r in _wandb_records(str(tmp_path))
               if r.WhichOneof("record_type") == "metric"}
    assert ("usable_information/*", "trainer/global_step") in metrics
    logged = [h for h in _wandb_history(str(tmp_path)) if any(k.startswith("usable_information/") for k in h)]
    assert [h["trainer/global_step"] for h in logged] == [0, 4, 8]


@pytest.mark.slow
def test_lightning_example_writes_scalars_tensorboard_reads_back(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lightning_example", ROOT / "examples" / "lightning_callback.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = example.main(["--out", str(tmp_path), "--n-train", "640", "--every", "4"])
    assert {r["step"] for r in rows} == {0, 1, 3, 4, 8, 10}  # 0, log-spaced 1..10, every 4, the end
    _same_scalars(_scalars(tmp_path / "tb"), _expected(rows))
    assert "usable_information/conv2/fine" in _scalars(tmp_path / "tb")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--async-tracking"]])
def test_cli_run_writes_tensorboard_scalars_of_its_log(tmp_path, extra):
    from uinfo_fast.experiments.cli import main

    from .test_cli import _TINY_IMAGES

    out, tb = tmp_path / "run", tmp_path / "tb"
    assert main(["run", *_TINY_IMAGES, *extra, "--out", str(out), "--tensorboard", str(tb)]) == 0
    rows = read_log(out / "log.jsonl")
    assert sorted({r["step"] for r in rows}) == [0, 4, 8]
    _same_scalars(_scalars(tb), _expected(rows))
