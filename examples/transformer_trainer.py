"""Usable information in a Hugging Face Trainer run: a tiny transformer, offline, on the CPU.

A small BERT (built from a config: random weights, nothing downloaded) learns a synthetic token
task: each sequence (6 to 16 tokens, padded on the right) holds, at random places after its first
token, a token of family A0 or A1 and one of family B0 or B1; the label, "parity", is whether
their families differ (an XOR, which no linear read-out of summed token embeddings can compute,
so a random network holds little of it). A third "style" token, somewhere else, carries a second
label (4 classes) the task does not need. The callback measures what the first token's position
(pool "first", where BERT's classifier reads) holds about both labels at every layer's hidden
state, on a schedule; the rows go to a JSONL log, to the Trainer's log history and to a figure.

    pip install -e ".[transformers]"
    python examples/transformer_trainer.py        # about a minute on two CPU cores
    uinfo-fast plot runs/example_transformer      # the figure again, from the log
"""
import argparse
import os

import torch
import transformers
from transformers.trainer_callback import ProgressCallback

from uinfo_fast import Schedule
from uinfo_fast.experiments.plots import plot_runs
from uinfo_fast.integrations import UsableInformationTrainerCallback

VOCAB, PAD, CLS = 64, 0, 1
A, B, STYLE = 4, 12, 20  # first ids of the token families: A0, A1 and B0, B1 (4 ids each), 4 styles
FILLER = (36, VOCAB)


def token_task(n: int, seed: int) -> tuple[dict, dict]:
    """({input_ids, attention_mask}, {"parity", "style"}) of ``n`` sequences."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 17, (n,), generator=gen)
    ids = torch.randint(*FILLER, (n, 16), generator=gen)
    a, b = torch.randint(0, 2, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)
    style = torch.randint(0, 4, (n,), generator=gen)
    variant = torch.randint(0, 4, (n, 3), generator=gen)
    for i, length in enumerate(lengths.tolist()):
        places = 1 + torch.randperm(length - 1, generator=gen)[:3]
        ids[i, places] = torch.stack([A + 4 * a[i], B + 4 * b[i], STYLE + 4 * style[i]]) + variant[i]
        ids[i, length:] = PAD
    ids[:, 0] = CLS
    mask = (torch.arange(16) < lengths.unsqueeze(1)).long()
    return {"input_ids": ids, "attention_mask": mask}, {"parity": a ^ b, "style": style}


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int):
        self.x, self.y = token_task(n, seed)

    def __len__(self) -> int:
        return len(self.y["parity"])

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x["input_ids"][i], "attention_mask": self.x["attention_mask"][i],
                "labels": self.y["parity"][i]}


def tiny_bert(layers: int, seed: int) -> transformers.PreTrainedModel:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=32, num_labels=2,
                                  pad_token_id=PAD)
    return transformers.BertForSequenceClassification(cfg)


class QuietProgress(ProgressCallback):
    """The progress bar without the printout of every logged dict (the rows are in the log)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/example_transformer")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, "log.jsonl")
    if os.path.exists(log):
        os.remove(log)  # a fresh run each time (resume a killed one with trainer.train(resume_from_checkpoint=...))
    callback = UsableInformationTrainerCallback(
        # hidden_states.0 at the first position is the first token's embedding alone: the same
        # features for every input, nothing to measure
        [f"hidden_states.{i}" for i in range(1, args.layers + 1)],
        {"train": token_task(1000, 101), "val": token_task(300, 102), "test": token_task(700, 103)},
        schedule=Schedule(every=100, early_until=100, early_points=4), log_path=log, pool="first", n_bootstrap=200)
    training = transformers.TrainingArguments(
        output_dir=os.path.join(args.out, "trainer"), max_steps=args.steps, per_device_train_batch_size=32,
        learning_rate=5e-4, warmup_steps=50, lr_scheduler_type="constant_with_warmup", logging_steps=50, save_strategy="no", report_to="none", use_cpu=True,
        seed=args.seed, disable_tqdm=False, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=tiny_bert(args.layers, args.seed), args=training,
                                   train_dataset=TokenDataset(20_000, args.seed), callbacks=[callback])
    callback.attach(trainer)
    trainer.remove_callback(ProgressCallback)  # its bar stays, its printout of every log goes
    trainer.add_callback(QuietProgress)
    trainer.train()
    last = max(r["step"] for r in callback.rows)
    print(f"usable information at the first token's position, step 0 -> step {last} (bits; H(parity) = 1, "
          "H(style) = 2):")
    for r in callback.rows:
        if r["step"] == last:
            first = next(q for q in callback.rows if q["step"] == 0 and q["feature_set"] == r["feature_set"]
                         and q["label_set"] == r["label_set"])
            show = lambda q: f"{q['bits']:6.3f}" if q["bits"] is not None else q["status"]  # noqa: E731
            print(f"  {r['feature_set']:<16}{r['label_set']:<7}{show(first)} -> {show(r)}")
    print("wrote", plot_runs([args.out], os.path.join(args.out, "usable_information.png")))


if __name__ == "__main__":
    main()
