"""Feature capture: forward hooks on named modules of any ``nn.Module``, pooled to [N, D].

The probes of usable information see a layer's output as one vector per example:

* a convolutional map [N, C, H, W] (or any [N, C, *spatial]) is global-average-pooled to [N, C]
  (or max-pooled with ``pool="max"``), which keeps D small enough to fit many probes;
* a sequence or other [N, ...] output with ``pool="flatten"`` is flattened, and when it is
  wider than ``project_to`` it goes through a fixed Gaussian random projection (Johnson-
  Lindenstrauss: linear-probe geometry is roughly kept), drawn once from ``seed``;
* a tuple or list output contributes its first element (e.g. an RNN's output).

Capture runs in eval mode (batch-norm running statistics, no dropout) and in inference mode,
under bfloat16 autocast on CUDA, and puts every submodule back in the mode it was in: the caller's
training loop is untouched.
"""
from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..engine.params import Boolean, Choice, Integer, NoneOr, Real, option, routed, validate_fields

POOLS = ("avg", "max", "flatten")
AUTOCAST = {"auto": "auto", "none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class CaptureOptions:
    """How layer outputs become probe features, checked when made (see :class:`FeatureCapture`)."""

    pool: str = option("avg", check=Choice(POOLS),
                       help="how a conv map [N, C, ...] becomes features: avg or max over the positions, or "
                            "flatten")
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
    refresh: int = option(1, check=Integer(1), flag="capture_refresh",
                          help="a tracker's measurement runs 1/this of the probe inputs forward and reuses the other "
                               "rows' features from its last this-1 measurements (1: every input, every time)")
    refresh_drift: float = option(0.02, check=Real(0.0), flag="capture_refresh_drift",
                                  help="with refresh > 1, the error in bits that kept features may make: every input is "
                                       "captured again when the rows just captured show more (see RollingFeatures)")

    def __post_init__(self):
        dtype = self.autocast_dtype
        if dtype is None or isinstance(dtype, torch.dtype):  # the API's spelling: a torch dtype or None
            names = {v: k for k, v in AUTOCAST.items()}
            object.__setattr__(self, "autocast_dtype", names.get(dtype, repr(dtype)))
        validate_fields(self, "CaptureOptions")

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


class FeatureCapture:
    """Captures pooled features of named layers for a fixed set of inputs.

    Args:
        model: any ``nn.Module``.
        layers: names as in ``model.named_modules()`` (e.g. ``"layer2"`` or ``"blocks.3.mlp"``).
        options: a :class:`CaptureOptions`; ``**shortcuts`` set its fields by name on top:
            ``pool`` (``"avg"`` averages every dimension after the channel one, [N, C, ...] ->
            [N, C]; ``"max"`` takes their maximum instead, which keeps a small, localised feature
            that an average over the whole map would dilute; ``"flatten"`` keeps everything,
            [N, ...] -> [N, prod]), ``project_to`` (features wider than this go through a fixed
            random projection to this width), ``autocast_dtype`` (the forward passes under
            ``torch.autocast`` with ``torch.bfloat16`` or ``torch.float16``, or None for none;
            ``"auto"``, the default, is bfloat16 on CUDA and none on CPU; features are float32
            either way) and ``batch_size`` (inputs per forward pass).
        seed: seed of the projections.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], options: CaptureOptions | None = None, *,
                 seed: int = 0, **shortcuts):
        self.options = routed({"options": options or CaptureOptions()}, shortcuts, "FeatureCapture")["options"]
        self.model = model
        self.modules = resolve_modules(model, layers)
        self.layers = list(self.modules)
        self.seed = seed
        self._projections: dict[str, torch.Tensor] = {}

    def _reduce(self, name: str, out) -> torch.Tensor:
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer {name!r} returned {type(out).__name__}, not a tensor")
        if out.dim() < 2:
            raise ValueError(f"layer {name!r} returned shape {tuple(out.shape)}; expected [N, ...] per batch")
        out = out.detach().float()
        pool, width = self.options.pool, self.options.project_to
        if pool == "avg" and out.dim() > 2:
            out = out.flatten(2).mean(2)
        elif pool == "max" and out.dim() > 2:
            out = out.flatten(2).amax(2)
        else:
            out = out.flatten(1)
        if width is not None and out.shape[1] > width:
            proj = self._projections.get(name)
            if proj is None or proj.shape[0] != out.shape[1]:
                # One fixed projection per layer for the whole run: features of different
                # checkpoints must live in the same coordinates for warm starts to help.
                # Seeded by the layer's name, not by the order layers come in: the same layer
                # gets the same projection whatever the layer list.
                gen = torch.Generator().manual_seed(layer_seed(self.seed, name))
                proj = torch.randn(out.shape[1], width, generator=gen) / width ** 0.5
                self._projections[name] = proj
            out = out @ proj.to(out.device)
        return out

    def autocast_on(self, device: torch.device) -> torch.dtype | None:
        dtype = self.options.autocast
        if dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else None
        return dtype

    def __call__(self, inputs: torch.Tensor | Iterable[torch.Tensor],
                 batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Features {layer: [N, D]} (float32, on the model's device) for ``inputs``.

        ``inputs`` is a tensor [N, ...] (split into batches of ``batch_size``, default the
        options') or an iterable of input batches.
        """
        if isinstance(inputs, torch.Tensor):
            if inputs.dim() < 1 or inputs.shape[0] == 0:
                raise ValueError(f"inputs must be a non-empty batch [N, ...], got shape {tuple(inputs.shape)}")
            batches: Iterable[torch.Tensor] = inputs.split(batch_size or self.options.batch_size)
        else:
            batches = inputs
        captured: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        handles = [module.register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(self._reduce(name, out)))
            for name, module in self.modules.items()]
        device = _model_device(self.model)
        autocast = self.autocast_on(device)
        try:
            # Inference mode: no autograd records at all, cheaper than no_grad. The hooks' pooled
            # outputs are inference tensors; the torch.cat below, outside, makes ordinary ones.
            with eval_mode(self.model), torch.inference_mode():
                for xb in batches:
                    xb = xb.to(device, non_blocking=True)
                    with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                        self.model(xb)
        finally:
            for h in handles:
                h.remove()
        missing = [n for n, v in captured.items() if not v]
        if missing:
            raise RuntimeError(f"layers {missing} never ran in the forward pass; is the module used by forward()?")
        feats = {n: torch.cat(v) for n, v in captured.items()}
        if isinstance(inputs, torch.Tensor):
            for n, f in feats.items():
                if f.shape[0] != inputs.shape[0]:
                    raise RuntimeError(f"layer {n!r} gave {f.shape[0]} rows for {inputs.shape[0]} inputs; "
                                       "a module called more than once per forward cannot be captured by name")
        return feats


class RollingFeatures:
    """Features of fixed inputs, a share of them captured again at each measurement.

    The rows of every split are dealt into ``refresh`` parts (row i to part i mod ``refresh``, so
    each part samples the whole split). A measurement captures one part, in turn, and keeps the
    other parts' features from the measurements that last captured them; the first captures every
    part. A measurement's features thus come from its own step and the ``refresh - 1`` measured
    steps before it, and :attr:`oldest` says the earliest. With ``refresh=1`` every row is captured
    at every measurement.
    """

    def __init__(self, refresh: int):
        self.refresh = refresh
        self.kept: dict[str, dict[str, torch.Tensor]] = {}  # split -> layer -> [N, D]
        self.before: dict[str, dict[str, torch.Tensor]] = {}  # ... as kept before the last capture
        self.part_steps: list[int | None] = [None] * refresh
        self.turn = 0

    def begin(self, step: int) -> list[int]:
        """The parts to capture at ``step``: every one until each has been captured once (or when
        nothing is kept), then the next in turn."""
        if self.refresh == 1 or not self.kept or None in self.part_steps:
            parts = list(range(self.refresh))
        else:
            parts = [self.turn]
            self.turn = (self.turn + 1) % self.refresh
        for j in parts:
            self.part_steps[j] = step
        return parts

    def stale_error(self, shift: float) -> float:
        """The error, in bits, that the kept parts make, from ``shift``: how far the last chosen
        probes read the part just captured from its features of ``refresh`` measurements ago.
        With the features moving at a steady pace, the parts are 0 to ``refresh - 1``
        measurements old, ``(refresh - 1) / 2`` on average, and each moved that share of
        ``shift``."""
        return shift * (self.refresh - 1) / (2 * self.refresh)

    def rest(self, step: int, parts: list[int]) -> list[int]:
        """The parts other than ``parts``, marked captured at ``step``: to capture them too."""
        others = [j for j in range(self.refresh) if j not in parts]
        for j in others:
            self.part_steps[j] = step
        return others

    def rows(self, parts: list[int], n: int, device) -> torch.Tensor:
        """The row indices of ``parts`` among ``n`` rows."""
        return torch.cat([torch.arange(j, n, self.refresh, device=device) for j in parts])

    @property
    def oldest(self) -> int | None:
        """The earliest step whose features the last :meth:`begin`'s measurement uses."""
        return min(self.part_steps) if None not in self.part_steps else None

    def capture(self, split: str, inputs: torch.Tensor, parts: list[int], capture) -> dict[str, torch.Tensor]:
        """{layer: [N, D]} of ``inputs``: the rows of ``parts`` from ``capture`` (a
        :class:`FeatureCapture`), the others as kept. Each call returns new tensors, so features
        handed to a background worker are never changed under it."""
        if self.refresh == 1:  # nothing is ever kept: no copies held between measurements
            return capture(inputs)
        self.before[split] = self.kept.get(split)
        if len(parts) == self.refresh:
            self.kept[split] = capture(inputs)
            return self.kept[split]
        rows = self.rows(parts, inputs.shape[0], inputs.device)
        picked = inputs.index_select(0, rows)
        if inputs.dim() == 4 and inputs.is_contiguous(memory_format=torch.channels_last):
            picked = picked.contiguous(memory_format=torch.channels_last)
        fresh = capture(picked)
        kept = self.kept[split]
        self.kept[split] = {n: kept[n].index_copy(0, rows.to(kept[n].device), fresh[n]) for n in kept}
        return self.kept[split]

    def forget(self) -> None:
        """Drops what is kept: the next measurement captures every row (new weights loaded)."""
        self.kept.clear()
        self.before.clear()
        self.part_steps = [None] * self.refresh
        self.turn = 0


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
