"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists the names it re-exports and the module each lives in; a name is imported on
first use. This keeps ``import uinfo_fast`` and the log-reading parts (``uinfo-fast plot``) free of
the compiled extension, which only the probe engine needs.
"""
from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]):
    """(``__getattr__``, ``__dir__``) for ``package``: ``exports`` maps a public name to the module,
    relative to ``package`` (e.g. ``".engine"``), that defines it."""
    namespace = import_module(package).__dict__

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(exports[name], package), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
