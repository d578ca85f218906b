"""Capture of a tiny BERT against plain inference on the same batches: what measuring adds to the
forward passes of the probe inputs (hooks on the layers, or hidden states, and token pooling
with the attention mask).

    python bench/bench_sequences.py            # rows in bench/rows/sequences.jsonl
    python bench/tables.py sequences

Each mode runs ``--repeats`` times, the modes alternated, and the median is kept; the ratio is
capture's median over plain inference's, in the same run.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import machine_name, record  # noqa: E402

from uinfo_fast.tracking import batches  # noqa: E402
from uinfo_fast.tracking.capture import FeatureCapture, eval_mode  # noqa: E402


def tiny_bert(layers: int, width: int):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=1000, hidden_size=width, num_hidden_layers=layers,
                                  num_attention_heads=4, intermediate_size=4 * width, max_position_embeddings=128)
    return transformers.BertModel(cfg)


def probe_inputs(n: int, t: int) -> dict:
    """``n`` sequences of 8 to ``t`` tokens, padded on the right."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, t + 1, (n,), generator=gen)
    mask = (torch.arange(t) < lengths.unsqueeze(1)).long()
    return {"input_ids": torch.randint(1, 1000, (n, t), generator=gen) * mask, "attention_mask": mask}


def plain(model, inputs: dict, batch: int) -> None:
    with eval_mode(model), torch.inference_mode():
        for xb in batches.split(inputs, batch):
            model(**xb)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="probe inputs")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    model, inputs = tiny_bert(args.layers, args.width), probe_inputs(args.n, args.tokens)
    hooks = FeatureCapture(model, [f"encoder.layer.{i}" for i in range(args.layers)], pool="mean_tokens",
                           batch_size=args.batch)
    hidden = FeatureCapture(model, [f"hidden_states.{i + 1}" for i in range(args.layers)], pool="mean_tokens",
                            batch_size=args.batch)
    modes = {"plain inference": lambda: plain(model, inputs, args.batch), "capture, hooks": lambda: hooks(inputs),
             "capture, hidden states": lambda: hidden(inputs)}
    for fn in modes.values():
        fn()  # warm-up
    seconds = {m: [] for m in modes}
    for _ in range(args.repeats):
        for m, fn in modes.items():
            seconds[m].append(timed(fn))
    base = statistics.median(seconds["plain inference"])
    rows = [{"mode": m, "seconds": statistics.median(s), "ratio_to_plain": statistics.median(s) / base,
             "n": args.n, "tokens": args.tokens, "layers": args.layers, "width": args.width, "batch": args.batch,
             "repeats": args.repeats} for m, s in seconds.items()]
    for r in rows:
        print(f"{r['mode']:<24}{r['seconds']:8.3f} s  x{r['ratio_to_plain']:.3f}")
    print("wrote", record("sequences", rows, torch.device("cpu")))
    print("on", machine_name(torch.device("cpu")))


if __name__ == "__main__":
    main()
