"""Feature capture: forward hooks on named modules of any ``nn.Module``, pooled to [N, D].

The probes of usable information see a layer's output as one vector per example:

* a convolutional map [N, C, H, W] (or any [N, C, *spatial] of 4 or more dimensions) is
  global-average-pooled to [N, C] (or max-pooled with ``pool="max"``), which keeps D small
  enough to fit many probes;
* a token sequence [N, T, D] (a transformer block's output) is pooled over its tokens, the ones
  the batch's attention mask keeps: their mean (``pool="mean_tokens"``), the first
  (``"first"``: an encoder's CLS position) or the last (``"last"``: a causal model's summary),
  right under left padding as well as right padding. A 3-D output is ambiguous ([N, C, L] of a
  1-D convolution, or [N, T, D]), so ``avg`` and ``max`` refuse it unless ``layout`` says which;
* any [N, ...] output with ``pool="flatten"`` is flattened, and when it is wider than
  ``project_to`` it goes through a fixed Gaussian random projection (Johnson-Lindenstrauss:
  linear-probe geometry is roughly kept), drawn once from ``seed``;
* a tuple or list output contributes its first element (e.g. an RNN's output).

Inputs are a tensor, or a dict of tensors passed as keyword arguments (a tokenised batch:
``input_ids``, ``attention_mask``, ...; :mod:`.batches`). Layers are module names, or
``hidden_states.<i>``: the model is then called with ``output_hidden_states=True`` and the
``i``-th of the hidden states it returns is captured.

Capture runs in eval mode (batch-norm running statistics, no dropout) and in inference mode,
under bfloat16 autocast on CUDA, and puts every submodule back in the mode it was in: the caller's
training loop is untouched.
"""
from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..engine.params import Boolean, Choice, Integer, NoneOr, Real, Text, option, routed, validate_fields
from . import batches
from .folding import FoldedModel, folded

TOKEN_POOLS = ("mean_tokens", "first", "last")
POOLS = ("avg", "max", "flatten", *TOKEN_POOLS)
LAYOUTS = ("auto", "channels", "tokens")
HIDDEN_STATES = "hidden_states."
AUTOCAST = {"auto": "auto", "none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class CaptureOptions:
    """How layer outputs become probe features, checked when made (see :class:`FeatureCapture`)."""

    pool: str = option("avg", check=Choice(POOLS),
                       help="how a layer's output becomes features: avg or max over a conv map's positions, "
                            "mean_tokens, first or last of a token sequence's unmasked tokens, or flatten")
    layout: str = option("auto", check=Choice(LAYOUTS), flag="capture_layout",
                         help="what a 3-D output [N, ., .] is: channels ([N, C, L]: avg and max pool over L), "
                              "tokens ([N, T, D]: avg and max pool over the unmasked tokens), or auto (4-D and up "
                              "are channels; a 3-D output needs a token pool or a stated layout)")
    mask_key: str = option("attention_mask", check=Text(),
                           help="the key of a dict batch's attention mask [N, T] (1: a token, 0: padding)")
    project_to: int | None = option(None, check=NoneOr(Integer(1)),
                                    help="features wider than this go through a fixed random projection to this "
                                         "width (none: never)")
    autocast_dtype: str = option("auto", check=Choice(tuple(AUTOCAST)),
                                 help="dtype of the capture's forward passes: auto (bfloat16 on CUDA, none on the "
                                      "CPU), none, bfloat16 or float16; features are float32 either way")
    batch_size: int = option(256, check=Integer(1), flag="capture_batch_size",
                             help="probe inputs per forward pass of a capture")
    channels_last: bool = option(True, check=Boolean(),
                                 help="keep 4-D probe inputs in channels-last memory format (faster convolutions)")
    fold_batch_norm: bool = option(True, check=Boolean(),
                                   help="run captures on a copy of the model with each batch norm folded into the "
                                        "convolution before it: the same features up to rounding, one pass over each "
                                        "map fewer (a model that torch.fx cannot trace runs as it is)")
    refresh: int = option(1, check=Integer(1), flag="capture_refresh",
                          help="a tracker's measurement runs 1/this of the probe inputs forward and reuses the other "
                               "rows' features from its last this-1 measurements (1: every input, every time)")
    refresh_drift: float = option(0.02, check=Real(0.0), flag="capture_refresh_drift",
                                  help="with refresh > 1, the error in bits that kept features may make: where the "
                                       "rows just captured show more, the parts kept longest are captured again until "
                                       "it holds (see RollingFeatures)")

    def __post_init__(self):
        dtype = self.autocast_dtype
        if dtype is None or isinstance(dtype, torch.dtype):  # the API's spelling: a torch dtype or None
            names = {v: k for k, v in AUTOCAST.items()}
            object.__setattr__(self, "autocast_dtype", names.get(dtype, repr(dtype)))
        validate_fields(self, "CaptureOptions")
        if self.pool in TOKEN_POOLS and self.layout == "channels":
            raise ValueError(f"CaptureOptions: pool={self.pool!r} pools tokens; layout='channels' says the outputs "
                             "are conv maps (use avg or max)")

    @property
    def autocast(self) -> torch.dtype | str | None:
        return AUTOCAST[self.autocast_dtype]


def resolve_modules(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    """{name: submodule} for the names given; ValueError naming a missing one and the choices."""
    if isinstance(layers, str):
        layers = [layers]
    if len(layers) == 0:
        raise ValueError("layers must name at least one module")
    named = dict(model.named_modules())
    out = {}
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"layers must be module names (str), got {type(name).__name__}")
        if name not in named or name == "":
            shown = [n for n in named if n and "." not in n][:12]
            raise ValueError(f"layer {name!r} is not a module of {type(model).__name__}; "
                             f"top-level modules: {shown} (nested ones are named like 'layer1.0.conv1')")
        out[name] = named[name]
    if len(set(out)) != len(layers):
        raise ValueError(f"layers lists a module twice: {list(layers)}")
    return out


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for every submodule inside the block, each one's previous mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def layer_seed(seed: int, layer: str) -> int:
    """The seed of ``layer``'s projection: ``seed`` and a stable hash of the name (Python's own
    hash of a string changes between processes)."""
    return (seed * 1_000_003 + zlib.crc32(layer.encode("utf-8"))) % 2**63


def pool_tokens(out: torch.Tensor, mask: torch.Tensor | None, how: str, name: str) -> torch.Tensor:
    """[N, T, D] -> [N, D] over the tokens ``mask`` [N, T] keeps (every token without a mask):
    their mean (``avg``, ``mean_tokens``), maximum (``max``), first or last. Positions come from
    the mask, not from the ends of the sequence, so left padding reads as right padding does."""
    n, t = out.shape[:2]
    if mask is None:
        keep = torch.ones(n, t, dtype=torch.bool, device=out.device)
    elif tuple(mask.shape) != (n, t):
        raise ValueError(f"layer {name!r} gave shape {tuple(out.shape)}, which does not match the attention mask "
                         f"{tuple(mask.shape)}: a token pool needs outputs [N, T, D] for masks [N, T]")
    else:
        keep = mask.to(out.device).bool()
    counts = keep.sum(1)
    if bool((counts == 0).any()):
        raise ValueError(f"layer {name!r}: an input has no token its attention mask keeps")
    if how in ("avg", "mean_tokens"):  # padding rows may hold NaN (attention with every key masked)
        return out.masked_fill(~keep.unsqueeze(-1), 0.0).sum(1) / counts.unsqueeze(1)
    if how == "max":
        return out.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(1)
    pos = torch.arange(t, device=out.device).expand(n, t)
    idx = torch.where(keep, pos, t).amin(1) if how == "first" else torch.where(keep, pos, -1).amax(1)
    return out[torch.arange(n, device=out.device), idx]


def _hidden_index(name: str) -> int:
    try:
        return int(name[len(HIDDEN_STATES):])
    except ValueError:
        raise ValueError(f"layer {name!r}: hidden states are named hidden_states.<i>, i an integer") from None


class FeatureCapture:
    """Captures pooled features of named layers for a fixed set of inputs.

    Args:
        model: any ``nn.Module``.
        layers: names as in ``model.named_modules()`` (e.g. ``"layer2"`` or ``"blocks.3.mlp"``),
            or ``hidden_states.<i>`` for the ``i``-th hidden state a model returns when called
            with ``output_hidden_states=True`` (Hugging Face models).
        options: a :class:`CaptureOptions`; ``**shortcuts`` set its fields by name on top:
            ``pool`` (``"avg"`` averages every dimension after the channel one, [N, C, ...] ->
            [N, C]; ``"max"`` takes their maximum instead, which keeps a small, localised feature
            that an average over the whole map would dilute; ``"mean_tokens"``, ``"first"`` and
            ``"last"`` pool a token sequence [N, T, D] over the tokens its attention mask keeps;
            ``"flatten"`` keeps everything, [N, ...] -> [N, prod]), ``layout`` (what a 3-D output
            is), ``mask_key`` (a dict batch's attention-mask key), ``project_to`` (features wider
            than this go through a fixed random projection to this width), ``autocast_dtype``
            (the forward passes under ``torch.autocast`` with ``torch.bfloat16`` or
            ``torch.float16``, or None for none; ``"auto"``, the default, is bfloat16 on CUDA and
            none on CPU; features are float32 either way) and ``batch_size`` (inputs per forward
            pass).
        seed: seed of the projections.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], options: CaptureOptions | None = None, *,
                 seed: int = 0, **shortcuts):
        self.options = routed({"options": options or CaptureOptions()}, shortcuts, "FeatureCapture")["options"]
        self.model = model
        layers = [layers] if isinstance(layers, str) else list(layers)
        modules = set(dict(model.named_modules()))
        self.hidden = {n: _hidden_index(n) for n in layers
                       if isinstance(n, str) and n.startswith(HIDDEN_STATES) and n not in modules}
        named = [n for n in layers if n not in self.hidden]
        self.modules = resolve_modules(model, named) if named or not layers else {}
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers lists a module twice: {layers}")
        self.layers = layers
        self.seed = seed
        self._projections: dict[str, torch.Tensor] = {}
        self._mask: torch.Tensor | None = None  # the attention mask of the batch being captured
        self._folded: FoldedModel | None | bool = None  # None: not tried yet; False: nothing folds

    def _reduce(self, name: str, out) -> torch.Tensor:
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer {name!r} returned {type(out).__name__}, not a tensor")
        if out.dim() < 2:
            raise ValueError(f"layer {name!r} returned shape {tuple(out.shape)}; expected [N, ...] per batch")
        out = self._pooled(name, out.detach().float())
        width = self.options.project_to
        if width is not None and out.shape[1] > width:
            out = out @ self._projection(name, out.shape[1]).to(out.device)
        return out

    def _pooled(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """[N, D] of one output, as the pool and the layout say."""
        pool, layout = self.options.pool, self.options.layout
        if pool == "flatten" or out.dim() == 2:
            return out.flatten(1)
        tokens = pool in TOKEN_POOLS or layout == "tokens"
        if tokens and out.dim() != 3:
            raise ValueError(f"layer {name!r} gave shape {tuple(out.shape)}; pool={pool!r} with layout={layout!r} "
                             "pools the tokens of a sequence [N, T, D]")
        if tokens:
            return pool_tokens(out, self._mask, pool, name)
        if out.dim() == 3 and layout == "auto":
            raise ValueError(f"layer {name!r} gave shape {tuple(out.shape)}: is it a sequence [N, T, D] or a 1-D "
                             f"conv map [N, C, L]? pool={pool!r} would average the wrong axis of a sequence. Choose "
                             f"pool='mean_tokens', 'first' or 'last' (or layout='tokens') for a sequence, "
                             f"layout='channels' for a conv map, or pool='flatten'")
        return out.flatten(2).mean(2) if pool == "avg" else out.flatten(2).amax(2)

    def _projection(self, name: str, width_in: int) -> torch.Tensor:
        # One fixed projection per layer for the whole run: features of different checkpoints
        # must live in the same coordinates for warm starts to help. Seeded by the layer's name,
        # not by the order layers come in: the same layer gets the same projection whatever the
        # layer list.
        proj = self._projections.get(name)
        if proj is None or proj.shape[0] != width_in:
            gen = torch.Generator().manual_seed(layer_seed(self.seed, name))
            proj = torch.randn(width_in, self.options.project_to, generator=gen) / self.options.project_to ** 0.5
            self._projections[name] = proj
        return proj

    def autocast_on(self, device: torch.device) -> torch.dtype | None:
        dtype = self.options.autocast
        if dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else None
        return dtype

    def __call__(self, inputs: batches.Inputs | Iterable[batches.Inputs],
                 batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Features {layer: [N, D]} (float32, on the model's device) for ``inputs``.

        ``inputs`` is a tensor [N, ...] or a dict of them (split into batches of ``batch_size``,
        default the options'), or an iterable of such batches (a ``DataLoader``).
        """
        whole = isinstance(inputs, (torch.Tensor, Mapping))
        if whole:
            batches.checked(inputs, "inputs")
        parts = batches.split(inputs, batch_size or self.options.batch_size) if whole else inputs
        captured: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        runner, modules = self._runner()
        handles = [module.register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(self._reduce(name, out)))
            for name, module in modules.items()]
        try:
            self._forward_all(runner, parts, captured)
        finally:
            for h in handles:
                h.remove()
            self._mask = None
        missing = [n for n, v in captured.items() if not v]
        if missing:
            raise RuntimeError(f"layers {missing} never ran in the forward pass; is the module used by forward()?")
        feats = {n: torch.cat(v) for n, v in captured.items()}
        if whole:
            for n, f in feats.items():
                if f.shape[0] != batches.rows_of(inputs):
                    raise RuntimeError(f"layer {n!r} gave {f.shape[0]} rows for {batches.rows_of(inputs)} inputs; "
                                       "a module called more than once per forward cannot be captured by name")
        return feats

    def _runner(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        """The module the forward passes run, the model or its copy with batch norms folded
        (:mod:`.folding`, brought up to the model's current values), and its hooked modules."""
        if not self.options.fold_batch_norm:
            return self.model, self.modules
        if self._folded is None or (self._folded and self._folded.stale()):
            self._folded = folded(self.model, set(self.modules)) or False
        if not self._folded:
            return self.model, self.modules
        runner = self._folded.synced()
        return runner, {name: runner.get_submodule(name) for name in self.modules}

    def _forward_all(self, model: nn.Module, parts: Iterable[batches.Inputs],
                     captured: dict[str, list[torch.Tensor]]) -> None:
        """Every batch through ``model`` in eval and inference mode, under the capture's
        autocast; the batch's attention mask is where the hooks' token pools find it."""
        device = _model_device(model)
        autocast = self.autocast_on(device)
        extra = {"output_hidden_states": True} if self.hidden else {}
        # Inference mode: no autograd records at all, cheaper than no_grad. The hooks' pooled
        # outputs are inference tensors; the torch.cat after, outside, makes ordinary ones.
        with eval_mode(model), torch.inference_mode():
            for xb in parts:
                xb = batches.each(xb, lambda v: v.to(device, non_blocking=True))
                self._mask = xb.get(self.options.mask_key) if isinstance(xb, Mapping) else None
                with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                    out = batches.call(model, xb, **extra)
                for name, i in self.hidden.items():
                    captured[name].append(self._reduce(name, _hidden_state(out, i, name)))


def _hidden_state(out, i: int, name: str) -> torch.Tensor:
    states = getattr(out, "hidden_states", None)
    if states is None and isinstance(out, Mapping):
        states = out.get("hidden_states")
    if states is None:
        raise ValueError(f"layer {name!r}: the model returned no hidden_states when called with "
                         "output_hidden_states=True; name a module instead")
    if not -len(states) <= i < len(states):
        raise ValueError(f"layer {name!r}: the model returned {len(states)} hidden states (0 to {len(states) - 1})")
    return states[i]


class RollingFeatures:
    """Features of fixed inputs, a share of them captured again at each measurement.

    The rows of every split are dealt into ``refresh`` parts (row i to part i mod ``refresh``, so
    each part samples the whole split). A measurement captures the part captured longest ago
    (in turn, while measurements are evenly spaced) and keeps the other parts' features from the
    measurements that last captured them; the first captures every part. A measurement's
    features thus come from its own step and the ``refresh - 1`` measured steps before it, and
    :attr:`oldest` says the earliest. With ``refresh=1`` every row is captured at every
    measurement.
    """

    def __init__(self, refresh: int):
        self.refresh = refresh
        self.kept: dict[str, dict[str, torch.Tensor]] = {}  # split -> layer -> [N, D]
        self.before: dict[str, dict[str, torch.Tensor]] = {}  # ... as kept before the last capture
        self.part_steps: list[int | None] = [None] * refresh
        self.step: int | None = None  # of the last begin()
        self.age = 0  # steps the part captured at the last begin() had been kept

    def begin(self, step: int) -> list[int]:
        """The parts to capture at ``step``: every one until each has been captured once (or when
        nothing is kept), then the one captured longest ago."""
        self.step = step
        if self.refresh == 1 or not self.kept or None in self.part_steps:
            return self.again(list(range(self.refresh)))
        stalest = self._longest_kept(range(self.refresh))[0]
        self.age = step - self.part_steps[stalest]
        return self.again([stalest])

    def _longest_kept(self, parts) -> list[int]:
        """``parts`` in the order they were last captured, the earliest first (ties by index)."""
        return sorted(parts, key=lambda j: (self.part_steps[j], j))

    def stale_error(self, shift: float, fresh: Sequence[int] = ()) -> float:
        """The error, in bits, that the kept parts (all but those captured at this step and
        ``fresh``) make, from ``shift``: how far the last chosen probes read the part just
        captured from its features of :attr:`age` steps before. With the features moving at a
        steady pace, a part kept for a steps moved by ``shift x a / age``, and each part holds
        ``1 / refresh`` of the rows. (Evenly spaced measurements: ``shift (refresh - 1) /
        (2 refresh)``.)"""
        ages = [self.step - s for j, s in enumerate(self.part_steps) if j not in fresh]
        return shift / max(self.age, 1) * sum(ages) / self.refresh

    def stalest(self, shift: float, drift: float) -> list[int]:
        """The parts to capture again at this step, the longest kept first, until the kept ones
        err by at most ``drift`` bits (:meth:`stale_error`); every other part when ``shift`` is
        not a number."""
        order = self._longest_kept(j for j in range(self.refresh) if self.part_steps[j] != self.step)
        if shift != shift:
            return order
        chosen: list[int] = []
        while order and not self.stale_error(shift, chosen) <= drift:
            chosen.append(order.pop(0))
        return chosen

    def again(self, parts: list[int]) -> list[int]:
        """``parts``, marked captured at this step: to capture them."""
        for j in parts:
            self.part_steps[j] = self.step
        return parts

    def rows(self, parts: list[int], n: int, device) -> torch.Tensor:
        """The row indices of ``parts`` among ``n`` rows."""
        return torch.cat([torch.arange(j, n, self.refresh, device=device) for j in parts])

    @property
    def oldest(self) -> int | None:
        """The earliest step whose features the last :meth:`begin`'s measurement uses."""
        return min(self.part_steps) if None not in self.part_steps else None

    def capture(self, split: str, inputs: batches.Inputs, parts: list[int], capture) -> dict[str, torch.Tensor]:
        """{layer: [N, D]} of ``inputs``: the rows of ``parts`` from ``capture`` (a
        :class:`FeatureCapture`), the others as kept. Each call returns new tensors, so features
        handed to a background worker are never changed under it."""
        return self.store(split, inputs, parts, capture(self.due(inputs, parts)))

    def capture_splits(self, splits: dict[str, batches.Inputs | None], parts: list[int],
                       capture) -> dict[str, dict[str, torch.Tensor] | None]:
        """:meth:`capture` of every split (None stays None), the rows due of all of them run
        forward as one stream of batches where they can be joined (:func:`batches.joinable`)."""
        present = {k: x for k, x in splits.items() if x is not None}
        due = {k: self.due(x, parts) for k, x in present.items()}
        if batches.joinable(list(due.values())):
            joined = capture(batches.spanning(list(due.values()), capture.options.batch_size))
            pieces = {n: f.split([batches.rows_of(x) for x in due.values()]) for n, f in joined.items()}
            fresh = {k: {n: p[i] for n, p in pieces.items()} for i, k in enumerate(due)}
        else:
            fresh = {k: capture(x) for k, x in due.items()}
        return {k: self.store(k, present[k], parts, fresh[k]) if k in present else None for k in splits}

    def due(self, inputs: batches.Inputs, parts: list[int]) -> batches.Inputs:
        """The rows of ``inputs`` that ``parts`` hold (all of them: ``inputs`` itself)."""
        if len(parts) == self.refresh:
            return inputs
        return batches.take(inputs, self.rows(parts, batches.rows_of(inputs), batches.device_of(inputs)))

    def store(self, split: str, inputs: batches.Inputs, parts: list[int],
              fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The split's features with the rows of ``parts`` from ``fresh``, the others as kept."""
        if self.refresh == 1:  # nothing is ever kept: no copies held between measurements
            return fresh
        self.before[split] = self.kept.get(split)
        if len(parts) == self.refresh:
            self.kept[split] = fresh
            return fresh
        rows = self.rows(parts, batches.rows_of(inputs), batches.device_of(inputs))
        kept = self.kept[split]
        self.kept[split] = {n: kept[n].index_copy(0, rows.to(kept[n].device), fresh[n]) for n in kept}
        return self.kept[split]

    def forget(self) -> None:
        """Drops what is kept: the next measurement captures every row (new weights loaded)."""
        self.kept.clear()
        self.before.clear()
        self.part_steps = [None] * self.refresh


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
