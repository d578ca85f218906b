"""Parameters declared as constraints and checked once, when an options object or a public
function receives them (the way scikit-learn declares ``_parameter_constraints``).

An options dataclass declares each field once, with :func:`option`: its default, its constraint
and its help (which the command line is generated from), and calls :func:`validate_fields` in
``__post_init__``; a function checks a lone argument with :func:`check_param`. Options objects
that nest others (a run's config) name each nested field by a flat name (:func:`flat_fields`),
the one the command line and keyword shortcuts use. Errors are ValueErrors that name the parameter, what it must be and what it
got. Nothing here imports torch, so data and task code can use it without the compiled ops.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Integer:
    """An int (not a bool) in [low, high]; either bound may be None."""

    low: int | None = None
    high: int | None = None

    def accepts(self, v) -> bool:
        return _is_int(v) and (self.low is None or v >= self.low) and (self.high is None or v <= self.high)

    def describe(self) -> str:
        if self.high is None:
            return "an integer" + ("" if self.low is None else f" >= {self.low}")
        return f"an integer in [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Real:
    """A finite int or float in the interval given; either bound may be None (unbounded) and
    either may be open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def accepts(self, v) -> bool:
        if not _is_real(v) or not math.isfinite(v):
            return False
        above_low = self.low is None or (v > self.low if self.low_open else v >= self.low)
        below_high = self.high is None or (v < self.high if self.high_open else v <= self.high)
        return above_low and below_high

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"a number in {lo}{self.low:g}, {self.high:g}{hi}"
        if self.low is not None:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"a finite number {'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number"


@dataclass(frozen=True)
class Choice:
    values: tuple

    def accepts(self, v) -> bool:
        return isinstance(v, type(self.values[0])) and v in self.values

    def describe(self) -> str:
        return f"one of {self.values}"


@dataclass(frozen=True)
class Boolean:
    def accepts(self, v) -> bool:
        return isinstance(v, bool)

    def describe(self) -> str:
        return "True or False"


@dataclass(frozen=True)
class Text:
    """A non-empty string."""

    def accepts(self, v) -> bool:
        return isinstance(v, str) and len(v) > 0

    def describe(self) -> str:
        return "a non-empty string"


@dataclass(frozen=True)
class NoneOr:
    inner: object

    def accepts(self, v) -> bool:
        return v is None or self.inner.accepts(v)

    def describe(self) -> str:
        return f"None or {self.inner.describe()}"


@dataclass(frozen=True)
class ListOf:
    """A non-empty list or tuple whose items all meet ``item``."""

    item: object

    def accepts(self, v) -> bool:
        return isinstance(v, (list, tuple)) and len(v) > 0 and all(self.item.accepts(x) for x in v)

    def describe(self) -> str:
        return f"a non-empty list, each {self.item.describe()}"


def check_param(name: str, value, constraint):
    """``value`` if it meets ``constraint``, else a ValueError naming ``name``."""
    if not constraint.accepts(value):
        raise ValueError(f"{name} must be {constraint.describe()}, got {value!r}")
    return value


def option(default=MISSING, *, check=None, help: str, flag: str | None = None, factory=MISSING,
           negative: str | None = None, group: type | None = None):
    """A dataclass field declared once: its default (or ``factory``), its constraint ``check``,
    its ``help``, and for the command line its flat name ``flag`` (default: the field's name)
    and the name of an extra flag that sets a boolean to False (``negative``). ``group``: the
    options class of a field that nests one (its own fields then have flat names of their own)."""
    meta = {"check": check, "help": help, "flag": flag, "negative": negative, "group": group}
    return field(default=default, default_factory=factory, metadata=meta)


def validate_fields(obj, owner: str = "") -> None:
    """Checks every field of the dataclass ``obj`` declared with a constraint (:func:`option`)."""
    prefix = f"{owner}." if owner else ""
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        if check is not None:
            check_param(prefix + f.name, getattr(obj, f.name), check)


def flat_fields(cls, skip=frozenset()) -> dict[str, tuple[str | None, dataclasses.Field]]:
    """{flat name: (the field of ``cls`` that nests it or None, its field)} for every field of
    ``cls`` and of the options classes its fields nest, but the (nesting field, field) pairs of
    ``skip``; a field's flat name is its ``flag`` or its own name, and no two may clash."""
    out: dict[str, tuple[str | None, dataclasses.Field]] = {}
    for f in dataclasses.fields(cls):
        group = f.metadata.get("group")
        inner = [(f.name, g) for g in dataclasses.fields(group)] if group else [(None, f)]
        for owner, g in inner:
            if (owner, g.name) in skip:
                continue
            name = g.metadata.get("flag") or g.name
            if name in out:
                raise TypeError(f"{cls.__name__}: the flat name {name!r} is taken twice")
            out[name] = (owner, g)
    return out


def routed(objects: Mapping[str, object], shortcuts: Mapping[str, object], owner: str) -> dict[str, object]:
    """``objects`` ({name: options dataclass}) with each keyword of ``shortcuts`` set on the
    one that has a field of that name; a TypeError names a keyword none has, and the choices."""
    out = dict(objects)
    names = {f.name: key for key, obj in objects.items() for f in dataclasses.fields(obj)}
    unknown = sorted(set(shortcuts) - set(names))
    if unknown:
        raise TypeError(f"{owner} got unknown options {unknown}; it takes {sorted(names)}")
    for key in objects:
        mine = {k: v for k, v in shortcuts.items() if names[k] == key}
        if mine:
            out[key] = dataclasses.replace(out[key], **mine)
    return out
