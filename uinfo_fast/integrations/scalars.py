"""The scalars a logger shows for the tracker's rows: one place for their names and units."""
from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module

from ..tracking.log import measured

PREFIX = "usable_information"


def row_scalars(row: dict, prefix: str = PREFIX) -> dict[str, float]:
    """The scalars of one log row: ``<prefix>/<layer>/<label set>`` (usable information, bits),
    ``.../ci_low`` and ``.../ci_high`` (its confidence bounds, bits) and ``.../l2`` (the chosen
    penalty). A row that holds no measurement (its ``status`` says why) has none."""
    if not measured(row):
        return {}
    name = f"{prefix}/{row['feature_set']}/{row['label_set']}"
    out = {name: float(row["bits"])}
    for key in ("ci_low", "ci_high", "l2"):
        if row.get(key) is not None:
            out[f"{name}/{key}"] = float(row[key])
    return out


def scalars_by_step(rows: Iterable[dict], prefix: str = PREFIX) -> list[tuple[int, dict[str, float]]]:
    """(capture step, scalars) for each step of ``rows``, in the rows' order (step order);
    steps whose rows hold no number are left out."""
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        scalars = row_scalars(row, prefix)
        if scalars:
            out.setdefault(int(row["step"]), {}).update(scalars)
    return list(out.items())


def require(module: str, extra: str, what: str):
    """``import module``, or an ImportError that says which extra installs it."""
    try:
        return import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs the {module.split('.')[0]!r} package: "
                          f"pip install 'uinfo-fast[{extra}]' (or pip install {extra})") from e
