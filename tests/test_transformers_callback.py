"""The Hugging Face Trainer callback: the tracker's rows on the same weights, rows in the Trainer's
log history, and a resumed run that loses and repeats nothing (skipped without transformers)."""
import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from uinfo_fast import Schedule, UsableInfoTracker  # noqa: E402
from uinfo_fast.integrations.transformers_callback import UsableInformationTrainerCallback  # noqa: E402

VOCAB, T = 40, 8
_TIMING = {"seconds", "wall_seconds", "phase_seconds"}


def _tokens(n: int, seed: int):
    """Sequences whose task label is the class of the first token and whose second label, which
    the task does not need, is the class of the fourth."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(12, VOCAB, (n, T), generator=gen)
    task, other = torch.randint(0, 4, (n,), generator=gen), torch.randint(0, 4, (n,), generator=gen)
    ids[:, 0], ids[:, 3] = 2 + task, 6 + other
    return {"input_ids": ids, "attention_mask": torch.ones(n, T, dtype=torch.long)}, {"task": task, "other": other}


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        self.x, self.y = _tokens(n, seed)

    def __len__(self):
        return len(self.y["task"])

    def __getitem__(self, i):
        return {"input_ids": self.x["input_ids"][i], "attention_mask": self.x["attention_mask"][i],
                "labels": self.y["task"][i]}


def _model():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=16, num_labels=4)
    return transformers.BertForSequenceClassification(cfg)


def _probe_sets():
    return {"train": _tokens(300, 1), "test": _tokens(200, 2)}


def _trainer(out, callbacks, max_steps=12, **kw):
    kw = {"restore_callback_states_from_checkpoint": True, **kw}
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=16, learning_rate=2e-3, save_steps=4,
        logging_steps=1000, report_to="none", use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0, **kw)
    return transformers.Trainer(model=_model(), args=args, train_dataset=_Dataset(400, 0), callbacks=callbacks)


def _callback(**kw):
    return UsableInformationTrainerCallback(["hidden_states.1", "bert.encoder.layer.1"], _probe_sets(),
                                            schedule=Schedule(every=3, early_until=0, early_points=0), pool="first",
                                            n_bootstrap=0, **kw)


def _values(rows):
    return [{k: v for k, v in r.items() if k not in _TIMING} for r in rows]


class _PlainTracker(transformers.TrainerCallback):
    """A tracker stepped by hand at the same moments, on the same weights."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        p = _probe_sets()
        self.tracker = UsableInfoTracker(model, ["hidden_states.1", "bert.encoder.layer.1"], *p["train"], *p["test"],
                                         schedule=Schedule(every=3, early_until=0, early_points=0), pool="first",
                                         n_bootstrap=0)
        self.tracker.step(state.global_step, epoch=0.0)

    def on_step_end(self, args, state, control, **kwargs):
        self.tracker.step(state.global_step, epoch=state.epoch)


@pytest.mark.slow
def test_the_callback_writes_the_trackers_rows_and_they_reach_the_trainers_log(tmp_path):
    cb, plain = _callback(), _PlainTracker()
    trainer = _trainer(tmp_path / "a", [plain, cb])
    cb.attach(trainer)
    trainer.train()
    plain.tracker.close()
    steps = sorted({r["step"] for r in cb.rows})
    assert steps == [0, 3, 6, 9, 12]
    assert _values(cb.rows) == _values(plain.tracker.rows)
    logged = [h for h in trainer.state.log_history if "usable_information/hidden_states.1/task" in h]
    assert [int(h["usable_information/step"]) for h in logged] == steps
    assert logged[-1]["step"] == 12


class _StopAt(transformers.TrainerCallback):
    """Stops training after ``step``; after the checkpoint at 4 it also shakes the weights, so that
    the rows measured between the checkpoint and the stop are not the resumed run's."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 5:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.5 * torch.randn_like(p))
        if state.global_step >= self.step:
            control.should_training_stop = True


@pytest.mark.slow
def test_a_run_resumed_from_a_checkpoint_loses_and_repeats_no_row(tmp_path):
    whole = _callback(name="whole", log_path=tmp_path / "whole.jsonl")
    _trainer(tmp_path / "whole", [whole]).train()

    first = _callback(name="resumed", log_path=tmp_path / "resumed.jsonl")
    _trainer(tmp_path / "resumed", [first, _StopAt(7)]).train()  # killed after step 7; checkpoint at 4
    assert os.path.exists(tmp_path / "resumed" / "checkpoint-4" / "resumed_warm_start.pt")
    state = json.load(open(tmp_path / "resumed" / "checkpoint-4" / "trainer_state.json"))
    assert state["stateful_callbacks"]["UsableInformationTrainerCallback"]["args"] == {"name": "resumed"}

    again = _callback(name="resumed", log_path=tmp_path / "resumed.jsonl")  # a new process would make it so
    _trainer(tmp_path / "resumed", [again]).train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-4"))
    assert [r["step"] for r in again.rows] == [r["step"] for r in whole.rows]
    for a, b in zip(_values(again.rows), _values(whole.rows)):
        assert a.keys() == b.keys() and a["l2"] == b["l2"], (a, b)
        assert a["bits"] == pytest.approx(b["bits"], abs=1e-4)


@pytest.mark.slow
def test_resuming_without_the_callbacks_state_is_refused(tmp_path):
    _trainer(tmp_path / "r", [_callback(name="x")], max_steps=4).train()
    args = dict(restore_callback_states_from_checkpoint=False)
    trainer = _trainer(tmp_path / "r", [_callback(name="x")], max_steps=8, **args)
    with pytest.raises(ValueError, match="restore_callback_states_from_checkpoint"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "r" / "checkpoint-4"))
