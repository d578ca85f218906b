"""Token sequences: pooling over the tokens an attention mask keeps, dict batches, hidden states,
and tiny Hugging Face models (skipped without ``transformers``)."""
import pytest
import torch
from torch import nn

from uinfo_fast.tracking import batches
from uinfo_fast.tracking.capture import TOKEN_POOLS, FeatureCapture, pool_tokens


def _mask(lengths, t, left=False):
    pos = torch.arange(t).expand(len(lengths), t)
    n = torch.tensor(lengths).unsqueeze(1)
    return (pos >= t - n if left else pos < n).long()


def _reference(out, mask, how):
    rows = []
    for o, m in zip(out, mask.bool()):
        kept = o[m]
        rows.append({"mean_tokens": kept.mean(0), "avg": kept.mean(0), "max": kept.amax(0),
                     "first": kept[0], "last": kept[-1]}[how])
    return torch.stack(rows)


@pytest.mark.parametrize("how", [*TOKEN_POOLS, "avg", "max"])
@pytest.mark.parametrize("left", [False, True])
def test_token_pools_match_a_loop_over_the_kept_tokens(how, left):
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(6, 9, 5, generator=gen)
    mask = _mask([9, 1, 4, 7, 2, 5], 9, left)
    out = out.masked_fill(~mask.bool().unsqueeze(-1), float("nan"))  # padding rows may be NaN
    torch.testing.assert_close(pool_tokens(out, mask, how, "x"), _reference(out, mask, how))
    full = torch.randn(3, 4, 2, generator=gen)
    torch.testing.assert_close(pool_tokens(full, None, how, "x"), _reference(full, torch.ones(3, 4), how))


def test_token_pools_refuse_a_mask_of_another_shape_and_an_empty_row():
    with pytest.raises(ValueError, match=r"layer 'blk' gave shape \(2, 3, 4\).*attention mask \(2, 5\)"):
        pool_tokens(torch.zeros(2, 3, 4), torch.ones(2, 5), "first", "blk")
    with pytest.raises(ValueError, match="no token"):
        pool_tokens(torch.zeros(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]]), "last", "blk")


class TokenWise(nn.Module):
    """Embeds each token and maps it on its own: outputs that ignore position and padding."""

    def __init__(self, vocab=20, dim=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.block = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())

    def forward(self, input_ids, attention_mask=None):
        return self.block(self.emb(input_ids))


def _padded(ids: list[list[int]], left: bool, pad: int = 0) -> dict:
    t = max(map(len, ids))
    rows = [[pad] * (t - len(s)) + s if left else s + [pad] * (t - len(s)) for s in ids]
    return {"input_ids": torch.tensor(rows), "attention_mask": _mask([len(s) for s in ids], t, left)}


SEQS = [[3, 5, 7, 9, 11], [4, 6], [8, 2, 12], [13], [1, 2, 3, 4, 5, 6, 7]]


@pytest.mark.parametrize("how", TOKEN_POOLS)
@pytest.mark.parametrize("left", [False, True])
def test_padded_dict_batches_give_the_features_of_the_unpadded_sequences(how, left):
    torch.manual_seed(0)
    model = TokenWise()
    cap = FeatureCapture(model, ["block"], pool=how, batch_size=2)  # batches cut across the padding
    got = cap(_padded(SEQS, left))["block"]
    one_by_one = torch.cat([cap({"input_ids": torch.tensor([s]), "attention_mask": torch.ones(1, len(s))})["block"]
                            for s in SEQS])
    torch.testing.assert_close(got, one_by_one)


def test_a_loader_of_dict_batches_and_a_mask_under_another_key():
    torch.manual_seed(0)
    model = TokenWise()
    whole = _padded(SEQS, left=False)
    cap = FeatureCapture(model, ["block"], pool="last")
    loader = batches.split(whole, 2)  # any iterable of dict batches, as a DataLoader yields them
    torch.testing.assert_close(cap(loader)["block"], cap(whole)["block"])
    renamed = {"input_ids": whole["input_ids"], "mask": whole["attention_mask"]}

    class Renamed(TokenWise):
        def forward(self, input_ids, mask=None):
            return super().forward(input_ids)

    other = Renamed()
    other.load_state_dict(model.state_dict())
    got = FeatureCapture(other, ["block"], pool="last", mask_key="mask")(renamed)["block"]
    torch.testing.assert_close(got, cap(whole)["block"])


def test_dict_inputs_are_checked_and_joined():
    with pytest.raises(ValueError, match=r"probe_x: every tensor of the dict must have the same first"):
        batches.checked({"input_ids": torch.zeros(3, 4), "attention_mask": torch.zeros(2, 4)}, "probe_x")
    with pytest.raises(ValueError, match=r"probe_x must be a tensor \[N, \.\.\.\] or a dict"):
        batches.checked([1, 2], "probe_x")
    joined = batches.concatenated([_padded(SEQS[:2], False), _padded(SEQS[2:], False)], "probe_x")
    torch.testing.assert_close(joined["attention_mask"], _padded(SEQS, False)["attention_mask"])
    torch.testing.assert_close(joined["input_ids"], _padded(SEQS, False)["input_ids"])


def test_a_callbacks_probe_split_joins_a_loader_of_token_batches_of_different_lengths():
    from uinfo_fast.integrations.probe_sets import probe_split

    loader = [(_padded(SEQS[:2], False), torch.tensor([0, 1])), (_padded(SEQS[2:], False), torch.tensor([1, 0, 1]))]
    x, y = probe_split(loader, "probe_sets['train']")
    torch.testing.assert_close(x["input_ids"], _padded(SEQS, False)["input_ids"])
    torch.testing.assert_close(y["label"], torch.tensor([0, 1, 1, 0, 1]))
    model = TokenWise()
    torch.testing.assert_close(FeatureCapture(model, ["block"], pool="mean_tokens")(x)["block"],
                               FeatureCapture(model, ["block"], pool="mean_tokens")(_padded(SEQS, False))["block"])
    with pytest.raises(ValueError, match=r"probe_sets\['train'\]: every batch must be a dict with the keys"):
        probe_split([(_padded(SEQS, False), torch.zeros(5)), ({"input_ids": torch.zeros(1, 2)}, torch.zeros(1))],
                    "probe_sets['train']")


def test_the_tracker_measures_dict_inputs_with_a_rolling_capture():
    from uinfo_fast.tracking import UsableInfoTracker

    gen = torch.Generator().manual_seed(1)
    n = 240
    ids = torch.randint(4, 20, (n, 6), generator=gen)
    label = torch.randint(0, 4, (n,), generator=gen)
    ids[:, 0] = label  # the label is the first token
    inputs = {"input_ids": ids, "attention_mask": torch.ones(n, 6, dtype=torch.long)}
    half = lambda d, s: {k: v[s] for k, v in d.items()}  # noqa: E731
    torch.manual_seed(0)
    tracker = UsableInfoTracker(TokenWise(), ["block"], half(inputs, slice(0, 160)), {"first": label[:160]},
                                half(inputs, slice(160, None)), {"first": label[160:]}, pool="first",
                                n_bootstrap=0, refresh=2)
    rows = tracker.measure(0) + tracker.measure(1)
    tracker.close()
    assert [r["status"] for r in rows] == ["ok", "ok"] and min(r["bits"] for r in rows) > 1.5  # of 2 bits


# --- tiny Hugging Face models, random weights, built here (no download) ---

transformers = pytest.importorskip("transformers")

VOCAB, T = 60, 8


def _tiny(kind: str):
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=2)
    if kind == "bert":
        cfg = transformers.BertConfig(hidden_size=32, intermediate_size=64, max_position_embeddings=32, **common)
        return transformers.BertModel(cfg).eval()
    if kind == "gpt2":
        cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=32, vocab_size=VOCAB,
                                      bos_token_id=0, eos_token_id=0)
        return transformers.GPT2Model(cfg).eval()
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=2,
                                   max_position_embeddings=32, **common)
    return transformers.LlamaModel(cfg).eval()


def _hf_batch(seqs, left):
    return _padded(seqs, left, pad=1)


HF_SEQS = [[5, 9, 13, 17, 21, 25], [6, 10], [7, 11, 15, 19], [8, 12, 16, 20, 24, 28, 32, 36]]


@pytest.mark.parametrize("kind,sides", [("bert", (False,)), ("gpt2", (False,)), ("llama", (False, True))])
@pytest.mark.parametrize("how", TOKEN_POOLS)
def test_tiny_hf_models_read_the_same_features_padded_or_not(kind, sides, how):
    """Right padding for every model; left padding too for Llama, whose rotary positions make its
    outputs depend on relative positions only."""
    model = _tiny(kind)
    layers = ["hidden_states.1", "hidden_states.2"]
    cap = FeatureCapture(model, layers, pool=how)
    alone = [cap({"input_ids": torch.tensor([s]), "attention_mask": torch.ones(1, len(s), dtype=torch.long)})
             for s in HF_SEQS]
    for left in sides:
        got = cap(_hf_batch(HF_SEQS, left))
        for name in layers:
            torch.testing.assert_close(got[name], torch.cat([a[name] for a in alone]), atol=1e-4, rtol=1e-4)


def test_hidden_states_and_hooks_name_the_same_features():
    model = _tiny("bert")
    batch = _hf_batch(HF_SEQS, False)
    hooked = FeatureCapture(model, ["encoder.layer.0"], pool="first")(batch)["encoder.layer.0"]
    hidden = FeatureCapture(model, ["hidden_states.1"], pool="first")(batch)["hidden_states.1"]
    torch.testing.assert_close(hooked, hidden)
    with pytest.raises(ValueError, match=r"returned 3 hidden states \(0 to 2\)"):
        FeatureCapture(model, ["hidden_states.7"])(batch)
    with pytest.raises(ValueError, match="hidden_states.<i>"):
        FeatureCapture(model, ["hidden_states.x"])


def _token_task(n: int, at: int, seed: int):
    """Sequences of T tokens whose label (4 classes) is the token at position ``at``."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (n, T), generator=gen)
    label = torch.randint(0, 4, (n,), generator=gen)
    ids[:, at] = 2 + label
    return {"input_ids": ids, "attention_mask": torch.ones(n, T, dtype=torch.long)}, label


@pytest.mark.slow
@pytest.mark.parametrize("kind,at,reads,blind", [("bert", 0, ("first", "mean_tokens"), ()),
                                                 ("gpt2", T - 1, ("last", "mean_tokens"), ("first",)),
                                                 ("llama", T - 1, ("last", "mean_tokens"), ("first",))])
def test_a_token_at_a_known_position_is_read_where_it_can_be_and_a_shuffled_label_is_not(kind, at, reads, blind):
    from uinfo_fast import estimate_usable_information

    model = _tiny(kind)
    (x, y), (xt, yt) = _token_task(800, at, 0), _token_task(600, at, 1)
    shuffled = lambda v, s: v[torch.randperm(len(v), generator=torch.Generator().manual_seed(s))]  # noqa: E731
    for how in (*reads, *blind):
        cap = FeatureCapture(model, ["hidden_states.2"], pool=how)
        f, ft = cap(x)["hidden_states.2"], cap(xt)["hidden_states.2"]
        res = estimate_usable_information(f, {"token": y, "shuffled": shuffled(y, 2)}, ft,
                                          {"token": yt, "shuffled": shuffled(yt, 3)}, n_bootstrap=0)
        bits = {r.label_set: r.bits for r in res.results}
        # of 2 bits; a causal model's first token cannot see the last one
        assert (bits["token"] > 1.5) if how in reads else (bits["token"] < 0.05), (how, bits)
        assert abs(bits["shuffled"]) < 0.05, (how, bits)
